package register

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"strata/builder/packer/strata"
	"strata/builder/publish"
)

// Configure and PostProcess are tested here with builder/publish replaced
// by a recording stand-in; `packer build` with this post-processor and the
// real publish into a running controller runs in the Packer end-to-end
// tests (make test-packer).

const recipeYAML = `name: img
elements: [vm, debian-minimal]
datastore:
  name: mariadb
  version: "10.11"
  manager: mariadb
  port: 3306
  packages: [mariadb-server]
  boot_timeout: 600
`

// built makes what strata build leaves: NAME.qcow2 (a real one, as the
// local image store checks the format), .sha256 and manifest, and a
// recipe.
func built(t *testing.T) (image, recipe string) {
	t.Helper()
	dir := t.TempDir()
	image = filepath.Join(dir, "img.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", image, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img (apt-get install qemu-utils): %v %s", err, out)
	}
	b, _ := os.ReadFile(image)
	sum := sha256.Sum256(b)
	os.WriteFile(image+".sha256", []byte(hex.EncodeToString(sum[:])+"  img.qcow2\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "img.manifest.json"), []byte("{}\n"), 0o644)
	recipe = filepath.Join(dir, "img.yaml")
	os.WriteFile(recipe, []byte(recipeYAML), 0o644)
	return image, recipe
}

// artifact is a stand-in for another builder's artifact.
type artifact struct {
	id    string
	files []string
	state map[string]interface{}
}

func (a *artifact) BuilderId() string          { return a.id }
func (a *artifact) Files() []string            { return a.files }
func (a *artifact) Id() string                 { return "art" }
func (a *artifact) String() string             { return "art" }
func (a *artifact) State(k string) interface{} { return a.state[k] }
func (a *artifact) Destroy() error             { return nil }
func strataArtifact(image, recipe string) *artifact {
	return &artifact{id: strata.BuilderID, files: []string{image}, state: map[string]interface{}{strata.StateImage: image, strata.StateRecipe: recipe}}
}

type recorder struct {
	got []publish.Options
	err error
}

func (r *recorder) publish(ctx context.Context, o publish.Options) (*publish.Result, error) {
	r.got = append(r.got, o)
	fmt.Fprintln(o.Out, "uploading to glance")
	if r.err != nil {
		return nil, r.err
	}
	return &publish.Result{ImageID: "img-1", Uploaded: true, VersionID: "ver-1", VersionCreated: true}, nil
}

type ui struct {
	packersdk.MockUi
	lines []string
}

func (u *ui) Say(m string)     { u.lines = append(u.lines, m) }
func (u *ui) Message(m string) { u.lines = append(u.lines, m) }

func TestConfigureRefusesBadInputNamingIt(t *testing.T) {
	_, recipe := built(t)
	noDS := filepath.Join(t.TempDir(), "plain.yaml")
	os.WriteFile(noDS, []byte("name: plain\nelements: [vm, debian-minimal]\n"), 0o644)
	rec := &recorder{}
	for name, tc := range map[string]struct {
		pub  PublishFunc
		raw  map[string]interface{}
		want string
	}{
		"unknown recipe":      {rec.publish, map[string]interface{}{"recipe": "images/no-such.yaml"}, "images/no-such.yaml"},
		"recipe no datastore": {rec.publish, map[string]interface{}{"recipe": noDS}, "has no datastore section"},
		"bad controller url":  {rec.publish, map[string]interface{}{"recipe": recipe, "controller_url": "localhost:8779"}, "controller_url"},
		"bad trove url":       {rec.publish, map[string]interface{}{"trove_url": "ftp://x"}, "trove_url"},
		"no publisher":        {nil, map[string]interface{}{"cloud": "c"}, "no publisher wired in"},
	} {
		t.Run(name, func(t *testing.T) {
			err := (&PostProcessor{Publish: tc.pub}).Configure(tc.raw)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestPostProcessPublishesTheStrataArtifactWithItsRecipe(t *testing.T) {
	image, recipe := built(t)
	rec := &recorder{}
	p := &PostProcessor{Publish: rec.publish}
	if err := p.Configure(map[string]interface{}{"cloud": "devstack", "controller_url": "http://127.0.0.1:8779", "trove_url": "https://trove:8779/v1.0"}); err != nil {
		t.Fatal(err)
	}
	u := &ui{}
	out, keep, force, err := p.PostProcess(context.Background(), u, strataArtifact(image, recipe))
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.got) != 1 {
		t.Fatalf("published %d times", len(rec.got))
	}
	o := rec.got[0]
	if o.Image != image || o.Recipe != recipe || o.Cloud != "devstack" || o.ControllerURL != "http://127.0.0.1:8779" || o.TroveURL != "https://trove:8779/v1.0" {
		t.Errorf("publish options = %+v", o)
	}
	if !keep || force {
		t.Errorf("keep=%v force=%v: the built image must be kept unless the user says otherwise", keep, force)
	}
	if out.BuilderId() != BuilderID || out.Id() != "ver-1" || out.State("image_id") != "img-1" || out.State(strata.StateImage) != image {
		t.Errorf("artifact %s %s image_id=%v", out.BuilderId(), out.Id(), out.State("image_id"))
	}
	if all := strings.Join(u.lines, "\n"); !strings.Contains(all, "uploading to glance") {
		t.Errorf("publish output did not reach the UI:\n%s", all)
	}
}

// A cloud whose database service is a plain Trove: the version is the
// Trove's, and the artifact is named by it.
func TestPostProcessNamesTheTroveVersionWithoutAStrataController(t *testing.T) {
	image, recipe := built(t)
	p := &PostProcessor{Publish: func(ctx context.Context, o publish.Options) (*publish.Result, error) {
		return &publish.Result{ImageID: "img-1", Uploaded: true, TroveVersionID: "trove-ver-1", VersionCreated: true}, nil
	}}
	if err := p.Configure(map[string]interface{}{"cloud": "trove-cloud"}); err != nil {
		t.Fatal(err)
	}
	out, _, _, err := p.PostProcess(context.Background(), &ui{}, strataArtifact(image, recipe))
	if err != nil {
		t.Fatal(err)
	}
	if out.Id() != "trove-ver-1" || out.State("trove_version_id") != "trove-ver-1" || !strings.Contains(out.String(), "trove-ver-1") {
		t.Errorf("artifact %q %v %q", out.Id(), out.State("trove_version_id"), out.String())
	}
}

func TestPostProcessFailsNamingWhatIsWrong(t *testing.T) {
	image, recipe := built(t)
	other := filepath.Join(filepath.Dir(image), "other.qcow2")
	os.WriteFile(other, nil, 0o644)
	for name, tc := range map[string]struct {
		art  packersdk.Artifact
		cfg  map[string]interface{}
		err  error
		want string
	}{
		"glance unreachable": {strataArtifact(image, recipe), map[string]interface{}{"cloud": "c"},
			errors.New("glance at http://127.0.0.1:9292: connection refused"), image + ": glance at http://127.0.0.1:9292: connection refused"},
		"two images":        {&artifact{id: "other", files: []string{image, other}}, map[string]interface{}{"recipe": recipe}, nil, "holds 2 qcow2 images"},
		"no recipe":         {&artifact{id: "other", files: []string{image}}, map[string]interface{}{}, nil, "no recipe for " + image},
		"no checksum":       {&artifact{id: "other", files: []string{other}}, map[string]interface{}{"recipe": recipe}, nil, other + ".sha256 is missing"},
		"not qcow2":         {strataArtifact(strings.TrimSuffix(image, ".qcow2")+".raw", recipe), map[string]interface{}{}, nil, "no qcow2 image"},
		"recipe vanished":   {strataArtifact(image, "/no/such/recipe.yaml"), map[string]interface{}{}, nil, "/no/such/recipe.yaml"},
		"manifest vanished": {strataArtifact(other, recipe), map[string]interface{}{}, nil, "is missing"},
	} {
		t.Run(name, func(t *testing.T) {
			rec := &recorder{err: tc.err}
			p := &PostProcessor{Publish: rec.publish}
			if err := p.Configure(tc.cfg); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := p.PostProcess(context.Background(), &ui{}, tc.art)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "strata-register: ") {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

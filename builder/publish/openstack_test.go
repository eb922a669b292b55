//go:build openstack

package publish_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"strata/builder/cli"
	"strata/builder/packer/register"
	"strata/builder/publish"
	"strata/ci/openstack/ostest"
)

// The full suite against Debian's keystone, glance-api and trove-api
// (`make test-openstack`, build tag openstack). `make test` runs only
// TestSmokePublishToRealGlanceAndTrove.

// TestRealChangedImageUpdatesBothVersions: a new image for an existing
// version makes a new Glance image and points both the strata and the
// Trove version at it; the old image stays.
func TestRealChangedImageUpdatesBothVersions(t *testing.T) {
	s := ostest.Shared(t)
	c := controllerOnStack(t, s)
	useStack(t, s)
	o := publish.Options{Cloud: ostest.Cloud, ControllerURL: c.URL, TroveURL: s.TroveURL}
	f := makeImage(t, t.TempDir(), "10.6", 16, "testdata/rules.json")
	o.Recipe, o.Image = f.Recipe, f.Image
	first, err := publish.Publish(ctx(t), o)
	if err != nil {
		t.Fatal(err)
	}
	g := makeImage(t, t.TempDir(), "10.6", 24, "testdata/rules.json")
	o.Recipe, o.Image = g.Recipe, g.Image
	var out strings.Builder
	o.Out = &out
	second, err := publish.Publish(ctx(t), o)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !second.Uploaded || second.ImageID == first.ImageID || second.VersionCreated || second.VersionID != first.VersionID ||
		second.TroveVersionID != first.TroveVersionID {
		t.Fatalf("changed image: %+v, first %+v", second, first)
	}
	tok := token(t, s.KeystoneURL, "admin", s.Password, "admin")
	tv := getJSON(t, s.TroveURL+"/v1.0/"+s.ProjectID+"/mgmt/datastore-versions/"+second.TroveVersionID, tok)["version"].(map[string]any)
	if tv["image"] != second.ImageID {
		t.Fatalf("Trove's version boots %v, want %s", tv["image"], second.ImageID)
	}
	if !strings.Contains(out.String(), "trove: updated datastore version mariadb 10.6") {
		t.Errorf("progress:\n%s", out.String())
	}
	old := getJSON(t, s.GlanceURL+"/v2/images/"+first.ImageID, tok)
	if old["status"] != "active" {
		t.Errorf("the previous image: %v", old)
	}
}

// TestRealKeystoneRejectsWrongPassword: Keystone's 401, named.
func TestRealKeystoneRejectsWrongPassword(t *testing.T) {
	s := ostest.Shared(t)
	data, err := os.ReadFile(s.CloudsYAML)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "clouds.yaml")
	os.WriteFile(bad, []byte(strings.Replace(string(data), s.Password, "wrong-password", 1)), 0o600)
	clearOS(t)
	t.Setenv("OS_CLIENT_CONFIG_FILE", bad)
	f := makeImage(t, t.TempDir(), "10.11", 16, "")
	_, err = publish.Publish(ctx(t), publish.Options{Recipe: f.Recipe, Image: f.Image, Cloud: ostest.Cloud, ControllerURL: "http://127.0.0.1:1"})
	if err == nil {
		t.Fatal("publish with a wrong password succeeded")
	}
	for _, want := range []string{"keystone at " + s.KeystoneURL, "wrong credentials", "HTTP 401", "The request you have made requires authentication"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// TestRealPublishMariaDBImage publishes the MariaDB image `make image`
// builds (out/mariadb-10.11.qcow2, or $STRATA_MARIADB_IMAGE) to the real
// Glance, the strata controller and Trove, and reports the seconds.
func TestRealPublishMariaDBImage(t *testing.T) {
	root, err := ostest.Root()
	if err != nil {
		t.Fatal(err)
	}
	image := os.Getenv("STRATA_MARIADB_IMAGE")
	if image == "" {
		image = filepath.Join(root, "out/mariadb-10.11.qcow2")
	}
	if _, err := os.Stat(image); err != nil {
		t.Fatalf("the MariaDB image is not built (%v): run `make image` first (make test-openstack does)", err)
	}
	s := ostest.Shared(t)
	c := controllerOnStack(t, s)
	useStack(t, s)
	var out strings.Builder
	res, err := publish.Publish(ctx(t), publish.Options{Recipe: filepath.Join(root, "images/mariadb-10.11.yaml"), Image: image,
		Cloud: ostest.Cloud, ControllerURL: c.URL, TroveURL: s.TroveURL, Out: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	fi, _ := os.Stat(image)
	t.Logf("published %s (%.1f MiB) in %.1f s (upload, verification, registration in strata and Trove; uploaded=%v):\n%s",
		filepath.Base(image), float64(fi.Size())/(1<<20), res.Seconds, res.Uploaded, out.String())
	again, err := publish.Publish(ctx(t), publish.Options{Recipe: filepath.Join(root, "images/mariadb-10.11.yaml"), Image: image,
		Cloud: ostest.Cloud, ControllerURL: c.URL, TroveURL: s.TroveURL})
	if err != nil || again.Uploaded {
		t.Fatalf("second publish: %+v, %v", again, err)
	}
	t.Logf("published again (nothing to upload) in %.1f s", again.Seconds)
}

// TestRealPlainTroveCloudNeedsNoStrataController: a Trove cloud without
// a strata controller (the catalog's database service is this stack's
// Trove), as the seeds' own workflow has it — build, upload to Glance,
// register the datastore version and its parameters in Trove. Publishing
// with nothing but the cloud's credentials registers the version in that
// Trove; so does the Packer post-processor, and `strata build --publish`
// (a tiny image really built, then published).
func TestRealPlainTroveCloudNeedsNoStrataController(t *testing.T) {
	s := ostest.Shared(t)
	useStack(t, s)
	tok := token(t, s.KeystoneURL, "admin", s.Password, "admin")
	troveVersion := func(id string) map[string]any {
		return getJSON(t, s.TroveURL+"/v1.0/"+s.ProjectID+"/mgmt/datastore-versions/"+id, tok)["version"].(map[string]any)
	}

	t.Run("publish", func(t *testing.T) {
		// 20 MiB: no other test publishes these bytes (blank qcow2s of one
		// size are identical).
		f := makeImage(t, t.TempDir(), "9.9", 20, "testdata/rules.json")
		var out strings.Builder
		res, err := publish.Publish(ctx(t), publish.Options{Recipe: f.Recipe, Image: f.Image, Cloud: ostest.Cloud, Out: &out})
		if err != nil {
			t.Fatalf("%v\n%s\n--- trove\n%s", err, out.String(), s.Log("trove"))
		}
		if res.VersionID != "" || res.TroveVersionID == "" || !res.Uploaded {
			t.Fatalf("result %+v", res)
		}
		if v := troveVersion(res.TroveVersionID); v["image"] != res.ImageID || v["name"] != "9.9" || v["active"] != true {
			t.Fatalf("version in Trove: %v", v)
		}
		params := list(getJSON(t, s.TroveURL+"/v1.0/"+s.ProjectID+"/mgmt/datastores/versions/"+res.TroveVersionID+"/parameters", tok), "configuration-parameters")
		if len(params) == 0 {
			t.Error("the validation rules were not loaded into Trove")
		}
		if !strings.Contains(out.String(), "is a Trove, not a strata controller: registering the version there") {
			t.Errorf("progress does not say where the version went:\n%s", out.String())
		}
		img := getJSON(t, s.GlanceURL+"/v2/images/"+res.ImageID, tok)
		if img["status"] != "active" || img["strata_sha256"] != f.SHA256 {
			t.Fatalf("image in Glance: %v", img)
		}
	})

	t.Run("packer post-processor", func(t *testing.T) {
		f := makeImage(t, t.TempDir(), "9.8", 21, "")
		p := &register.PostProcessor{Publish: publish.Publish}
		if err := p.Configure(map[string]interface{}{"recipe": f.Recipe, "cloud": ostest.Cloud}); err != nil {
			t.Fatal(err)
		}
		u := &sayUI{}
		art, _, _, err := p.PostProcess(ctx(t), u, &fileArtifact{files: []string{f.Image}})
		if err != nil {
			t.Fatalf("%v\n%s", err, strings.Join(u.lines, "\n"))
		}
		v := troveVersion(art.Id())
		if v["name"] != "9.8" || v["image"] != art.State("image_id") {
			t.Fatalf("artifact %s: version in Trove %v", art.Id(), v)
		}
	})

	t.Run("build --publish", func(t *testing.T) {
		dir := t.TempDir()
		writeTinyElements(t, filepath.Join(dir, "elements"))
		recipePath := filepath.Join(dir, "tiny-9.7.yaml")
		os.WriteFile(recipePath, []byte(`name: tiny-9.7
elements: [tiny-os]
skip_base: true
formats: [qcow2]
datastore:
  name: mariadb
  version: "9.7"
  manager: mariadb
  port: 3306
`), 0o644)
		t.Setenv("ELEMENTS_PATH", filepath.Join(dir, "elements"))
		root, err := ostest.Root()
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("STRATA_ELEMENTS_DIR", filepath.Join(root, "elements"))
		cmd := cli.NewBuildCommand("test")
		var out strings.Builder
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs([]string{"-f", recipePath, "-o", filepath.Join(dir, "out", "tiny-9.7"), "--image-cache", filepath.Join(dir, "cache"),
			"--publish", "--os-cloud", ostest.Cloud})
		if err := cmd.ExecuteContext(ctx(t)); err != nil {
			t.Fatalf("%v\n%s", err, tail(out.String(), 40))
		}
		m := regexp.MustCompile(`trove version (\S+)`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no trove version in the output:\n%s", tail(out.String(), 20))
		}
		if v := troveVersion(m[1]); v["name"] != "9.7" || v["datastore_name"] != "mariadb" {
			t.Fatalf("version in Trove: %v", v)
		}
	})
}

// fileArtifact is another builder's artifact: files only.
type fileArtifact struct{ files []string }

func (a *fileArtifact) BuilderId() string        { return "other.builder" }
func (a *fileArtifact) Files() []string          { return a.files }
func (a *fileArtifact) Id() string               { return "a" }
func (a *fileArtifact) String() string           { return "a" }
func (a *fileArtifact) State(string) interface{} { return nil }
func (a *fileArtifact) Destroy() error           { return nil }

type sayUI struct {
	packersdk.Ui
	lines []string
}

func (u *sayUI) Say(m string)     { u.lines = append(u.lines, m) }
func (u *sayUI) Message(m string) { u.lines = append(u.lines, m) }

// writeTinyElements writes an operating-system element whose root.d
// copies a shell from the host: enough for a real, small build.
func writeTinyElements(t *testing.T, dir string) {
	t.Helper()
	files := map[string]string{
		"tiny-os/element-provides": "operating-system\n",
		"tiny-os/root.d/10-tiny-os": `#!/bin/bash
set -eu
mkdir -p "$TARGET_ROOT"/{tmp,proc,sys,dev,run,etc,root}
for f in /bin/bash /bin/sh; do
	cp --parents -L "$f" "$TARGET_ROOT"
	for lib in $(ldd "$f" | grep -o '/[^ ]*'); do cp --parents -L "$lib" "$TARGET_ROOT"; done
done
echo tiny >"$TARGET_ROOT/etc/tiny-release"
`,
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

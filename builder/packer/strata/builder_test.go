package strata

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"strata/builder/build"
	"strata/builder/manifest"
)

// Prepare and the artifact are tested here; `packer build` with this
// builder runs in the Packer end-to-end tests (ci/e2e, make test-packer).

var repo = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}()

func setup(t *testing.T) {
	t.Helper()
	t.Setenv("STRATA_ELEMENTS_DIR", filepath.Join(repo, "elements"))
	t.Setenv("ELEMENTS_PATH", "")
	t.Setenv("DIB_IMAGE_CACHE", "")
}

func recipeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrepareRefusesBadInputNamingIt(t *testing.T) {
	setup(t)
	good := filepath.Join(repo, "images", "debian-minimal.yaml")
	for name, tc := range map[string]struct {
		raw  map[string]interface{}
		want string
	}{
		"no recipe":        {map[string]interface{}{}, "recipe: a recipe is required"},
		"unknown recipe":   {map[string]interface{}{"recipe": "images/no-such.yaml"}, "images/no-such.yaml"},
		"malformed recipe": {map[string]interface{}{"recipe": recipeFile(t, "name: x\nelemnts: [vm]\n")}, "elemnts"},
		"unknown element in recipe": {map[string]interface{}{"recipe": recipeFile(t, "name: x\nelements: [vm, debian-minimal, no-such-element]\n")},
			"no-such-element"},
		"unknown element added": {map[string]interface{}{"recipe": good, "elements": []string{"nope-element"}}, "nope-element"},
		"bad format":            {map[string]interface{}{"recipe": good, "formats": []string{"iso"}}, `unknown image format "iso"`},
		"bad size":              {map[string]interface{}{"recipe": good, "image_size": "lots"}, "image_size"},
		"bad elements_path":     {map[string]interface{}{"recipe": good, "elements_path": []string{"/no/such/dir"}}, "elements_path: /no/such/dir"},
		"image name a path":     {map[string]interface{}{"recipe": good, "image_name": "a/b"}, "image_name"},
		"bad compression":       {map[string]interface{}{"recipe": good, "compression": "lzma"}, "lzma"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := (&Builder{}).Prepare(tc.raw)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestPrepareTurnsTheRecipeAndOverridesIntoABuild(t *testing.T) {
	setup(t)
	out := t.TempDir()
	b := &Builder{Version: "1.2.3"}
	gen, warns, err := b.Prepare(map[string]interface{}{
		"recipe": filepath.Join(repo, "images", "mariadb-10.11.yaml"), "output_dir": out, "image_name": "db",
		"formats": []string{"qcow2", "raw"}, "image_size": "3GiB", "cache_dir": "/var/cache/x",
		"env": map[string]string{"DIB_RELEASE": "trixie"}, "packages": []string{"htop"},
	})
	if err != nil || len(warns) > 0 {
		t.Fatal(err, warns)
	}
	c := b.build
	if c.Output != filepath.Join(out, "db") || !slices.Equal(c.Formats, []string{"qcow2", "raw"}) || c.ImageSize != 3<<30 ||
		c.CacheDir != "/var/cache/x" || c.Env["DIB_RELEASE"] != "trixie" || !slices.Contains(c.Packages, "htop") ||
		c.Datastore == nil || c.Datastore.Manager != "mariadb" || c.Version != "packer-plugin-strata 1.2.3" {
		t.Errorf("build config = %+v", c)
	}
	if c.Env["DIB_STRATA_AGENT_BINARY"] != filepath.Join(repo, "bin", "strata-agent") {
		t.Errorf("the recipe's files were not made absolute: %v", c.Env)
	}
	if !slices.Equal(gen, Generated) {
		t.Errorf("generated vars = %v", gen)
	}
}

func TestArtifactListsTheFilesAndCarriesTheDigest(t *testing.T) {
	dir := t.TempDir()
	cfg := &build.Config{Output: filepath.Join(dir, "img"), Recipe: "/r/img.yaml"}
	var files []string
	for _, f := range []string{"img.qcow2", "img.qcow2.sha256", "img.manifest.json", "img.spdx.json"} {
		p := filepath.Join(dir, f)
		os.WriteFile(p, []byte(f), 0o644)
		files = append(files, p)
	}
	a, err := newArtifact(cfg, &build.Result{Files: files, Manifest: &manifest.Manifest{Outputs: []manifest.Output{{Format: "qcow2", SHA256: "abc"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if a.BuilderId() != BuilderID || a.Id() != "sha256:abc" || !slices.Equal(a.Files(), files) {
		t.Errorf("artifact = %s %s %v", a.BuilderId(), a.Id(), a.Files())
	}
	for k, want := range map[string]string{StateImage: files[0], StateDigest: "sha256:abc", StateManifest: files[2], StateRecipe: "/r/img.yaml", StateFormat: "qcow2"} {
		if got := a.State(k); got != want {
			t.Errorf("State(%s) = %v, want %s", k, got, want)
		}
	}
	if gd, ok := a.State("generated_data").(map[string]interface{}); !ok || gd["ImageDigest"] != "sha256:abc" {
		t.Errorf("generated_data = %v", a.State("generated_data"))
	}
	if err := a.Destroy(); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		t.Errorf("Destroy left %v", left)
	}
	if _, err := newArtifact(cfg, &build.Result{Manifest: &manifest.Manifest{}}); err == nil {
		t.Error("an artifact without an image was made")
	}
}

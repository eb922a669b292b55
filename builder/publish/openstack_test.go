//go:build openstack

package publish_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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

// TestRealCatalogDatabaseIsTroveNotStrata: without --controller-url the
// catalog's database service is used; on this cloud that is Trove, which
// publish recognises and refuses to treat as the strata controller —
// before uploading anything.
func TestRealCatalogDatabaseIsTroveNotStrata(t *testing.T) {
	s := ostest.Shared(t)
	useStack(t, s)
	// 20 MiB: no other test publishes these bytes (blank qcow2s of one
	// size are identical).
	f := makeImage(t, t.TempDir(), "9.9", 20, "")
	_, err := publish.Publish(ctx(t), publish.Options{Recipe: f.Recipe, Image: f.Image, Cloud: ostest.Cloud})
	if err == nil || !strings.Contains(err.Error(), "is not a strata controller") || !strings.Contains(err.Error(), s.TroveURL) {
		t.Fatalf("error: %v", err)
	}
	tok := token(t, s.KeystoneURL, "admin", s.Password, "admin")
	imgs := list(getJSON(t, s.GlanceURL+"/v2/images?strata_sha256="+f.SHA256, tok), "images")
	if len(imgs) != 0 {
		t.Fatalf("an image was uploaded: %v", imgs)
	}
}

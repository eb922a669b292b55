package publish_test

import (
	"strings"
	"testing"

	"strata/builder/publish"
	"strata/ci/openstack/ostest"
)

// controllerOnStack starts a strata controller in OpenStack mode on the
// stack: tokens checked by its Keystone, images in its Glance.
func controllerOnStack(t *testing.T, s *ostest.Stack) *controller {
	return startController(t, "--keystone-url", s.KeystoneURL, "--keystone-user", "admin", "--keystone-password", s.Password,
		"--keystone-project", "admin", "--image-store", "glance")
}

// useStack points publishing at the stack's clouds.yaml.
func useStack(t *testing.T, s *ostest.Stack) {
	clearOS(t)
	t.Setenv("OS_CLIENT_CONFIG_FILE", s.CloudsYAML)
}

// TestSmokePublishToRealGlanceAndTrove is the one OpenStack case of `make
// test`: Debian's keystone, glance-api and trove-api on 127.0.0.1, a
// strata controller in OpenStack mode, and a tiny image published to all
// of them, then published again (nothing uploaded or created).
func TestSmokePublishToRealGlanceAndTrove(t *testing.T) {
	s := ostest.Shared(t)
	c := controllerOnStack(t, s)
	useStack(t, s)
	f := makeImage(t, t.TempDir(), "10.11", 16, "testdata/rules.json")
	var out strings.Builder
	res, err := publish.Publish(ctx(t), publish.Options{Recipe: f.Recipe, Image: f.Image, Cloud: ostest.Cloud,
		ControllerURL: c.URL, TroveURL: s.TroveURL, Out: &out})
	if err != nil {
		t.Fatalf("publish: %v\n%s\n--- controller\n%s\n--- trove\n%s", err, out.String(), c.logText(), s.Log("trove"))
	}
	t.Logf("publish (%.1f s):\n%s", res.Seconds, out.String())
	if !res.Uploaded || !res.VersionCreated || res.TroveVersionID == "" {
		t.Fatalf("result: %+v", res)
	}
	tok := token(t, s.KeystoneURL, "admin", s.Password, "admin")
	img := getJSON(t, s.GlanceURL+"/v2/images/"+res.ImageID, tok)
	d := digestsOf(t, f.Image)
	if img["status"] != "active" || img["checksum"] != d.md5 || img["os_hash_value"] != d.sha512 || img["strata_sha256"] != f.SHA256 ||
		img["disk_format"] != "qcow2" || img["container_format"] != "bare" || img["min_disk"] != float64(1) {
		t.Fatalf("image in Glance: %v", img)
	}
	tv := getJSON(t, s.TroveURL+"/v1.0/"+s.ProjectID+"/mgmt/datastore-versions/"+res.TroveVersionID, tok)["version"].(map[string]any)
	if tv["image"] != res.ImageID || tv["datastore_name"] != "mariadb" || tv["name"] != "10.11" || tv["datastore_manager"] != "mariadb" || tv["active"] != true {
		t.Fatalf("version in Trove: %v", tv)
	}
	params := list(getJSON(t, s.TroveURL+"/v1.0/"+s.ProjectID+"/mgmt/datastores/versions/"+res.TroveVersionID+"/parameters", tok), "configuration-parameters")
	names := map[string]bool{}
	for _, p := range params {
		names[p["name"].(string)] = true
	}
	if len(params) != 3 || !names["max_connections"] || !names["character_set_server"] || !names["innodb_buffer_pool_size"] {
		t.Fatalf("Trove's parameters (integer and string rules): %v", params)
	}
	if !strings.Contains(out.String(), "not registered: autocommit (boolean), long_query_time (float)") {
		t.Errorf("progress does not name the rules Trove cannot hold:\n%s", out.String())
	}
	sv := getJSON(t, c.URL+"/v1.0/"+s.ProjectID+"/mgmt/datastore-versions/"+res.VersionID, tok)["version"].(map[string]any)
	if sv["image"] != res.ImageID || sv["port"] != float64(3306) || sv["boot_timeout"] != float64(600) {
		t.Fatalf("version in the strata controller: %v", sv)
	}

	out.Reset()
	again, err := publish.Publish(ctx(t), publish.Options{Recipe: f.Recipe, Image: f.Image, Cloud: ostest.Cloud,
		ControllerURL: c.URL, TroveURL: s.TroveURL, Out: &out})
	if err != nil {
		t.Fatalf("second publish: %v\n%s", err, out.String())
	}
	if again.Uploaded || again.VersionCreated || again.ImageID != res.ImageID || again.TroveVersionID != res.TroveVersionID {
		t.Fatalf("second publish: %+v (first %+v)\n%s", again, res, out.String())
	}
	if n := strings.Count(out.String(), "is up to date"); n != 2 {
		t.Errorf("want both versions up to date, progress:\n%s", out.String())
	}
}

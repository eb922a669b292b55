package publish_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"strata/builder/publish"
)

// token logs in at a Keystone v3 (the embedded one or the real one).
func token(t *testing.T, authURL, user, password, project string) string {
	t.Helper()
	body := map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{"user": map[string]any{
			"name": user, "password": password, "domain": map[string]string{"name": "Default"}}}},
		"scope": map[string]any{"project": map[string]any{"name": project, "domain": map[string]string{"name": "Default"}}}}}
	data, _ := json.Marshal(body)
	resp, err := http.Post(strings.TrimRight(authURL, "/")+"/auth/tokens", "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("login at %s: HTTP %d", authURL, resp.StatusCode)
	}
	return resp.Header.Get("X-Subject-Token")
}

// getJSON GETs url with a token and decodes the answer.
func getJSON(t *testing.T, url, tok string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-Auth-Token", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: HTTP %d, %v", url, resp.StatusCode, err)
	}
	return doc
}

func list(doc map[string]any, key string) []map[string]any {
	var out []map[string]any
	items, _ := doc[key].([]any)
	for _, it := range items {
		m, _ := it.(map[string]any)
		out = append(out, m)
	}
	return out
}

// embedded starts an embedded controller and points OS_* at its openrc.
func embedded(t *testing.T) (*controller, string, string) {
	c := startController(t)
	useOpenrc(t, filepath.Join(c.State, "openrc"))
	tok := token(t, os.Getenv("OS_AUTH_URL"), "admin", os.Getenv("OS_PASSWORD"), "admin")
	project := getJSON(t, os.Getenv("OS_AUTH_URL")+"/auth/catalog", tok) // proves the token; project from the catalog URL below
	var projectID string
	for _, e := range list(project, "catalog") {
		if e["type"] == "database" {
			eps, _ := e["endpoints"].([]any)
			url, _ := eps[0].(map[string]any)["url"].(string)
			projectID = url[strings.LastIndex(url, "/")+1:]
		}
	}
	return c, tok, projectID
}

// TestPublishIntoEmbeddedControllerTwiceUploadsOnce publishes into a real
// strata controller process (embedded mode: its own Keystone and Glance
// API): once, again (nothing uploaded or created), then a changed image
// (a new image; the version now boots it).
func TestPublishIntoEmbeddedControllerTwiceUploadsOnce(t *testing.T) {
	c, tok, project := embedded(t)
	f := makeImage(t, t.TempDir(), "10.11", 16, "testdata/rules.json")
	var out strings.Builder
	res, err := publish.Publish(ctx(t), publish.Options{Recipe: f.Recipe, Image: f.Image, Out: &out})
	if err != nil {
		t.Fatalf("publish: %v\n%s\n%s", err, out.String(), c.logText())
	}
	if !res.Uploaded || !res.VersionCreated || res.ImageID == "" || res.VersionID == "" || res.TroveVersionID != "" {
		t.Fatalf("first publish: %+v\n%s", res, out.String())
	}
	img := getJSON(t, c.URL+"/image/v2/images/"+res.ImageID, tok)
	if img["status"] != "active" || img["strata_sha256"] != f.SHA256 || img["disk_format"] != "qcow2" || img["hw_rng_model"] != "virtio" {
		t.Fatalf("image in the controller's Glance API: %v", img)
	}
	if tags, _ := img["tags"].([]any); len(tags) != 2 || tags[0] != "strata" {
		t.Fatalf("image tags: %v", img["tags"])
	}
	v := getJSON(t, c.URL+"/v1.0/"+project+"/datastores/mariadb/versions/10.11", tok)["version"].(map[string]any)
	if v["id"] != res.VersionID || v["image"] != res.ImageID || v["active"] != true {
		t.Fatalf("version through Trove's API: %v", v)
	}
	params := list(getJSON(t, c.URL+"/v1.0/"+project+"/datastores/versions/"+res.VersionID+"/parameters", tok), "configuration-parameters")
	if len(params) != 5 {
		t.Fatalf("want all 5 rules as parameters (strata keeps every type), got %v", params)
	}

	out.Reset()
	again, err := publish.Publish(ctx(t), publish.Options{Recipe: f.Recipe, Image: f.Image, Out: &out})
	if err != nil {
		t.Fatalf("second publish: %v\n%s", err, out.String())
	}
	if again.Uploaded || again.VersionCreated || again.ImageID != res.ImageID || again.VersionID != res.VersionID {
		t.Fatalf("second publish did something: %+v\n%s", again, out.String())
	}
	if !strings.Contains(out.String(), "not uploading") || !strings.Contains(out.String(), "is up to date") || !strings.Contains(out.String(), "5 unchanged") {
		t.Errorf("second publish's progress does not say nothing changed:\n%s", out.String())
	}
	imgs := list(getJSON(t, c.URL+"/image/v2/images?tag=strata", tok), "images")
	if len(imgs) != 1 {
		t.Fatalf("after two publishes, %d images", len(imgs))
	}

	// A changed image: new bytes, same datastore version.
	g := makeImage(t, t.TempDir(), "10.11", 32, "testdata/rules.json")
	out.Reset()
	changed, err := publish.Publish(ctx(t), publish.Options{Recipe: g.Recipe, Image: g.Image, Out: &out})
	if err != nil {
		t.Fatalf("publish of a changed image: %v\n%s", err, out.String())
	}
	if !changed.Uploaded || changed.ImageID == res.ImageID || changed.VersionCreated || changed.VersionID != res.VersionID {
		t.Fatalf("changed image: %+v (first %+v)", changed, res)
	}
	v = getJSON(t, c.URL+"/v1.0/"+project+"/datastores/versions/"+res.VersionID, tok)["version"].(map[string]any)
	if v["image"] != changed.ImageID {
		t.Fatalf("the version boots %v, want the new image %s", v["image"], changed.ImageID)
	}
	if !strings.Contains(out.String(), "updated datastore version mariadb 10.11") {
		t.Errorf("progress does not report the update:\n%s", out.String())
	}
}

// TestPublishBadInputEmbedded: wrong credentials, unreachable services,
// a corrupted image — each a message naming the service or file, and
// nothing uploaded.
func TestPublishBadInputEmbedded(t *testing.T) {
	c, tok, _ := embedded(t)
	f := makeImage(t, t.TempDir(), "10.11", 16, "")
	opts := publish.Options{Recipe: f.Recipe, Image: f.Image}
	noImages := func(t *testing.T) {
		t.Helper()
		if imgs := list(getJSON(t, c.URL+"/image/v2/images", tok), "images"); len(imgs) != 0 {
			t.Fatalf("a failed publish left %d images: %v", len(imgs), imgs)
		}
	}
	expect := func(t *testing.T, err error, parts ...string) {
		t.Helper()
		if err == nil {
			t.Fatal("publish succeeded")
		}
		for _, p := range parts {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not say %q", err, p)
			}
		}
	}

	t.Run("keystone unreachable", func(t *testing.T) {
		t.Setenv("OS_AUTH_URL", "http://127.0.0.1:1/v3")
		_, err := publish.Publish(ctx(t), opts)
		expect(t, err, "keystone at http://127.0.0.1:1/v3", "unreachable", "connection refused")
	})
	t.Run("controller unreachable", func(t *testing.T) {
		o := opts
		o.ControllerURL = "http://127.0.0.1:1"
		_, err := publish.Publish(ctx(t), o)
		expect(t, err, "strata controller at http://127.0.0.1:1/v1.0/", "unreachable")
		noImages(t)
	})
	t.Run("trove unreachable", func(t *testing.T) {
		o := opts
		o.TroveURL = "http://127.0.0.1:1"
		_, err := publish.Publish(ctx(t), o)
		expect(t, err, "trove at http://127.0.0.1:1/v1.0/", "unreachable")
		noImages(t)
	})
	t.Run("missing variables", func(t *testing.T) {
		t.Setenv("OS_USERNAME", "")
		t.Setenv("OS_PASSWORD", "")
		_, err := publish.Publish(ctx(t), opts)
		expect(t, err, "OS_USERNAME, OS_PASSWORD not set")
	})
	t.Run("image changed after the build", func(t *testing.T) {
		g := makeImage(t, t.TempDir(), "10.11", 16, "")
		os.WriteFile(g.Image+".sha256", []byte(strings.Repeat("0", 64)+"  x\n"), 0o644)
		_, err := publish.Publish(ctx(t), publish.Options{Recipe: g.Recipe, Image: g.Image})
		expect(t, err, "mariadb-10.11.qcow2.sha256 says 0000", "the file changed after the build")
		noImages(t)
	})
	t.Run("recipe for another version", func(t *testing.T) {
		g := makeImage(t, t.TempDir(), "11.4", 16, "")
		_, err := publish.Publish(ctx(t), publish.Options{Recipe: f.Recipe, Image: g.Image})
		expect(t, err, "was built for datastore mariadb 11.4", "describes mariadb 10.11")
	})
	t.Run("bad rules", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "rules.json")
		os.WriteFile(bad, []byte(`{"configuration-parameters": [{"name": "x", "type": "integer", "min": 5, "max": 1, "restart_required": false}]}`), 0o644)
		g := makeImage(t, t.TempDir(), "10.11", 16, bad)
		_, err := publish.Publish(ctx(t), publish.Options{Recipe: g.Recipe, Image: g.Image})
		expect(t, err, "validation rules", "min 5 is above max 1")
		noImages(t)
	})
	// Last: a failed login makes the user and address suspects, whose
	// logins the Keystone subset checks one a second for a while; the
	// subtests above log in with the right password.
	t.Run("wrong password", func(t *testing.T) {
		t.Setenv("OS_PASSWORD", "not-the-password")
		_, err := publish.Publish(ctx(t), opts)
		expect(t, err, "keystone at "+os.Getenv("OS_AUTH_URL"), "wrong credentials", "HTTP 401")
		var se *publish.ServiceError
		if !errors.As(err, &se) || se.Service != "keystone" || se.Status != 401 {
			t.Errorf("error is not a keystone ServiceError: %#v", err)
		}
		noImages(t)
	})
}

// TestStrataImagePublishCommand runs what a user types, `strata image
// publish RECIPE --image FILE` with the controller's openrc sourced, twice.
func TestStrataImagePublishCommand(t *testing.T) {
	embedded(t)
	f := makeImage(t, t.TempDir(), "10.11", 16, "testdata/rules.json")
	for i, want := range []string{"(uploaded)\nversion ", "(already there)\nversion "} {
		cmd := exec.Command(strataBin, "image", "publish", f.Recipe, "--image", f.Image)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("run %d: %v\n%s", i+1, err, stderr.String())
		}
		if !strings.Contains(stdout.String(), want) || !strings.Contains(stderr.String(), "publish: mariadb 10.11 → image") {
			t.Fatalf("run %d: stdout %q, stderr:\n%s", i+1, stdout.String(), stderr.String())
		}
	}
	// build --publish needs a recipe to know what to register.
	out, err := exec.Command(strataBin, "build", "--publish", "vm", "debian-minimal").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--publish needs a recipe (-f)") {
		t.Fatalf("build --publish without -f: %v: %s", err, out)
	}
}

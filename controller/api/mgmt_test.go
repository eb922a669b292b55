package api_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"strata/controller/identity"
)

// TestMgmtDatastoreVersionsAsTrove registers, lists, edits datastore
// versions and their configuration parameters through Trove's management
// API shapes (what `strata image publish` and python-troveclient send),
// including strata's extensions, and checks that bad requests change
// nothing and that the API is for admins only.
func TestMgmtDatastoreVersionsAsTrove(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()

	// The rig's mariadb 10.11 is listed with Trove's mgmt fields plus
	// port and boot timeout; the answer is marked as strata's.
	code, doc := c.do("GET", "/mgmt/datastore-versions", nil)
	vs, _ := doc["versions"].([]any)
	if code != 200 || len(vs) != 1 {
		t.Fatalf("list: HTTP %d %v", code, doc)
	}
	v := vs[0].(map[string]any)
	if v["datastore_name"] != "mariadb" || v["name"] != "10.11" || v["datastore_manager"] != "mariadb" || v["image"] != r.imageID ||
		v["default"] != true || v["port"] != float64(3306) {
		t.Fatalf("listed version: %v", v)
	}
	if h := c.header("GET", "/mgmt/datastore-versions", "X-Strata-Controller"); h == "" {
		t.Error("management answers lack X-Strata-Controller")
	}

	// Create as Trove's client does: 202 and no body; port from the
	// manager, then from the extension field.
	c.must(202, "POST", "/mgmt/datastore-versions", map[string]any{"version": map[string]any{
		"datastore_name": "mariadb", "datastore_manager": "mariadb", "name": "11.4", "image": r.imageID,
		"active": true, "default": false, "packages": []string{"mariadb-server"}}})
	c.must(202, "POST", "/mgmt/datastore-versions", map[string]any{"version": map[string]any{
		"datastore_name": "valkey", "datastore_manager": "valkey", "name": "8", "image": r.imageID,
		"active": true, "port": 6380, "boot_timeout": 300}})
	byName := map[string]map[string]any{}
	for _, x := range c.must(200, "GET", "/mgmt/datastore-versions", nil)["versions"].([]any) {
		m := x.(map[string]any)
		byName[m["datastore_name"].(string)+" "+m["name"].(string)] = m
	}
	v114, v8 := byName["mariadb 11.4"], byName["valkey 8"]
	if v114 == nil || v114["port"] != float64(3306) || v114["default"] != false || v114["boot_timeout"] != float64(900) {
		t.Fatalf("mariadb 11.4: %v", v114)
	}
	if v8 == nil || v8["port"] != float64(6380) || v8["boot_timeout"] != float64(300) || v8["default"] != true {
		t.Fatalf("valkey 8 (the first version of a new datastore is its default): %v", v8)
	}
	// The public API sees the new version too.
	c.must(200, "GET", "/datastores/mariadb/versions/11.4", nil)

	// Edit as Trove's client does (a flat body): image, packages, inactive.
	img2 := r.secondImage(t)
	id := v114["id"].(string)
	c.must(202, "PATCH", "/mgmt/datastore-versions/"+id, map[string]any{"image": img2, "packages": []string{"mariadb-server", "mariadb-client"}, "active": false})
	got := c.must(200, "GET", "/mgmt/datastore-versions/"+id, nil)["version"].(map[string]any)
	if got["image"] != img2 || got["active"] != false || len(got["packages"].([]any)) != 2 {
		t.Fatalf("after edit: %v", got)
	}

	// Parameters: Trove's shape, every rule type, sizes as strings or
	// numbers; then update, list, delete.
	p := "/mgmt/datastores/versions/" + id + "/parameters"
	c.must(200, "POST", p, map[string]any{"configuration-parameter": map[string]any{
		"name": "max_connections", "data_type": "integer", "restart_required": 0, "min_size": "1", "max_size": "100000"}})
	c.must(200, "POST", p, map[string]any{"configuration-parameter": map[string]any{
		"name": "autocommit", "data_type": "boolean", "restart_required": false}})
	c.must(200, "POST", p, map[string]any{"configuration-parameter": map[string]any{
		"name": "character_set_server", "data_type": "string", "restart_required": 0, "allowed_values": []string{"utf8mb4", "latin1"}, "apply": "live"}})
	c.must(200, "POST", p, map[string]any{"configuration-parameter": map[string]any{
		"name": "init_connect", "data_type": "string", "restart_required": 0, "allow_empty": true}})
	if ic := c.must(200, "GET", p+"/init_connect", nil); ic["allow_empty"] != true {
		t.Fatalf("init_connect: %v", ic)
	}
	c.must(200, "POST", "/configurations", map[string]any{"configuration": map[string]any{"name": "empty-init",
		"values": map[string]any{"init_connect": ""}, "datastore": map[string]any{"type": "mariadb", "version": "11.4"}}})
	c.must(204, "DELETE", p+"/init_connect", nil)
	c.must(200, "PUT", p+"/max_connections", map[string]any{"configuration-parameter": map[string]any{
		"name": "max_connections", "data_type": "integer", "restart_required": 1, "min_size": 10, "max_size": 5000}})
	params := c.must(200, "GET", p, nil)["configuration-parameters"].([]any)
	if len(params) != 3 {
		t.Fatalf("parameters: %v", params)
	}
	mc := c.must(200, "GET", p+"/max_connections", nil)
	if mc["min_size"] != float64(10) || mc["max_size"] != float64(5000) || mc["restart_required"] != true || mc["apply"] != "restart" {
		t.Fatalf("max_connections after update: %v", mc)
	}
	// Configuration groups use the rules at once.
	code, doc = c.do("POST", "/configurations", map[string]any{"configuration": map[string]any{"name": "g",
		"values": map[string]any{"max_connections": 6000}, "datastore": map[string]any{"type": "mariadb", "version": "11.4"}}})
	if code != 422 || !strings.Contains(errorMessage(doc), "max_connections") {
		t.Fatalf("a value above the new max: HTTP %d %v", code, doc)
	}
	c.must(204, "DELETE", p+"/autocommit", nil)
	if n := len(c.must(200, "GET", p, nil)["configuration-parameters"].([]any)); n != 2 {
		t.Fatalf("after delete: %d parameters", n)
	}

	// Bad requests: each a 4xx naming the problem, nothing changed.
	before := c.must(200, "GET", "/mgmt/datastore-versions", nil)
	for _, bc := range []badCase{
		{"POST", "/mgmt/datastore-versions", `{"version": {"datastore_name": "mariadb", "datastore_manager": "mariadb", "name": "12", "image": "5c6f0b1e-0000-4000-8000-000000000001", "active": true}}`, 400, "Image 5c6f0b1e-0000-4000-8000-000000000001 cannot be found."},
		{"POST", "/mgmt/datastore-versions", `{"version": {"datastore_name": "mariadb", "datastore_manager": "mariadb", "name": "11.4", "image": "` + r.imageID + `", "active": true}}`, 400, "already exists"},
		{"POST", "/mgmt/datastore-versions", `{"version": {"datastore_name": "mariadb", "name": "12", "image": "x", "active": true}}`, 400, "datastore_manager"},
		{"POST", "/mgmt/datastore-versions", `{"version": {"datastore_name": "mariadb", "datastore_manager": "mariadb", "name": "12", "active": true}}`, 400, "Image must be specified."},
		{"POST", "/mgmt/datastore-versions", `{"version": {"datastore_name": "x", "datastore_manager": "cassandra", "name": "4", "image": "` + r.imageID + `", "active": true}}`, 400, "version.port is required"},
		{"POST", "/mgmt/datastore-versions", `{"version": {"datastore_name": "mariadb", "datastore_manager": "mariadb", "name": "12", "image_tags": ["strata"], "active": true}}`, 400, "image_tags"},
		{"POST", "/mgmt/datastore-versions", `{"version": {"datastore_name": "mariadb", "bogus": 1}}`, 400, "unknown field"},
		{"PATCH", "/mgmt/datastore-versions/" + id, `{"image": "5c6f0b1e-0000-4000-8000-000000000001"}`, 400, "cannot be found"},
		{"PATCH", "/mgmt/datastore-versions/" + id, `{"name": "other"}`, 400, "renaming"},
		{"PATCH", "/mgmt/datastore-versions/6f1c2d3e-0000-4000-8000-00000000dead", `{"active": true}`, 404, "datastore version"},
		{"POST", p, `{"configuration-parameter": {"name": "max_connections", "data_type": "integer", "restart_required": 0, "min_size": "1", "max_size": "2"}}`, 400, "already exists"},
		{"POST", p, `{"configuration-parameter": {"name": "x", "data_type": "integer", "restart_required": 0, "min_size": "9", "max_size": "2"}}`, 400, "min 9 is above max 2"},
		{"POST", p, `{"configuration-parameter": {"name": "x", "data_type": "enum", "restart_required": 0}}`, 400, "not integer, float, string or boolean"},
		{"POST", p, `{"configuration-parameter": {"name": "x", "data_type": "integer", "restart_required": 0, "allow_empty": true}}`, 400, "allow_empty applies to string only"},
		{"POST", p, `{"configuration-parameter": {"name": "x", "data_type": "integer", "restart_required": 2}}`, 400, "restart_required"},
		{"POST", p, `{"configuration-parameter": {"name": "x", "data_type": "integer", "restart_required": 0, "min_size": "ten"}}`, 400, "not a number"},
		{"PUT", p + "/nope", `{"configuration-parameter": {"name": "nope", "data_type": "string", "restart_required": 0}}`, 404, "nope"},
		{"DELETE", p + "/nope", "", 404, "nope"},
	} {
		code, doc := c.raw(bc.method, "/v1.0/"+c.project+bc.path, bc.body)
		if code != bc.code || !strings.Contains(errorMessage(doc), bc.msg) {
			t.Errorf("%s %s %s: HTTP %d %q, want %d with %q", bc.method, bc.path, bc.body, code, errorMessage(doc), bc.code, bc.msg)
		}
	}
	after := c.must(200, "GET", "/mgmt/datastore-versions", nil)
	if len(after["versions"].([]any)) != len(before["versions"].([]any)) {
		t.Errorf("bad requests changed the versions: %v", after)
	}
	if n := len(c.must(200, "GET", p, nil)["configuration-parameters"].([]any)); n != 2 {
		t.Errorf("bad requests changed the parameters: %d", n)
	}

	// Admins only.
	ids := &identity.Store{DB: r.ctl.DB}
	if _, err := ids.CreateProject(context.Background(), "shop"); err != nil {
		t.Fatal(err)
	}
	if _, err := ids.CreateUser(context.Background(), "clerk", "clerk-password", "shop", false); err != nil {
		t.Fatal(err)
	}
	u := r.login("clerk", "clerk-password")
	for _, path := range []string{"/mgmt/datastore-versions", p} {
		if code, doc := u.do("GET", path, nil); code != 403 || !strings.Contains(errorMessage(doc), "admin role") {
			t.Errorf("GET %s as a member: HTTP %d %v", path, code, doc)
		}
	}
}

// secondImage registers another tiny image in the local store.
func (r *rig) secondImage(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "other.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, "32M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	c := r.admin()
	tok := c.token
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Through the Glance API, as publishing does.
	code, doc := c.raw("POST", "/image/v2/images", `{"name": "other", "disk_format": "qcow2", "container_format": "bare"}`)
	if code != 201 {
		t.Fatalf("create image: HTTP %d %v", code, doc)
	}
	id := doc["id"].(string)
	req, _ := http.NewRequest("PUT", c.base+"/image/v2/images/"+id+"/file", f)
	req.Header.Set("X-Auth-Token", tok)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("upload: HTTP %d", resp.StatusCode)
	}
	return id
}

// header returns a response header of a request under /v1.0/{project}.
func (c *client) header(method, path, name string) string {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.base+"/v1.0/"+c.project+path, nil)
	req.Header.Set("X-Auth-Token", c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get(name)
}

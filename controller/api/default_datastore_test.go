package api_test

import (
	"strings"
	"testing"
)

// addValkey registers a second datastore, so that a create without a
// datastore is ambiguous unless a default is configured.
func addValkey(c *client, imageID string) {
	c.must(202, "POST", "/mgmt/datastore-versions", map[string]any{"version": map[string]any{
		"datastore_name": "valkey", "datastore_manager": "valkey", "name": "8", "image": imageID, "active": true, "port": 6380}})
}

func createWithoutDatastore(name string) map[string]any {
	body := createBody(name, nil)
	delete(body["instance"].(map[string]any), "datastore")
	return body
}

// Trove's default_datastore: a create that names no datastore gets the
// configured one (with its configured version); without a default and
// with several datastores it is refused with 400 as before; a default
// that does not exist is a 404 naming the flag.
func TestACreateWithoutDatastoreTakesTheConfiguredDefault(t *testing.T) {
	t.Parallel()
	t.Run("none configured", func(t *testing.T) {
		r := newRig(t, rigOptions{})
		c := r.admin()
		addValkey(c, r.imageID)
		code, doc := c.do("POST", "/instances", createWithoutDatastore("nodefault"))
		if code != 400 || !strings.Contains(errorMessage(doc), "datastore.type is required") {
			t.Fatalf("no default, two datastores: %d %v", code, doc)
		}
	})
	t.Run("configured", func(t *testing.T) {
		r := newRig(t, rigOptions{defaultDatastore: "mariadb", defaultVersion: "10.11"})
		c := r.admin()
		addValkey(c, r.imageID)
		in := c.must(200, "POST", "/instances", createWithoutDatastore("bydefault"))["instance"].(map[string]any)
		ds := in["datastore"].(map[string]any)
		if ds["type"] != "mariadb" || ds["version"] != "10.11" {
			t.Fatalf("datastore of a create without one = %v", ds)
		}
		// A named datastore is used as named: its missing version is a
		// 404 naming it, not the default.
		body := createWithoutDatastore("named")
		body["instance"].(map[string]any)["datastore"] = map[string]any{"type": "mariadb", "version": "nosuch"}
		code, doc := c.do("POST", "/instances", body)
		if code != 404 || !strings.Contains(errorMessage(doc), "nosuch") || strings.Contains(errorMessage(doc), "--default-datastore") {
			t.Fatalf("a named datastore version: %d %v", code, doc)
		}
	})
	t.Run("configured but missing", func(t *testing.T) {
		r := newRig(t, rigOptions{defaultDatastore: "cassandra"})
		code, doc := r.admin().do("POST", "/instances", createWithoutDatastore("missing"))
		if code != 404 || !strings.Contains(errorMessage(doc), "--default-datastore") || !strings.Contains(errorMessage(doc), "cassandra") {
			t.Fatalf("a default that is not registered: %d %v", code, doc)
		}
	})
}

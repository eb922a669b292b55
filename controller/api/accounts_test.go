package api_test

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"strata/controller/store/storetest"
)

// TestRootOnCreateThroughTheAPI: a version with root_on_create (set
// through the mgmt API) gives each new instance its root account at
// prepare with the password the create response carried, and nothing in
// the controller's database keeps that password afterwards.
func TestRootOnCreateThroughTheAPI(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	vpath := "/mgmt/datastore-versions/" + r.version.ID
	if v := c.must(200, "GET", vpath, nil)["version"].(map[string]any); v["root_on_create"] != false {
		t.Fatalf("root_on_create by default = %v", v["root_on_create"])
	}
	c.must(400, "PATCH", vpath, map[string]any{"root_on_create": "yes"})
	c.must(202, "PATCH", vpath, map[string]any{"root_on_create": true})
	if v := c.must(200, "GET", vpath, nil)["version"].(map[string]any); v["root_on_create"] != true {
		t.Fatalf("root_on_create after PATCH = %v", v["root_on_create"])
	}

	in := c.must(200, "POST", "/instances", createBody("rooted", nil))["instance"].(map[string]any)
	id := in["id"].(string)
	pw, _ := in["password"].(string)
	if len(pw) < 32 {
		t.Fatalf("create response password = %q, want a generated root password", pw)
	}
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	g := r.compute.guest(id)
	g.mu.Lock()
	got := g.rootPassword
	g.mu.Unlock()
	if got != pw {
		t.Fatalf("prepare set root password %q, the create response said %q", got, pw)
	}
	if root := c.must(200, "GET", "/instances/"+id+"/root", nil); root["rootEnabled"] != true {
		t.Fatalf("root after root_on_create = %v", root)
	}
	// Shown once: not in the instance's view, nor kept anywhere.
	if _, ok := c.instance(id)["password"]; ok {
		t.Fatal("GET /instances/{id} shows the root password")
	}
	for _, q := range []string{
		"SELECT COUNT(*) FROM agent_ops WHERE args LIKE ? OR result LIKE ?",
		"SELECT COUNT(*) FROM tasks WHERE payload LIKE ? OR payload LIKE ?",
	} {
		if n := storetest.Count(t, r.ctl.DB, q, "%"+pw+"%", "%"+pw+"%"); n != 0 {
			t.Fatalf("the root password is kept in the controller's database (%s)", q)
		}
	}

	// Switched off again: no root, no password.
	c.must(202, "PATCH", vpath, map[string]any{"root_on_create": false})
	in = c.must(200, "POST", "/instances", createBody("plain", nil))["instance"].(map[string]any)
	if _, ok := in["password"]; ok {
		t.Fatalf("create without root_on_create returned a password: %v", in)
	}
	id = in["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	if root := c.must(200, "GET", "/instances/"+id+"/root", nil); root["rootEnabled"] != false {
		t.Fatalf("root without root_on_create = %v", root)
	}
}

// TestUserUpdateAndChangePasswordsThroughTheAPI: PUT on a user renames it
// and changes its host and password; PUT on the users changes several
// passwords; conflicts and unknown users change nothing.
func TestUserUpdateAndChangePasswordsThroughTheAPI(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("accounts", map[string]any{
		"users": []any{
			map[string]any{"name": "app", "password": "app-pw-1"},
			map[string]any{"name": "bi", "password": "bi-pw-1"},
		},
	}))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	g := r.compute.guest(id)
	passwords := func() map[string]string {
		g.mu.Lock()
		defer g.mu.Unlock()
		out := map[string]string{}
		for k, v := range g.passwords {
			out[k] = v
		}
		return out
	}
	users := "/instances/" + id + "/users"

	c.must(202, "PUT", users+"/app", map[string]any{"user": map[string]any{"password": "app-pw-2"}})
	if p := passwords(); p["app@%"] != "app-pw-2" || p["bi@%"] != "bi-pw-1" {
		t.Fatalf("after a password change: %v", p)
	}
	c.must(202, "PUT", users+"/app", map[string]any{"user": map[string]any{"name": "app2", "host": "10.0.0.%", "password": "app-pw-3"}})
	if p := passwords(); p["app2@10.0.0.%"] != "app-pw-3" || p["app@%"] != "" {
		t.Fatalf("after a rename: %v", p)
	}
	list := names(c.must(200, "GET", users, nil)["users"].([]any), "name")
	slices.Sort(list)
	if !slices.Equal(list, []string{"app2", "bi"}) {
		t.Fatalf("users after the rename = %v", list)
	}
	c.must(404, "GET", users+"/app", nil)
	if u := c.must(200, "GET", users+"/app2%4010.0.0.%25", nil)["user"].(map[string]any); u["host"] != "10.0.0.%" {
		t.Fatalf("renamed user = %v", u)
	}

	// A rename onto an existing account: 409, nothing changes.
	before := passwords()
	c.must(409, "PUT", users+"/bi", map[string]any{"user": map[string]any{"name": "app2", "host": "10.0.0.%"}})
	if p := passwords(); !maps.Equal(p, before) {
		t.Fatalf("a refused rename changed %v to %v", before, p)
	}

	// Several passwords at once.
	c.must(202, "PUT", users, map[string]any{"users": []any{
		map[string]any{"name": "app2", "host": "10.0.0.%", "password": "app-pw-4"},
		map[string]any{"name": "bi", "password": "bi-pw-2"},
	}})
	if p := passwords(); p["app2@10.0.0.%"] != "app-pw-4" || p["bi@%"] != "bi-pw-2" {
		t.Fatalf("after change passwords: %v", p)
	}
	before = passwords()
	c.must(404, "PUT", users, map[string]any{"users": []any{
		map[string]any{"name": "bi", "password": "bi-pw-3"},
		map[string]any{"name": "ghost", "password": "x"},
	}})
	if p := passwords(); !maps.Equal(p, before) {
		t.Fatalf("a refused change changed %v to %v", before, p)
	}
	// The passwords are not kept once the operations ended.
	for _, pw := range []string{"app-pw-2", "app-pw-3", "app-pw-4", "bi-pw-2"} {
		if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM agent_ops WHERE args LIKE ?", "%"+pw+"%"); n != 0 {
			t.Fatalf("password %s is kept in agent_ops", pw)
		}
	}
}

// TestOpenstackClientUserUpdateAndRootOnCreate drives root_on_create and
// user update with the real `openstack database` client (it has no
// command for PUT /users: troveclient offers change_passwords in its
// Python API only).
func TestOpenstackClientUserUpdateAndRootOnCreate(t *testing.T) {
	// The real client spends seconds of CPU starting up: these tests
	// overlap, each on a controller of its own.
	t.Parallel()
	r := newRig(t, rigOptions{})
	o := newOSC(t, r)
	c := r.admin()
	c.must(202, "PATCH", "/mgmt/datastore-versions/"+r.version.ID, map[string]any{"root_on_create": true})
	in := o.json("database", "instance", "create", "cli-acct", "--flavor", "strata.small", "--size", "1",
		"--datastore", "mariadb", "--datastore-version", "10.11", "--users", "appuser:app-password")
	id := in["id"].(string)
	pw, _ := in["password"].(string)
	if len(pw) < 32 {
		t.Fatalf("instance create shows no root password: %v", in)
	}
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	if root := o.json("database", "root", "show", id); root["is_root_enabled"] != true {
		t.Fatalf("root show after root_on_create = %v", root)
	}
	g := r.compute.guest(id)
	g.mu.Lock()
	got := g.rootPassword
	g.mu.Unlock()
	if got != pw {
		t.Fatal("the guest's root password is not the one `instance create` showed")
	}

	o.run(false, "database", "user", "update", "attributes", id, "appuser",
		"--new_name", "appuser2", "--new_password", "app-password-2", "--new_host", "10.0.0.%")
	users := o.list("database", "user", "list", id)
	if len(users) != 1 || users[0]["Name"] != "appuser2" || users[0]["Host"] != "10.0.0.%" {
		t.Fatalf("user list after update = %v", users)
	}
	g.mu.Lock()
	got = g.passwords["appuser2@10.0.0.%"]
	g.mu.Unlock()
	if got != "app-password-2" {
		t.Fatalf("the guest's password for appuser2 = %q", got)
	}
	out := o.run(true, "database", "user", "update", "attributes", id, "appuser2", "--host", "10.0.0.%", "--new_name", "x'; DROP USER root; --")
	if !strings.Contains(out, "HTTP 400") || !strings.Contains(out, "user name") {
		t.Fatalf("injection in the new name: %s", out)
	}
	out = o.run(true, "database", "user", "update", "attributes", id, "nobody", "--new_password", "x")
	if !strings.Contains(out, "HTTP 404") {
		t.Fatalf("update of an unknown user: %s", out)
	}
}

// TestAuthPluginPerVersionThroughTheAPI: a MariaDB version shows its
// authentication plugin (mysql_native_password by default), the mgmt API
// sets it to ed25519 and back, refuses other plugins and a plugin on a
// non-MariaDB version, and a new instance's prepare carries the version's
// plugin to the agent.
func TestAuthPluginPerVersionThroughTheAPI(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	vpath := "/mgmt/datastore-versions/" + r.version.ID
	plugin := func() any { return c.must(200, "GET", vpath, nil)["version"].(map[string]any)["auth_plugin"] }
	if p := plugin(); p != "mysql_native_password" {
		t.Fatalf("auth_plugin by default = %v", p)
	}
	c.must(400, "PATCH", vpath, map[string]any{"auth_plugin": "sha256_password"})
	c.must(400, "PATCH", vpath, map[string]any{"auth_plugin": 1})
	if p := plugin(); p != "mysql_native_password" {
		t.Fatalf("auth_plugin after refused PATCHes = %v", p)
	}
	c.must(202, "PATCH", vpath, map[string]any{"auth_plugin": "ed25519"})
	if p := plugin(); p != "ed25519" {
		t.Fatalf("auth_plugin after PATCH = %v", p)
	}
	c.must(400, "POST", "/mgmt/datastore-versions", map[string]any{"version": map[string]any{
		"name": "16", "datastore_name": "postgresql", "datastore_manager": "postgresql", "image": r.imageID, "active": true,
		"auth_plugin": "ed25519"}})

	id := c.must(200, "POST", "/instances", createBody("ed", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	g := r.compute.guest(id)
	g.mu.Lock()
	got := g.authPlugin
	g.mu.Unlock()
	if got != "ed25519" {
		t.Fatalf("prepare carried auth_plugin %q, want ed25519", got)
	}

	c.must(202, "PATCH", vpath, map[string]any{"auth_plugin": ""})
	if p := plugin(); p != "mysql_native_password" {
		t.Fatalf("auth_plugin after resetting = %v", p)
	}
	id = c.must(200, "POST", "/instances", createBody("nat", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	g = r.compute.guest(id)
	g.mu.Lock()
	got = g.authPlugin
	g.mu.Unlock()
	if got != "" {
		t.Fatalf("prepare carried auth_plugin %q, want none (the agent's default)", got)
	}
}

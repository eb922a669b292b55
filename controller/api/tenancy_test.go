package api_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/controller/identity"
	"strata/controller/store/storetest"
)

// TestOneProjectNeverSeesOrTouchesAnothersResources: project B's user
// gets 404 for every route naming A's instance or configuration, sees
// none of them in lists, cannot attach A's configuration, and a token of
// B in a URL of A is refused; A's resources are unchanged afterwards.
func TestOneProjectNeverSeesOrTouchesAnothersResources(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	ctx := context.Background()
	ids := &identity.Store{DB: r.ctl.DB, BcryptCost: 4}
	for _, p := range []string{"team-a", "team-b"} {
		if _, err := ids.CreateProject(ctx, p); err != nil {
			t.Fatal(err)
		}
		if _, err := ids.CreateUser(ctx, p+"-user", p+"-password", p, false); err != nil {
			t.Fatal(err)
		}
	}
	a := r.login("team-a-user", "team-a-password")
	b := r.login("team-b-user", "team-b-password")

	cfgA := a.must(200, "POST", "/configurations", map[string]any{"configuration": map[string]any{
		"name": "a-cfg", "values": map[string]any{"max_connections": 50}, "datastore": map[string]any{"type": "mariadb", "version": "10.11"}}})["configuration"].(map[string]any)["id"].(string)
	instA := a.must(200, "POST", "/instances", createBody("a-db", map[string]any{"databases": []any{map[string]any{"name": "secrets"}}}))["instance"].(map[string]any)["id"].(string)
	a.waitStatus(instA, "ACTIVE", 20*time.Second)
	instB := b.must(200, "POST", "/instances", createBody("b-db", nil))["instance"].(map[string]any)["id"].(string)
	b.waitStatus(instB, "ACTIVE", 20*time.Second)

	// Lists show only one's own.
	for _, tc := range []struct {
		c    *client
		own  string
		path string
		key  string
	}{
		{a, instA, "/instances", "instances"},
		{b, instB, "/instances", "instances"},
		{b, "", "/configurations", "configurations"},
	} {
		list := tc.c.must(200, "GET", tc.path, nil)[tc.key].([]any)
		got := names(list, "id")
		if (tc.own == "" && len(got) != 0) || (tc.own != "" && (len(got) != 1 || got[0] != tc.own)) {
			t.Errorf("%s list for project %s = %v", tc.path, tc.c.project, got)
		}
	}

	// Every route naming A's resources, called by B.
	ia := "/instances/" + instA
	for _, rq := range [][3]string{
		{"GET", ia, ""},
		{"DELETE", ia, ""},
		{"PUT", ia, `{"instance":{"name":"stolen"}}`},
		{"POST", ia + "/action", `{"restart":{}}`},
		{"POST", ia + "/action", `{"reset_status":{}}`},
		{"POST", ia + "/action", `{"resize":{"volume":{"size":2}}}`},
		{"GET", ia + "/configuration", ""},
		{"GET", ia + "/databases", ""},
		{"POST", ia + "/databases", `{"databases":[{"name":"evil"}]}`},
		{"DELETE", ia + "/databases/secrets", ""},
		{"GET", ia + "/users", ""},
		{"POST", ia + "/users", `{"users":[{"name":"evil","password":"pw"}]}`},
		{"GET", ia + "/root", ""},
		{"POST", ia + "/root", ""},
		{"GET", "/configurations/" + cfgA, ""},
		{"PUT", "/configurations/" + cfgA, `{"configuration":{"values":{"max_connections":1}}}`},
		{"PATCH", "/configurations/" + cfgA, `{"configuration":{"values":{"max_connections":1}}}`},
		{"DELETE", "/configurations/" + cfgA, ""},
		{"GET", "/configurations/" + cfgA + "/instances", ""},
		// B's own instance with A's configuration.
		{"PUT", "/instances/" + instB, `{"instance":{"configuration":"` + cfgA + `"}}`},
	} {
		code, doc := b.do(rq[0], rq[1], rq[2])
		if code != 404 || !strings.Contains(errorMessage(doc), "not found") {
			t.Errorf("project B: %s %s: HTTP %d %v, want 404", rq[0], rq[1], code, doc)
		}
	}
	// B's token on A's URL.
	code, _ := b.raw("GET", "/v1.0/"+a.project+"/instances/"+instA, "")
	if code != 403 {
		t.Errorf("B's token on A's project URL: HTTP %d, want 403", code)
	}
	code, _ = b.raw("POST", "/v1.0/"+a.project+"/instances/"+instA+"/action", `{"restart":{}}`)
	if code != 403 {
		t.Errorf("B's token restarting via A's URL: HTTP %d, want 403", code)
	}

	// A's things are untouched.
	in := a.instance(instA)
	if in["name"] != "a-db" || in["status"] != "ACTIVE" {
		t.Fatalf("A's instance after B's attempts: %v", in)
	}
	g := r.compute.guest(instA)
	g.mu.Lock()
	dbs, users, restarts := len(g.dbs), len(g.users), g.restarts
	g.mu.Unlock()
	if dbs != 1 || users != 0 || restarts != 0 {
		t.Fatalf("A's guest changed: %d dbs, %d users, %d restarts", dbs, users, restarts)
	}
	if v := a.must(200, "GET", "/configurations/"+cfgA, nil)["configuration"].(map[string]any)["values"].(map[string]any); v["max_connections"] != 50.0 {
		t.Fatalf("A's configuration changed: %v", v)
	}
}

// TestTwoControllersShareOnePostgres runs two replicas on one PostgreSQL
// database with one host key: an instance created through replica B is
// built by whichever engine claims the task, its agent holds a session to
// replica A, and database calls made through B reach it.
func TestTwoControllersShareOnePostgres(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	fc := newFakeCompute(t)
	hostKey := filepath.Join(t.TempDir(), "agent_host_key")
	addrA, addrB := freeAddr(t), freeAddr(t)
	both := []string{addrA, addrB}
	ra := newRig(t, rigOptions{dsn: dsn, compute: fc, hostKey: hostKey, agentListen: addrA, advertise: both})
	rb := newRig(t, rigOptions{dsn: dsn, compute: fc, hostKey: hostKey, agentListen: addrB, advertise: both, stateDir: ra.stateDir})
	cb := rb.admin()
	id := cb.must(200, "POST", "/instances", createBody("replicated", map[string]any{
		"databases": []any{map[string]any{"name": "d1"}}}))["instance"].(map[string]any)["id"].(string)
	cb.waitStatus(id, "ACTIVE", 20*time.Second)
	if !ra.ctl.Endpoint.Server.Connected(id) {
		t.Fatal("the agent is not connected to replica A, the first address of its bootstrap")
	}
	cb.must(202, "POST", "/instances/"+id+"/databases", map[string]any{"databases": []any{map[string]any{"name": "d2"}}})
	dbs := cb.must(200, "GET", "/instances/"+id+"/databases", nil)["databases"].([]any)
	if len(dbs) != 2 {
		t.Fatalf("databases via replica B = %v", dbs)
	}
	ca := ra.admin()
	if in := ca.instance(id); in["status"] != "ACTIVE" {
		t.Fatalf("replica A sees %v", in["status"])
	}
	cb.must(202, "DELETE", "/instances/"+id, nil)
	ca.waitGone(id, 20*time.Second)
}

// TestAnAdminActsOnAnyProjectsInstanceByID: as in Trove, a token with the
// admin role (in its own project's URL) shows, acts on and deletes another
// project's instance named by id — what the tempest plugin's class cleanup
// does — while lists stay its own project's and another project's
// configuration group stays out of reach. A member of a third project
// still gets 404 for the same calls.
func TestAnAdminActsOnAnyProjectsInstanceByID(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	ctx := context.Background()
	ids := &identity.Store{DB: r.ctl.DB, BcryptCost: 4}
	for _, p := range []string{"team-a", "team-b"} {
		if _, err := ids.CreateProject(ctx, p); err != nil {
			t.Fatal(err)
		}
		if _, err := ids.CreateUser(ctx, p+"-user", p+"-password", p, false); err != nil {
			t.Fatal(err)
		}
	}
	a := r.login("team-a-user", "team-a-password")
	b := r.login("team-b-user", "team-b-password")
	admin := r.admin()
	cfgA := a.must(200, "POST", "/configurations", map[string]any{"configuration": map[string]any{
		"name": "a-cfg", "values": map[string]any{"max_connections": 50}, "datastore": map[string]any{"type": "mariadb", "version": "10.11"}}})["configuration"].(map[string]any)["id"].(string)
	instA := a.must(200, "POST", "/instances", createBody("a-db", nil))["instance"].(map[string]any)["id"].(string)
	a.waitStatus(instA, "ACTIVE", 20*time.Second)
	ia := "/instances/" + instA

	// A member of another project: 404 for the calls the admin makes below.
	for _, rq := range [][3]string{
		{"GET", ia, ""}, {"POST", ia + "/action", `{"reset_status":{}}`}, {"GET", ia + "/databases", ""}, {"DELETE", ia, ""},
	} {
		if code, doc := b.do(rq[0], rq[1], rq[2]); code != 404 {
			t.Errorf("member of team-b: %s %s: HTTP %d %v, want 404", rq[0], rq[1], code, doc)
		}
	}

	if in := admin.instance(instA); in["tenant_id"] != a.project || in["name"] != "a-db" {
		t.Fatalf("the admin's view of A's instance: %v", in)
	}
	if list := admin.must(200, "GET", "/instances", nil)["instances"].([]any); len(list) != 0 {
		t.Fatalf("the admin's list shows other projects' instances: %v", names(list, "id"))
	}
	admin.must(202, "POST", "/instances/"+instA+"/databases", map[string]any{"databases": []any{map[string]any{"name": "audit"}}})
	if dbs := names(admin.must(200, "GET", ia+"/databases", nil)["databases"].([]any), "name"); len(dbs) != 1 || dbs[0] != "audit" {
		t.Fatalf("databases through the admin: %v", dbs)
	}
	if code, doc := admin.do("GET", "/configurations/"+cfgA, nil); code != 404 {
		t.Fatalf("another project's configuration group, to the admin: HTTP %d %v (only instances are reachable across projects)", code, doc)
	}
	// Attaching: the group is looked up in the instance's project.
	admin.must(202, "PUT", ia, map[string]any{"instance": map[string]any{"configuration": cfgA}})
	if in := a.instance(instA); in["configuration"].(map[string]any)["id"] != cfgA {
		t.Fatalf("A's instance after the admin attached A's group: %v", in["configuration"])
	}
	admin.must(202, "PUT", ia, map[string]any{"instance": map[string]any{"configuration": nil}})
	admin.must(202, "POST", ia+"/action", map[string]any{"restart": map[string]any{}})
	a.waitStatus(instA, "ACTIVE", 20*time.Second)
	// The plugin's cleanup: reset_status, then delete, with the admin's token.
	admin.must(202, "POST", ia+"/action", map[string]any{"reset_status": map[string]any{}})
	admin.must(202, "DELETE", ia, nil)
	a.waitGone(instA, 20*time.Second)
}

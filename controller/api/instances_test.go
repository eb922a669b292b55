package api_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strata/controller/store/storetest"
	"strata/controller/tasks"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

func names(list []any, key string) []string {
	var out []string
	for _, it := range list {
		out = append(out, it.(map[string]any)[key].(string))
	}
	return out
}

// TestInstanceLifecycleThroughTheTroveAPI drives one instance through
// create (with a database, a user and a configuration), ACTIVE, every
// database/user/root route, restart, volume resize, configuration changes
// that need a restart, and delete — checking statuses, shapes and that
// nothing is left behind.
func TestInstanceLifecycleThroughTheTroveAPI(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()

	// Versions and registry routes.
	code, doc := c.raw("GET", "/", "")
	if code != 200 || doc["versions"].([]any)[0].(map[string]any)["id"] != "v1.0" {
		t.Fatalf("GET / = %d %v", code, doc)
	}
	ds := c.must(200, "GET", "/datastores", nil)["datastores"].([]any)
	if len(ds) != 1 || ds[0].(map[string]any)["name"] != "mariadb" || ds[0].(map[string]any)["default_version"] != r.version.ID {
		t.Fatalf("datastores = %v", ds)
	}
	c.must(200, "GET", "/datastores/mariadb", nil)
	c.must(200, "GET", "/datastores/mariadb/versions", nil)
	v := c.must(200, "GET", "/datastores/mariadb/versions/10.11", nil)["version"].(map[string]any)
	if v["id"] != r.version.ID || v["image"] != r.imageID || v["active"] != true {
		t.Fatalf("version = %v", v)
	}
	c.must(200, "GET", "/datastores/versions/"+r.version.ID, nil)
	params := c.must(200, "GET", "/datastores/mariadb/versions/10.11/parameters", nil)["configuration-parameters"].([]any)
	if len(params) != 7 {
		t.Fatalf("%d parameters", len(params))
	}
	p := c.must(200, "GET", "/datastores/versions/"+r.version.ID+"/parameters/max_connections", nil)
	if p["type"] != "integer" || p["max"] != 100000.0 || p["restart_required"] != false {
		t.Fatalf("parameter = %v", p)
	}
	flavors := c.must(200, "GET", "/flavors", nil)["flavors"].([]any)
	if !slices.Contains(names(flavors, "name"), "strata.small") {
		t.Fatalf("flavors = %v", flavors)
	}
	c.must(200, "GET", "/datastores/mariadb/versions/10.11/flavors", nil)

	// A configuration group with a restart-only value, attached at create.
	cfg := c.must(200, "POST", "/configurations", map[string]any{"configuration": map[string]any{
		"name": "tuned", "values": map[string]any{"max_connections": 300},
		"datastore": map[string]any{"type": "mariadb", "version": "10.11"}}})["configuration"].(map[string]any)
	cfgID := cfg["id"].(string)

	in := c.must(200, "POST", "/instances", createBody("shop", map[string]any{
		"databases":     []any{map[string]any{"name": "orders"}},
		"users":         []any{map[string]any{"name": "app", "password": "app-secret", "databases": []any{map[string]any{"name": "orders"}}}},
		"configuration": cfgID,
	}))["instance"].(map[string]any)
	id := in["id"].(string)
	if in["status"] != "BUILD" || in["volume"].(map[string]any)["size"] != 1.0 {
		t.Fatalf("created instance = %v", in)
	}
	in = c.waitStatus(id, "ACTIVE", 20*time.Second)
	// The address is the instance's own, on the guest's standard port, on
	// the driver's default network; access, not given, is private.
	addr := r.compute.server(id).Addresses[0].Address
	addrs := in["addresses"].([]any)[0].(map[string]any)
	if in["operating_status"] != "HEALTHY" || in["ip"].([]any)[0] != addr || in["port"] != 3306.0 ||
		addrs["address"] != addr || addrs["type"] != "private" || addrs["network"] != fakeNetwork.ID {
		t.Fatalf("active instance = %v", in)
	}
	if a := in["access"].(map[string]any); a["is_public"] != false || len(a["allowed_cidrs"].([]any)) != 0 {
		t.Fatalf("access not given = %v", a)
	}
	if in["configuration"].(map[string]any)["id"] != cfgID || in["volume"].(map[string]any)["used"] == nil {
		t.Fatalf("detail lacks configuration or volume usage: %v", in)
	}
	list := c.must(200, "GET", "/instances", nil)["instances"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["status"] != "ACTIVE" {
		t.Fatalf("list = %v", list)
	}
	c.must(200, "GET", "/instances/detail", nil)

	// Databases.
	dbs := c.must(200, "GET", "/instances/"+id+"/databases", nil)["databases"].([]any)
	if !slices.Equal(names(dbs, "name"), []string{"orders"}) {
		t.Fatalf("databases = %v", dbs)
	}
	c.must(202, "POST", "/instances/"+id+"/databases", map[string]any{"databases": []any{map[string]any{"name": "reports", "character_set": "utf8mb4"}}})
	code, doc = c.do("POST", "/instances/"+id+"/databases", map[string]any{"databases": []any{map[string]any{"name": "reports"}}})
	if code != 409 || !strings.Contains(errorMessage(doc), "exists") {
		t.Fatalf("duplicate database: %d %v", code, doc)
	}
	c.must(202, "DELETE", "/instances/"+id+"/databases/reports", nil)
	c.must(404, "DELETE", "/instances/"+id+"/databases/reports", nil)
	c.must(202, "POST", "/instances/"+id+"/databases", map[string]any{"databases": []any{map[string]any{"name": "reports"}}})
	page := c.must(200, "GET", "/instances/"+id+"/databases?limit=1", nil)
	if !slices.Equal(names(page["databases"].([]any), "name"), []string{"orders"}) || page["links"] == nil {
		t.Fatalf("paginated databases = %v", page)
	}
	next := page["links"].([]any)[0].(map[string]any)["href"].(string)
	if !strings.HasSuffix(next, "/instances/"+id+"/databases?limit=1&marker=orders") {
		t.Fatalf("next link %q", next)
	}
	page = c.must(200, "GET", "/instances/"+id+"/databases?limit=1&marker=orders", nil)
	if !slices.Equal(names(page["databases"].([]any), "name"), []string{"reports"}) || page["links"] != nil {
		t.Fatalf("second page of databases = %v", page)
	}

	// Users, access, root.
	users := c.must(200, "GET", "/instances/"+id+"/users", nil)["users"].([]any)
	if len(users) != 1 || users[0].(map[string]any)["name"] != "app" {
		t.Fatalf("users = %v", users)
	}
	c.must(202, "POST", "/instances/"+id+"/users", map[string]any{"users": []any{map[string]any{"name": "bi", "password": "bi-secret", "host": "%"}}})
	// Pages of users follow their next links; a marker (name@host) with a
	// '%' in it must survive the round trip.
	c.must(202, "POST", "/instances/"+id+"/users", map[string]any{"users": []any{map[string]any{"name": "cy", "password": "cy-secret", "host": "%"}}})
	var paged []string
	next = "/instances/" + id + "/users?limit=1"
	for i := 0; next != ""; i++ {
		if i > 3 {
			t.Fatalf("users pagination does not end: %v", paged)
		}
		page = c.must(200, "GET", next, nil)
		paged = append(paged, names(page["users"].([]any), "name")...)
		next = ""
		if links, ok := page["links"].([]any); ok {
			href, err := url.Parse(links[0].(map[string]any)["href"].(string))
			if err != nil {
				t.Fatalf("next link of users: %v", err)
			}
			next = "/instances/" + id + "/users?" + href.RawQuery
		}
	}
	if !slices.Equal(paged, []string{"app", "bi", "cy"}) {
		t.Fatalf("users page by page = %v", paged)
	}
	c.must(202, "DELETE", "/instances/"+id+"/users/cy", nil)
	u := c.must(200, "GET", "/instances/"+id+"/users/bi%40%25", nil)["user"].(map[string]any)
	if u["name"] != "bi" || u["host"] != "%" {
		t.Fatalf("user = %v", u)
	}
	c.must(202, "PUT", "/instances/"+id+"/users/bi/databases", map[string]any{"databases": []any{map[string]any{"name": "reports"}}})
	access := c.must(200, "GET", "/instances/"+id+"/users/bi/databases", nil)["databases"].([]any)
	if !slices.Equal(names(access, "name"), []string{"reports"}) {
		t.Fatalf("access = %v", access)
	}
	c.must(202, "DELETE", "/instances/"+id+"/users/bi/databases/reports", nil)
	if access := c.must(200, "GET", "/instances/"+id+"/users/bi/databases", nil)["databases"].([]any); len(access) != 0 {
		t.Fatalf("access after revoke = %v", access)
	}
	c.must(202, "DELETE", "/instances/"+id+"/users/bi", nil)
	c.must(404, "GET", "/instances/"+id+"/users/bi", nil)
	if root := c.must(200, "GET", "/instances/"+id+"/root", nil); root["rootEnabled"] != false {
		t.Fatalf("root = %v", root)
	}
	creds := c.must(200, "POST", "/instances/"+id+"/root", nil)["user"].(map[string]any)
	if creds["name"] != "root" || !strings.HasPrefix(creds["password"].(string), "generated-") {
		t.Fatalf("root credentials = %v", creds)
	}
	pw := creds["password"].(string)
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM agent_ops WHERE result LIKE ?", "%"+pw+"%"); n != 0 {
		t.Fatal("the root password is kept in the controller's database")
	}
	c.must(204, "DELETE", "/instances/"+id+"/root", nil)

	// Restart.
	c.must(202, "POST", "/instances/"+id+"/action", map[string]any{"restart": map[string]any{}})
	c.waitStatus(id, "ACTIVE", 10*time.Second)
	if g := r.compute.guest(id); g.restarts != 1 {
		t.Fatalf("guest restarted %d times", g.restarts)
	}

	// Resize the volume.
	c.must(202, "POST", "/instances/"+id+"/action", map[string]any{"resize": map[string]any{"volume": map[string]any{"size": 2}}})
	in = c.waitStatus(id, "ACTIVE", 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for in["volume"].(map[string]any)["size"] != 2.0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		in = c.instance(id)
	}
	if in["volume"].(map[string]any)["size"] != 2.0 {
		t.Fatalf("volume after resize = %v", in["volume"])
	}
	code, doc = c.do("POST", "/instances/"+id+"/action", map[string]any{"resize": map[string]any{"volume": map[string]any{"size": 1}}})
	if code != 400 || !strings.Contains(errorMessage(doc), "larger") {
		t.Fatalf("shrinking: %d %v", code, doc)
	}

	// A restart-only value makes the instance RESTART_REQUIRED; a restart
	// clears it.
	c.must(200, "PATCH", "/configurations/"+cfgID, map[string]any{"configuration": map[string]any{"values": map[string]any{"performance_schema": true}}})
	c.waitStatus(id, "RESTART_REQUIRED", 10*time.Second)
	got := c.must(200, "GET", "/instances/"+id+"/configuration", nil)["instance"].(map[string]any)["configuration"].(map[string]any)
	if got["max_connections"] != 300.0 || got["performance_schema"] != true {
		t.Fatalf("instance configuration = %v", got)
	}
	insts := c.must(200, "GET", "/configurations/"+cfgID+"/instances", nil)["instances"].([]any)
	if !slices.Equal(names(insts, "id"), []string{id}) {
		t.Fatalf("configuration instances = %v", insts)
	}
	code, doc = c.do("DELETE", "/configurations/"+cfgID, nil)
	if code != 400 || !strings.Contains(errorMessage(doc), "attached") {
		t.Fatalf("deleting an attached configuration: %d %v", code, doc)
	}
	c.must(202, "POST", "/instances/"+id+"/action", map[string]any{"restart": map[string]any{}})
	c.waitStatus(id, "ACTIVE", 10*time.Second)

	// Detach, then delete the group and the instance.
	c.must(202, "PUT", "/instances/"+id, map[string]any{"instance": map[string]any{"configuration": nil}})
	waitFor(t, "the configuration to be detached", 10*time.Second, func() bool { return c.instance(id)["configuration"] == nil })
	c.must(202, "DELETE", "/configurations/"+cfgID, nil)
	c.must(202, "PUT", "/instances/"+id, map[string]any{"instance": map[string]any{"name": "shop-renamed"}})
	if c.instance(id)["name"] != "shop-renamed" {
		t.Fatal("rename did not stick")
	}
	c.must(202, "DELETE", "/instances/"+id, nil)
	c.waitGone(id, 10*time.Second)
	if srv, vol := r.compute.has(id); srv || vol {
		t.Fatalf("after delete: server %v, volume %v left", srv, vol)
	}
	for _, table := range []string{"agent_tokens", "agent_keys", "agent_ops", "instance_reports"} {
		if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM "+table+" WHERE instance_id = ?", id); n != 0 {
			t.Errorf("%s keeps %d rows of the deleted instance", table, n)
		}
	}
	if list := c.must(200, "GET", "/instances", nil)["instances"].([]any); len(list) != 0 {
		t.Fatalf("list after delete = %v", list)
	}
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAGuestThatNeverReportsEndsInErrorWithTheReason: the server boots but
// no agent ever calls; at the version's boot timeout the instance is
// ERROR with the reason stored and shown; a plain delete of the BUILD
// instance before that is refused, reset-status + delete (force delete)
// works and cleans up.
func TestAGuestThatNeverReportsEndsInErrorWithTheReason(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	fc.silent = true
	r := newRig(t, rigOptions{compute: fc, bootTimeout: 5 * time.Second})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("silent", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "BUILD", 5*time.Second)
	code, doc := c.do("DELETE", "/instances/"+id, nil)
	if code != 422 || !strings.Contains(errorMessage(doc), "not ready") {
		t.Fatalf("delete while building: %d %v", code, doc)
	}
	in := c.waitStatus(id, "ERROR", 20*time.Second)
	fault, _ := in["fault"].(map[string]any)
	if fault == nil || !strings.Contains(fault["message"].(string), "never reported within the boot timeout of 5s") ||
		!strings.Contains(fault["details"].(string), "fake console") {
		t.Fatalf("fault = %v", in["fault"])
	}

	// A second instance stuck in BUILD is force-deleted: reset, delete.
	id2 := c.must(200, "POST", "/instances", createBody("stuck", nil))["instance"].(map[string]any)["id"].(string)
	waitFor(t, "the second server", 10*time.Second, func() bool { s, _ := fc.has(id2); return s })
	c.must(202, "POST", "/instances/"+id2+"/action", map[string]any{"reset_status": map[string]any{}})
	if st := c.instance(id2)["status"]; st != "ERROR" {
		t.Fatalf("status after reset-status with no heartbeat: %v", st)
	}
	active, _ := tasks.Active(context.Background(), r.ctl.DB, id2)
	if len(active) != 0 {
		t.Fatalf("reset-status left %d tasks queued", len(active))
	}
	c.must(202, "DELETE", "/instances/"+id2, nil)
	c.must(202, "DELETE", "/instances/"+id, nil)
	c.waitGone(id2, 10*time.Second)
	c.waitGone(id, 10*time.Second)
	for _, x := range []string{id, id2} {
		if s, v := fc.has(x); s || v {
			t.Fatalf("instance %s: server %v volume %v left after delete", x, s, v)
		}
	}
}

// TestTasksContinueAcrossAControllerRestart stops the controller while an
// instance builds (its guest dies with it, as local VMs do) and starts a
// new controller on the same state: the create task continues, the server
// is started again, the agent reconnects with its enrolled key, and the
// instance becomes ACTIVE; an idle instance whose server is found stopped
// is recovered through REBOOT.
func TestTasksContinueAcrossAControllerRestart(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	fc.silent = true // the first boot never reports
	dir := t.TempDir()
	agentAddr := freeAddr(t)
	r1 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	c := r1.admin()
	id := c.must(200, "POST", "/instances", createBody("survivor", nil))["instance"].(map[string]any)["id"].(string)
	waitFor(t, "the server", 10*time.Second, func() bool { s, _ := fc.has(id); return s })
	r1.ctl.Stop()
	fc.powerOff()

	fc.mu.Lock()
	fc.silent = false
	fc.mu.Unlock()
	r2 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	c = r2.admin()
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	// The step that writes ACTIVE ends the task just after: wait for it.
	waitFor(t, "the create task to end", 10*time.Second, func() bool {
		return storetest.Count(t, r2.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'create' AND state <> 'queued'", id) == 1
	})
	if n := storetest.Count(t, r2.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'create' AND state = 'done'", id); n != 1 {
		t.Fatalf("%d finished create tasks, want 1", n)
	}

	// Now idle and ACTIVE: another controller restart finds the server
	// stopped and recovers it.
	r2.ctl.Stop()
	fc.powerOff()
	r3 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	c = r3.admin()
	waitFor(t, "the recover task", 10*time.Second, func() bool {
		return storetest.Count(t, r3.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'recover'", id) == 1
	})
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	if n := storetest.Count(t, r3.ctl.DB, "SELECT COUNT(*) FROM agent_keys WHERE instance_id = ?", id); n != 1 {
		t.Fatalf("%d enrolled keys, want 1: reconnects use the enrolled key", n)
	}
}

// TestNICsAndAccessAreAcceptedAsTroveTakesThem: the body the tempest
// plugin sends (nics naming the network, access public) creates an
// instance on that network; access is stored and shown as given.
func TestNICsAndAccessAreAcceptedAsTroveTakesThem(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	in := c.must(200, "POST", "/instances", createBody("net-db", map[string]any{
		"nics":   []any{map[string]any{"net-id": fakeNetwork.ID}},
		"access": map[string]any{"is_public": true, "allowed_cidrs": []any{"10.1.0.0/16", "192.0.2.7"}},
		"volume": map[string]any{"size": 1, "type": ""},
	}))["instance"].(map[string]any)
	id := in["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	if nics := r.compute.spec(id).NICs; len(nics) != 1 || nics[0].NetworkID != fakeNetwork.ID {
		t.Fatalf("the server was asked for %+v, want the network the request named", nics)
	}
	shown := c.instance(id)
	a := shown["access"].(map[string]any)
	if a["is_public"] != true || fmt.Sprint(a["allowed_cidrs"]) != "[10.1.0.0/16 192.0.2.7/32]" {
		t.Fatalf("access = %v", a)
	}
	if addr := shown["addresses"].([]any)[0].(map[string]any); addr["network"] != fakeNetwork.ID || addr["address"] != shown["ip"].([]any)[0] {
		t.Fatalf("addresses = %v", shown["addresses"])
	}
	// Empty entries ask for the default network, as before.
	id2 := c.must(200, "POST", "/instances", createBody("default-net", map[string]any{"nics": []any{map[string]any{}}}))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id2, "ACTIVE", 20*time.Second)
	// A network with an IPv4 and an IPv6 subnet gives the server two fixed
	// addresses: both are listed, the one clients use first, as Trove does.
	id3 := c.must(200, "POST", "/instances", createBody("net-dualstack", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id3, "ACTIVE", 20*time.Second)
	ds := c.instance(id3)
	srv := r.compute.server(id3)
	if len(srv.Addresses) != 2 || fmt.Sprint(ds["ip"]) != fmt.Sprintf("[%s %s]", srv.Addresses[0].Address, srv.Addresses[1].Address) {
		t.Fatalf("a dual-stack server %v: ip = %v", srv.Addresses, ds["ip"])
	}
	if v6 := ds["addresses"].([]any)[1].(map[string]any); v6["address"] != srv.Addresses[1].Address || v6["type"] != "private" ||
		v6["network"] != fakeNetwork.ID || v6["port"] != 3306.0 {
		t.Fatalf("a dual-stack server's second address: %v", v6)
	}
	if nics := r.compute.spec(id2).NICs; len(nics) != 1 || nics[0].NetworkID != fakeNetwork.ID {
		t.Fatalf("an empty nic: %+v, want the default network", nics)
	}
	// Public: published, with a public address at the standard port.
	if a, ok := r.compute.publication(id); !ok || fmt.Sprint(a.AllowedCIDRs) != "[10.1.0.0/16 192.0.2.7/32]" {
		t.Fatalf("published as %+v, %v; want public with the CIDRs asked for", a, ok)
	}
}

// The enrolment token written on a config drive is good for the version's
// boot timeout only.
func TestEnrolmentTokenExpiresAtTheBootTimeout(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{bootTimeout: 7 * time.Minute})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("expiring", nil))["instance"].(map[string]any)["id"].(string)
	var created, expires int64
	waitFor(t, "the enrolment token", 10*time.Second, func() bool {
		err := r.ctl.DB.QueryRow(context.Background(), `SELECT created_at, expires_at FROM agent_tokens WHERE instance_id = ?`, id).Scan(&created, &expires)
		return err == nil
	})
	if d := time.Duration(expires-created) * time.Millisecond; d != 7*time.Minute {
		t.Fatalf("the token is good for %s, want the boot timeout (7m)", d)
	}
}

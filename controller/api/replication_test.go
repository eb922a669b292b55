package api_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"strata/agent/wire"
	"strata/controller/backups"
	"strata/controller/compute"
	"strata/controller/store/storetest"
)

// A replica is seeded from a fresh backup of its source, gets its own
// replication account on the source, follows the source from the backup's
// GTID position, and is ACTIVE only then — even when the controller goes
// down with the account operation queued and undelivered. The password is
// the same at both ends, and neither the task nor the operations keep it.
func TestReplicaCreatedFromASeedBackupAcrossAControllerRestart(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	dir, agentAddr := t.TempDir(), freeAddr(t)
	r1 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr, guestCallTimeout: 300 * time.Millisecond})
	c := r1.admin()
	src := newActive(c, "primary", "shop")

	doc := c.must(200, "POST", "/instances", map[string]any{"instance": map[string]any{"name": "r1", "replica_of": src}})["instance"].(map[string]any)
	replica := doc["id"].(string)
	if doc["status"] != "BUILD" || doc["replica_of"].(map[string]any)["id"] != src {
		t.Fatalf("create answer: %v", doc)
	}
	// The seed backup is the source's, and completes; then the source's
	// agent goes away, so the replica's account waits, queued.
	var seed string
	waitFor(t, "the seed backup to complete", 30*time.Second, func() bool {
		for _, b := range c.must(200, "GET", "/instances/"+src+"/backups", nil)["backups"].([]any) {
			b := b.(map[string]any)
			if strings.HasPrefix(b["name"].(string), "replica seed for ") && b["status"] == backups.StatusCompleted {
				seed = b["id"].(string)
				return true
			}
		}
		return false
	})
	fc.guest(src).halt()
	waitFor(t, "the account operation to be queued", 30*time.Second, func() bool {
		return storetest.Count(t, r1.ctl.DB, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = 'create_replication_account'", src) == 1
	})
	if n := storetest.Count(t, r1.ctl.DB, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = 'create_replication_account' AND done_at IS NOT NULL", src); n != 0 {
		t.Fatal("the account was created before the source's agent went away: the restart below would test nothing")
	}
	if st := c.instance(replica)["status"]; st != "BUILD" {
		t.Fatalf("replica is %v before its link exists", st)
	}
	r1.ctl.Stop()
	fc.powerOff()

	r2 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr, guestCallTimeout: 300 * time.Millisecond})
	c = r2.admin()
	in := c.waitStatus(replica, "ACTIVE", 40*time.Second)
	if in["replica_of"].(map[string]any)["id"] != src {
		t.Fatalf("replica view: %v", in["replica_of"])
	}
	waitFor(t, "the replica's lag from its heartbeat", 20*time.Second, func() bool {
		r, _ := c.instance(replica)["replication"].(map[string]any)
		return r["state"] == "RUNNING" && r["seconds_behind"] == float64(0) && r["gtid_slave_pos"] == "0-1-42"
	})
	list, _ := c.instance(src)["replicas"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != replica {
		t.Fatalf("source's replicas: %v", c.instance(src)["replicas"])
	}

	accounts, _, _ := fc.guest(src).replication()
	_, link, starts := fc.guest(replica).replication()
	if len(accounts) != 1 || link == nil || starts != 1 {
		t.Fatalf("source accounts %d, replica link %+v, starts %d", len(accounts), link, starts)
	}
	pw, ok := accounts[link.Account]
	if !ok || pw != link.Password || len(pw) < 32 {
		t.Fatalf("the replica follows as %s, which the source does not hold with that password (accounts %v)", link.Account, keys(accounts))
	}
	srcView := c.instance(src)
	if link.Host != srcView["ip"].([]any)[0] || float64(link.Port) != srcView["port"] || link.GTIDSlavePos != "0-1-42" {
		t.Fatalf("link %s:%d from %q; source at %v:%v, seed GTID 0-1-42", link.Host, link.Port, link.GTIDSlavePos, srcView["ip"], srcView["port"])
	}
	db := r2.ctl.DB
	if n := storetest.Count(t, db, "SELECT COUNT(*) FROM agent_ops WHERE kind IN ('create_replication_account', 'start_replication') AND args IS NOT NULL"); n != 0 {
		t.Fatalf("%d replication operations still hold their arguments (the password)", n)
	}
	if n := storetest.Count(t, db, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND payload LIKE '%replication_password%'", replica); n != 0 {
		t.Fatal("the replica's task still holds the replication password")
	}
	if seed == "" {
		t.Fatal("no seed backup")
	}
	// Its one replica restored it: the seed backup is deleted.
	c.waitBackupGone(seed, 20*time.Second)
}

// A replica of a MariaDB source that has a backup is seeded from an
// incremental on the newest one (issue 17: "incremental from its last
// backup where one exists"), not from a second full copy: the seed's
// parent is the user's backup, the replica restores the chain (that
// backup, then the seed) and follows from the seed's position; the seed
// is deleted once restored, the user's backup kept.
func TestAReplicaOfASourceWithABackupIsSeededFromAnIncrementalOnIt(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc})
	c := r.admin()
	src := newActive(c, "primary", "shop")
	nightly := c.createBackup(map[string]any{"name": "nightly", "instance": src})["id"].(string)
	c.waitBackup(nightly, backups.StatusCompleted, 30*time.Second)
	c.waitStatus(src, "ACTIVE", 30*time.Second)

	replica := c.must(200, "POST", "/instances", map[string]any{"instance": map[string]any{"name": "r1", "replica_of": src}})["instance"].(map[string]any)["id"].(string)
	var seed map[string]any
	waitFor(t, "the seed backup", 30*time.Second, func() bool {
		for _, b := range c.must(200, "GET", "/instances/"+src+"/backups", nil)["backups"].([]any) {
			if b := b.(map[string]any); strings.HasPrefix(b["name"].(string), "replica seed for ") {
				seed = b
				return true
			}
		}
		return false
	})
	if seed["parent_id"] != nightly {
		t.Fatalf("the seed backup's parent is %v, want the source's newest backup %s", seed["parent_id"], nightly)
	}
	c.waitStatus(replica, "ACTIVE", 90*time.Second)
	if chains := fc.journal.events("chain " + replica); len(chains) != 1 || chains[0] != "chain "+replica+" "+nightly+","+seed["id"].(string) {
		t.Fatalf("the replica restored %v, want once the chain %s then the seed %s", chains, nightly, seed["id"])
	}
	waitFor(t, "the replica's link", 20*time.Second, func() bool {
		rep, _ := c.instance(replica)["replication"].(map[string]any)
		return rep["state"] == "RUNNING"
	})
	c.waitBackupGone(seed["id"].(string), 20*time.Second)
	if b := c.backup(nightly); b["status"] != backups.StatusCompleted {
		t.Fatalf("the user's backup after the seed's deletion: %v", b)
	}
}

// Guard rails: Trove's limits on count and on replicas of replicas, and
// another project's source does not exist for the caller.
func TestReplicaRequestsAreChecked(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	src := newActive(c, "primary")
	body := func(extra map[string]any) map[string]any {
		in := map[string]any{"name": "r", "replica_of": src}
		for k, v := range extra {
			in[k] = v
		}
		return map[string]any{"instance": in}
	}
	code, doc := c.do("POST", "/instances", body(map[string]any{"replica_count": 4}))
	if code != 400 || !strings.Contains(errorMessage(doc), "between 1 and 3") {
		t.Fatalf("replica_count 4: HTTP %d %v", code, doc)
	}
	replica := c.must(200, "POST", "/instances", body(nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(replica, "ACTIVE", 90*time.Second) // a seed backup and a restore: under -race at load 7 it took over 30 s
	code, doc = c.do("POST", "/instances", map[string]any{"instance": map[string]any{"name": "rr", "replica_of": replica}})
	if code != 400 || !strings.Contains(errorMessage(doc), "replica of a replica") {
		t.Fatalf("replica of a replica: HTTP %d %v", code, doc)
	}
	other := r.otherProjectClient()
	if code, doc := other.do("POST", "/instances", body(nil)); code != 404 {
		t.Fatalf("replica of another project's instance: HTTP %d %v", code, doc)
	}
	// Two more in one request: named -1 and -2, both following the
	// source.
	first := c.must(200, "POST", "/instances", map[string]any{"instance": map[string]any{"name": "many", "replica_of": src, "replica_count": 2}})["instance"].(map[string]any)
	if first["name"] != "many-1" {
		t.Fatalf("first of two replicas is named %v", first["name"])
	}
	waitFor(t, "three replicas on the source", 90*time.Second, func() bool {
		list, _ := c.instance(src)["replicas"].([]any)
		return len(list) == 3
	})
	c.waitStatus(first["id"].(string), "ACTIVE", 90*time.Second)
	// Each request's seed backup goes once all its replicas restored it.
	waitFor(t, "the seed backups to be deleted", 60*time.Second, func() bool {
		return len(c.must(200, "GET", "/instances/"+src+"/backups", nil)["backups"].([]any)) == 0
	})
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A replica refuses writes that would diverge it; its source cannot be
// deleted while it has replicas; detach (PUT replica_of null, as Trove's
// client sends it with slave_of) makes the replica writable and drops its
// account on the source; deleting a replica drops its account too.
func TestReplicaGuardsDetachAndDelete(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	src := newActive(c, "primary", "shop")
	mk := func(name string) string {
		id := c.must(200, "POST", "/instances", map[string]any{"instance": map[string]any{"name": name, "replica_of": src}})["instance"].(map[string]any)["id"].(string)
		c.waitStatus(id, "ACTIVE", 90*time.Second) // a seed backup and a restore: over 30 s twice under -race at load 13+
		return id
	}
	r1, r2 := mk("r1"), mk("r2")
	if accounts, _, _ := r.compute.guest(src).replication(); len(accounts) != 2 {
		t.Fatalf("source holds %d replication accounts, want one per replica", len(accounts))
	}
	for _, w := range []struct{ method, path string }{
		{"POST", "/instances/" + r1 + "/databases"},
		{"POST", "/instances/" + r1 + "/users"},
		{"DELETE", "/instances/" + r1 + "/users/app"},
		{"POST", "/instances/" + r1 + "/root"},
		{"PUT", "/instances/" + r1},
	} {
		var body any = map[string]any{"databases": []any{map[string]any{"name": "x"}}, "users": []any{map[string]any{"name": "u", "password": "password-1"}}}
		if w.path == "/instances/"+r1 {
			body = map[string]any{"instance": map[string]any{"configuration": "any"}}
		}
		code, doc := c.do(w.method, w.path, body)
		if code != 400 || !strings.Contains(errorMessage(doc), "is a replica of "+src) {
			t.Errorf("%s %s on a replica: HTTP %d %v", w.method, w.path, code, doc)
		}
	}
	// A link that breaks shows as ERROR with the reason, from the
	// replica's heartbeat.
	g2 := r.compute.guest(r2)
	g2.mu.Lock()
	g2.repl.broken = "error connecting to master: Connection refused"
	g2.mu.Unlock()
	waitFor(t, "the broken link in the view", 20*time.Second, func() bool {
		rep, _ := c.instance(r2)["replication"].(map[string]any)
		reason, _ := rep["reason"].(string)
		return rep["state"] == "ERROR" && strings.Contains(reason, "Connection refused") && rep["seconds_behind"] == nil
	})
	code, doc := c.do("DELETE", "/instances/"+src, nil)
	if code != 400 || !strings.Contains(errorMessage(doc), "without detaching the replicas") {
		t.Fatalf("delete of a source with replicas: HTTP %d %v", code, doc)
	}

	c.must(202, "PUT", "/instances/"+r1, map[string]any{"instance": map[string]any{"replica_of": nil, "slave_of": nil}})
	if in := c.instance(r1); in["replica_of"] != nil || in["replication"] != nil {
		t.Fatalf("detached replica still shows replica_of %v, replication %v", in["replica_of"], in["replication"])
	}
	if _, link, _ := r.compute.guest(r1).replication(); link != nil {
		t.Fatalf("the detached guest still follows %+v", link)
	}
	waitFor(t, "r1's account to be dropped on the source", 20*time.Second, func() bool {
		accounts, _, _ := r.compute.guest(src).replication()
		_, still := accounts["strata_repl_"+strings.ReplaceAll(r1, "-", "")[:20]]
		return len(accounts) == 1 && !still
	})
	c.must(202, "POST", "/instances/"+r1+"/databases", map[string]any{"databases": []any{map[string]any{"name": "mine"}}})

	c.must(202, "DELETE", "/instances/"+r2, nil)
	c.waitGone(r2, 20*time.Second)
	waitFor(t, "r2's account to be dropped on the source", 20*time.Second, func() bool {
		accounts, _, _ := r.compute.guest(src).replication()
		return len(accounts) == 0
	})
	if list := c.instance(src)["replicas"]; list != nil {
		t.Fatalf("source still lists replicas %v", list)
	}
	c.must(202, "DELETE", "/instances/"+src, nil)
}

// A compute driver that cannot route a replica to its source refuses a
// replica before any backup is taken or instance recorded.
func TestReplicaRefusedWhenTheDriverCannotRouteIt(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{driver: func(fc *fakeCompute) compute.Driver { return plainDriver{fc} }})
	c := r.admin()
	src := newActive(c, "primary")
	code, doc := c.do("POST", "/instances", map[string]any{"instance": map[string]any{"name": "r", "replica_of": src}})
	if code != 400 || !strings.Contains(errorMessage(doc), "cannot connect a replica to its source") {
		t.Fatalf("replica on a driver without routes: HTTP %d %v", code, doc)
	}
	if n := len(c.must(200, "GET", "/instances/"+src+"/backups", nil)["backups"].([]any)); n != 0 {
		t.Fatalf("a refused replica left %d backups", n)
	}
	if n := len(c.must(200, "GET", "/instances", nil)["instances"].([]any)); n != 1 {
		t.Fatalf("a refused replica left %d instances", n)
	}
}

// A replica whose link cannot be started (its start_replication is cut
// short every time) fails to ERROR — not ACTIVE, though its database
// runs — and the account its create made on the source is dropped there
// at once, not when the replica is deleted. Deleting it afterwards still
// works (its own drop finds nothing to drop), and so does the source's.
func TestReplicaWhoseLinkFailsDropsItsAccountOnTheSource(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc})
	c := r.admin()
	src := newActive(c, "primary", "shop")
	fc.mu.Lock()
	fc.onNewGuest = func(id string, g *fakeGuest) {
		if id != src {
			g.interrupt[wire.KindStartReplication] = true
		}
	}
	fc.mu.Unlock()

	replica := c.must(200, "POST", "/instances", map[string]any{"instance": map[string]any{"name": "r1", "replica_of": src}})["instance"].(map[string]any)["id"].(string)
	in := c.waitStatus(replica, "ERROR", 90*time.Second) // a seed backup and a restore first
	f, _ := in["fault"].(map[string]any)
	if f == nil || !strings.Contains(f["message"].(string), "starting replication") {
		t.Fatalf("the failed replica's fault: %v", in["fault"])
	}
	// The account was made on the source (else its absence below would
	// prove nothing), then dropped by the create's failure.
	db := r.ctl.DB
	if n := storetest.Count(t, db, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = 'create_replication_account' AND done_at IS NOT NULL AND result NOT LIKE '%\"error\"%'", src); n != 1 {
		t.Fatalf("%d replication accounts made on the source, want 1", n)
	}
	// Dropped by the failure's own operation (its result may land a
	// moment after the guest ran it).
	waitFor(t, "the failed replica's account to be dropped on the source", 20*time.Second, func() bool {
		accounts, _, _ := fc.guest(src).replication()
		return len(accounts) == 0 && storetest.Count(t, db, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND op_id = ? AND done_at IS NOT NULL AND result NOT LIKE '%\"error\"%'", src, "repl-drop-failed-"+replica) == 1
	})
	c.must(202, "DELETE", "/instances/"+replica, nil)
	c.waitGone(replica, 20*time.Second)
	c.must(202, "DELETE", "/instances/"+src, nil)
	c.waitGone(src, 20*time.Second)
}

// A replica's view shows how many transactions it is behind its source:
// the source's binary log position from its heartbeat against what the
// replica applied, following both as they move, and left out once the
// source's agent is silent (its position is history).
func TestReplicaShowsHowManyTransactionsItIsBehind(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc})
	c := r.admin()
	src := newActive(c, "primary")
	replica := replicaIDs(t, c, src, 1)[0]
	behind := func(want float64, pos string) {
		t.Helper()
		waitFor(t, fmt.Sprintf("transactions_behind %v", want), 20*time.Second, func() bool {
			rep, _ := c.instance(replica)["replication"].(map[string]any)
			return rep["state"] == "RUNNING" && rep["transactions_behind"] == want && rep["source_gtid_binlog_pos"] == pos
		})
	}
	// Seeded at 0-1-42; the fake source is at 0-1-100.
	behind(58, "0-1-100")
	gs, gr := fc.guest(src), fc.guest(replica)
	gs.mu.Lock()
	gs.repl.binlog += 5 // five more transactions on the source
	gs.mu.Unlock()
	behind(63, "0-1-105")
	gr.mu.Lock()
	gr.repl.link.GTIDSlavePos = "0-1-105" // the replica applied them all
	gr.mu.Unlock()
	behind(0, "0-1-105")
	// The source's agent goes silent: no distance is claimed.
	gs.halt()
	silence(t, r, src)
	rep, _ := c.instance(replica)["replication"].(map[string]any)
	if _, shown := rep["transactions_behind"]; shown || rep["state"] != "RUNNING" {
		t.Fatalf("with the source silent, the replica shows %v", rep)
	}
}

// A source's volume resize grows its replicas' volumes with it (Trove's
// rule: a replica smaller than its source's data stops on a full disk),
// all or none: a replica that cannot be resized now refuses the request
// and nothing is resized.
func TestAVolumeResizeOfASourceGrowsItsReplicas(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	src := newActive(c, "primary", "shop")
	r1 := c.must(200, "POST", "/instances", map[string]any{"instance": map[string]any{"name": "r1", "replica_of": src}})["instance"].(map[string]any)["id"].(string)
	c.waitStatus(r1, "ACTIVE", 90*time.Second)
	volumeOf := func(id string) any { return c.instance(id)["volume"].(map[string]any)["size"] }

	c.must(202, "POST", "/instances/"+src+"/action", map[string]any{"resize": map[string]any{"volume": map[string]any{"size": 2}}})
	waitFor(t, "the source and its replica at 2 GB, ACTIVE", 20*time.Second, func() bool {
		a, b := c.instance(src), c.instance(r1)
		return a["status"] == "ACTIVE" && b["status"] == "ACTIVE" && volumeOf(src) == 2.0 && volumeOf(r1) == 2.0
	})
	r.compute.mu.Lock()
	r1Disk := r.compute.volumes[r1].SizeGB
	r.compute.mu.Unlock()
	if r1Disk != 2 {
		t.Fatalf("the replica's disk is %d GB after its source's resize to 2", r1Disk)
	}

	// A replica that is still being built: the source's resize is
	// refused, naming it, and neither volume changes.
	r.compute.mu.Lock()
	r.compute.silent = true
	r.compute.mu.Unlock()
	r2 := c.must(200, "POST", "/instances", map[string]any{"instance": map[string]any{"name": "r2", "replica_of": src}})["instance"].(map[string]any)["id"].(string)
	c.waitStatus(src, "ACTIVE", 30*time.Second) // its seed backup done
	if st := c.instance(r2)["status"]; st != "BUILD" {
		t.Fatalf("the replica whose guest never reports is %v, want BUILD", st)
	}
	code, doc := c.do("POST", "/instances/"+src+"/action", map[string]any{"resize": map[string]any{"volume": map[string]any{"size": 3}}})
	if msg := errorMessage(doc); code != 422 || !strings.Contains(msg, r2) || !strings.Contains(msg, "nothing was resized") {
		t.Fatalf("resize of a source with a replica in BUILD: HTTP %d %q", code, msg)
	}
	// A resize queued by mistake would show at once: the request's
	// transaction sets the task (RESIZE) of everything it queues.
	if a, b, st, st1 := volumeOf(src), volumeOf(r1), c.instance(src)["status"], c.instance(r1)["status"]; a != 2.0 || b != 2.0 || st != "ACTIVE" || st1 != "ACTIVE" {
		t.Fatalf("after the refused resize: source %v GB (%v), replica %v GB (%v)", a, st, b, st1)
	}
}

package api_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"strata/controller/compute"
	"strata/controller/store/storetest"
)

// before reports whether event a comes before event b in events (both
// present).
func before(events []string, a, b string) bool {
	i, j := slices.Index(events, a), slices.Index(events, b)
	return i >= 0 && j >= 0 && i < j
}

// PostgreSQL replicas: each replica's account (and so its slot) is made
// on the source before the seed backup is taken, the seed is restored as
// a standby, start_replication carries no GTID, and the view shows the
// replica's LSNs and lag from its heartbeat.
func TestPostgreSQLReplicasGetTheirSlotBeforeTheSeedAndRestoreAsStandbys(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc})
	registerVersion(t, r, "postgresql", "15", 5432)
	c := r.admin()
	src := newActiveOf(c, "postgresql", "15", "pg")
	ids := replicaIDs(t, c, src, 2)

	events := fc.journal.events("account ", "backup ", "restore ", "start ")
	for _, id := range ids {
		if !before(events, "account "+src+" "+acctOf(id), "backup "+src) {
			t.Fatalf("replica %s's account was not made before the seed backup: %v", id, events)
		}
		if !before(events, "restore "+id+" standby=true", "start "+id+" "+acctOf(id)+" repoint=false") {
			t.Fatalf("replica %s was not restored as a standby, then started: %v", id, events)
		}
	}
	if n := len(fc.journal.events("backup " + src)); n != 1 {
		t.Fatalf("%d seed backups of the source, want one for the request", n)
	}
	accounts, _, _ := fc.guest(src).replication()
	for _, id := range ids {
		_, link, starts := fc.guest(id).replication()
		if link == nil || link.GTIDSlavePos != "" || starts != 1 || accounts[link.Account] != link.Password || len(link.Password) < 32 {
			t.Fatalf("replica %s follows %+v (starts %d); the source holds %v", id, link, starts, keys(accounts))
		}
	}
	// The account's password is in neither the task nor the operations
	// once the replica is ACTIVE.
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE payload LIKE '%replication_password%' AND state = 'queued'"); n != 0 {
		t.Fatalf("%d queued tasks still hold a replication password", n)
	}
	waitFor(t, "the replica's LSNs and lag from its heartbeat", 20*time.Second, func() bool {
		rep, _ := c.instance(ids[0])["replication"].(map[string]any)
		return rep["state"] == "RUNNING" && rep["received_lsn"] == "0/3000000" && rep["replayed_lsn"] == "0/3000000" &&
			rep["bytes_behind"] == float64(0) && rep["seconds_behind"] == float64(0)
	})
}

// A PostgreSQL replica that fails after its account was made, before
// its link exists (its restore fails), has the account and its slot
// dropped on the source at once: a slot nobody reads keeps the source's
// WAL until its disk is full.
func TestPostgreSQLReplicaThatFailsDropsItsSlotOnTheSource(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc})
	registerVersion(t, r, "postgresql", "15", 5432)
	c := r.admin()
	src := newActiveOf(c, "postgresql", "15", "pg")
	fc.mu.Lock()
	fc.onNewGuest = func(id string, g *fakeGuest) {
		if id != src {
			g.repl.failRestore = "the disk is on fire"
		}
	}
	fc.mu.Unlock()
	replica := c.must(200, "POST", "/instances", map[string]any{"instance": map[string]any{"name": "r1", "replica_of": src}})["instance"].(map[string]any)["id"].(string)
	in := c.waitStatus(replica, "ERROR", 90*time.Second)
	if f, _ := in["fault"].(map[string]any); f == nil || !strings.Contains(f["message"].(string), "the disk is on fire") {
		t.Fatalf("the failed replica's fault: %v", in["fault"])
	}
	waitFor(t, "the failed replica's account and slot to be dropped on the source", 20*time.Second, func() bool {
		accounts, _, _ := fc.guest(src).replication()
		return len(accounts) == 0 && storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND op_id = ? AND done_at IS NOT NULL", src, "repl-drop-failed-"+replica) == 1
	})
	events := fc.journal.events("account ", "backup ", "drop ")
	want := []string{"account " + src + " " + acctOf(replica), "backup " + src, "drop " + src + " " + acctOf(replica)}
	if !slices.Equal(events, want) {
		t.Fatalf("events on the source %v, want %v", events, want)
	}
}

// A PostgreSQL source that cannot make the replica's account: the
// replica fails with the reason, no seed backup is taken, and the drop
// of an account that may exist is queued all the same.
func TestPostgreSQLReplicaWhoseAccountFailsTakesNoSeed(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc})
	registerVersion(t, r, "postgresql", "15", 5432)
	c := r.admin()
	src := newActiveOf(c, "postgresql", "15", "pg")
	g := fc.guest(src)
	g.mu.Lock()
	g.interrupt["create_replication_account"] = true
	g.mu.Unlock()
	replica := c.must(200, "POST", "/instances", map[string]any{"instance": map[string]any{"name": "r1", "replica_of": src}})["instance"].(map[string]any)["id"].(string)
	in := c.waitStatus(replica, "ERROR", 40*time.Second)
	if f, _ := in["fault"].(map[string]any); f == nil || !strings.Contains(f["message"].(string), "before the seed backup failed") {
		t.Fatalf("the failed replica's fault: %v", in["fault"])
	}
	if n := len(c.must(200, "GET", "/instances/"+src+"/backups", nil)["backups"].([]any)); n != 0 || len(fc.journal.events("backup ")) != 0 {
		t.Fatalf("%d backups of the source after its account failed, want none", n)
	}
	waitFor(t, "the drop queued and done on the source", 20*time.Second, func() bool {
		return len(fc.journal.events("drop "+src+" "+acctOf(replica))) == 1
	})
}

// Redis replicas keep the seed backup (it carries the source's ACL
// users, which Redis does not replicate); start_replication carries no
// GTID; the view shows the replica's offset and when it last heard from
// its source.
func TestRedisReplicaIsSeededAndShowsItsOffset(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc})
	registerVersion(t, r, "redis", "7.0", 6379)
	c := r.admin()
	src := newActiveOf(c, "redis", "7.0", "cache")
	replica := replicaIDs(t, c, src, 1)[0]
	events := fc.journal.events("account ", "backup ", "restore ", "start ")
	want := []string{"backup " + src, "restore " + replica + " standby=false", "account " + src + " " + acctOf(replica), "start " + replica + " " + acctOf(replica) + " repoint=false"}
	if !slices.Equal(events, want) {
		t.Fatalf("events %v, want %v", events, want)
	}
	waitFor(t, "the replica's offset from its heartbeat", 20*time.Second, func() bool {
		rep, _ := c.instance(replica)["replication"].(map[string]any)
		return rep["state"] == "RUNNING" && rep["repl_offset"] == float64(1000) && rep["last_io_seconds_ago"] == float64(1) && rep["repl_id"] != nil
	})
}

// A PostgreSQL switchover runs fence → clean stop of the old primary →
// promote at the fence's LSN → accounts (and slots) on the new primary →
// repoint the other replica and rejoin the old primary (stopped cleanly,
// it becomes a standby of the new one), and resumes across a controller
// restart while the promotion waits.
func TestPostgreSQLSwitchoverRejoinsTheOldPrimaryAcrossAControllerRestart(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	dir, agentAddr := t.TempDir(), freeAddr(t)
	// The replicas' accounts are guest calls made by the create request:
	// the guest call timeout bounds them (under -race and load, 300 ms
	// is too short).
	r1 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr, guestCallTimeout: 10 * time.Second})
	registerVersion(t, r1, "postgresql", "15", 5432)
	c := r1.admin()
	src := newActiveOf(c, "postgresql", "15", "pg")
	ids := replicaIDs(t, c, src, 2)
	a, b := ids[0], ids[1]

	fc.guest(a).halt()
	if code, doc := promote(c, a); code != 202 {
		t.Fatalf("promote: HTTP %d %v", code, doc)
	}
	waitFor(t, "the old primary fenced and stopped, promote_replica queued", 30*time.Second, func() bool {
		return len(fc.journal.events("stop "+src)) == 1 &&
			storetest.Count(t, r1.ctl.DB, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = 'promote_replica' AND done_at IS NULL", a) == 1
	})
	// The controller restarts; the other guests run on (a host that
	// stopped would start the old primary's server again at boot, as a
	// primary: it could not rejoin, the next test's case).
	r1.ctl.Stop()
	fc.powerOffOne(a)

	r2 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr, guestCallTimeout: 10 * time.Second})
	c = r2.admin()
	waitFor(t, "the switchover to finish", 60*time.Second, func() bool {
		sv, bv := c.instance(src), c.instance(b)
		sof, _ := sv["replica_of"].(map[string]any)
		bof, _ := bv["replica_of"].(map[string]any)
		return c.instance(a)["status"] == "ACTIVE" && bv["status"] == "ACTIVE" && sv["status"] == "ACTIVE" &&
			bof != nil && bof["id"] == a && sof != nil && sof["id"] == a
	})
	events := fc.journal.events("fence ", "stop ", "promote ", "account "+a, "start ", "rejoin ")
	events = events[slices.Index(events, "fence "+src):] // the creates' starts before it
	want := []string{"fence " + src, "stop " + src, "promote " + a + " 0/3000100"}
	if !slices.Equal(events[:3], want) {
		t.Fatalf("switchover events %v, want them to begin %v", events, want)
	}
	// The accounts (in either order) come before the links that use them.
	rest := events[3:]
	wantRest := []string{"account " + a + " " + acctOf(b), "account " + a + " " + acctOf(src),
		"start " + b + " " + acctOf(b) + " repoint=true", "rejoin " + src + " " + acctOf(src)}
	if len(rest) != 4 || !slices.Equal(sorted(rest[:2]), sorted(wantRest[:2])) || !slices.Equal(sorted(rest[2:]), sorted(wantRest[2:])) {
		t.Fatalf("switchover events after the promotion %v, want the accounts %v then the links %v", rest, wantRest[:2], wantRest[2:])
	}
	av := c.instance(a)
	got := []string{}
	for _, x := range asList(av["replicas"]) {
		got = append(got, x.(map[string]any)["id"].(string))
	}
	if av["replica_of"] != nil || !slices.Equal(sorted(got), sorted([]string{src, b})) {
		t.Fatalf("the new primary: replica_of %v, replicas %v", av["replica_of"], av["replicas"])
	}
	if sv := c.instance(src); sv["fault"] != nil || sv["replicas"] != nil {
		t.Fatalf("the old primary: fault %v, replicas %v", sv["fault"], sv["replicas"])
	}
	accounts, _, _ := fc.guest(a).replication()
	for _, id := range []string{src, b} {
		_, l, _ := fc.guest(id).replication()
		if l == nil || l.Host != av["ip"].([]any)[0] || accounts[l.Account] != l.Password || len(l.Password) < 32 || l.Account != acctOf(id) {
			t.Fatalf("%s follows %+v; the new primary holds %v", id, l, keys(accounts))
		}
	}
	if fc.guest(src).fence() || fc.guest(src).isStopped() {
		t.Fatalf("the rejoined old primary: fenced %v, stopped %v", fc.guest(src).fence(), fc.guest(src).isStopped())
	}
}

// A former PostgreSQL primary whose server crashed after the switchover
// stopped it (or whose VM rebooted and started it as a primary) is
// refused by the plain rejoin; it rejoins through pg_rewind at the fork
// the promotion reported — its account on the new primary reset first,
// since the first password is gone — and the group is whole.
func TestPostgreSQLSwitchoverRewindsAnOldPrimaryThatCrashedAfterItsStop(t *testing.T) {
	t.Parallel()
	fc, r, c, src, ids := replicaGroup(t, "postgresql", "15", 5432, 10*time.Second, 2)
	a, b := ids[0], ids[1]
	fc.guest(src).setFailRejoin(`the data directory's cluster state is "in production", not "shut down"`)
	if code, doc := promote(c, a); code != 202 {
		t.Fatalf("promote: HTTP %d %v", code, doc)
	}
	waitFor(t, "the switchover to finish", 60*time.Second, func() bool {
		sv, bv := c.instance(src), c.instance(b)
		sof, _ := sv["replica_of"].(map[string]any)
		bof, _ := bv["replica_of"].(map[string]any)
		return c.instance(a)["status"] == "ACTIVE" && bv["status"] == "ACTIVE" && sv["status"] == "ACTIVE" &&
			bof != nil && bof["id"] == a && sof != nil && sof["id"] == a
	})
	if sv := c.instance(src); sv["fault"] != nil {
		t.Fatalf("the rewound old primary has a fault: %v", sv["fault"])
	}
	fork := fakeForkAfter("0/3000100") // the fence's position, and the shutdown checkpoint after it
	if got := fc.journal.events("rewind " + src); !slices.Equal(got, []string{"rewind " + src + " " + fork}) {
		t.Fatalf("rewinds of the old primary %v, want one at the promotion's fork %s", got, fork)
	}
	if got := fc.journal.events("account " + a + " " + acctOf(src)); len(got) != 2 {
		t.Fatalf("the old primary's account on the new primary was set %d times, want 2 (its password reset for the rewind)", len(got))
	}
	accounts, _, _ := fc.guest(a).replication()
	_, l, _ := fc.guest(src).replication()
	if l == nil || l.ForkLSN != fork || accounts[l.Account] != l.Password || len(l.Password) < 32 {
		t.Fatalf("the old primary follows %+v; the new primary holds %v", l, keys(accounts))
	}
	if n := storetest.Count(t, r.ctl.DB, `SELECT COUNT(*) FROM tasks WHERE kind = 'promote' AND payload LIKE '%"passwords"%'`); n != 0 {
		t.Fatalf("%d promote tasks keep a password in their payload", n)
	}
}

// A former PostgreSQL primary that cannot rejoin at all (it crashed after
// the switchover stopped it, and its WAL holds a transaction committed
// past the fork, which pg_rewind would drop) does not fail the
// switchover: the other replica follows the new primary, and the old
// primary leaves the group with a fault that says why and what to do;
// its account on the new primary is dropped.
func TestPostgreSQLSwitchoverLeavesAnOldPrimaryThatCannotRejoinOutOfTheGroup(t *testing.T) {
	t.Parallel()
	fc, _, c, src, ids := replicaGroup(t, "postgresql", "15", 5432, 10*time.Second, 2)
	a, b := ids[0], ids[1]
	fc.guest(src).setFailRejoin(`the data directory's cluster state is "in production", not "shut down"`)
	const why = "this server committed 1 transaction(s) at or after the fork"
	fc.guest(src).setFailRewind(why)
	if code, doc := promote(c, a); code != 202 {
		t.Fatalf("promote: HTTP %d %v", code, doc)
	}
	var sv map[string]any
	waitFor(t, "the switchover to finish", 60*time.Second, func() bool {
		bof, _ := c.instance(b)["replica_of"].(map[string]any)
		sv = c.instance(src)
		return c.instance(a)["status"] == "ACTIVE" && bof != nil && bof["id"] == a && sv["fault"] != nil &&
			len(fc.journal.events("drop "+a+" "+acctOf(src))) == 1
	})
	msg := sv["fault"].(map[string]any)["message"].(string)
	if sv["replica_of"] != nil || !strings.Contains(msg, why) || !strings.Contains(msg, "create a replica of "+a) {
		t.Fatalf("the old primary: replica_of %v, fault %q", sv["replica_of"], msg)
	}
	av := c.instance(a)
	if l := asList(av["replicas"]); av["fault"] != nil || len(l) != 1 || l[0].(map[string]any)["id"] != b {
		t.Fatalf("the new primary: fault %v, replicas %v", av["fault"], av["replicas"])
	}
	if accounts, _, _ := fc.guest(a).replication(); accounts[acctOf(src)] != "" {
		t.Fatalf("the old primary's account is left on the new primary: %v", keys(accounts))
	}
	if _, l, _ := fc.guest(src).replication(); l != nil || !fc.guest(src).fence() || !fc.guest(src).isStopped() {
		t.Fatalf("the old primary: link %+v, fenced %v, stopped %v", l, fc.guest(src).fence(), fc.guest(src).isStopped())
	}
}

// A PostgreSQL switchover whose replica cannot reach the fence's LSN
// rolls back: the old primary, stopped for the switchover, is started
// again before its fence is lifted, and is the writable source again.
func TestPostgreSQLSwitchoverRollbackStartsTheStoppedPrimaryAgain(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc})
	registerVersion(t, r, "postgresql", "15", 5432)
	c := r.admin()
	src := newActiveOf(c, "postgresql", "15", "pg")
	a := replicaIDs(t, c, src, 1)[0]
	fc.guest(a).setLagging(true)
	if code, doc := promote(c, a); code != 202 {
		t.Fatalf("promote: HTTP %d %v", code, doc)
	}
	var in map[string]any
	waitFor(t, "the rollback", 30*time.Second, func() bool {
		in = c.instance(a)
		f, _ := in["fault"].(map[string]any)
		return in["status"] == "ACTIVE" && f != nil
	})
	if msg := in["fault"].(map[string]any)["message"].(string); !strings.Contains(msg, "rolled back") {
		t.Fatalf("fault after the rollback: %q", msg)
	}
	events := fc.journal.events("fence ", "stop ", "promote ", "restart ")
	want := []string{"fence " + src, "stop " + src, "promote " + a + " 0/3000100", "restart " + src}
	if !slices.Equal(events, want) {
		t.Fatalf("events %v, want %v", events, want)
	}
	waitFor(t, "the old primary running and writable", 20*time.Second, func() bool {
		return c.instance(src)["status"] == "ACTIVE" && !fc.guest(src).fence()
	})
	if of, _ := c.instance(a)["replica_of"].(map[string]any); of == nil || of["id"] != src {
		t.Fatalf("replica_of after the rollback: %v", c.instance(a)["replica_of"])
	}
}

// A Redis switchover: fence, promote at the fence's offset (and
// replication ID), then the old primary follows the new one (a plain
// start, its own offset) and the other replica is repointed.
func TestRedisSwitchoverMakesTheOldPrimaryAReplica(t *testing.T) {
	t.Parallel()
	fc, _, c, src, ids := replicaGroup(t, "redis", "7.0", 6379, 2*time.Second, 2)
	a, b := ids[0], ids[1]
	if code, doc := promote(c, a); code != 202 {
		t.Fatalf("promote: HTTP %d %v", code, doc)
	}
	waitFor(t, "the switchover to finish", 30*time.Second, func() bool {
		for _, id := range []string{src, a, b} {
			if c.instance(id)["status"] != "ACTIVE" {
				return false
			}
		}
		of, _ := c.instance(src)["replica_of"].(map[string]any)
		return of != nil && of["id"] == a
	})
	events := fc.journal.events("fence ", "stop ", "promote ", "start "+src)
	want := []string{"fence " + src, "promote " + a + " 1001", "start " + src + " " + acctOf(src) + " repoint=false"}
	if !slices.Equal(events, want) {
		t.Fatalf("switchover events %v, want %v", events, want)
	}
	if !before(fc.journal.events("account "+a, "start "+b), "account "+a+" "+acctOf(b), "start "+b+" "+acctOf(b)+" repoint=true") {
		t.Fatalf("b was not repointed after its account on the new primary: %v", fc.journal.events("account ", "start "))
	}
	if l := asList(c.instance(a)["replicas"]); len(l) != 2 {
		t.Fatalf("the new primary lists %v", l)
	}
	if _, link, _ := fc.guest(src).replication(); link == nil || link.GTIDSlavePos != "" || fc.guest(src).fence() {
		t.Fatalf("the old primary follows %+v (fenced %v)", link, fc.guest(src).fence())
	}
}

// Failover elects by the datastore's own position, compared as numbers:
// PostgreSQL's received_lsn (as strings "9/FF000000" > "10/0", as WAL
// positions the other way round) and Redis's repl_offset ("999" >
// "20000" as strings). The elected replica is promoted at what it
// received, and the others follow it with accounts made there first.
func TestEjectElectsByLSNAndByOffset(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		manager, version string
		port             int
		pos              []string
		want             int
	}{
		{"postgresql", "15", 5432, []string{"9/FF000000", "10/0"}, 1},
		{"redis", "7.0", 6379, []string{"999", "20000"}, 1},
	} {
		t.Run(tc.manager, func(t *testing.T) { // one after the other: fewer seed restores at once
			fc, r, c, src, ids := replicaGroup(t, tc.manager, tc.version, tc.port, 2*time.Second, len(tc.pos))
			for i, id := range ids {
				fc.guest(id).setIOPos(tc.pos[i])
			}
			elected := ids[tc.want]
			fc.guest(src).halt()
			silence(t, r, src)
			if code, doc := eject(c, src); code != 202 {
				t.Fatalf("eject: HTTP %d %v", code, doc)
			}
			waitFor(t, "the failover", 60*time.Second, func() bool {
				if c.instance(elected)["status"] != "ACTIVE" {
					return false
				}
				for _, id := range ids {
					if id == elected {
						continue
					}
					in := c.instance(id)
					if of, _ := in["replica_of"].(map[string]any); of == nil || of["id"] != elected || in["status"] != "ACTIVE" {
						return false
					}
				}
				return true
			})
			events := fc.journal.events("promote ")
			if !slices.Equal(events, []string{"promote " + elected + " " + tc.pos[tc.want]}) {
				t.Fatalf("promotions %v, want %s at %s", events, elected, tc.pos[tc.want])
			}
			for _, id := range ids {
				if id == elected {
					continue
				}
				if !before(fc.journal.events("account "+elected, "start "+id), "account "+elected+" "+acctOf(id), "start "+id+" "+acctOf(id)+" repoint=true") {
					t.Fatalf("%s was not repointed after its account on %s: %v", id, elected, fc.journal.events("account ", "start "))
				}
			}
			// The old source's rejoin. PostgreSQL: its agent refuses a
			// server that committed past the fork (the server is fenced
			// again, and the request can be made again), else rewinds it to
			// the fork the elected replica's received LSN marks. Redis: an
			// offset inside the fork, in the group's replication ID,
			// follows the elected replica.
			if tc.manager == "postgresql" {
				fc.guest(src).setFailRewind("2 transactions committed past the fork")
				if code, doc := rejoin(c, src); code != 202 {
					t.Fatalf("rejoin: HTTP %d %v", code, doc)
				}
				waitFor(t, "the refusal", 30*time.Second, func() bool {
					in := c.instance(src)
					f, _ := in["fault"].(map[string]any)
					return in["status"] != "REJOIN" && f != nil && strings.Contains(f["message"].(string), "committed past the fork")
				})
				if st, err := fc.ServerState(context.Background(), fc.server(src)); err != nil || st != compute.StateFenced {
					t.Fatalf("the refused source's server: %s, %v; want fenced", st, err)
				}
				fc.guest(src).setFailRewind("")
			}
			// Once linked, the old source applies the group's history up
			// to the fork (its fake reports that much). A PostgreSQL fork
			// is the one the elected replica's promotion reported (its
			// timeline's switch point), past what it had received.
			fork := tc.pos[tc.want]
			if tc.manager == "postgresql" {
				fork = fakeForkAfter(fork)
			}
			fc.guest(src).setIOPos(fork)
			if code, doc := rejoin(c, src); code != 202 {
				t.Fatalf("rejoin: HTTP %d %v", code, doc)
			}
			waitFor(t, "the rejoin", 30*time.Second, func() bool {
				in := c.instance(src)
				of, _ := in["replica_of"].(map[string]any)
				return in["status"] == "ACTIVE" && of != nil && of["id"] == elected && in["fault"] == nil
			})
			_, link, _ := fc.guest(src).replication()
			if link == nil || link.Account != acctOf(src) || link.GTIDSlavePos != "" {
				t.Fatalf("the rejoined %s source follows %+v", tc.manager, link)
			}
			if rewinds := fc.journal.events("rewind " + src); tc.manager == "postgresql" && !slices.Equal(rewinds, []string{"rewind " + src + " " + fork}) ||
				tc.manager == "redis" && len(rewinds) > 0 {
				t.Fatalf("rewinds of the old source: %v (want one to the fork %s the elected replica's promotion reported for PostgreSQL, none for Redis)", rewinds, fork)
			}
		})
	}
}

// A Redis source that became the source by a switchover, whose last
// snapshot is from before its promotion, is ejected by a failover and
// started again from that snapshot: it holds a prefix of the group's
// history under the old primary's replication ID, which the failover
// recorded with the fork (the elected replica's previous stream), and it
// rejoins as a replica of the elected one. The same server having taken
// a write after its start is refused first, and fenced again. The
// figures are a real server's (agent/datastore/redis
// TestASourceStartedAgainFromASnapshotFromBeforeItsPromotionReportsTheGroupsOlderStream).
func TestARedisSourceStartedAgainFromASnapshotFromBeforeItsPromotionRejoins(t *testing.T) {
	t.Parallel()
	fc, r, c, src, ids := replicaGroup(t, "redis", "7.0", 6379, 2*time.Second, 2)
	e, b := ids[0], ids[1]
	if code, doc := promote(c, e); code != 202 {
		t.Fatalf("promote: HTTP %d %v", code, doc)
	}
	waitFor(t, "the switchover", 30*time.Second, func() bool {
		for _, id := range []string{src, e, b} {
			if c.instance(id)["status"] != "ACTIVE" {
				return false
			}
		}
		of, _ := c.instance(src)["replica_of"].(map[string]any)
		return of != nil && of["id"] == e
	})
	// E continued the group's stream (fakeReplID) under a new ID x at
	// its promotion; its replicas followed with partial
	// resynchronisations and keep the old stream as their previous one,
	// up to the promotion point.
	const x, z = "8430424b821fe1136c6349a471df2cf559fa6da7", "85bc7f341717a45a2231d80db4929327eb491d03"
	const promotion, snapshot = 7026, 3013
	fc.guest(b).setStreams(&fakeStreams{id: x, id2: fakeReplID, id2End: promotion})
	fc.guest(src).setStreams(&fakeStreams{id: x, id2: fakeReplID, id2End: promotion})
	fc.guest(b).setIOPos("8689")
	fc.guest(src).setIOPos("8600")

	fc.guest(e).halt()
	silence(t, r, e)
	if code, doc := eject(c, e); code != 202 {
		t.Fatalf("eject: HTTP %d %v", code, doc)
	}
	waitFor(t, "the failover", 60*time.Second, func() bool {
		of, _ := c.instance(src)["replica_of"].(map[string]any)
		return c.instance(b)["status"] == "ACTIVE" && c.instance(src)["status"] == "ACTIVE" && of != nil && of["id"] == b
	})
	if events := fc.journal.events("promote " + b); !slices.Equal(events, []string{"promote " + b + " 8689"}) {
		t.Fatalf("promotions of the elected replica: %v", events)
	}
	if n := storetest.Count(t, r.ctl.DB, `SELECT COUNT(*) FROM ejections WHERE instance_id = ? AND elected_id = ? AND fork_pos = '8689'
		AND fork_repl_id = ? AND fork_prev_repl_id = ? AND fork_prev_end = '7026'`, e, b, x, fakeReplID); n != 1 {
		t.Fatal("the ejection does not record the group's stream before the fork")
	}

	// Started again from its snapshot (the old stream up to 3013), it
	// took 50 bytes of writes before its fence: refused, fenced again.
	written := int64(snapshot + 50)
	fc.guest(e).setStreams(&fakeStreams{id: z, id2: fakeReplID, id2End: snapshot, off: &written})
	if code, doc := rejoin(c, e); code != 202 {
		t.Fatalf("rejoin: HTTP %d %v", code, doc)
	}
	waitFor(t, "the refusal", 30*time.Second, func() bool {
		in := c.instance(e)
		f, _ := in["fault"].(map[string]any)
		return in["status"] != "REJOIN" && f != nil && strings.Contains(f["message"].(string), "50 bytes of writes since it started again")
	})
	if st, err := fc.ServerState(context.Background(), fc.server(e)); err != nil || st != compute.StateFenced {
		t.Fatalf("the refused source's server: %s, %v; want fenced", st, err)
	}

	// Nothing written since its start: it rejoins, and once linked it
	// reports the group's offset (a full resynchronisation).
	clean := int64(snapshot)
	fc.guest(e).setStreams(&fakeStreams{id: z, id2: fakeReplID, id2End: snapshot, off: &clean})
	fc.guest(e).setIOPos("8689")
	if code, doc := rejoin(c, e); code != 202 {
		t.Fatalf("rejoin: HTTP %d %v", code, doc)
	}
	waitFor(t, "the rejoin", 30*time.Second, func() bool {
		in := c.instance(e)
		of, _ := in["replica_of"].(map[string]any)
		return in["status"] == "ACTIVE" && of != nil && of["id"] == b && in["fault"] == nil
	})
	if _, link, _ := fc.guest(e).replication(); link == nil || link.Account != acctOf(e) || link.GTIDSlavePos != "" {
		t.Fatalf("the rejoined source follows %+v", link)
	}
	if accounts, _, _ := fc.guest(b).replication(); accounts[acctOf(e)] == "" {
		t.Fatalf("the elected replica holds no account for the rejoined source: %v", accounts)
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM ejections WHERE instance_id = ?", e); n != 0 {
		t.Fatal("the rejoined source's ejection is kept")
	}
}

// replicaGroup is a rig (fake compute and guests; guest calls bounded
// by callTimeout) with manager's version registered, one ACTIVE instance
// of it and n ACTIVE replicas of that instance.
func replicaGroup(t *testing.T, manager, version string, port int, callTimeout time.Duration, n int) (fc *fakeCompute, r *rig, c *client, src string, replicas []string) {
	t.Helper()
	fc = newFakeCompute(t)
	r = newRig(t, rigOptions{compute: fc, guestCallTimeout: callTimeout})
	registerVersion(t, r, manager, version, port)
	c = r.admin()
	src = newActiveOf(c, manager, version, "src")
	return fc, r, c, src, replicaIDs(t, c, src, n)
}

// sorted returns a sorted copy of s.
func sorted(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

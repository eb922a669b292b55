package api_test

import (
	"strings"
	"testing"
	"time"

	"strata/controller/store/storetest"
)

// replicaIDs creates count replicas of src and waits until they are
// ACTIVE.
func replicaIDs(t *testing.T, c *client, src string, count int) []string {
	t.Helper()
	c.must(200, "POST", "/instances", map[string]any{"instance": map[string]any{"name": "r", "replica_of": src, "replica_count": count}})
	var ids []string
	waitFor(t, "the replicas on the source", 40*time.Second, func() bool {
		list, _ := c.instance(src)["replicas"].([]any)
		ids = ids[:0]
		for _, r := range list {
			ids = append(ids, r.(map[string]any)["id"].(string))
		}
		return len(ids) == count
	})
	for _, id := range ids {
		c.waitStatus(id, "ACTIVE", 40*time.Second)
	}
	return ids
}

func acctOf(id string) string { return "strata_repl_" + strings.ReplaceAll(id, "-", "")[:20] }

func promote(c *client, id string) (int, map[string]any) {
	return c.do("POST", "/instances/"+id+"/action", map[string]any{"promote_to_replica_source": map[string]any{}})
}

// A switchover to replica a of src, with a second replica b: the
// controller goes down while a has not yet promoted (its agent is away),
// and the task finishes after the restart. The old source is fenced
// (read-only) before a is promoted, then follows a from the position it
// was fenced at; b follows a from its own position; each with its own new
// account on a, whose passwords nobody keeps. The views show the new
// topology; a second promote while one runs is refused.
func TestPromoteSwitchesTheGroupAcrossAControllerRestart(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	dir, agentAddr := t.TempDir(), freeAddr(t)
	r1 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr, guestCallTimeout: 300 * time.Millisecond})
	c := r1.admin()
	src := newActive(c, "primary", "shop")
	ids := replicaIDs(t, c, src, 2)
	a, b := ids[0], ids[1]

	fc.guest(a).halt()
	if code, doc := promote(c, a); code != 202 {
		t.Fatalf("promote: HTTP %d %v", code, doc)
	}
	for _, id := range []string{src, a, b} {
		if st := c.instance(id)["status"]; st != "PROMOTE" {
			t.Fatalf("member %s is %v during the switchover, want PROMOTE", id, st)
		}
	}
	// A second switchover in the same group is refused while one runs,
	// and so is deleting a member.
	if code, doc := promote(c, b); code != 422 || !strings.Contains(errorMessage(doc), "in progress") {
		t.Fatalf("promote during a promote: HTTP %d %v", code, doc)
	}
	if code, doc := c.do("DELETE", "/instances/"+b, nil); code != 422 || !strings.Contains(errorMessage(doc), "switchover") {
		t.Fatalf("delete of a member during a promote: HTTP %d %v", code, doc)
	}
	waitFor(t, "the old source fenced and promote_replica queued", 30*time.Second, func() bool {
		return fc.guest(src).fence() &&
			storetest.Count(t, r1.ctl.DB, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = 'promote_replica' AND done_at IS NULL", a) == 1
	})
	if _, link, _ := fc.guest(a).replication(); link == nil {
		t.Fatal("the replica was promoted before its agent went away: the restart below would test nothing")
	}
	r1.ctl.Stop()
	fc.powerOff()

	r2 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr, guestCallTimeout: 300 * time.Millisecond})
	c = r2.admin()
	waitFor(t, "the switchover to finish", 60*time.Second, func() bool {
		for _, id := range []string{src, a, b} {
			if c.instance(id)["status"] != "ACTIVE" {
				return false
			}
		}
		return true
	})
	av := c.instance(a)
	if av["replica_of"] != nil || av["fault"] != nil {
		t.Fatalf("the promoted replica shows replica_of %v, fault %v", av["replica_of"], av["fault"])
	}
	var listed []string
	for _, r := range av["replicas"].([]any) {
		listed = append(listed, r.(map[string]any)["id"].(string))
	}
	if len(listed) != 2 || !(listed[0] == src || listed[1] == src) || !(listed[0] == b || listed[1] == b) {
		t.Fatalf("the new source lists replicas %v, want %s and %s", listed, src, b)
	}
	for _, id := range []string{src, b} {
		in := c.instance(id)
		if of, _ := in["replica_of"].(map[string]any); of == nil || of["id"] != a {
			t.Fatalf("%s replica_of %v, want %s", id, in["replica_of"], a)
		}
		if in["replicas"] != nil {
			t.Fatalf("%s still lists replicas %v", id, in["replicas"])
		}
	}

	// The guests: a writable with no link; src fenced, following a from
	// its fenced position; b following a from its own position; each
	// with the password a holds for it.
	accounts, link, _ := fc.guest(a).replication()
	if link != nil || fc.guest(a).fence() {
		t.Fatalf("the promoted guest still follows %+v (fenced %v)", link, fc.guest(a).fence())
	}
	aIP := av["ip"].([]any)[0]
	for _, m := range []struct{ id, gtid string }{{src, "0-1-101"}, {b, "0-1-42"}} {
		_, l, _ := fc.guest(m.id).replication()
		if l == nil || l.Host != aIP || float64(l.Port) != av["port"] || l.Account != acctOf(m.id) || l.GTIDSlavePos != m.gtid {
			t.Fatalf("%s follows %+v, want %v:%v as %s from %s", m.id, l, aIP, av["port"], acctOf(m.id), m.gtid)
		}
		if pw, ok := accounts[l.Account]; !ok || pw != l.Password || len(pw) < 32 {
			t.Fatalf("%s follows as %s, which the new source does not hold with that password (accounts %v)", m.id, l.Account, keys(accounts))
		}
	}
	if !fc.guest(src).fence() {
		t.Fatal("the old source is writable after the switchover")
	}
	db := r2.ctl.DB
	if n := storetest.Count(t, db, "SELECT COUNT(*) FROM agent_ops WHERE kind IN ('create_replication_account', 'start_replication') AND args IS NOT NULL"); n != 0 {
		t.Fatalf("%d replication operations still hold their arguments (the password)", n)
	}
	if n := storetest.Count(t, db, "SELECT COUNT(*) FROM tasks WHERE kind = 'promote' AND payload LIKE '%password%'"); n != 0 {
		t.Fatal("the promote task still holds replication passwords")
	}
	// The old source is a replica now: writes that would diverge it are
	// refused; the new source takes them.
	code, doc := c.do("POST", "/instances/"+src+"/databases", map[string]any{"databases": []any{map[string]any{"name": "x"}}})
	if code != 400 || !strings.Contains(errorMessage(doc), "is a replica of "+a) {
		t.Fatalf("database create on the old source: HTTP %d %v", code, doc)
	}
	c.must(202, "POST", "/instances/"+a+"/databases", map[string]any{"databases": []any{map[string]any{"name": "x"}}})
	// And back: the old source can be promoted again.
	if code, doc := promote(c, src); code != 202 {
		t.Fatalf("promote back: HTTP %d %v", code, doc)
	}
	waitFor(t, "the switch back", 30*time.Second, func() bool {
		in := c.instance(src)
		return in["status"] == "ACTIVE" && in["replica_of"] == nil && len(asList(in["replicas"])) == 2
	})
	if fc.guest(src).fence() || !fc.guest(a).fence() {
		t.Fatalf("after the switch back: old source fenced %v, a fenced %v", fc.guest(src).fence(), fc.guest(a).fence())
	}
}

func asList(v any) []any { l, _ := v.([]any); return l }

// A replica that cannot reach its source's fenced position in time is not
// promoted: the source's fence is lifted (writable again), the replica
// still follows it, the links are as before, and the replica's fault says
// why.
func TestPromoteRollsBackWhenTheReplicaCannotCatchUp(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc})
	c := r.admin()
	src := newActive(c, "primary")
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
	msg := in["fault"].(map[string]any)["message"].(string)
	if !strings.Contains(msg, "rolled back") || !strings.Contains(msg, "did not apply the primary's position") {
		t.Fatalf("fault after the rollback: %q", msg)
	}
	if of, _ := in["replica_of"].(map[string]any); of == nil || of["id"] != src {
		t.Fatalf("replica_of after the rollback: %v", in["replica_of"])
	}
	if st := c.instance(src)["status"]; st != "ACTIVE" || fc.guest(src).fence() {
		t.Fatalf("source after the rollback: %v, fenced %v", st, fc.guest(src).fence())
	}
	if _, link, _ := fc.guest(a).replication(); link == nil {
		t.Fatal("the replica no longer follows its source after the rollback")
	}
	if fc.guest(a).repl.promotes != 1 {
		t.Fatalf("promote_replica ran %d times", fc.guest(a).repl.promotes)
	}
	// Once it can catch up, the same request succeeds.
	fc.guest(a).setLagging(false)
	if code, doc := promote(c, a); code != 202 {
		t.Fatalf("promote again: HTTP %d %v", code, doc)
	}
	waitFor(t, "the switchover", 30*time.Second, func() bool {
		of, _ := c.instance(src)["replica_of"].(map[string]any)
		return of != nil && of["id"] == a && c.instance(src)["status"] == "ACTIVE"
	})
	gs, ga := fc.guest(src), fc.guest(a)
	gs.mu.Lock()
	fenced := gs.repl.fencedAt
	gs.mu.Unlock()
	ga.mu.Lock()
	writable := ga.repl.writableAt
	ga.mu.Unlock()
	if fenced.IsZero() || writable.Before(fenced) {
		t.Fatalf("the source was fenced at %v, the replica writable at %v: never two writable primaries", fenced, writable)
	}
	t.Logf("controller path: writes refused from the source's fence to the replica writable: %v (fake agents, the database steps take no time)", writable.Sub(fenced))
}

// Guard rails and bad input: 4xx with a message, nothing changed.
func TestPromoteRequestsAreChecked(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc})
	c := r.admin()
	src := newActive(c, "primary")
	a := replicaIDs(t, c, src, 1)[0]
	for _, tc := range []struct {
		name string
		id   string
		body any
		code int
		want string
	}{
		{"not a replica", src, map[string]any{"promote_to_replica_source": map[string]any{}}, 400, "is not a replica"},
		{"arguments", a, map[string]any{"promote_to_replica_source": map[string]any{"force": true}}, 400, "takes no arguments"},
		{"not an object", a, map[string]any{"promote_to_replica_source": []any{}}, 400, "takes no arguments"},
		{"malformed", a, `{"promote_to_replica_source": {`, 400, ""},
		{"two actions", a, map[string]any{"promote_to_replica_source": map[string]any{}, "restart": map[string]any{}}, 400, "exactly one action"},
		{"unknown instance", "00000000-0000-0000-0000-000000000000", map[string]any{"promote_to_replica_source": map[string]any{}}, 404, "not found"},
	} {
		code, doc := c.do("POST", "/instances/"+tc.id+"/action", tc.body)
		if code != tc.code || !strings.Contains(errorMessage(doc), tc.want) || errorMessage(doc) == "" {
			t.Errorf("%s: HTTP %d %v, want %d %q", tc.name, code, doc, tc.code, tc.want)
		}
	}
	// Another project's replica does not exist for the caller.
	if code, doc := promote(r.otherProjectClient(), a); code != 404 {
		t.Fatalf("promote of another project's replica: HTTP %d %v", code, doc)
	}
	// A member that is not ACTIVE (a second replica still building)
	// blocks the switchover.
	c.must(200, "POST", "/instances", map[string]any{"instance": map[string]any{"name": "late", "replica_of": src}})
	code, doc := promote(c, a)
	if code != 422 || !strings.Contains(errorMessage(doc), "in progress") {
		t.Fatalf("promote with a member building: HTTP %d %v", code, doc)
	}
	if st := c.instance(src)["status"]; fc.guest(src).fence() || st == "PROMOTE" {
		t.Fatalf("a refused promote changed the source (status %v, fenced %v)", st, fc.guest(src).fence())
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE kind = 'promote'"); n != 0 {
		t.Fatalf("refused promotes queued %d tasks", n)
	}
}

// While a switchover's promotion is in flight (the source fenced, the
// replica's promote_replica running), neither reset_status nor the
// management reset-task-status may cancel it on any member of the group:
// 422 saying it ends by itself. It then finishes as if nothing happened.
func TestResetIsRefusedDuringASwitchover(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc})
	c := r.admin()
	src := newActive(c, "primary")
	ids := replicaIDs(t, c, src, 2)
	a, b := ids[0], ids[1]
	ga := fc.guest(a)
	gate := make(chan struct{})
	ga.mu.Lock()
	ga.repl.promoteGate = gate
	ga.mu.Unlock()
	if code, doc := promote(c, a); code != 202 {
		t.Fatalf("promote: HTTP %d %v", code, doc)
	}
	waitFor(t, "the source fenced and the promotion in flight", 30*time.Second, func() bool {
		ga.mu.Lock()
		defer ga.mu.Unlock()
		return ga.applying == 1 && fc.guest(src).fence()
	})
	for _, id := range []string{src, a, b} {
		code, doc := c.do("POST", "/instances/"+id+"/action", map[string]any{"reset_status": map[string]any{}})
		if code != 422 || !strings.Contains(errorMessage(doc), "switchover of its replication group") || !strings.Contains(errorMessage(doc), "ends by itself") {
			t.Errorf("reset_status of member %s during the switchover: HTTP %d %v", id, code, doc)
		}
		code, doc = c.do("POST", "/mgmt/instances/"+id+"/action", map[string]any{"reset-task-status": map[string]any{}})
		if code != 422 || !strings.Contains(errorMessage(doc), "ends by itself") {
			t.Errorf("reset-task-status of member %s during the switchover: HTTP %d %v", id, code, doc)
		}
		if st := c.instance(id)["status"]; st != "PROMOTE" {
			t.Errorf("member %s is %v after the refused resets, want PROMOTE", id, st)
		}
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE kind = 'promote' AND state = 'cancelled'"); n != 0 {
		t.Fatalf("%d switchover tasks cancelled", n)
	}
	close(gate)
	waitFor(t, "the switchover to finish", 30*time.Second, func() bool {
		of, _ := c.instance(src)["replica_of"].(map[string]any)
		return of != nil && of["id"] == a && c.instance(src)["status"] == "ACTIVE" && c.instance(a)["status"] == "ACTIVE" && c.instance(b)["status"] == "ACTIVE"
	})
	if _, link, _ := ga.replication(); link != nil || ga.fence() {
		t.Fatalf("the promoted replica still follows %+v (fenced %v)", link, ga.fence())
	}
	// Once it ended, reset_status works again.
	c.must(202, "POST", "/instances/"+b+"/action", map[string]any{"reset_status": map[string]any{}})
}

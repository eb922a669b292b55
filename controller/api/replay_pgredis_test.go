package api_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"strata/controller/compute"
	"strata/controller/lifecycle"
	"strata/controller/store/storetest"
	"strata/controller/tasks"
)

// TestEveryStepOfAPostgreSQLFailoverRejoinAndRewindCanRunTwice: every
// step run twice (ReplaySteps) for a PostgreSQL group of three. Its
// source goes silent and is ejected: the replica that received the most
// is promoted once at what it received, the other follows it with its
// own account (and slot), the old source is fenced and its ejection
// keeps the promotion's fork. The old source rejoins through pg_rewind
// at that fork, once, and follows the new source with its own account.
// Then a switchover whose old primary refuses the plain rejoin (it
// crashed after its stop) rewinds it at the new promotion's fork: its
// account reset once, every member following the new primary, no
// fault, no password left in a task.
func TestEveryStepOfAPostgreSQLFailoverRejoinAndRewindCanRunTwice(t *testing.T) {
	t.Parallel()
	fc, r, c, src, a, b := replayEjectOfAGroupOfThree(t, "postgresql", "15", 5432, "0/3000200", "0/3000100", "at what it received")
	fork := fakeForkAfter("0/3000200")
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM ejections WHERE instance_id = ? AND elected_id = ? AND fork_pos = ?", src, a, fork); n != 1 {
		t.Fatalf("%d ejections of the old source by %s at the fork %s recorded, want 1", n, a, fork)
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = 'set_read_only' AND done_at IS NULL", src); n != 1 {
		t.Fatalf("%d fences queued for the ejected source, want 1", n)
	}

	// The old source rejoins: rewound at the fork, once.
	fc.guest(src).setIOPos(fork)
	if code, doc := rejoin(c, src); code != 202 {
		t.Fatalf("rejoin: HTTP %d %v", code, doc)
	}
	waitFor(t, "the rejoin", 60*time.Second, func() bool {
		in := c.instance(src)
		of, _ := in["replica_of"].(map[string]any)
		return in["status"] != "REJOIN" && (in["fault"] != nil || in["status"] == "ACTIVE" && of != nil && of["id"] == a)
	})
	if st := taskEnded(t, r, src, lifecycle.KindRejoin); st != tasks.StateDone {
		t.Fatalf("the rejoin task ended %s, want done", st)
	}
	noFaultOneKey(t, r, c, "the rejoin", src, a, b)
	onePrimary(t, fc, a, src, b)
	followsWithItsAccount(t, fc, src, a)
	followsWithItsAccount(t, fc, b, a)
	if _, link, _ := fc.guest(src).replication(); link.ForkLSN != fork {
		t.Fatalf("the rejoined source follows %+v, want it rewound at the fork %s", link, fork)
	}
	if got := fc.journal.events("rewind "); !slices.Equal(got, []string{"rewind " + src + " " + fork}) {
		t.Fatalf("rewinds %v, want the old source's once at %s", got, fork)
	}
	if got := fc.journal.events("account " + a + " " + acctOf(src)); len(got) != 1 {
		t.Fatalf("the rejoining source's account on %s was set %d times, want once", a, len(got))
	}
	if accounts, _, _ := fc.guest(a).replication(); len(accounts) != 2 {
		t.Fatalf("the new source holds accounts %v, want one for each replica", keys(accounts))
	}
	if st, err := fc.ServerState(context.Background(), fc.server(src)); err != nil || st != compute.StateRunning {
		t.Fatalf("the rejoined source's server: %s, %v; want running", st, err)
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM ejections WHERE instance_id = ?", src); n != 0 {
		t.Fatalf("the ejection is still recorded after the rejoin (%d)", n)
	}

	// A switchover to b whose old primary a crashed after its stop: the
	// plain rejoin is refused, a is rewound at b's fork.
	fc.guest(a).setFailRejoin(`the data directory's cluster state is "in production", not "shut down"`)
	mark := fc.journal.mark()
	if code, doc := promote(c, b); code != 202 {
		t.Fatalf("promote: HTTP %d %v", code, doc)
	}
	waitFor(t, "the switchover", 60*time.Second, func() bool {
		av, sv := c.instance(a), c.instance(src)
		aof, _ := av["replica_of"].(map[string]any)
		sof, _ := sv["replica_of"].(map[string]any)
		return c.instance(b)["status"] == "ACTIVE" && av["status"] == "ACTIVE" && sv["status"] == "ACTIVE" &&
			(av["fault"] != nil || aof != nil && aof["id"] == b) && sof != nil && sof["id"] == b
	})
	if st := taskEnded(t, r, b, lifecycle.KindPromote); st != tasks.StateDone {
		t.Fatalf("the switchover task ended %s, want done", st)
	}
	noFaultOneKey(t, r, c, "the switchover", src, a, b)
	onePrimary(t, fc, b, a, src)
	followsWithItsAccount(t, fc, a, b)
	followsWithItsAccount(t, fc, src, b)
	promoted := fc.journal.eventsSince(mark, "promote ")
	if len(promoted) != 1 || !strings.HasPrefix(promoted[0], "promote "+b+" ") {
		t.Fatalf("promotions in the switchover: %v, want %s's once", promoted, b)
	}
	at := strings.TrimPrefix(promoted[0], "promote "+b+" ")
	bFork := fakeForkAfter(at)
	if got := fc.journal.eventsSince(mark, "rewind "); !slices.Equal(got, []string{"rewind " + a + " " + bFork}) {
		t.Fatalf("rewinds of the old primary %v, want one at the promotion's fork %s", got, bFork)
	}
	if _, l, _ := fc.guest(a).replication(); l.ForkLSN != bFork {
		t.Fatalf("the old primary follows %+v, want it rewound at %s", l, bFork)
	}
	for what, want := range map[string]int{
		"fence " + a: 1, "stop " + a: 1,
		"account " + b + " " + acctOf(a):   2, // its password reset for the rewind
		"account " + b + " " + acctOf(src): 1,
	} {
		if got := fc.journal.eventsSince(mark, what); len(got) != want {
			t.Fatalf("%q happened %d times in the switchover, want %d: %v", what, len(got), want, fc.journal.eventsSince(mark, "fence ", "stop ", "account ", "rejoin ", "rewind ", "start "))
		}
	}
	if accounts, _, _ := fc.guest(b).replication(); len(accounts) != 2 || accounts[acctOf(b)] != "" {
		t.Fatalf("the new primary holds accounts %v, want one for each replica and not its own", keys(accounts))
	}
	if l := asList(c.instance(b)["replicas"]); len(l) != 2 {
		t.Fatalf("the new primary lists %v, want two replicas", l)
	}
	if n := storetest.Count(t, r.ctl.DB, `SELECT COUNT(*) FROM tasks WHERE (kind = 'promote' AND payload LIKE '%"passwords"%') OR (kind = 'rejoin' AND payload LIKE '%"password"%')`); n != 0 {
		t.Fatalf("%d tasks keep a password in their payload", n)
	}
	ranTwice(t, r, "promote:elect ", "promote:elected ", "promote:promoted ", "promote:accounts ", "promote:repoint ", "promote:linked ",
		"rejoin:boot ", "rejoin:fenced ", "rejoin:account ", "rejoin:linked ",
		"promote:fence ", "promote:fenced ", "promote:stopped ", "promote:rewind-account ", "promote:rewind ")
}

// TestEveryStepOfARedisFailoverRejoinAndSwitchoverCanRunTwice: the same
// for Redis. The elected replica is promoted once at its offset, the
// other follows it; a user made on the new source meanwhile reaches it.
// The old source rejoins by resynchronisation (no rewind) from its own
// offset and gets the new source's users. Then a switchover back to the
// other replica: the old primary follows the new one, everyone holds the
// same users, no fault.
func TestEveryStepOfARedisFailoverRejoinAndSwitchoverCanRunTwice(t *testing.T) {
	t.Parallel()
	fc, r, c, src, a, b := replayEjectOfAGroupOfThree(t, "redis", "7.0", 6379, "1500", "1200", "at its offset")
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM ejections WHERE instance_id = ? AND elected_id = ? AND fork_pos = '1500'", src, a); n != 1 {
		t.Fatalf("%d ejections of the old source by %s at offset 1500 recorded, want 1", n, a)
	}
	c.must(202, "POST", "/instances/"+a+"/users", map[string]any{"users": []any{map[string]any{"name": "during", "password": "during-pw"}}})
	usersReach(t, fc, "the new source's user on the other replica", a, []string{b}, hasLine("user during "))

	fc.guest(src).setIOPos("1500")
	if code, doc := rejoin(c, src); code != 202 {
		t.Fatalf("rejoin: HTTP %d %v", code, doc)
	}
	waitFor(t, "the rejoin", 60*time.Second, func() bool {
		in := c.instance(src)
		of, _ := in["replica_of"].(map[string]any)
		return in["status"] != "REJOIN" && (in["fault"] != nil || in["status"] == "ACTIVE" && of != nil && of["id"] == a)
	})
	if st := taskEnded(t, r, src, lifecycle.KindRejoin); st != tasks.StateDone {
		t.Fatalf("the rejoin task ended %s, want done", st)
	}
	noFaultOneKey(t, r, c, "the rejoin", src, a, b)
	onePrimary(t, fc, a, src, b)
	followsWithItsAccount(t, fc, src, a)
	followsWithItsAccount(t, fc, b, a)
	if got := fc.journal.events("rewind ", "rejoin "); len(got) != 0 {
		t.Fatalf("a Redis rejoin rewound or rejoined as PostgreSQL does: %v", got)
	}
	if got := fc.journal.events("start " + src + " "); !slices.Equal(got, []string{"start " + src + " " + acctOf(src) + " repoint=false"}) {
		t.Fatalf("links started on the rejoining source: %v, want one plain start (its own offset)", got)
	}
	if accounts, _, _ := fc.guest(a).replication(); len(accounts) != 2 {
		t.Fatalf("the new source holds accounts %v, want one for each replica", keys(accounts))
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM ejections WHERE instance_id = ?", src); n != 0 {
		t.Fatalf("the ejection is still recorded after the rejoin (%d)", n)
	}
	usersReach(t, fc, "the new source's users on the rejoined one", a, []string{src, b}, hasLine("user during "))

	// A switchover to b: a follows it, src is repointed.
	mark := fc.journal.mark()
	if code, doc := promote(c, b); code != 202 {
		t.Fatalf("promote: HTTP %d %v", code, doc)
	}
	waitFor(t, "the switchover", 60*time.Second, func() bool {
		av, sv := c.instance(a), c.instance(src)
		aof, _ := av["replica_of"].(map[string]any)
		sof, _ := sv["replica_of"].(map[string]any)
		return c.instance(b)["status"] == "ACTIVE" && av["status"] == "ACTIVE" && sv["status"] == "ACTIVE" &&
			aof != nil && aof["id"] == b && sof != nil && sof["id"] == b
	})
	if st := taskEnded(t, r, b, lifecycle.KindPromote); st != tasks.StateDone {
		t.Fatalf("the switchover task ended %s, want done", st)
	}
	noFaultOneKey(t, r, c, "the switchover", src, a, b)
	onePrimary(t, fc, b, a, src)
	followsWithItsAccount(t, fc, a, b)
	followsWithItsAccount(t, fc, src, b)
	if got := fc.journal.eventsSince(mark, "promote "); len(got) != 1 || !strings.HasPrefix(got[0], "promote "+b+" ") {
		t.Fatalf("promotions in the switchover: %v, want %s's once", got, b)
	}
	for what, want := range map[string]int{
		"fence " + a: 1, "account " + b + " " + acctOf(a): 1, "account " + b + " " + acctOf(src): 1,
		"start " + a + " " + acctOf(a) + " repoint=false": 1, "start " + src + " " + acctOf(src) + " repoint=true": 1,
	} {
		if got := fc.journal.eventsSince(mark, what); len(got) != want {
			t.Fatalf("%q happened %d times in the switchover, want %d: %v", what, len(got), want, fc.journal.eventsSince(mark, "fence ", "account ", "start "))
		}
	}
	if l := asList(c.instance(b)["replicas"]); len(l) != 2 {
		t.Fatalf("the new primary lists %v, want two replicas", l)
	}
	usersReach(t, fc, "the users on every member", b, []string{a, src}, hasLine("user during "))
	ranTwice(t, r, "promote:elect ", "promote:elected ", "promote:promoted ", "promote:accounts ", "promote:repoint ", "promote:linked ",
		"rejoin:boot ", "rejoin:fenced ", "rejoin:account ", "rejoin:linked ", "promote:fence ", "promote:fenced ")
}

// TestEveryStepOfASwitchoverRollbackCanRunTwice: a switchover whose
// replica cannot reach the fence's position (its promote_replica fails
// after the fence) rolls back with every step run twice: PostgreSQL's
// stopped primary started again once before its fence is lifted,
// MariaDB's fence lifted; the old source writable again, following
// nobody, both replicas following it with their own accounts as before,
// the promoted replica's fault saying the switchover rolled back.
func TestEveryStepOfASwitchoverRollbackCanRunTwice(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		manager, version string
		port             int
		want             []string // the old source's and the replica's events, %s and %r their ids
	}{
		{"postgresql", "15", 5432, []string{"fence %s", "stop %s", "promote %r 0/3000100", "restart %s"}},
		{"mariadb", "10.11", 3306, []string{"fence %s", "promote %r 0-1-101"}},
	} {
		t.Run(tc.manager, func(t *testing.T) { // one after the other: fewer seed restores at once
			var fc *fakeCompute
			var r *rig
			var c *client
			var src string
			var ids []string
			if tc.manager == "mariadb" {
				var a, b string
				fc, r, c, src, a, b = failoverGroup(t, rigOptions{guestCallTimeout: 10 * time.Second}, "0-1-100", "0-1-100")
				ids = []string{a, b}
			} else {
				fc, r, c, src, ids = replicaGroup(t, tc.manager, tc.version, tc.port, 10*time.Second, 2)
			}
			a, b := ids[0], ids[1]
			r.ctl.Engine.ReplaySteps.Store(true)
			fc.guest(a).setLagging(true)
			before := map[string]string{}
			for _, id := range ids {
				_, l, _ := fc.guest(id).replication()
				before[id] = l.Password
			}
			if code, doc := promote(c, a); code != 202 {
				t.Fatalf("promote: HTTP %d %v", code, doc)
			}
			waitFor(t, "the rollback", 60*time.Second, func() bool {
				in := c.instance(a)
				f, _ := in["fault"].(map[string]any)
				return in["status"] == "ACTIVE" && f != nil && c.instance(src)["status"] == "ACTIVE" && c.instance(b)["status"] == "ACTIVE" &&
					!fc.guest(src).fence()
			})
			if st := taskEnded(t, r, a, lifecycle.KindPromote); st != tasks.StateFailed {
				t.Fatalf("the rolled back switchover's task ended %s, want failed", st)
			}
			if msg := c.instance(a)["fault"].(map[string]any)["message"].(string); !strings.Contains(msg, "rolled back") || !strings.Contains(msg, src+" is the writable source again") {
				t.Fatalf("fault after the rollback: %q", msg)
			}
			for _, id := range []string{src, b} {
				if f := c.instance(id)["fault"]; f != nil {
					t.Fatalf("fault on %s after the rollback: %v", id, f)
				}
			}
			var want []string
			for _, w := range tc.want {
				want = append(want, strings.NewReplacer("%s", src, "%r", a).Replace(w))
			}
			if got := fc.journal.events("fence ", "stop ", "promote ", "restart "); !slices.Equal(got, want) {
				t.Fatalf("events %v, want each once: %v", got, want)
			}
			g := fc.guest(src)
			g.mu.Lock()
			link, fenced, stopped, promotes := g.repl.link, g.repl.fenced, g.stopped, g.repl.promotes
			g.mu.Unlock()
			if link != nil || fenced || stopped || promotes != 0 {
				t.Fatalf("the old source after the rollback: follows %+v, read-only %v, stopped %v, promoted %d times; want it writable, running, following nobody", link, fenced, stopped, promotes)
			}
			for _, id := range ids {
				followsWithItsAccount(t, fc, id, src)
				if _, l, _ := fc.guest(id).replication(); l.Password != before[id] {
					t.Fatalf("%s's link changed in the rollback", id)
				}
				if of, _ := c.instance(id)["replica_of"].(map[string]any); of == nil || of["id"] != src {
					t.Fatalf("replica_of of %s after the rollback: %v", id, c.instance(id)["replica_of"])
				}
			}
			if accounts, _, _ := fc.guest(src).replication(); len(accounts) != 2 {
				t.Fatalf("the source holds accounts %v, want one for each replica", keys(accounts))
			}
			if l := asList(c.instance(src)["replicas"]); len(l) != 2 {
				t.Fatalf("the source lists %v, want both replicas", l)
			}
			if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = 'set_read_only' AND args LIKE '%false%'", src); n != 1 {
				t.Fatalf("%d lifts of the fence queued, want 1", n)
			}
			steps := []string{"promote:fence ", "promote:fenced ", "promote:promoted ", "promote:unfence "}
			if tc.manager == "postgresql" {
				steps = append(steps, "promote:stopped ")
			}
			ranTwice(t, r, steps...)
		})
	}
}

// mark is where the journal ends now, for eventsSince.
func (j *opJournal) mark() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.lines)
}

// eventsSince is events over the lines added after mark.
func (j *opJournal) eventsSince(mark int, prefixes ...string) []string {
	j.mu.Lock()
	lines := slices.Clone(j.lines[mark:])
	j.mu.Unlock()
	var out []string
	for _, l := range lines {
		if slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(l, p) }) {
			out = append(out, l)
		}
	}
	return out
}

// noFaultOneKey checks that none of ids has a fault after what, and that
// each has one enrolled agent key.
func noFaultOneKey(t *testing.T, r *rig, c *client, what string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if f := c.instance(id)["fault"]; f != nil {
			t.Fatalf("fault on %s after %s: %v", id, what, f)
		}
		if keys := agentKeys(t, r, id); len(keys) != 1 {
			t.Fatalf("enrolled agent keys of %s after %s: %v", id, what, keys)
		}
	}
}

// replayEjectOfAGroupOfThree makes a group of a source and two replicas
// a and b (a received posA, b posB), turns ReplaySteps on, and ejects the
// silent source: the failover task ends done, a is promoted once at posA
// (promoted: how the message names that position), b follows it with
// its own account, and the old source is fenced.
func replayEjectOfAGroupOfThree(t *testing.T, ds, version string, port int, posA, posB, promoted string) (*fakeCompute, *rig, *client, string, string, string) {
	t.Helper()
	fc, r, c, src, ids := replicaGroup(t, ds, version, port, 10*time.Second, 2)
	a, b := ids[0], ids[1]
	fc.guest(a).setIOPos(posA)
	fc.guest(b).setIOPos(posB)
	r.ctl.Engine.ReplaySteps.Store(true)

	fc.guest(src).halt()
	silence(t, r, src)
	if code, doc := eject(c, src); code != 202 {
		t.Fatalf("eject: HTTP %d %v", code, doc)
	}
	waitFor(t, "the failover", 60*time.Second, func() bool {
		of, _ := c.instance(b)["replica_of"].(map[string]any)
		f, _ := c.instance(src)["fault"].(map[string]any)
		return c.instance(a)["status"] == "ACTIVE" && c.instance(a)["replica_of"] == nil && of != nil && of["id"] == a &&
			c.instance(b)["status"] == "ACTIVE" && f != nil && c.instance(src)["status"] != "EJECT"
	})
	if st := taskEnded(t, r, src, lifecycle.KindPromote); st != tasks.StateDone {
		t.Fatalf("the failover task ended %s, want done", st)
	}
	onePrimary(t, fc, a, b)
	followsWithItsAccount(t, fc, b, a)
	wantFenced(t, fc, src)
	if got := fc.journal.events("promote "); !slices.Equal(got, []string{"promote " + a + " " + posA}) {
		t.Fatalf("promotions %v, want %s once %s", got, a, promoted)
	}
	return fc, r, c, src, a, b
}

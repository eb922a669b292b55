//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"strata/agent/wire"
)

// TestChaosReplicationMariaDB is `make test-chaos-replication` (in `make
// e2e-all`): issue 17's replication faults with the controller killed
// (SIGKILL, started again by the chaos supervisor after 0-2 s) in the
// middle of the durable promote task, on real MariaDB VMs under TCG. A
// primary with rows and two replicas; then
//
//   - a switchover (promote_to_replica_source) with the controller killed
//     at promote.fenced — the primary read-only, the replica's promotion
//     queued and the step not saved — while a client writes all along;
//     another at promote.promoted — the replica writable and the links
//     saying so, the others not yet repointed, the step not saved;
//   - a failover (eject_replica_source) of the source, frozen (SIGSTOP of
//     its qemu: a hung host) until its heartbeat is stale, with the
//     controller killed at promote.promoted; then one of the source it
//     elected, killed at promote.fenced (the old source fenced off, the
//     promotion queued).
//
// (A VM killed instead of frozen is started again by the recovery, and
// its agent may report again before its heartbeat is stale: a frozen one
// stays silent until the failover's compute fence kills it.)
//
// After each, the task ends (done, or rolled back) within a bound, and a
// write to every member as a user is accepted by exactly one — the one
// the API shows as the group's source; every row written before, and
// every write the client saw accepted, is on it, and the other members
// follow it. The ejected source stays fenced: its VM off, server.json
// fenced, its fault saying so.
func TestChaosReplicationMariaDB(t *testing.T) {
	if _, err := exec.LookPath("mariadb"); err != nil {
		t.Fatalf("mariadb not found: install the test dependencies with `ci/deps.sh build boot test` (or `make test`)")
	}
	r := newChaosRun(t, time.Now().UnixNano(), "")
	// Three guests boot at once under TCG: the boot timeout is the test's
	// own wait.
	stdout(t, "datastore", "version", "update", "--state-dir", r.state, "mariadb", "10.11", "--image", r.imageID,
		"--from-recipe", "images/mariadb-10.11.yaml", "--boot-timeout", "30m")
	r.serve("") // each phase serves its own plan (a frozen VM left by a failure dies with the rest: chaosRun's cleanup kills every qemu under its state with SIGKILL)

	inst := map[string]any{"name": "primary", "flavorRef": "strata.small", "volume": map[string]any{"size": 1},
		"datastore": map[string]any{"type": "mariadb", "version": "10.11"}}
	datastoreCases["mariadb"].create(inst)
	code, doc, ok := r.api.do("POST", "/instances", map[string]any{"instance": inst})
	if !ok || code != 200 {
		t.Fatalf("create the primary: HTTP %d: %v", code, doc)
	}
	src := doc["instance"].(map[string]any)["id"].(string)
	consoleOnFailure(t, r.state, src)
	dbs := map[string]mariadbClient{}
	dbs[src] = mariadbClient{endpointOf(t, r.waitStatus(src, "ACTIVE", 20*time.Minute), 3306)}
	g := &replGroup{r: r, dbs: dbs}
	dbs[src].must(t, replUser, replPassword, "shop", "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), b VARBINARY(128))")
	dbs[src].must(t, replUser, replPassword, "shop", "INSERT INTO items (v, b) SELECT CONCAT('before-', seq), RANDOM_BYTES(100) FROM seq_1_to_500")
	g.written = 500

	code, doc, ok = r.api.do("POST", "/instances", map[string]any{"instance": map[string]any{"name": "replica", "replica_of": src, "replica_count": 2}})
	if !ok || code != 200 && code != 202 {
		t.Fatalf("create two replicas: HTTP %d: %v", code, doc)
	}
	var replicas []string
	r.waitUntil("the primary to list two replicas", time.Minute, func() bool {
		replicas = replicas[:0]
		rs, _ := r.api.instance(src)["replicas"].([]any)
		for _, x := range rs {
			replicas = append(replicas, x.(map[string]any)["id"].(string))
		}
		return len(replicas) == 2
	})
	for _, id := range replicas {
		consoleOnFailure(t, r.state, id)
		dbs[id] = mariadbClient{endpointOf(t, r.waitStatus(id, "ACTIVE", 30*time.Minute), 3306)}
	}
	members := append([]string{src}, replicas...)
	g.members = members
	g.expectSource(src)
	g.converge("the replicas to hold the primary's rows")

	// A switchover with the controller killed at each point of the
	// task, then a failover with it killed at each (the second from the
	// group the first left: the elected replica and the other).
	g.kills = 0
	g.switchover(replicas[0], "promote.fenced")
	g.switchover(replicas[1], "promote.promoted")
	g.failover("promote.promoted")
	g.failover("promote.fenced")

	// Everything goes: the members but the source, the ejected sources,
	// then the source.
	source := g.apiSourceOrSolo()
	for _, id := range members {
		if id == source {
			continue
		}
		if code, doc, ok := r.api.do("DELETE", "/instances/"+id, nil); !ok || code != 202 {
			t.Fatalf("delete %s: HTTP %d: %v", id, code, doc)
		}
	}
	r.waitUntil("the replicas and the ejected sources deleted", 5*time.Minute, func() bool {
		for _, id := range members {
			if id != source && r.api.instance(id) != nil {
				return false
			}
		}
		return true
	})
	if code, doc, ok := r.api.do("DELETE", "/instances/"+source, nil); !ok || code != 202 {
		t.Fatalf("delete %s: HTTP %d: %v", source, code, doc)
	}
	r.waitUntil("the source deleted", 5*time.Minute, func() bool { return r.api.instance(source) == nil })
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Logf("CHAOS replication in %.0fs: controller kills %d, starts %d; stuck past timeout %d, ERROR %d, lost %d, 5xx %d (unreachable while down: %d)",
		time.Since(r.started).Seconds(), r.controllerKills, r.starts, len(r.stuck), len(r.errored), len(r.lost), r.fivexx, r.unreachable)
	if r.controllerKills != 4 {
		t.Errorf("the controller was killed %d times, want 4 (once in each task)", r.controllerKills)
	}
}

// plan serves the controller again with one kill at point, once every
// member's agent reported to it.
func (g *replGroup) plan(point string) []wire.ChaosEntry {
	plan := []wire.ChaosEntry{{Target: wire.ChaosController, Point: point, Nth: 1}}
	g.r.stop()
	g.r.serve(wire.FormatChaos(plan))
	for _, id := range g.members {
		g.r.waitAgent(id)
	}
	return plan
}

// killed checks that the controller was killed once more since the last
// check.
func (g *replGroup) killed(what string) {
	g.r.mu.Lock()
	kills := g.r.controllerKills
	g.r.mu.Unlock()
	g.kills++
	if kills != g.kills {
		g.r.t.Errorf("the controller was killed %d times by the end of %s, want %d", kills, what, g.kills)
	}
}

// before writes 200 rows on the source and waits until every member
// holds them.
func (g *replGroup) before(source, phase string) {
	g.write(source, "before-"+phase, 200)
	g.written += 200
	g.converge("the members to hold the rows written before the " + phase)
}

// switchover promotes the replica to (its group's source: the one the
// API shows) with the controller killed at point, while a client writes
// back to back to whichever member accepts.
func (g *replGroup) switchover(to, point string) {
	r, t := g.r, g.r.t
	t.Helper()
	plan := g.plan(point)
	old := g.apiSource()
	g.before(old, "switchover at "+point)
	w := g.startWriter(old, "switch-"+point)
	last := g.lastPromote(to)
	requested := time.Now()
	if code, doc, ok := r.api.do("POST", "/instances/"+to+"/action", map[string]any{"promote_to_replica_source": map[string]any{}}); !ok || code != 202 {
		t.Fatalf("promote %s: HTTP %d (answered %v): %v", to, code, ok, doc)
	}
	state := g.waitTaskEnd(to, last, 10*time.Minute)
	ended := time.Since(requested)
	time.Sleep(3 * time.Second) // the client reaches whichever is writable now
	accepted, gap := w.stop()
	r.checkFired(plan)
	g.killed("the switchover at " + point)
	for _, id := range g.members {
		r.waitStatus(id, "ACTIVE", 5*time.Minute)
	}
	source := g.apiSource()
	t.Logf("CHAOS switchover with the controller killed at %s: task %s; the API shows %s as the source (promoted: %s, old source %s)", point, state, source, to, old)
	if state == "done" && source != to || state == "failed" && source != old {
		t.Errorf("the promote task ended %s, and the API shows %s as the source (old source %s, promoted replica %s)", state, source, old, to)
	}
	g.expectSource(source)
	if n := g.rows(source, "before-"); n != g.written {
		t.Errorf("the source %s holds %d of the %d rows written before", source, n, g.written)
	}
	if n := g.rows(source, "switch-"+point); n != accepted {
		t.Errorf("the client saw %d writes accepted during the switchover; the source %s holds %d of them", accepted, source, n)
	}
	g.converge("the other members to follow " + source)
	t.Logf("FIGURE switchover with the controller killed at %s (restarted after 0-2 s): request→task %s %.1fs; writes unavailable %.2fs (longest gap between accepted writes of a client writing back to back), %d accepted, all on the source",
		point, state, ended.Seconds(), gap.Seconds(), accepted)
}

// failover freezes the source's VM (SIGSTOP of its qemu: a hung host),
// ejects it once its heartbeat is stale, with the controller killed at
// point; the source leaves the group's members.
func (g *replGroup) failover(point string) {
	r, t := g.r, g.r.t
	t.Helper()
	plan := g.plan(point)
	old := g.apiSource()
	g.before(old, "failover at "+point)
	frozen := time.Now()
	pid := r.pidOf(old)
	if pid <= 0 || syscall.Kill(pid, syscall.SIGSTOP) != nil {
		t.Fatalf("freezing the VM of %s (pid %d)", old, pid)
	}
	t.Logf("CHAOS the source %s's VM frozen (SIGSTOP of qemu %d): a hung host", old, pid)
	var ejected time.Time
	last := g.lastPromote(old)
	r.waitUntil("eject_replica_source to be accepted once the source's heartbeat is stale", 5*time.Minute, func() bool {
		code, doc, ok := r.api.do("POST", "/instances/"+old+"/action", map[string]any{"eject_replica_source": map[string]any{}})
		switch {
		case ok && code == 202:
			ejected = time.Now()
			return true
		case ok && code == 400 && strings.Contains(fmt.Sprint(doc), "current heartbeat"):
			time.Sleep(4 * time.Second)
			return false
		}
		t.Fatalf("eject %s: HTTP %d (answered %v): %v", old, code, ok, doc)
		return false
	})
	followers := slices.DeleteFunc(slices.Clone(g.members), func(id string) bool { return id == old })
	// The first write a follower accepts: the elected replica writable.
	var writable time.Time
	var elected string
	r.waitUntil("a follower to take writes after the eject", 10*time.Minute, func() bool {
		for _, id := range followers {
			if _, err := g.dbs[id].query(replUser, replPassword, "shop", "INSERT INTO items (v) VALUES ('first-after-eject')"); err == nil {
				writable, elected = time.Now(), id
				return true
			}
		}
		return false
	})
	state := g.waitTaskEnd(old, last, 10*time.Minute)
	ended := time.Since(ejected)
	r.checkFired(plan)
	g.killed("the failover at " + point)
	if state != "done" {
		t.Errorf("the failover task ended %s, not done, though %s took writes", state, elected)
	}
	for _, id := range followers {
		r.waitStatus(id, "ACTIVE", 5*time.Minute)
	}
	g.members = followers
	source := g.apiSourceOrSolo()
	t.Logf("CHAOS failover with the controller killed at %s: task %s; %s took the first write; the API shows %s as the source", point, state, elected, source)
	if source != elected {
		t.Errorf("the API shows %s as the source; the write after the eject was accepted by %s", source, elected)
	}
	// The old source stays fenced: server.json says so, its VM is off.
	data, err := os.ReadFile(filepath.Join(r.state, "compute", "qemu", old, "server.json"))
	if err != nil || !strings.Contains(string(data), `"fenced": true`) && !strings.Contains(string(data), `"fenced":true`) {
		t.Errorf("the ejected source's server is not fenced: %v %s", err, data)
	}
	if syscall.Kill(pid, 0) == nil {
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmd), old) {
			t.Errorf("the ejected source's VM runs (pid %d)", pid)
		}
	}
	if p := r.pidOf(old); p > 0 && p != pid && syscall.Kill(p, 0) == nil {
		t.Errorf("the ejected source's VM was started again (pid %d)", p)
	}
	in := r.api.instance(old)
	if f, _ := in["fault"].(map[string]any); f == nil || !strings.Contains(fmt.Sprint(f["message"]), "ejected") {
		t.Errorf("the ejected source's fault: %v", f)
	}
	if of, _ := in["replica_of"].(map[string]any); of != nil {
		t.Errorf("the ejected source shows replica_of %v", of)
	}
	g.ejected = append(g.ejected, old)
	g.expectSource(source)
	if n := g.rows(source, "before-"); n != g.written {
		t.Errorf("the new source %s holds %d of the %d rows written before", source, n, g.written)
	}
	g.converge("the other members to follow " + source)
	t.Logf("FIGURE failover with the controller killed at %s (restarted after 0-2 s): eject accepted %.0fs after the source's VM froze (heartbeat stale); eject→task %s %.1fs; writes unavailable %.1fs (freeze→first write on the elected replica), eject→writable %.1fs",
		point, ejected.Sub(frozen).Seconds(), state, ended.Seconds(), writable.Sub(frozen).Seconds(), writable.Sub(ejected).Seconds())
}

const replUser, replPassword = "shopper", "shopper-pw-1"

// replGroup is a replication group seen through its members' MariaDB
// (as a user, through their forwarded ports) and the API.
type replGroup struct {
	r       *chaosRun
	dbs     map[string]mariadbClient
	members []string
	// ejected: the sources failed over from, out of the group.
	ejected []string
	// written: rows written before the faults ("before-..."); kills:
	// the controller's kills so far.
	written, kills int
}

// lastPromote is the sequence number of id's last promote task (0:
// none).
func (g *replGroup) lastPromote(id string) int {
	return g.r.count("SELECT COALESCE(MAX(seq), 0) FROM tasks WHERE instance_id = ? AND kind = 'promote'", id)
}

// waitTaskEnd waits until the promote task of id queued after task
// sequence number after (one, and only one) ends, and returns its state
// (done or failed); past timeout it counts as stuck.
func (g *replGroup) waitTaskEnd(id string, after int, timeout time.Duration) string {
	t := g.r.t
	t.Helper()
	state := ""
	g.r.waitUntil("the promote task of "+id+" to end (done or rolled back)", timeout, func() bool {
		for _, s := range []string{"done", "failed"} {
			if g.r.count("SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'promote' AND seq > ? AND state = ?", id, after, s) > 0 {
				state = s
				return true
			}
		}
		return false
	})
	if n := g.r.count("SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'promote' AND seq > ?", id, after); n != 1 {
		t.Errorf("%d promote tasks on %s for one request", n, id)
	}
	return state
}

// apiSource is the member the API shows as the group's source: no
// replica_of, and replicas.
func (g *replGroup) apiSource() string {
	t := g.r.t
	t.Helper()
	var found []string
	for _, id := range g.members {
		in := g.r.api.instance(id)
		rs, _ := in["replicas"].([]any)
		if in["replica_of"] == nil && len(rs) > 0 {
			found = append(found, id)
		}
	}
	if len(found) != 1 {
		t.Fatalf("the API shows %v as the group's source, want exactly one", found)
	}
	return found[0]
}

// apiSourceOrSolo is apiSource, or the only member left (a source
// without replicas).
func (g *replGroup) apiSourceOrSolo() string {
	if len(g.members) == 1 {
		in := g.r.api.instance(g.members[0])
		if in["replica_of"] != nil {
			g.r.t.Fatalf("the only member left %s shows replica_of %v", g.members[0], in["replica_of"])
		}
		return g.members[0]
	}
	return g.apiSource()
}

// expectSource writes to every member as a user: exactly one, source,
// accepts; every other refuses the write as read-only, and no ejected
// source takes it (its VM is off). Never two writable primaries.
func (g *replGroup) expectSource(source string) {
	t := g.r.t
	t.Helper()
	var accepted []string
	for _, id := range g.members {
		_, err := g.dbs[id].query(replUser, replPassword, "shop", fmt.Sprintf("INSERT INTO items (v) VALUES ('probe-%s')", id[:8]))
		switch {
		case err == nil:
			accepted = append(accepted, id)
		case !strings.Contains(err.Error(), "read-only"):
			t.Errorf("a write on %s: %v, want it accepted or refused as read-only", id, err)
		}
	}
	for _, id := range g.ejected {
		if _, err := g.dbs[id].query(replUser, replPassword, "shop", "INSERT INTO items (v) VALUES ('on an ejected source')"); err == nil {
			accepted = append(accepted, id)
		}
	}
	t.Logf("CHAOS a write to each of %d members and %d ejected sources: accepted by %v", len(g.members), len(g.ejected), accepted)
	if len(accepted) != 1 || accepted[0] != source {
		t.Fatalf("a write to each member and ejected source was accepted by %v; want exactly the source %s", accepted, source)
	}
}

// write inserts n rows tagged tag on id.
func (g *replGroup) write(id, tag string, n int) {
	g.dbs[id].must(g.r.t, replUser, replPassword, "shop", fmt.Sprintf("INSERT INTO items (v, b) SELECT '%s', RANDOM_BYTES(100) FROM seq_1_to_%d", tag, n))
}

// rows counts id's rows whose v starts with prefix.
func (g *replGroup) rows(id, prefix string) int {
	out := g.dbs[id].must(g.r.t, replUser, replPassword, "shop", fmt.Sprintf("SELECT COUNT(*) FROM items WHERE v LIKE '%s%%'", prefix))
	var n int
	fmt.Sscan(out, &n)
	return n
}

// converge waits until every member holds the same rows (count and
// checksum) as the first that answers as the source.
func (g *replGroup) converge(what string) {
	t := g.r.t
	t.Helper()
	digest := func(id string) string {
		n, err1 := g.dbs[id].query(replUser, replPassword, "shop", "SELECT COUNT(*) FROM items")
		c, err2 := g.dbs[id].query(replUser, replPassword, "shop", "CHECKSUM TABLE items")
		if err1 != nil || err2 != nil {
			return fmt.Sprintf("error %v %v", err1, err2)
		}
		return n + " " + c
	}
	var last []string
	g.r.waitUntil(what, 3*time.Minute, func() bool {
		last = last[:0]
		for _, id := range g.members {
			last = append(last, digest(id))
		}
		for _, d := range last {
			if d != last[0] || strings.HasPrefix(d, "error") {
				return false
			}
		}
		return true
	})
}

// replWriter writes a row back to back to whichever member accepts,
// from the first on, and keeps the times of the accepted writes.
type replWriter struct {
	g        *replGroup
	tag      string
	mu       sync.Mutex
	accepted []time.Time
	quit     chan struct{}
	done     chan struct{}
}

func (g *replGroup) startWriter(first, tag string) *replWriter {
	w := &replWriter{g: g, tag: tag, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		cur := first
		for {
			select {
			case <-w.quit:
				return
			default:
			}
			order := append([]string{cur}, slices.DeleteFunc(slices.Clone(g.members), func(id string) bool { return id == cur })...)
			wrote := false
			for _, id := range order {
				if _, err := g.dbs[id].query(replUser, replPassword, "shop", fmt.Sprintf("INSERT INTO items (v) VALUES ('%s')", tag)); err == nil {
					w.mu.Lock()
					w.accepted = append(w.accepted, time.Now())
					w.mu.Unlock()
					cur, wrote = id, true
					break
				}
			}
			if !wrote {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	for {
		w.mu.Lock()
		n := len(w.accepted)
		w.mu.Unlock()
		if n > 0 {
			return w
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends the writes; it returns how many were accepted and the
// longest time between two accepted ones.
func (w *replWriter) stop() (int, time.Duration) {
	close(w.quit)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	var gap time.Duration
	for i := 1; i < len(w.accepted); i++ {
		gap = max(gap, w.accepted[i].Sub(w.accepted[i-1]))
	}
	return len(w.accepted), gap
}

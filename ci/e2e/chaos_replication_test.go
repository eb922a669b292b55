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
//   - a failover (eject_replica_source) of the source, frozen (SIGSTOP of
//     its qemu: a hung host) until its heartbeat is stale, with the
//     controller killed at promote.promoted — the elected replica
//     writable, the other not yet repointed, the step not saved.
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
	r.serve(wire.FormatChaos([]wire.ChaosEntry{{Target: wire.ChaosController, Point: "promote.fenced", Nth: 1}}))
	t.Cleanup(func() {
		if t.Failed() {
			// A frozen VM must not outlive the test.
			for _, id := range r.vmDirs() {
				if pid := r.pidOf(id); pid > 0 {
					syscall.Kill(pid, syscall.SIGCONT)
				}
			}
		}
	})

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

	// a. Switchover, the controller killed at promote.fenced.
	newP := replicas[0]
	w := g.startWriter(src, "switch")
	before := g.lastPromote(newP)
	requested := time.Now()
	if code, doc, ok := r.api.do("POST", "/instances/"+newP+"/action", map[string]any{"promote_to_replica_source": map[string]any{}}); !ok || code != 202 {
		t.Fatalf("promote %s: HTTP %d (answered %v): %v", newP, code, ok, doc)
	}
	state := g.waitTaskEnd(newP, before, 10*time.Minute)
	ended := time.Since(requested)
	time.Sleep(3 * time.Second) // the writer reaches whichever is writable now
	accepted, gap := w.stop()
	r.checkFired([]wire.ChaosEntry{{Target: wire.ChaosController, Point: "promote.fenced", Nth: 1}})
	for _, id := range members {
		r.waitStatus(id, "ACTIVE", 5*time.Minute)
	}
	source := g.apiSource()
	t.Logf("CHAOS switchover with the controller killed at promote.fenced: task %s; the API shows %s as the source (the replica promoted: %s)", state, source, newP)
	if state == "done" && source != newP || state == "failed" && source != src {
		t.Errorf("the promote task ended %s, and the API shows %s as the source (primary %s, promoted replica %s)", state, source, src, newP)
	}
	r.mu.Lock()
	kills := r.controllerKills
	r.mu.Unlock()
	if kills != 1 {
		t.Errorf("the controller was killed %d times by the switchover's end, want 1", kills)
	}
	g.expectSource(source)
	if n := g.rows(source, "before-"); n != 500 {
		t.Errorf("the source %s holds %d of the 500 rows written before the switchover", source, n)
	}
	if n := g.rows(source, "switch"); n != accepted {
		t.Errorf("the client saw %d writes accepted during the switchover; the source %s holds %d of them", accepted, source, n)
	}
	g.converge("the other members to follow " + source)
	t.Logf("FIGURE switchover with the controller killed at promote.fenced (restarted after 0-2 s): request→task %s %.1fs; writes unavailable %.2fs (longest gap between accepted writes of a client writing back to back), %d accepted, all on the source",
		state, ended.Seconds(), gap.Seconds(), accepted)

	// b. Failover, the controller killed at promote.promoted.
	r.stop()
	r.serve(wire.FormatChaos([]wire.ChaosEntry{{Target: wire.ChaosController, Point: "promote.promoted", Nth: 1}}))
	for _, id := range members {
		r.waitAgent(id)
	}
	old := source
	g.write(old, "before-eject", 200)
	g.converge("the replicas to hold the rows written before the failover")
	frozen := time.Now()
	pid := r.pidOf(old)
	if pid <= 0 || syscall.Kill(pid, syscall.SIGSTOP) != nil {
		t.Fatalf("freezing the VM of %s (pid %d)", old, pid)
	}
	t.Logf("CHAOS the source %s's VM frozen (SIGSTOP of qemu %d): a hung host", old, pid)
	var ejected time.Time
	before = g.lastPromote(old)
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
	followers := slices.DeleteFunc(slices.Clone(members), func(id string) bool { return id == old })
	// The first write a follower accepts: the elected replica writable.
	var writable time.Time
	var elected string
	r.waitUntil("a follower to take writes after the eject", 10*time.Minute, func() bool {
		for _, id := range followers {
			if _, err := dbs[id].query(replUser, replPassword, "shop", "INSERT INTO items (v) VALUES ('first-after-eject')"); err == nil {
				writable, elected = time.Now(), id
				return true
			}
		}
		return false
	})
	state = g.waitTaskEnd(old, before, 10*time.Minute)
	ended = time.Since(ejected)
	r.checkFired([]wire.ChaosEntry{{Target: wire.ChaosController, Point: "promote.promoted", Nth: 1}})
	if state != "done" {
		t.Errorf("the failover task ended %s, not done, though %s took writes", state, elected)
	}
	for _, id := range followers {
		r.waitStatus(id, "ACTIVE", 5*time.Minute)
	}
	source = g.apiSource()
	t.Logf("CHAOS failover with the controller killed at promote.promoted: task %s; %s took the first write; the API shows %s as the source", state, elected, source)
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
	if f, _ := r.api.instance(old)["fault"].(map[string]any); f == nil || !strings.Contains(fmt.Sprint(f["message"]), "ejected") {
		t.Errorf("the ejected source's fault: %v", f)
	}
	if of, _ := r.api.instance(old)["replica_of"].(map[string]any); of != nil {
		t.Errorf("the ejected source shows replica_of %v", of)
	}
	g.members = followers
	g.expectSource(source)
	if _, err := dbs[old].query(replUser, replPassword, "shop", "INSERT INTO items (v) VALUES ('on the ejected source')"); err == nil {
		t.Errorf("the ejected source accepted a write")
	}
	if n := g.rows(source, "before-eject"); n != 200 {
		t.Errorf("the new source %s holds %d of the 200 rows written before the failover", source, n)
	}
	if n := g.rows(source, "before-"); n != 700 {
		t.Errorf("the new source %s holds %d of the 700 rows written before both faults", source, n)
	}
	g.converge("the other replica to follow " + source)
	t.Logf("FIGURE failover with the controller killed at promote.promoted (restarted after 0-2 s): eject accepted %.0fs after the source's VM froze (heartbeat stale); eject→task done %.1fs; writes unavailable %.1fs (freeze→first write on the elected replica), eject→writable %.1fs",
		ejected.Sub(frozen).Seconds(), ended.Seconds(), writable.Sub(frozen).Seconds(), writable.Sub(ejected).Seconds())

	// Everything goes: the replica, the ejected source, the new source.
	for _, id := range []string{followers[0], followers[1], old} {
		if id == source {
			continue
		}
		if code, doc, ok := r.api.do("DELETE", "/instances/"+id, nil); !ok || code != 202 {
			t.Fatalf("delete %s: HTTP %d: %v", id, code, doc)
		}
	}
	r.waitUntil("the replica and the ejected source deleted", 5*time.Minute, func() bool {
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
	if r.controllerKills != 2 {
		t.Errorf("the controller was killed %d times, want 2 (once in each task)", r.controllerKills)
	}
}

const replUser, replPassword = "shopper", "shopper-pw-1"

// replGroup is a replication group seen through its members' MariaDB
// (as a user, through their forwarded ports) and the API.
type replGroup struct {
	r       *chaosRun
	dbs     map[string]mariadbClient
	members []string
}

// vmDirs lists the instances with a VM directory.
func (r *chaosRun) vmDirs() []string {
	entries, _ := os.ReadDir(filepath.Join(r.state, "compute", "qemu"))
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
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

// expectSource writes to every member as a user: exactly one, source,
// accepts; every other refuses the write as read-only. (Never two
// writable primaries.)
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
	t.Logf("CHAOS a write to each of %d members: accepted by %v", len(g.members), accepted)
	if len(accepted) != 1 || accepted[0] != source {
		t.Fatalf("a write to each member was accepted by %v; want exactly the source %s", accepted, source)
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

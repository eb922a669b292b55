//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"strata/agent/wire"
)

// TestChaosReplication is `make test-chaos-replication` (in `make
// e2e-all`; DATASTORE=mariadb|postgresql|redis runs one): issue 17's
// replication faults with the controller killed (SIGKILL, started again
// by the chaos supervisor after 0-2 s) in the middle of the durable
// promote task, on real VMs under TCG, for each datastore. A primary with
// data and two replicas; then
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
// the API shows as the group's source; every write made before, and
// every write the client saw accepted, is on it, and the other members
// follow it. The ejected source stays fenced: its VM off, server.json
// fenced, its fault saying so. A write is a row (MariaDB, PostgreSQL) or
// a list element (Redis) under a tag; each datastore's own client makes
// it (replStores).
func TestChaosReplication(t *testing.T) {
	for _, ds := range e2eDatastores() {
		if _, ok := replStores[ds]; !ok {
			t.Fatalf("STRATA_E2E_DATASTORES names %q; known: mariadb, postgresql, redis", ds)
		}
		t.Run(ds, func(t *testing.T) { runChaosReplication(t, ds) })
	}
}

func runChaosReplication(t *testing.T, ds string) {
	c, rs := datastoreCases[ds], replStores[ds]
	if _, err := exec.LookPath(rs.tool); err != nil {
		t.Fatalf("%s not found: install the test dependencies with `ci/deps.sh build boot test` (or `make test`)", rs.tool)
	}
	r := newChaosRun(t, time.Now().UnixNano(), "")
	imageID := r.imageID
	if ds != "mariadb" {
		imageID = r.register(c.name, c.version)
	}
	// Three guests boot at once under TCG: the boot timeout is the test's
	// own wait.
	stdout(t, "datastore", "version", "update", "--state-dir", r.state, c.name, c.version, "--image", imageID,
		"--from-recipe", "images/"+c.name+"-"+c.version+".yaml", "--boot-timeout", "30m")
	r.serve("") // each phase serves its own plan (a frozen VM left by a failure dies with the rest: chaosRun's cleanup kills every qemu under its state with SIGKILL)

	inst := map[string]any{"name": "primary", "flavorRef": "strata.small", "volume": map[string]any{"size": 1},
		"datastore": map[string]any{"type": c.name, "version": c.version}}
	c.create(inst)
	code, doc, ok := r.api.do("POST", "/instances", map[string]any{"instance": inst})
	if !ok || code != 200 {
		t.Fatalf("create the primary: HTTP %d: %v", code, doc)
	}
	src := doc["instance"].(map[string]any)["id"].(string)
	consoleOnFailure(t, r.state, src)
	ep := endpointOf(t, r.waitStatus(src, "ACTIVE", 20*time.Minute), c.port)
	// Redis: root's password (the default user's) travels with the seed
	// backup's ACL file, so every member answers the same credentials.
	user, password := c.prepareClient(t, r.api.client, src)
	g := &replGroup{r: r, store: rs, user: user, password: password, eps: map[string]endpoint{src: ep}}
	if err := rs.setup(ep, user, password); err != nil {
		t.Fatalf("the primary's table: %v", err)
	}
	g.add(src, "before", 500)
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
		g.eps[id] = endpointOf(t, r.waitStatus(id, "ACTIVE", 30*time.Minute), c.port)
	}
	members := append([]string{src}, replicas...)
	g.members = members
	g.expectSource(src)
	g.converge("the replicas to hold the primary's data")

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
	t.Logf("CHAOS %s replication in %.0fs: controller kills %d, starts %d; stuck past timeout %d, ERROR %d, lost %d, 5xx %d (unreachable while down: %d)",
		ds, time.Since(r.started).Seconds(), r.controllerKills, r.starts, len(r.stuck), len(r.errored), len(r.lost), r.fivexx, r.unreachable)
	if r.controllerKills != 4 {
		t.Errorf("the controller was killed %d times, want 4 (once in each task)", r.controllerKills)
	}
}

// register builds the image of a datastore version from its recipe and
// registers it with the run's state (the run's MariaDB image is
// registered by newChaosRun); it returns the image's id.
func (r *chaosRun) register(name, version string) string {
	t := r.t
	t.Helper()
	recipe := "images/" + name + "-" + version + ".yaml"
	out := filepath.Join(t.TempDir(), name+"-"+version)
	run(t, nil, "build", "-f", recipe, "-o", out, "--image-cache", cache)
	id := strings.TrimSpace(stdout(t, "image", "register", "--state-dir", r.state, out+".qcow2"))
	stdout(t, "datastore", "update", "--state-dir", r.state, name)
	stdout(t, "datastore", "version", "update", "--state-dir", r.state, name, version, "--image", id, "--from-recipe", recipe)
	stdout(t, "datastore", "version", "load-rules", "--state-dir", r.state, name, version, "validation-rules/"+name+"-"+version+".json")
	return id
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

// before writes 200 on the source and waits until every member holds
// them.
func (g *replGroup) before(source, phase string) {
	g.add(source, "before", 200)
	g.written += 200
	g.converge("the members to hold what was written before the " + phase)
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
	if n := g.count(source, "before"); n != g.written {
		t.Errorf("the source %s holds %d of the %d writes made before", source, n, g.written)
	}
	if n := g.count(source, "switch-"+point); n != accepted {
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
	g.tag("first-after-eject")
	// The first write a follower accepts: the elected replica writable.
	var writable time.Time
	var elected string
	r.waitUntil("a follower to take writes after the eject", 10*time.Minute, func() bool {
		for _, id := range followers {
			if err := g.store.add(g.eps[id], g.user, g.password, "first-after-eject", 1); err == nil {
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
	if n := g.count(source, "before"); n != g.written {
		t.Errorf("the new source %s holds %d of the %d writes made before", source, n, g.written)
	}
	g.converge("the other members to follow " + source)
	t.Logf("FIGURE failover with the controller killed at %s (restarted after 0-2 s): eject accepted %.0fs after the source's VM froze (heartbeat stale); eject→task %s %.1fs; writes unavailable %.1fs (freeze→first write on the elected replica), eject→writable %.1fs",
		point, ejected.Sub(frozen).Seconds(), state, ended.Seconds(), writable.Sub(frozen).Seconds(), writable.Sub(ejected).Seconds())
}

// replGroup is a replication group seen through its members'
// datastore (as a user, through their forwarded ports) and the API.
type replGroup struct {
	r     *chaosRun
	store replStore
	// user, password: the client's credentials on every member.
	user, password string
	eps            map[string]endpoint
	members        []string
	// ejected: the sources failed over from, out of the group.
	ejected []string
	// written: writes made before the faults ("before"); kills: the
	// controller's kills so far.
	written, kills int
	// tags: every tag written, for the digest.
	tags []string
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
	g.tag("probe")
	for _, id := range g.members {
		err := g.store.add(g.eps[id], g.user, g.password, "probe", 1)
		switch {
		case err == nil:
			accepted = append(accepted, id)
		case !g.store.readOnly(err):
			t.Errorf("a write on %s: %v, want it accepted or refused as read-only", id, err)
		}
	}
	for _, id := range g.ejected {
		if err := g.store.add(g.eps[id], g.user, g.password, "on-an-ejected-source", 1); err == nil {
			accepted = append(accepted, id)
		}
	}
	t.Logf("CHAOS a write to each of %d members and %d ejected sources: accepted by %v", len(g.members), len(g.ejected), accepted)
	if len(accepted) != 1 || accepted[0] != source {
		t.Fatalf("a write to each member and ejected source was accepted by %v; want exactly the source %s", accepted, source)
	}
}

// add writes n under tag on id, or fails the test.
func (g *replGroup) add(id, tag string, n int) {
	t := g.r.t
	t.Helper()
	g.tag(tag)
	if err := g.store.add(g.eps[id], g.user, g.password, tag, n); err != nil {
		t.Fatalf("%d writes under %s on %s: %v", n, tag, id, err)
	}
}

// tag remembers a tag for the digest.
func (g *replGroup) tag(tag string) {
	if !slices.Contains(g.tags, tag) {
		g.tags = append(g.tags, tag)
	}
}

// count is how many writes under tag id holds.
func (g *replGroup) count(id, tag string) int {
	t := g.r.t
	t.Helper()
	n, err := g.store.count(g.eps[id], g.user, g.password, tag)
	if err != nil {
		t.Fatalf("counting %s on %s: %v", tag, id, err)
	}
	return n
}

// converge waits until every member holds the same rows (count and
// checksum) as the first that answers as the source.
func (g *replGroup) converge(what string) {
	t := g.r.t
	t.Helper()
	digest := func(id string) string {
		d, err := g.store.digest(g.eps[id], g.user, g.password, g.tags)
		if err != nil {
			return fmt.Sprintf("error %v", err)
		}
		return d
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
	g.tag(tag)
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
				if err := g.store.add(g.eps[id], g.user, g.password, tag, 1); err == nil {
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

// replStore is one datastore's writes for the replication chaos test:
// writes under a tag (MariaDB and PostgreSQL: rows of a table items whose
// v is the tag; Redis: elements of a list named after the tag), made and
// read through the datastore's own client as a user.
type replStore struct {
	// tool is the client the test runs.
	tool string
	// setup makes what the writes need, on the source.
	setup func(ep endpoint, user, password string) error
	// add makes n writes under tag in one statement; the error says what
	// the server answered.
	add func(ep endpoint, user, password, tag string, n int) error
	// count is how many writes under tag the server holds.
	count func(ep endpoint, user, password, tag string) (int, error)
	// digest is what every member following the source must equal
	// (tags: every tag written).
	digest func(ep endpoint, user, password string, tags []string) (string, error)
	// readOnly says whether a refused write was refused as read-only (a
	// replica, or a fenced source).
	readOnly func(err error) bool
}

// replTimeout bounds one client call: a member whose VM is frozen takes
// the connection and never answers.
const replTimeout = 30 * time.Second

var replStores = map[string]replStore{
	"mariadb": {
		tool: "mariadb",
		setup: func(ep endpoint, u, p string) error {
			_, err := mariadbClient{ep}.query(u, p, "shop", "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), b VARBINARY(128))")
			return err
		},
		add: func(ep endpoint, u, p, tag string, n int) error {
			_, err := mariadbClient{ep}.query(u, p, "shop", fmt.Sprintf("INSERT INTO items (v, b) SELECT '%s', RANDOM_BYTES(100) FROM seq_1_to_%d", tag, n))
			return err
		},
		count: func(ep endpoint, u, p, tag string) (int, error) {
			out, err := mariadbClient{ep}.query(u, p, "shop", fmt.Sprintf("SELECT COUNT(*) FROM items WHERE v = '%s'", tag))
			if err != nil {
				return 0, err
			}
			return strconv.Atoi(out)
		},
		digest: func(ep endpoint, u, p string, _ []string) (string, error) {
			db := mariadbClient{ep}
			n, err := db.query(u, p, "shop", "SELECT COUNT(*) FROM items")
			if err != nil {
				return "", err
			}
			c, err := db.query(u, p, "shop", "CHECKSUM TABLE items")
			return n + " " + c, err
		},
		readOnly: func(err error) bool { return strings.Contains(err.Error(), "read-only") },
	},
	"postgresql": {
		tool: "psql",
		setup: func(ep endpoint, u, p string) error {
			_, err := psqlQuery(ep, u, p, "CREATE TABLE items (id bigserial PRIMARY KEY, v text NOT NULL, b bytea)")
			return err
		},
		add: func(ep endpoint, u, p, tag string, n int) error {
			_, err := psqlQuery(ep, u, p, fmt.Sprintf("INSERT INTO items (v, b) SELECT '%s', decode(md5(random()::text), 'hex') FROM generate_series(1, %d)", tag, n))
			return err
		},
		count: func(ep endpoint, u, p, tag string) (int, error) {
			out, err := psqlQuery(ep, u, p, fmt.Sprintf("SELECT count(*) FROM items WHERE v = '%s'", tag))
			if err != nil {
				return 0, err
			}
			return strconv.Atoi(out)
		},
		digest: func(ep endpoint, u, p string, _ []string) (string, error) {
			return psqlQuery(ep, u, p, "SELECT count(*) || ' ' || md5(string_agg(id || v || encode(b, 'hex'), ',' ORDER BY id)) FROM items")
		},
		// A standby: "cannot execute INSERT in a read-only transaction";
		// a fenced source the same (default_transaction_read_only).
		readOnly: func(err error) bool { return strings.Contains(err.Error(), "read-only transaction") },
	},
	"redis": {
		tool:  "redis-cli",
		setup: func(endpoint, string, string) error { return nil },
		add: func(ep endpoint, u, p, tag string, n int) error {
			args := []string{"RPUSH", tag}
			for i := 0; i < n; i++ {
				args = append(args, fmt.Sprintf("%s-%d-%d", tag, time.Now().UnixNano(), i))
			}
			_, err := redisInt(ep, u, p, args...)
			return err
		},
		count: func(ep endpoint, u, p, tag string) (int, error) { return redisInt(ep, u, p, "LLEN", tag) },
		// DBSIZE and each tag's length: every write is an element of
		// its tag's list, so equal lengths of every list are equal data
		// here.
		digest: func(ep endpoint, u, p string, tags []string) (string, error) {
			n, err := redisInt(ep, u, p, "DBSIZE")
			if err != nil {
				return "", err
			}
			d := fmt.Sprint(n)
			for _, tag := range tags {
				l, err := redisInt(ep, u, p, "LLEN", tag)
				if err != nil {
					return "", err
				}
				d += fmt.Sprintf(" %s=%d", tag, l)
			}
			return d, nil
		},
		// A replica: READONLY; a fenced source: NOREPLICAS (its fence,
		// min-replicas-to-write beyond any count).
		readOnly: func(err error) bool {
			return strings.Contains(err.Error(), "READONLY") || strings.Contains(err.Error(), "NOREPLICAS")
		},
	},
}

// psqlQuery runs sql as user on ep's database shop and returns its
// output, or an error with what psql said.
func psqlQuery(ep endpoint, user, password, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), replTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
		"host="+ep.host+" port="+strconv.Itoa(ep.port)+" user="+user+" dbname=shop sslmode=disable connect_timeout=10", "-c", sql)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// redisInt runs one command whose answer is an integer; any other answer
// (an error reply, a connection that failed) is the error.
func redisInt(ep endpoint, user, password string, args ...string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), replTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "redis-cli", append([]string{"-h", ep.host, "-p", strconv.Itoa(ep.port), "--user", user, "--no-auth-warning"}, args...)...)
	cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+password)
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	n, perr := strconv.Atoi(s)
	if err != nil || perr != nil {
		return 0, fmt.Errorf("redis-cli %s: %v: %s", args[0], err, s)
	}
	return n, nil
}

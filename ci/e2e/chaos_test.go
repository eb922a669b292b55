//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"strata/agent/wire"
	"strata/controller/compute/qemu"
	"strata/controller/store"
	"strata/controller/store/storetest"
)

// The chaos tests kill the controller, an instance's qemu and its agent at
// named points (wire.ParseChaos: the product's own hooks, so the kills land
// on the same steps whatever TCG's timing) through whole MariaDB instance
// lifecycles — create, guest operations, restart, volume resize, delete —
// and assert that none of it shows: 0 instances stuck past their timeout,
// 0 ERROR, 0 operations lost or doubled, 0 qemu or volume file left, 0 API
// answers 5xx, and a client writing every 250 ms across a controller
// kill -9 and restart sees no failed write and none delayed over 2 s. The
// plan and its seed are logged: STRATA_CHAOS_SEED replays the long form's
// kills. The counts are logged as CHAOS lines.

// TestChaosShort is `make test-chaos` (in `make test`, SQLite, capped at 10
// minutes by its target): one instance, and a fixed plan that kills each of
// the three at the named points — before enrolment, inside prepare, inside
// an operation, inside a resize, inside delete — plus the write probe
// across a controller kill -9 and a VM killed right after operations
// reported done under relaxed durability settings.
func TestChaosShort(t *testing.T) {
	plan := []wire.ChaosEntry{
		{Target: wire.ChaosController, Point: "create.booted"},         // before enrolment
		{Target: wire.ChaosAgent, Point: "guest.prepare.datadir"},      // inside prepare
		{Target: wire.ChaosQemu, Point: "guest.prepare.users"},         // inside prepare
		{Target: wire.ChaosController, Point: "api.accepted"},          // accepted, not delivered
		{Target: wire.ChaosAgent, Point: "guest.op.create_users"},      // inside an operation
		{Target: wire.ChaosController, Point: "restart.queued"},        // an operation queued
		{Target: wire.ChaosController, Point: "resize.extended"},       // inside a resize
		{Target: wire.ChaosAgent, Point: "guest.op.resize_filesystem"}, // inside a resize
		{Target: wire.ChaosQemu, Point: "delete.start"},                // inside delete
		{Target: wire.ChaosController, Point: "delete.server-gone"},    // inside delete
	}
	for i := range plan {
		plan[i].Nth = 1
	}
	r := newChaosRun(t, 0, "")
	r.lifecycle(plan, lifecycleOptions{probe: true, stopForAccepted: true, durability: true})
	r.report()
}

// TestChaosLong is `make test-chaos-long` (in `make e2e-all`): at least 20
// lifecycles, each with a kill drawn at random (seeded) from the named
// points of each phase, on SQLite and on the PostgreSQL store.
func TestChaosLong(t *testing.T) {
	n := 20
	if s := os.Getenv("STRATA_CHAOS_LIFECYCLES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("STRATA_CHAOS_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("CHAOS seed %d (replay: STRATA_CHAOS_SEED=%d make test-chaos-long), %d lifecycles per store", seed, seed, n)
	for _, st := range []string{"sqlite", "postgresql"} {
		t.Run(st, func(t *testing.T) {
			dsn := ""
			if st == "postgresql" {
				dsn = storetest.PostgresDSN(t)
			}
			r := newChaosRun(t, seed, dsn)
			for i := range n {
				plan := r.randomPlan()
				t.Logf("CHAOS lifecycle %d/%d plan %s", i+1, n, wire.FormatChaos(plan))
				r.lifecycle(plan, lifecycleOptions{probe: i == 0, stopForAccepted: slices.ContainsFunc(plan, func(e wire.ChaosEntry) bool {
					return e.Point == "api.accepted"
				}), durability: i%5 == 0})
			}
			r.report()
		})
	}
}

// Points of each phase the long form draws from, with their possible
// targets.
var chaosPhases = [][]wire.ChaosEntry{
	{ // create
		{Target: wire.ChaosController, Point: "create.booted"},
		{Target: wire.ChaosAgent, Point: "guest.prepare.volume"},
		{Target: wire.ChaosQemu, Point: "guest.prepare.volume"},
		{Target: wire.ChaosAgent, Point: "guest.prepare.datadir"},
		{Target: wire.ChaosQemu, Point: "guest.prepare.datadir"},
		{Target: wire.ChaosAgent, Point: "guest.prepare.users"},
		{Target: wire.ChaosQemu, Point: "guest.prepare.users"},
		{Target: wire.ChaosAgent, Point: "guest.op.prepare.done"},
	},
	{ // guest operations
		{Target: wire.ChaosController, Point: "api.accepted"},
		{Target: wire.ChaosAgent, Point: "guest.op.create_databases"},
		{Target: wire.ChaosQemu, Point: "guest.op.create_databases"},
		{Target: wire.ChaosAgent, Point: "guest.op.create_users"},
		{Target: wire.ChaosQemu, Point: "guest.op.create_users.done"},
	},
	{ // restart
		{Target: wire.ChaosController, Point: "restart.queued"},
		{Target: wire.ChaosAgent, Point: "guest.op.restart"},
		{Target: wire.ChaosQemu, Point: "guest.op.restart"},
	},
	{ // resize
		{Target: wire.ChaosController, Point: "resize.extended"},
		{Target: wire.ChaosAgent, Point: "guest.op.resize_filesystem"},
		{Target: wire.ChaosQemu, Point: "guest.op.resize_filesystem"},
	},
	{ // delete
		{Target: wire.ChaosController, Point: "delete.start"},
		{Target: wire.ChaosQemu, Point: "delete.start"},
		{Target: wire.ChaosController, Point: "delete.server-gone"},
	},
}

func (r *chaosRun) randomPlan() []wire.ChaosEntry {
	var plan []wire.ChaosEntry
	for _, phase := range chaosPhases {
		e := phase[r.rng.IntN(len(phase))]
		e.Nth = 1
		plan = append(plan, e)
	}
	return plan
}

type lifecycleOptions struct {
	// probe: the write probe across a controller kill -9 while idle.
	probe bool
	// stopForAccepted: hold the guest (SIGSTOP of its qemu) so that a
	// guest call is answered 202 before delivery, for api.accepted.
	stopForAccepted bool
	// durability: relaxed durability settings, and the VM killed right
	// after operations reported done.
	durability bool
}

// chaosRun is one controller state (SQLite, or a PostgreSQL database)
// that lifecycles run on, with the controller supervised: killed, it is
// started again after 0-2 s, on the same ports.
type chaosRun struct {
	t       *testing.T
	rng     *rand.Rand
	state   string
	dsn     string
	listen  string
	agent   string
	imageID string

	mu        sync.Mutex
	cmd       *exec.Cmd
	done      chan struct{}
	stopping  bool
	plan      string
	starts    int
	lastStart time.Time
	api       *chaosAPI
	// root reaches the instance's MariaDB as root, through its forwarded
	// port: what is really there, not what the controller says.
	root       *sql.DB
	guestFired map[string]bool

	// counts, for the report
	controllerKills, qemuKills, agentKills int
	fivexx, unreachable                    int
	stuck, errored, lost, orphans          []string
	probeWrites, probeFailures             int
	probeMaxDelay                          time.Duration
	lifecycles                             int
	started                                time.Time
}

func newChaosRun(t *testing.T, seed int64, dsn string) *chaosRun {
	for _, tool := range []string{"qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install the test dependencies with `ci/deps.sh build boot test` (or `make test`)", tool)
		}
	}
	r := &chaosRun{t: t, rng: rand.New(rand.NewPCG(uint64(seed), 13)), state: filepath.Join(t.TempDir(), "state"), dsn: dsn,
		listen: freePort(t), agent: freePort(t), started: time.Now(), guestFired: map[string]bool{}}
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			data, _ := os.ReadFile(filepath.Join(r.state, "controller.log"))
			t.Logf("controller log (tail):\n%s", tail(string(data), 80))
		}
		// A lifecycle that ran to its end deleted its VM; one that failed
		// left it running, as a controller stop does.
		if pids := qemu.KillUnder(r.state); len(pids) > 0 && !t.Failed() {
			t.Errorf("qemu %v left under %s at the end", pids, r.state)
		}
	})
	img := os.Getenv("STRATA_MARIADB_IMAGE")
	if img == "" {
		out := filepath.Join(t.TempDir(), "mariadb-10.11")
		run(t, nil, "build", "-f", "images/mariadb-10.11.yaml", "-o", out, "--image-cache", cache)
		img = out + ".qcow2"
	}
	db := []string{"--state-dir", r.state}
	if dsn != "" {
		db = append(db, "--db", dsn)
	}
	r.imageID = strings.TrimSpace(stdout(t, append([]string{"image", "register", img}, db...)...))
	stdout(t, append([]string{"datastore", "update", "mariadb"}, db...)...)
	stdout(t, append([]string{"datastore", "version", "update", "mariadb", "10.11", "--image", r.imageID, "--from-recipe", "images/mariadb-10.11.yaml"}, db...)...)
	stdout(t, append([]string{"datastore", "version", "load-rules", "mariadb", "10.11", "validation-rules/mariadb-10.11.json"}, db...)...)
	return r
}

// serve starts the controller with plan (and supervises it).
func (r *chaosRun) serve(plan string) {
	r.mu.Lock()
	r.plan = plan
	r.stopping = false
	r.mu.Unlock()
	// A new plan: what fired under the last one is forgotten.
	os.Remove(filepath.Join(r.state, "chaos-fired"))
	r.start()
	r.waitAPI()
	if r.api == nil {
		r.api = r.login()
	}
}

func (r *chaosRun) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	logf, err := os.OpenFile(filepath.Join(r.state, "controller.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	args := []string{"controller", "serve", "--state-dir", r.state, "--listen", r.listen, "--agent-listen", r.agent,
		"--guest-call-timeout", "8s"}
	if r.dsn != "" {
		args = append(args, "--db", r.dsn)
	}
	cmd := exec.Command(strata, args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "STRATA_CHAOS="+r.plan)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.starts++
	r.lastStart = time.Now()
	done := make(chan struct{})
	r.cmd, r.done = cmd, done
	go func() {
		err := cmd.Wait()
		logf.Close()
		close(done)
		r.mu.Lock()
		stopping := r.stopping
		var ee *exec.ExitError
		killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
		if killed {
			r.controllerKills++
		}
		delay := time.Duration(r.rng.IntN(2000)) * time.Millisecond
		r.mu.Unlock()
		if stopping {
			return
		}
		if !killed {
			r.t.Errorf("the controller exited by itself: %v", err)
			return
		}
		time.Sleep(delay)
		r.mu.Lock()
		again := !r.stopping
		r.mu.Unlock()
		if again {
			r.start()
		}
	}()
}

// killController is the write probe's kill -9, outside any plan.
func (r *chaosRun) killController() {
	r.mu.Lock()
	cmd := r.cmd
	r.mu.Unlock()
	cmd.Process.Signal(syscall.SIGKILL)
}

// stop stops the controller (SIGTERM; its VMs live on) and stops
// supervising it.
func (r *chaosRun) stop() {
	r.mu.Lock()
	r.stopping = true
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		r.t.Errorf("controller did not stop within 60 s of SIGTERM")
		cmd.Process.Kill()
		<-done
	}
}

func (r *chaosRun) waitAPI() {
	r.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + r.listen + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatal("the controller's API did not come up within 2 minutes")
}

// chaosAPI is an API client that waits out a controller that is down
// (connection refused: counted as unreachable, retried) and counts 5xx
// answers.
type chaosAPI struct {
	r      *chaosRun
	client *apiClient
}

func (r *chaosRun) login() *chaosAPI {
	c := &controllerProc{state: r.state, url: "http://" + r.listen}
	return &chaosAPI{r: r, client: c.login(r.t)}
}

// do sends a request; a GET is retried while the controller is down. A
// request that changes something is not resent blindly: if its connection
// fails, retry reports false and the caller checks what happened.
func (a *chaosAPI) do(method, path string, body any) (code int, doc map[string]any, ok bool) {
	t := a.r.t
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var rd io.Reader
		if body != nil {
			data, _ := json.Marshal(body)
			rd = bytes.NewReader(data)
		}
		req, _ := http.NewRequest(method, a.client.base+"/v1.0/"+a.client.project+path, rd)
		req.Header.Set("X-Auth-Token", a.client.token)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := a.client.http.Do(req)
		if err != nil {
			a.r.mu.Lock()
			a.r.unreachable++
			a.r.mu.Unlock()
			if method != "GET" || time.Now().After(deadline) {
				return 0, nil, false
			}
			time.Sleep(250 * time.Millisecond)
			continue
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		json.Unmarshal(data, &doc)
		if resp.StatusCode >= 500 {
			a.r.mu.Lock()
			a.r.fivexx++
			a.r.mu.Unlock()
			t.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, data)
		}
		return resp.StatusCode, doc, true
	}
}

func (a *chaosAPI) get(path string) map[string]any {
	code, doc, ok := a.do("GET", path, nil)
	if !ok || code != 200 {
		a.r.t.Fatalf("GET %s: HTTP %d (reached %v): %v", path, code, ok, doc)
	}
	return doc
}

// instance reads an instance; nil once it is gone.
func (a *chaosAPI) instance(id string) map[string]any {
	code, doc, ok := a.do("GET", "/instances/"+id, nil)
	if ok && code == 404 {
		return nil
	}
	if !ok || code != 200 {
		a.r.t.Fatalf("GET instance: HTTP %d: %v", code, doc)
	}
	return doc["instance"].(map[string]any)
}

// waitStatus waits for want within timeout; ERROR on the way, or the
// timeout, is counted (and fails the test).
func (r *chaosRun) waitStatus(id, want string, timeout time.Duration) map[string]any {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		in := r.api.instance(id)
		if in == nil {
			r.t.Fatalf("instance %s is gone while waiting for %s", id, want)
		}
		st := in["status"].(string)
		if st != last {
			r.t.Logf("instance %s: %s (operating %v) after %.0fs", id[:8], st, in["operating_status"], time.Since(r.started).Seconds())
			last = st
		}
		if st == want {
			return in
		}
		if st == "ERROR" {
			r.errored = append(r.errored, fmt.Sprintf("%s while waiting for %s: %v", id, want, in["fault"]))
			r.t.Fatalf("instance %s went to ERROR: %v", id, in["fault"])
		}
		if time.Now().After(deadline) {
			r.stuck = append(r.stuck, fmt.Sprintf("%s not %s within %s (status %s)", id, want, timeout, st))
			r.t.Fatalf("instance %s stuck: not %s within %s (status %s)", id, want, timeout, st)
		}
		time.Sleep(time.Second)
	}
}

// waitTrueChaos polls cond; past timeout the step counts as stuck.
func (r *chaosRun) waitUntil(what string, timeout time.Duration, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			r.stuck = append(r.stuck, what)
			r.t.Fatalf("stuck: %s not within %s", what, timeout)
		}
		time.Sleep(time.Second)
	}
}

// waitAgent waits until the instance's agent reported to the running
// controller (a heartbeat after its last start): guest calls before that
// would only wait for the agent to reconnect.
func (r *chaosRun) waitAgent(id string) {
	r.t.Helper()
	r.waitUntil("the agent to report to the restarted controller", 3*time.Minute, func() bool {
		in := r.api.instance(id)
		at, err := time.Parse("2006-01-02T15:04:05", fmt.Sprint(in["service_status_updated"]))
		r.mu.Lock()
		since := r.lastStart
		r.mu.Unlock()
		return err == nil && at.Unix() > since.Unix() && in["status"] == "ACTIVE"
	})
}

// enableRoot opens the harness's root connection to the instance's
// MariaDB (root enabled through the API).
func (r *chaosRun) enableRoot(id string, ep endpoint) {
	r.waitAgent(id)
	code, doc, ok := r.api.do("POST", "/instances/"+id+"/root", nil)
	if !ok || code != 200 {
		r.t.Fatalf("enable root: HTTP %d: %v", code, doc)
	}
	pw := doc["user"].(map[string]any)["password"].(string)
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User, cfg.Passwd = "tcp", net.JoinHostPort(ep.host, strconv.Itoa(ep.port)), "root", pw
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 5*time.Second, 10*time.Second, 10*time.Second
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		r.t.Fatal(err)
	}
	db.SetMaxIdleConns(0) // a VM killed takes its connections along
	r.root = db
}

// names lists the instance's user databases or accounts, straight from
// MariaDB (nil while it does not answer).
func (r *chaosRun) names(what string) ([]string, error) {
	q := "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ('information_schema','mysql','performance_schema','sys')"
	if what == "users" {
		q = "SELECT DISTINCT User FROM mysql.user WHERE User NOT IN ('', 'root', 'mariadb.sys', 'mysql')"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	rows, err := r.root.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		out = append(out, n)
	}
	sort.Strings(out)
	return out, rows.Err()
}

func (r *chaosRun) has(what, name string) bool {
	got, err := r.names(what)
	return err == nil && slices.Contains(got, name)
}

// expectSet checks that the instance holds exactly want (a missing one is
// a lost operation, an extra one a doubled or stray one).
func (r *chaosRun) expectSet(what string, want []string) {
	r.t.Helper()
	var got []string
	var err error
	r.waitUntil("MariaDB to answer", 3*time.Minute, func() bool {
		got, err = r.names(what)
		return err == nil
	})
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		r.lost = append(r.lost, fmt.Sprintf("%s: %v, want %v", what, got, want))
		r.t.Errorf("%s: %v, want exactly %v", what, got, want)
	}
}

// opsDone counts the instance's operations of kind with a successful
// result.
func (r *chaosRun) opsDone(id string, kind wire.Kind) int {
	return r.count("SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = ? AND done_at IS NOT NULL AND result NOT LIKE '%\"error\"%'", id, string(kind))
}

// consoleWatch kills the VM of id whenever its agent asks on the console
// (a point whose target is qemu), and counts the agent's own kills.
func (r *chaosRun) consoleWatch(ctx context.Context, id string) {
	dir := filepath.Join(r.state, "compute", "qemu", id)
	var off int64
	var partial string
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		f, err := os.Open(filepath.Join(dir, "console.log"))
		if err != nil {
			continue
		}
		st, _ := f.Stat()
		if st.Size() < off {
			off, partial = 0, "" // a new boot's console
		}
		data, _ := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
		f.Close()
		off += int64(len(data))
		text := partial + string(data)
		lines := strings.Split(text, "\n")
		partial = lines[len(lines)-1]
		for _, l := range lines[:len(lines)-1] {
			switch {
			case strings.Contains(l, wire.ChaosMarker):
				point := strings.TrimSpace(l[strings.Index(l, wire.ChaosMarker)+len(wire.ChaosMarker):])
				r.t.Logf("CHAOS console asks for the VM's kill at %s; killing qemu %d", point, r.pidOf(id))
				r.killQemu(id)
				r.mu.Lock()
				r.guestFired[wire.ChaosQemu+"@"+point] = true
				r.mu.Unlock()
			case strings.Contains(l, wire.ChaosAgentMarker):
				point := strings.TrimSpace(l[strings.Index(l, wire.ChaosAgentMarker)+len(wire.ChaosAgentMarker):])
				r.mu.Lock()
				r.agentKills++
				r.guestFired[wire.ChaosAgent+"@"+point] = true
				r.mu.Unlock()
				r.t.Logf("CHAOS agent killed itself at %s", point)
			}
		}
	}
}

func (r *chaosRun) pidOf(id string) int {
	var st struct {
		PID int `json:"pid"`
	}
	data, _ := os.ReadFile(filepath.Join(r.state, "compute", "qemu", id, "server.json"))
	json.Unmarshal(data, &st)
	return st.PID
}

func (r *chaosRun) killQemu(id string) {
	pid := r.pidOf(id)
	if pid > 0 && syscall.Kill(-pid, syscall.SIGKILL) == nil {
		r.mu.Lock()
		r.qemuKills++
		r.mu.Unlock()
	}
}

// lifecycle runs one instance through create, guest operations, restart,
// resize and delete under plan.
func (r *chaosRun) lifecycle(plan []wire.ChaosEntry, o lifecycleOptions) {
	t := r.t
	r.stop()
	r.serve(wire.FormatChaos(plan))
	r.lifecycles++
	name := fmt.Sprintf("chaos-%d", r.lifecycles)
	t.Logf("CHAOS %s plan %s", name, wire.FormatChaos(plan))

	// Create, with relaxed durability settings when asked: done must mean
	// durable whatever they say.
	values := map[string]any{"max_connections": 100}
	if o.durability {
		values = map[string]any{"innodb_flush_log_at_trx_commit": 0, "sync_binlog": 0}
	}
	code, doc, ok := r.api.do("POST", "/configurations", map[string]any{"configuration": map[string]any{
		"name": name, "values": values, "datastore": map[string]any{"type": "mariadb", "version": "10.11"}}})
	if !ok || code != 200 {
		t.Fatalf("configuration: %d %v", code, doc)
	}
	cfgID := doc["configuration"].(map[string]any)["id"].(string)
	code, doc, ok = r.api.do("POST", "/instances", map[string]any{"instance": map[string]any{
		"name": name, "flavorRef": "strata.small", "volume": map[string]any{"size": 1},
		"datastore":     map[string]any{"type": "mariadb", "version": "10.11"},
		"databases":     []any{map[string]any{"name": "shop"}},
		"users":         []any{map[string]any{"name": "shopper", "password": "shopper-pw-1", "databases": []any{map[string]any{"name": "shop"}}}},
		"configuration": cfgID,
	}})
	if !ok || code != 200 {
		t.Fatalf("create: %d %v", code, doc)
	}
	id := doc["instance"].(map[string]any)["id"].(string)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.consoleWatch(ctx, id)
	in := r.waitStatus(id, "ACTIVE", 15*time.Minute)
	// The instance's own address on MariaDB's standard port, as a client
	// of Trove on Nova connects.
	ep := endpointOf(t, in, 3306)
	r.enableRoot(id, ep)
	defer r.root.Close()
	dbs, users := []string{"shop"}, []string{"shopper"}
	r.expectSet("databases", dbs)
	r.expectSet("users", users)

	if o.probe {
		r.writeProbe(id, ep)
	}

	// A guest call accepted (202) and the controller killed before the
	// agent got it: it happens once after the restart.
	r.waitAgent(id)
	if o.stopForAccepted {
		pid := r.pidOf(id)
		syscall.Kill(pid, syscall.SIGSTOP)
		code, _, ok := r.api.do("POST", "/instances/"+id+"/databases", map[string]any{"databases": []any{map[string]any{"name": "ledger"}}})
		syscall.Kill(pid, syscall.SIGCONT)
		if !ok || code != 202 {
			t.Fatalf("create database while the guest is held: HTTP %d (answered %v), want 202", code, ok)
		}
	} else {
		r.mustAccept("POST", "/instances/"+id+"/databases", map[string]any{"databases": []any{map[string]any{"name": "ledger"}}})
	}
	dbs = append(dbs, "ledger")
	r.waitUntil("database ledger", 5*time.Minute, func() bool { return r.opsDone(id, wire.KindCreateDatabases) == 1 })
	r.waitStatus(id, "ACTIVE", 10*time.Minute)
	r.waitAgent(id)
	r.mustAccept("POST", "/instances/"+id+"/users", map[string]any{"users": []any{map[string]any{
		"name": "clerk", "password": "clerk-pw-2", "databases": []any{map[string]any{"name": "ledger"}}}}})
	users = append(users, "clerk")
	r.waitUntil("user clerk", 5*time.Minute, func() bool { return r.opsDone(id, wire.KindCreateUsers) == 1 })
	r.waitStatus(id, "ACTIVE", 10*time.Minute)
	r.expectSet("databases", dbs)
	r.expectSet("users", users)

	if o.durability {
		// Reported done, then the VM is killed at once: the database and
		// the account must be on disk (innodb_flush_log_at_trx_commit=0,
		// sync_binlog=0).
		r.waitAgent(id)
		r.mustAccept("POST", "/instances/"+id+"/databases", map[string]any{"databases": []any{map[string]any{"name": "durable"}}})
		r.mustAccept("POST", "/instances/"+id+"/users", map[string]any{"users": []any{map[string]any{"name": "durable_user", "password": "durable-pw-3"}}})
		dbs, users = append(dbs, "durable"), append(users, "durable_user")
		r.waitUntil("durable database and user reported done", 5*time.Minute, func() bool {
			return r.opsDone(id, wire.KindCreateDatabases) == 2 && r.opsDone(id, wire.KindCreateUsers) == 2
		})
		r.killQemu(id)
		t.Logf("CHAOS killed the VM right after its operations reported done")
		r.waitUntil("the recovery of the killed VM", 2*time.Minute, func() bool {
			return r.api.instance(id)["status"] != "ACTIVE"
		})
		r.waitStatus(id, "ACTIVE", 10*time.Minute)
		r.expectSet("databases", dbs)
		r.expectSet("users", users)
	}

	// Restart.
	r.mustAccept("POST", "/instances/"+id+"/action", map[string]any{"restart": map[string]any{}})
	r.waitUntil("the restart to begin", time.Minute, func() bool { return r.api.instance(id)["status"] != "ACTIVE" || r.taskDone(id, "restart") })
	r.waitStatus(id, "ACTIVE", 10*time.Minute)

	// Resize: record, disk, filesystem and API agree on the larger size.
	r.mustAccept("POST", "/instances/"+id+"/action", map[string]any{"resize": map[string]any{"volume": map[string]any{"size": 2}}})
	r.waitUntil("the resize", 10*time.Minute, func() bool {
		in := r.api.instance(id)
		return in["status"] == "ACTIVE" && in["volume"].(map[string]any)["size"] == 2.0 && volumeTotal(in) > 1.8
	})
	if st, err := os.Stat(filepath.Join(r.state, "compute", "qemu", id, "data.raw")); err != nil || st.Size() != 2<<30 {
		r.lost = append(r.lost, "resize: disk not 2 GiB")
		t.Errorf("data disk after the resize: %v %v", st, err)
	}
	if n := r.count("SELECT COUNT(*) FROM instances WHERE id = ? AND volume_size_gb = 2 AND volume LIKE '%\"size_gb\":2%'", id); n != 1 {
		r.lost = append(r.lost, "resize: record not 2 GB")
		t.Errorf("the instance record disagrees with the resized volume")
	}
	r.expectSet("databases", dbs)
	r.expectSet("users", users)
	// No accepted operation failed unseen, none ran twice (a second run
	// would have found what the first made: already_exists).
	if f := r.api.instance(id)["fault"]; f != nil {
		r.lost = append(r.lost, fmt.Sprintf("fault %v", f))
		t.Errorf("instance shows a fault: %v", f)
	}
	if n := r.count("SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND result LIKE '%already_exists%'", id); n != 0 {
		r.lost = append(r.lost, "doubled operations")
		t.Errorf("%d operations found what they were to make already: run twice", n)
	}

	// Delete: nothing is left.
	if code, doc, ok := r.api.do("DELETE", "/instances/"+id, nil); !ok || code != 202 {
		t.Fatalf("delete: %d %v", code, doc)
	}
	r.waitUntil("the delete", 5*time.Minute, func() bool { return r.api.instance(id) == nil })
	cancel()
	r.waitUntil("qemu gone after delete", time.Minute, func() bool {
		out, _ := exec.Command("pgrep", "-f", "strata-"+id).Output()
		return len(bytes.TrimSpace(out)) == 0
	})
	if _, err := os.Stat(filepath.Join(r.state, "compute", "qemu", id)); !os.IsNotExist(err) {
		entries, _ := os.ReadDir(filepath.Join(r.state, "compute", "qemu", id))
		r.orphans = append(r.orphans, fmt.Sprintf("%s: %v", id, entries))
		t.Errorf("files left after delete: %v", entries)
	}
	r.checkFired(plan)
}

// mustAccept sends a request answered 202; if its connection broke (the
// controller died in it), the caller's wait for its effect decides.
func (r *chaosRun) mustAccept(method, path string, body any) {
	code, doc, ok := r.api.do(method, path, body)
	if ok && code != 202 && code != 200 {
		r.t.Fatalf("%s %s: HTTP %d: %v", method, path, code, doc)
	}
}

func (r *chaosRun) taskDone(id, kind string) bool {
	return r.count("SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = ? AND state = 'done'", id, kind) > 0
}

// count runs a query on the controller's database (SQLite or PostgreSQL).
func (r *chaosRun) count(query string, args ...any) int {
	dsn := r.dsn
	if dsn == "" {
		dsn = filepath.Join(r.state, "controller.db")
	}
	db, err := store.Open(context.Background(), dsn)
	if err != nil {
		r.t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		r.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// checkFired fails the run if an entry of the plan never fired: a kill
// point the lifecycle did not reach tests nothing.
func (r *chaosRun) checkFired(plan []wire.ChaosEntry) {
	fired, _ := os.ReadFile(filepath.Join(r.state, "chaos-fired"))
	for _, e := range plan {
		if e.Guest() {
			r.mu.Lock()
			seen := r.guestFired[e.String()]
			r.mu.Unlock()
			if !seen {
				r.t.Errorf("kill point %s was never reached (no console marker)", e)
			}
			continue
		}
		if !strings.Contains(string(fired), e.String()) {
			r.t.Errorf("kill point %s was never reached", e)
		}
		if e.Target == wire.ChaosQemu {
			r.mu.Lock()
			r.qemuKills++
			r.mu.Unlock()
		}
	}
}

// writeProbe writes a row every 250 ms through the forwarded port while
// the controller is killed (-9) and started again: none may fail, none
// may take over 2 s.
func (r *chaosRun) writeProbe(id string, ep endpoint) {
	t := r.t
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User, cfg.Passwd, cfg.DBName = "tcp", net.JoinHostPort(ep.host, strconv.Itoa(ep.port)), "shopper", "shopper-pw-1", "shop"
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 10*time.Second, 10*time.Second, 10*time.Second
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE IF NOT EXISTS probe (n INT PRIMARY KEY, at DATETIME(3))"); err != nil {
		t.Fatalf("write probe: %v", err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	var mu sync.Mutex
	var writes, failures int
	var maxDelay time.Duration
	go func() {
		defer close(done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for n := 1; ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := db.ExecContext(ctx, "INSERT INTO probe VALUES (?, NOW(3))", n)
			cancel()
			d := time.Since(start)
			mu.Lock()
			writes++
			if err != nil {
				failures++
				t.Errorf("write probe: write %d failed after %s: %v", n, d, err)
			}
			maxDelay = max(maxDelay, d)
			mu.Unlock()
		}
	}()
	time.Sleep(2 * time.Second)
	killed := time.Now()
	r.killController()
	t.Logf("CHAOS write probe: controller killed (-9)")
	r.waitUntil("the controller back after the probe's kill", 2*time.Minute, func() bool {
		resp, err := http.Get("http://" + r.listen + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	back := time.Since(killed)
	if st := r.api.instance(id)["status"]; st != "ACTIVE" {
		t.Errorf("after the controller's restart the instance shows %v, not ACTIVE", st)
	}
	time.Sleep(3 * time.Second)
	close(stop)
	<-done
	var rows int
	db.QueryRow("SELECT COUNT(*) FROM probe").Scan(&rows)
	mu.Lock()
	defer mu.Unlock()
	if rows != writes-failures {
		r.lost = append(r.lost, fmt.Sprintf("probe: %d rows for %d writes", rows, writes-failures))
		t.Errorf("write probe: %d rows for %d successful writes", rows, writes-failures)
	}
	r.probeWrites += writes
	r.probeFailures += failures
	r.probeMaxDelay = max(r.probeMaxDelay, maxDelay)
	t.Logf("FIGURE write probe across a controller kill -9 and restart (API back after %.1fs): %d writes, %d failed, max delay %s",
		back.Seconds(), writes, failures, maxDelay.Round(time.Millisecond))
	if maxDelay > 2*time.Second {
		t.Errorf("a write took %s, over 2 s", maxDelay)
	}
}

func (r *chaosRun) report() {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.t
	t.Logf("CHAOS %d lifecycles in %.0fs: kills controller %d, qemu %d, agent %d; controller starts %d",
		r.lifecycles, time.Since(r.started).Seconds(), r.controllerKills, r.qemuKills, r.agentKills, r.starts)
	t.Logf("CHAOS stuck past timeout %d, ERROR %d, lost or doubled operations %d, orphan VMs or volume files %d, 5xx %d (unreachable while down: %d)",
		len(r.stuck), len(r.errored), len(r.lost), len(r.orphans), r.fivexx, r.unreachable)
	if r.probeWrites > 0 {
		t.Logf("CHAOS write probe: %d writes, %d failed, max delay %s", r.probeWrites, r.probeFailures, r.probeMaxDelay.Round(time.Millisecond))
	}
	if r.controllerKills == 0 || r.qemuKills == 0 || r.agentKills == 0 {
		t.Errorf("each of the controller, qemu and the agent must be killed at least once")
	}
	if len(r.stuck)+len(r.errored)+len(r.lost)+len(r.orphans)+r.fivexx+r.probeFailures > 0 {
		t.Errorf("chaos found: stuck %v, ERROR %v, lost/doubled %v, orphans %v, 5xx %d, failed writes %d",
			r.stuck, r.errored, r.lost, r.orphans, r.fivexx, r.probeFailures)
	}
}

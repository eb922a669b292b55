//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"strata/controller/compute/qemu"
	"strata/controller/store"
)

// TestControllerRunsAMariaDBInstanceFromABuiltImageUnderQemu is issue 4's
// end-to-end proof, with one VM boot: the MariaDB image built by the
// strata binary is registered (`strata image register`, `strata datastore
// ...`), `strata controller serve` runs as a real process, an instance is
// created through the Trove API with a database, a user and a
// configuration group; the VM boots under qemu (TCG here), its agent
// enrolls over SSH and heartbeats, the instance becomes ACTIVE, and the
// host's real `mariadb` client writes and reads a table through the
// forwarded port. A database and a user are then added through the API
// and the real `openstack database ...` CLI, the volume is resized and the
// filesystem grows, a restart-only parameter puts the instance in
// RESTART_REQUIRED and a restart applies it. The API is timed under a
// small load, the controller's RSS read. Delete leaves no qemu process,
// disk or enrolment behind.
func TestControllerRunsAMariaDBInstanceFromABuiltImageUnderQemu(t *testing.T) {
	// Light (one VM at most): runs beside the other light tests, after
	// the heavy ones (the package comment says why).
	t.Parallel()
	for _, tool := range []string{"mariadb", "openstack", "qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install the test dependencies with `ci/deps.sh build boot test` (or `make test`)", tool)
		}
	}
	start := time.Now()
	out := t.TempDir()
	agentBin := filepath.Join(repo, "bin", "strata-agent")
	if _, err := os.Stat(agentBin); err != nil {
		// make build stamps the agent; a plain build is enough here.
		build := exec.Command("go", "build", "-o", agentBin, "./agent/cmd/strata-agent")
		build.Dir, build.Env = repo, append(os.Environ(), "CGO_ENABLED=0")
		if o, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building strata-agent: %v\n%s", err, o)
		}
	}
	img := filepath.Join(out, "mariadb-10.11")
	run(t, nil, "build", "-f", "images/mariadb-10.11.yaml", "-o", img, "--image-cache", cache)
	t.Logf("image ready after %.0fs", time.Since(start).Seconds())

	// Register the image and the datastore version, as an operator would.
	state := filepath.Join(out, "state")
	imageID := strings.TrimSpace(stdout(t, "image", "register", "--state-dir", state, img+".qcow2"))
	stdout(t, "datastore", "update", "--state-dir", state, "mariadb")
	stdout(t, "datastore", "version", "update", "--state-dir", state, "mariadb", "10.11", "--image", imageID,
		"--from-recipe", "images/mariadb-10.11.yaml")
	stdout(t, "datastore", "version", "load-rules", "--state-dir", state, "mariadb", "10.11", "validation-rules/mariadb-10.11.json")
	stdout(t, "datastore", "update", "--state-dir", state, "mariadb", "10.11")

	ctl := startController(t, state)
	api := ctl.login(t)

	cfg := api.must(t, 200, "POST", "/configurations", map[string]any{"configuration": map[string]any{
		"name": "e2e", "values": map[string]any{"max_connections": 123}, "datastore": map[string]any{"type": "mariadb", "version": "10.11"}}})
	cfgID := cfg["configuration"].(map[string]any)["id"].(string)
	created := time.Now()
	in := api.must(t, 200, "POST", "/instances", map[string]any{"instance": map[string]any{
		"name": "e2e-db", "flavorRef": "strata.small", "volume": map[string]any{"size": 1},
		"datastore":     map[string]any{"type": "mariadb", "version": "10.11"},
		"databases":     []any{map[string]any{"name": "shop"}},
		"users":         []any{map[string]any{"name": "shopper", "password": "shopper-pw-1", "databases": []any{map[string]any{"name": "shop"}}}},
		"configuration": cfgID,
	}})["instance"].(map[string]any)
	id := in["id"].(string)
	t.Cleanup(func() {
		if t.Failed() {
			console, _ := os.ReadFile(filepath.Join(state, "compute", "qemu", id, "console.log"))
			t.Logf("console of %s (tail):\n%s", id, tail(string(console), 80))
		}
	})
	in = api.waitStatus(t, id, "ACTIVE", 20*time.Minute)
	toActive := time.Since(created)
	t.Logf("FIGURE create→ACTIVE: %.1fs (%s)", toActive.Seconds(), accelOf(ctl.log()))
	ep := endpointOf(t, in, 3306)
	if n := countRows(t, state, "SELECT COUNT(*) FROM agent_keys WHERE instance_id = ?", id); n != 1 {
		t.Fatalf("%d enrolled agent keys, want 1", n)
	}
	if n := countRows(t, state, "SELECT heartbeats FROM instance_reports WHERE instance_id = ?", id); n < 1 {
		t.Fatal("no heartbeat stored")
	}
	// The datastore lives on the 1 GB data volume, not the 2 GiB root disk.
	waitTrue(t, "a heartbeat reporting the data volume", time.Minute, func() bool {
		in = api.instance(t, id)
		return volumeTotal(in) > 0.8 && volumeTotal(in) < 1.01
	})

	// The real client through the forwarded port.
	db := mariadbClient{ep}
	db.must(t, "shopper", "shopper-pw-1", "shop", "CREATE TABLE orders (id INT PRIMARY KEY, item VARCHAR(40)); INSERT INTO orders VALUES (1, 'tea'), (2, 'cake')")
	if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT GROUP_CONCAT(item ORDER BY id) FROM orders"); got != "tea,cake" {
		t.Fatalf("read back %q", got)
	}
	if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT @@max_connections"); got != "123" {
		t.Fatalf("max_connections from the configuration group = %q", got)
	}
	if _, err := db.query("shopper", "wrong-password", "shop", "SELECT 1"); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	// TLS with the instance's own certificate: instance show carries its
	// fingerprint, and a client pinning it gets an encrypted session.
	fp, _ := in["tls_fingerprint"].(string)
	if seen, cipher := tlsSession(t, ep, "shopper", "shopper-pw-1", fp); seen != fp || cipher == "" {
		t.Fatalf("TLS: instance show says %q, the server presented %q (cipher %q)", fp, seen, cipher)
	}

	// A database and a user through the API; the user connects.
	api.must(t, 202, "POST", "/instances/"+id+"/databases", map[string]any{"databases": []any{map[string]any{"name": "ledger"}}})
	api.must(t, 202, "POST", "/instances/"+id+"/users", map[string]any{"users": []any{map[string]any{
		"name": "clerk", "password": "clerk-pw-2", "databases": []any{map[string]any{"name": "ledger"}}}}})
	waitTrue(t, "the new user to log in", 2*time.Minute, func() bool {
		_, err := db.query("clerk", "clerk-pw-2", "ledger", "SELECT 1")
		return err == nil
	})
	db.must(t, "clerk", "clerk-pw-2", "ledger", "CREATE TABLE entries (n INT); INSERT INTO entries VALUES (42)")
	if code, doc := api.do(t, "POST", "/instances/"+id+"/databases", `{"databases":[{"name":"x'; DROP DATABASE shop; --"}]}`); code != 400 {
		t.Fatalf("injection attempt: HTTP %d %v", code, doc)
	}

	// The real openstack CLI.
	osc := ctl.openstack(t)
	var list []map[string]any
	osc.json(t, &list, "database", "instance", "list")
	if len(list) != 1 || list[0]["Status"] != "ACTIVE" {
		t.Fatalf("openstack database instance list: %v", list)
	}
	var dbs []map[string]any
	osc.json(t, &dbs, "database", "db", "list", id)
	if len(dbs) != 2 {
		t.Fatalf("openstack database db list: %v", dbs)
	}
	osc.run(t, "database", "user", "create", id, "auditor", "auditor-pw-3", "--databases", "ledger")
	waitTrue(t, "the CLI's user to log in", 2*time.Minute, func() bool {
		_, err := db.query("auditor", "auditor-pw-3", "ledger", "SELECT n FROM entries")
		return err == nil
	})
	var users []map[string]any
	osc.json(t, &users, "database", "user", "list", id)
	if len(users) != 3 {
		t.Fatalf("openstack database user list: %v", users)
	}
	// Rename a user and change its password on the real server: the grants
	// follow, the old name and password no longer log in.
	osc.run(t, "database", "user", "update", "attributes", id, "auditor", "--new_name", "inspector", "--new_password", "inspector-pw-4")
	waitTrue(t, "the renamed user to log in", 2*time.Minute, func() bool {
		_, err := db.query("inspector", "inspector-pw-4", "ledger", "SELECT n FROM entries")
		return err == nil
	})
	if _, err := db.query("auditor", "auditor-pw-3", "ledger", "SELECT 1"); err == nil {
		t.Fatal("the old user name still logs in after the rename")
	}

	// Guest logs on the real server through the real client: the slow
	// query log switched on catches a slow query, which reaches the store
	// by publish and comes back by save; switched off, it catches no more.
	logStart := time.Now()
	saveLog := func(name string) string {
		t.Helper()
		osc.run(t, "database", "log", "set", id, name, "--publish")
		file := filepath.Join(out, name+".log")
		os.Remove(file)
		osc.run(t, "database", "log", "save", id, name, "--file", file)
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("openstack database log save %s: %v", name, err)
		}
		return string(data)
	}
	osc.run(t, "database", "log", "set", id, "slow_query", "--enable")
	db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT SLEEP(1.5) AS slow_marker_on")
	if slow := saveLog("slow_query"); !strings.Contains(slow, "slow_marker_on") {
		t.Fatalf("the slow query log, switched on, published and saved, lacks the slow query:\n%s", tail(slow, 20))
	}
	osc.run(t, "database", "log", "set", id, "slow_query", "--disable")
	db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT SLEEP(1.5) AS slow_marker_off")
	if slow := saveLog("slow_query"); strings.Contains(slow, "slow_marker_off") || !strings.Contains(slow, "slow_marker_on") {
		t.Fatalf("the slow query log switched off: want the first slow query and not the second:\n%s", tail(slow, 20))
	}
	if errLog := saveLog("error"); !strings.Contains(errLog, "ready for connections") {
		t.Fatalf("the server's error log, saved, does not say it started:\n%s", tail(errLog, 20))
	}
	t.Logf("FIGURE guest logs (enable, two slow queries, disable, three publish and save): %.1fs", time.Since(logStart).Seconds())

	// Resize the volume: the agent grows the filesystem online.
	before := volumeTotal(in)
	if before > 1.01 {
		t.Fatalf("before the resize the heartbeat reports a %.2f GiB filesystem: not the 1 GB data volume", before)
	}
	osc.run(t, "database", "instance", "resize", "volume", id, "2")
	api.waitStatus(t, id, "RESIZE", time.Minute)
	api.waitStatus(t, id, "ACTIVE", 10*time.Minute)
	waitTrue(t, "the grown filesystem in a heartbeat", 2*time.Minute, func() bool {
		in = api.instance(t, id)
		return in["volume"].(map[string]any)["size"] == 2.0 && volumeTotal(in) > 1.8
	})
	t.Logf("volume: %.2f GiB filesystem before, %.2f GiB after resizing to 2 GB", before, volumeTotal(in))

	// A restart-only parameter: RESTART_REQUIRED, then restart applies it.
	api.must(t, 200, "PATCH", "/configurations/"+cfgID, map[string]any{"configuration": map[string]any{"values": map[string]any{"performance_schema": true}}})
	api.waitStatus(t, id, "RESTART_REQUIRED", 5*time.Minute)
	if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT @@performance_schema"); got != "0" {
		t.Fatalf("performance_schema before the restart = %q", got)
	}
	api.must(t, 202, "POST", "/instances/"+id+"/action", map[string]any{"restart": map[string]any{}})
	api.waitStatus(t, id, "ACTIVE", 10*time.Minute)
	if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT @@performance_schema"); got != "1" {
		t.Fatalf("performance_schema after the restart = %q", got)
	}
	if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT COUNT(*) FROM orders"); got != "2" {
		t.Fatalf("rows after restart: %q", got)
	}

	// The fence, tried from inside the guest with root's own tools: root
	// can point the server's replication client anywhere, and its error
	// tells a connection refused (2003) or never answered (2013 "waiting
	// for initial communication packet") from one made. (The
	// agent endpoint, the guest's one way out, is proven by the agent
	// itself: it enrolled and reconnected after the restart.)
	rootPW := api.must(t, 200, "POST", "/instances/"+id+"/root", nil)["user"].(map[string]any)["password"].(string)
	_, apiPort, _ := net.SplitHostPort(strings.TrimPrefix(ctl.url, "http://"))
	_, agentPort, _ := net.SplitHostPort(ctl.agent)
	reach := func(host, port string) (int, string) {
		probeStart := time.Now()
		db.must(t, "root", rootPW, "", fmt.Sprintf("SET GLOBAL slave_net_timeout = 5; "+
			"CHANGE MASTER 'fence' TO MASTER_HOST = '%s', MASTER_PORT = %s, MASTER_USER = 'probe', MASTER_PASSWORD = 'probe', MASTER_CONNECT_RETRY = 1; "+
			"START SLAVE 'fence'", host, port))
		defer db.must(t, "root", rootPW, "", "STOP SLAVE 'fence'; RESET SLAVE 'fence' ALL")
		var errno int
		var msg string
		waitTrue(t, "the replication client's verdict on "+host+":"+port, 4*time.Minute, func() bool {
			out := db.vertical(t, "root", rootPW, "SHOW SLAVE 'fence' STATUS")
			for _, line := range strings.Split(out, "\n") {
				k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
				switch k {
				case "Last_IO_Errno":
					errno, _ = strconv.Atoi(v)
				case "Last_IO_Error":
					msg = v
				}
			}
			return errno != 0
		})
		t.Logf("guest → %s:%s: %d %s (%.0fs)", host, port, errno, msg, time.Since(probeStart).Seconds())
		return errno, msg
	}
	fenced := func(errno int, msg string) bool {
		return errno == 2003 || errno == 2013 && strings.Contains(msg, "waiting for initial communication packet")
	}
	// The probe sees a connection made: the guest's own server refuses
	// the unknown user (1045), after connecting.
	if errno, msg := reach("127.0.0.1", "3306"); fenced(errno, msg) {
		t.Fatalf("the probe cannot reach the guest's own server: %d %s", errno, msg)
	}
	// The API on the host's loopback, through qemu's gateway: fenced; so
	// is the endpoint's own port there (its only way is 10.0.2.100).
	for _, port := range []string{apiPort, agentPort} {
		if errno, msg := reach("10.0.2.2", port); !fenced(errno, msg) {
			t.Fatalf("from inside the guest the host's 127.0.0.1:%s answered: %d %s", port, errno, msg)
		}
	}
	api.must(t, 204, "DELETE", "/instances/"+id+"/root", nil)

	// API latency under a small load, and the controller's memory.
	for _, path := range []string{"/instances", "/instances/" + id} {
		p50, p99, n := api.load(t, path, 4, 250)
		t.Logf("FIGURE API GET %s: p50 %.2f ms, p99 %.2f ms (%d requests, 4 clients)", strings.Replace(path, id, "{id}", 1), p50, p99, n)
	}
	t.Logf("FIGURE controller RSS: %.1f MiB", rssMiB(t, ctl.cmd.Process.Pid))

	// Delete: nothing is left.
	deleting := time.Now()
	api.must(t, 202, "DELETE", "/instances/"+id, nil)
	api.waitGone(t, id, 5*time.Minute)
	t.Logf("FIGURE delete (accepted → instance gone): %.1fs", time.Since(deleting).Seconds())
	if out, _ := exec.Command("pgrep", "-f", "strata-"+id).Output(); len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("qemu still running after delete: pid %s", out)
	}
	if _, err := os.Stat(filepath.Join(state, "compute", "qemu", id)); !os.IsNotExist(err) {
		entries, _ := os.ReadDir(filepath.Join(state, "compute", "qemu", id))
		t.Fatalf("the instance's disks are still there: %v", entries)
	}
	for _, table := range []string{"agent_tokens", "agent_keys", "agent_ops", "instance_reports"} {
		if n := countRows(t, state, "SELECT COUNT(*) FROM "+table+" WHERE instance_id = ?", id); n != 0 {
			t.Errorf("%s still holds %d rows of the deleted instance", table, n)
		}
	}
	ctl.stop(t)
	t.Logf("FIGURE e2e wall time: %.0fs", time.Since(start).Seconds())
}

// stdout runs strata and returns its standard output.
func stdout(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(strata, args...)
	cmd.Dir = repo
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("strata %v: %v\n%s%s", args, err, o.String(), e.String())
	}
	t.Logf("strata %s: %s%s", strings.Join(args[:2], " "), e.String(), tail(o.String(), 5))
	return o.String()
}

type controllerProc struct {
	cmd     *exec.Cmd
	state   string
	url     string
	agent   string // the agent endpoint's listening address
	logPath string
	done    chan struct{}
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startController(t *testing.T, state string) *controllerProc {
	t.Helper()
	listen, agent := freePort(t), freePort(t)
	c := &controllerProc{state: state, url: "http://" + listen, agent: agent, logPath: filepath.Join(state, "controller.log"), done: make(chan struct{})}
	logf, err := os.Create(c.logPath)
	if err != nil {
		t.Fatal(err)
	}
	// These tests do not prove that VMs outlive the controller (the chaos
	// tests do): their VMs die with it, and any left are killed.
	c.cmd = exec.Command(strata, "controller", "serve", "--state-dir", state, "--listen", listen, "--agent-listen", agent, "--vms-die-with-controller")
	c.cmd.Dir = repo
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.cmd.Wait(); logf.Close(); close(c.done) }()
	t.Cleanup(func() {
		c.stop(t)
		if t.Failed() {
			t.Logf("controller log (tail):\n%s", tail(c.log(), 60))
		}
		if pids := qemu.KillUnder(state); len(pids) > 0 {
			t.Errorf("qemu %v outlived the controller under %s", pids, state)
		}
	})
	waitTrue(t, "the controller's API", 30*time.Second, func() bool {
		resp, err := http.Get(c.url + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	return c
}

func (c *controllerProc) log() string {
	data, _ := os.ReadFile(c.logPath)
	return string(data)
}

// stop sends SIGTERM and waits (with --vms-die-with-controller its VMs
// die with it).
func (c *controllerProc) stop(t *testing.T) {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(90 * time.Second):
		t.Errorf("controller did not stop within 90s of SIGTERM; killing it")
		c.cmd.Process.Kill()
		<-c.done
	}
}

func (c *controllerProc) openrc(t *testing.T) map[string]string {
	data, err := os.ReadFile(filepath.Join(c.state, "openrc"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if kv, ok := strings.CutPrefix(line, "export "); ok {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = strings.Trim(v, "'")
		}
	}
	return env
}

type apiClient struct {
	base, token, project string
	http                 *http.Client
}

func (c *controllerProc) login(t *testing.T) *apiClient {
	t.Helper()
	rc := c.openrc(t)
	if rc["OS_AUTH_URL"] != c.url+"/v3" {
		t.Fatalf("openrc OS_AUTH_URL = %q, want %s/v3", rc["OS_AUTH_URL"], c.url)
	}
	body := fmt.Sprintf(`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":%q,"domain":{"name":"Default"},"password":%q}}},"scope":{"project":{"name":%q,"domain":{"name":"Default"}}}}}`,
		rc["OS_USERNAME"], rc["OS_PASSWORD"], rc["OS_PROJECT_NAME"])
	resp, err := http.Post(c.url+"/v3/auth/tokens", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Token struct {
			Project struct{ ID string } `json:"project"`
		} `json:"token"`
	}
	json.NewDecoder(resp.Body).Decode(&doc)
	if resp.StatusCode != 201 {
		t.Fatalf("login: HTTP %d", resp.StatusCode)
	}
	return &apiClient{base: c.url, token: resp.Header.Get("X-Subject-Token"), project: doc.Token.Project.ID,
		http: &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
}

func (a *apiClient) do(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		r = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, a.base+"/v1.0/"+a.project+path, r)
	req.Header.Set("X-Auth-Token", a.token)
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var doc map[string]any
	json.Unmarshal(data, &doc)
	return resp.StatusCode, doc
}

func (a *apiClient) must(t *testing.T, want int, method, path string, body any) map[string]any {
	t.Helper()
	code, doc := a.do(t, method, path, body)
	if code != want {
		t.Fatalf("%s %s: HTTP %d, want %d: %v", method, path, code, want, doc)
	}
	return doc
}

func (a *apiClient) instance(t *testing.T, id string) map[string]any {
	t.Helper()
	return a.must(t, 200, "GET", "/instances/"+id, nil)["instance"].(map[string]any)
}

func (a *apiClient) waitStatus(t *testing.T, id, want string, within time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(within)
	last := ""
	for {
		in := a.instance(t, id)
		st := in["status"].(string)
		if st != last {
			t.Logf("instance %s: %s (operating %v)", id, st, in["operating_status"])
			last = st
		}
		if st == want {
			return in
		}
		if st == "ERROR" && want != "ERROR" {
			t.Fatalf("instance %s is in ERROR: %v", id, in["fault"])
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s did not reach %s within %s: %v", id, want, within, in)
		}
		time.Sleep(2 * time.Second)
	}
}

func (a *apiClient) waitGone(t *testing.T, id string, within time.Duration) {
	t.Helper()
	waitTrue(t, "the instance to be deleted", within, func() bool {
		code, _ := a.do(t, "GET", "/instances/"+id, nil)
		return code == 404
	})
}

// load sends GETs to path from clients goroutines, perClient each, and
// returns the median and 99th percentile latency in milliseconds.
func (a *apiClient) load(t *testing.T, path string, clients, perClient int) (p50, p99 float64, n int) {
	var mu sync.Mutex
	var lat []float64
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range perClient {
				req, _ := http.NewRequest("GET", a.base+"/v1.0/"+a.project+path, nil)
				req.Header.Set("X-Auth-Token", a.token)
				s := time.Now()
				resp, err := a.http.Do(req)
				if err != nil {
					t.Errorf("load: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				d := float64(time.Since(s).Microseconds()) / 1000
				if resp.StatusCode != 200 {
					t.Errorf("load: HTTP %d", resp.StatusCode)
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	sort.Float64s(lat)
	if len(lat) == 0 {
		t.Fatal("no requests completed")
	}
	return lat[len(lat)/2], lat[len(lat)*99/100], len(lat)
}

type oscRunner struct{ env []string }

func (c *controllerProc) openstack(t *testing.T) *oscRunner {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for k, v := range c.openrc(t) {
		env = append(env, k+"="+v)
	}
	return &oscRunner{env: env}
}

func (o *oscRunner) run(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("openstack", args...)
	cmd.Env = o.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (o *oscRunner) json(t *testing.T, v any, args ...string) {
	t.Helper()
	out := o.run(t, append(args, "-f", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// endpoint is where a client reaches an instance's database.
type endpoint struct {
	host string
	port int
}

// endpointOf reads the instance's reported address: its own loopback
// address (of the default network, 127.10.0.0/16) on the datastore's
// standard port, as a client of Trove on Nova connects.
func endpointOf(t *testing.T, in map[string]any, standard int) endpoint {
	t.Helper()
	ep := endpoint{port: int(in["port"].(float64))}
	if ips, _ := in["ip"].([]any); len(ips) > 0 { // the first is the one clients use
		ep.host, _ = ips[0].(string)
	}
	a, err := netip.ParseAddr(ep.host)
	if err != nil || !netip.MustParsePrefix("127.10.0.0/16").Contains(a) || ep.port != standard {
		t.Fatalf("instance address %s:%d, want the standard port %d on an address of 127.10.0.0/16: %v", ep.host, ep.port, standard, in)
	}
	return ep
}

// mariadbClient runs Debian's mariadb client against the instance.
type mariadbClient struct{ ep endpoint }

func (m mariadbClient) query(user, password, database, sql string) (string, error) {
	return m.queryWithin(time.Minute, user, password, database, sql)
}

// mustWithin is must with its own bound (a full scan of a large table
// under TCG takes minutes).
func (m mariadbClient) mustWithin(t *testing.T, within time.Duration, user, password, database, sql string) string {
	t.Helper()
	out, err := m.queryWithin(within, user, password, database, sql)
	if err != nil {
		t.Fatalf("mariadb as %s: %s: %v", user, sql, err)
	}
	return out
}

func (m mariadbClient) queryWithin(within time.Duration, user, password, database, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, "mariadb", "--protocol=TCP", "-h", m.ep.host, "-P", strconv.Itoa(m.ep.port),
		"-u", user, "--connect-timeout=20", "--batch", "--skip-column-names", "--ssl=0", database, "-e", sql)
	cmd.Env = append(os.Environ(), "MYSQL_PWD="+password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// vertical runs one statement and returns its first row by column name.
func (m mariadbClient) vertical(t *testing.T, user, password, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "mariadb", "--protocol=TCP", "-h", m.ep.host, "-P", strconv.Itoa(m.ep.port),
		"-u", user, "--connect-timeout=20", "--batch", "--ssl=0", "-e", sql+"\\G")
	cmd.Env = append(os.Environ(), "MYSQL_PWD="+password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mariadb as %s: %s: %v: %s", user, sql, err, out)
	}
	return string(out)
}

func (m mariadbClient) must(t *testing.T, user, password, database, sql string) string {
	t.Helper()
	out, err := m.query(user, password, database, sql)
	if err != nil {
		t.Fatalf("mariadb as %s: %s: %v", user, sql, err)
	}
	return out
}

func waitTrue(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(time.Second)
	}
}

func volumeTotal(in map[string]any) float64 {
	v, _ := in["volume"].(map[string]any)["total"].(float64)
	return v
}

func countRows(t *testing.T, state, query string, args ...any) int {
	t.Helper()
	var n int
	queryRow(t, state, &n, query, args...)
	return n
}

// queryRow scans the one row query returns from the controller's
// database in state into dest.
func queryRow(t *testing.T, state string, dest any, query string, args ...any) {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(state, "controller.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow(context.Background(), query, args...).Scan(dest); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func rssMiB(t *testing.T, pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return float64(kb) / 1024
		}
	}
	return 0
}

func accelOf(log string) string {
	if i := strings.Index(log, "accel="); i >= 0 {
		f := strings.Fields(log[i:])
		return f[0]
	}
	return "accel unknown"
}

// tlsSession connects over TCP with TLS, pinning fingerprint (the
// certificate is self-signed: the pin is the check), and returns the
// fingerprint the server presented and the session's cipher.
func tlsSession(t *testing.T, ep endpoint, user, password, fingerprint string) (seen, cipher string) {
	t.Helper()
	name := "pin-" + strconv.Itoa(ep.port) + "-" + ep.host
	err := mysql.RegisterTLSConfig(name, &tls.Config{
		InsecureSkipVerify: true, // the pin below is the whole check
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			sum := sha256.Sum256(raw[0])
			parts := make([]string, len(sum))
			for i, b := range sum {
				parts[i] = fmt.Sprintf("%02x", b)
			}
			seen = strings.Join(parts, ":")
			if seen != fingerprint {
				return fmt.Errorf("certificate %s is not the pinned %s", seen, fingerprint)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User, cfg.Passwd, cfg.TLSConfig = "tcp", net.JoinHostPort(ep.host, strconv.Itoa(ep.port)), user, password, name
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var variable string
	if err := db.QueryRow("SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&variable, &cipher); err != nil {
		t.Fatalf("TLS session to %s:%d: %v", ep.host, ep.port, err)
	}
	return seen, cipher
}

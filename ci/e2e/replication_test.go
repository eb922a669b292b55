//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestReplicasOfAMariaDBInstanceFollowItShowTheirLagAndDetach is issue 17's
// end to end on the local driver (docs/replication.md): a primary with
// data; two replicas in one request (`openstack database instance create
// --replica-of --replica-count 2`), seeded from one backup, each reaching
// its source through the fence's second opening; both hold the primary's
// data, refuse writes and follow new ones, with their lag shown; one is
// promoted (switchover) while a client writes, losing no committed write,
// and the old primary and the other replica follow it; the other is
// detached and becomes writable and independent; the primary cannot be
// deleted while a replica remains; the new primary's VM is killed with
// automatic failover on: the controller fences it and promotes its
// replica, which takes writes; everything is deleted, the seed backup
// first. With make e2e-all, a replica's VM is also killed and comes back
// to catch up, the other replica's network to the primary is cut for a
// minute (its lag and the link's error shown, then caught up by itself),
// the old primary is rebuilt, and the failed-over source rejoins as a
// replica. STRATA_E2E_REPLICA_MB (make bench-replica-vm) adds that many
// MiB to the source before its replicas are made.
func TestReplicasOfAMariaDBInstanceFollowItShowTheirLagAndDetach(t *testing.T) {
	for _, tool := range []string{"mariadb", "qemu-system-x86_64", "qemu-img", "openstack"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install the test dependencies with `ci/deps.sh build boot test` (or `make test`)", tool)
		}
	}
	start := time.Now()
	out := t.TempDir()
	const recipe = "images/mariadb-10.11.yaml"
	img := filepath.Join(out, "mariadb")
	run(t, nil, "build", "-f", recipe, "-o", img, "--image-cache", cache)
	state := filepath.Join(out, "state")
	imageID := strings.TrimSpace(stdout(t, "image", "register", "--state-dir", state, img+".qcow2"))
	stdout(t, "datastore", "update", "--state-dir", state, "mariadb")
	// Three guests boot at once under TCG here (the primary, then two
	// replicas): the boot timeout is the test's own wait.
	stdout(t, "datastore", "version", "update", "--state-dir", state, "mariadb", "10.11", "--image", imageID, "--from-recipe", recipe,
		"--boot-timeout", "30m")
	stdout(t, "datastore", "version", "load-rules", "--state-dir", state, "mariadb", "10.11", "validation-rules/mariadb-10.11.json")
	stdout(t, "datastore", "update", "--state-dir", state, "mariadb", "10.11")

	ctl := startController(t, state)
	api := ctl.login(t)
	osc := ctl.openstack(t)
	// make bench-replica-vm: a source of STRATA_E2E_REPLICA_MB MiB more
	// (its volume three times that: the data, its binary log, room).
	seedMB, _ := strconv.Atoi(os.Getenv("STRATA_E2E_REPLICA_MB"))
	inst := map[string]any{"name": "primary", "flavorRef": "strata.small", "volume": map[string]any{"size": 1 + seedMB*3/1024},
		"datastore": map[string]any{"type": "mariadb", "version": "10.11"}}
	datastoreCases["mariadb"].create(inst)
	src := api.must(t, 200, "POST", "/instances", map[string]any{"instance": inst})["instance"].(map[string]any)["id"].(string)
	consoleOnFailure(t, state, src)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log (tail):\n%s", tail(ctl.log(), 80))
		}
	})
	primary := mariadbClient{endpointOf(t, api.waitStatus(t, src, "ACTIVE", 20*time.Minute), 3306)}
	const u, pw = "shopper", "shopper-pw-1"
	write := func(db mariadbClient, n int) error {
		_, err := db.query(u, pw, "shop", fmt.Sprintf("INSERT INTO items (v, b) SELECT CONCAT('part-%d-', seq), RANDOM_BYTES(100) FROM seq_1_to_2000; "+
			"UPDATE items SET v = CONCAT(v, '+') WHERE id %% 7 = %d", n, n%7))
		return err
	}
	digest := func(db mariadbClient) string {
		return db.must(t, u, pw, "shop", "SELECT COUNT(*) FROM items") + " " + db.must(t, u, pw, "shop", "CHECKSUM TABLE items")
	}
	primary.must(t, u, pw, "shop", "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), b VARBINARY(128))")
	if err := write(primary, 0); err != nil {
		t.Fatal(err)
	}
	if seedMB > 0 {
		fillBulk(t, "mariadb", primary, u, pw, seedMB)
	}
	// The source's nightly backup, then more writes: the replicas' seed
	// is an incremental on it, and they restore the two.
	nightly := backupThroughCLI(t, osc, api, "nightly", src)
	t.Logf("FIGURE the source's full backup: %s", nightly.figure)
	if err := write(primary, 1); err != nil {
		t.Fatal(err)
	}

	// Two replicas, one request, through Trove's client.
	requested := time.Now()
	var created map[string]any
	osc.json(t, &created, "database", "instance", "create", "replica", "--replica-of", src, "--replica-count", "2")
	var replicas []string
	waitTrue(t, "the primary to list two replicas", time.Minute, func() bool {
		replicas = replicas[:0]
		rs, _ := api.instance(t, src)["replicas"].([]any)
		for _, r := range rs {
			replicas = append(replicas, r.(map[string]any)["id"].(string))
		}
		return len(replicas) == 2
	})
	if !slices.Contains(replicas, created["id"].(string)) {
		t.Fatalf("the create answered %v, not one of the primary's replicas %v", created["id"], replicas)
	}
	dbs := make([]mariadbClient, 2)
	for i, id := range replicas {
		consoleOnFailure(t, state, id)
		// Under TCG a large source's seed restores at a few MB/s.
		in := api.waitStatus(t, id, "ACTIVE", 30*time.Minute+time.Duration(seedMB)*3*time.Second)
		if i == 0 {
			t.Logf("FIGURE replica create (2 replicas, one seed backup) request→first ACTIVE: %.0fs (%s)", time.Since(requested).Seconds(), accelOf(ctl.log()))
		}
		dbs[i] = mariadbClient{endpointOf(t, in, 3306)}
		if ro, _ := in["replica_of"].(map[string]any); ro == nil || ro["id"] != src {
			t.Fatalf("replica %s: replica_of %v, want %s", id, in["replica_of"], src)
		}
	}
	t.Logf("FIGURE replica create request→both ACTIVE: %.0fs (source dataset: a few MB + %d MiB bulk)", time.Since(requested).Seconds(), seedMB)
	var seedParent, seedFigure string
	queryRow(t, state, &seedParent, "SELECT COALESCE(parent_id, '') FROM backups WHERE name = ?", "replica seed for "+src)
	if seedParent != nightly.id {
		t.Fatalf("the seed backup's parent is %q, want the source's nightly backup %s", seedParent, nightly.id)
	}
	queryRow(t, state, &seedFigure, "SELECT raw_bytes || ' B raw, ' || stored_bytes || ' B stored' FROM backups WHERE name = ?", "replica seed for "+src)
	t.Logf("FIGURE the replicas' seed: an incremental on the nightly backup, %s", seedFigure)
	// The seed backup is deleted once both restored it; the nightly
	// backup it applied on is kept.
	waitTrue(t, "the seed backup to be deleted", 2*time.Minute, func() bool {
		bs, _ := api.must(t, 200, "GET", "/backups", nil)["backups"].([]any)
		return len(bs) == 1 && bs[0].(map[string]any)["id"] == nightly.id
	})

	want := digest(primary)
	for i, db := range dbs {
		if got := digest(db); got != want {
			t.Fatalf("replica %s after its create: %s, primary %s", replicas[i], got, want)
		}
		if seedMB > 0 {
			// A full scan of the bulk table under TCG: minutes, not the
			// client's one.
			if got, want := db.mustWithin(t, 30*time.Minute, u, pw, "shop", "CHECKSUM TABLE bulk"), primary.mustWithin(t, 30*time.Minute, u, pw, "shop", "CHECKSUM TABLE bulk"); got != want {
				t.Fatalf("replica %s's bulk table after its create: %s, primary %s", replicas[i], got, want)
			}
		}
		if _, err := db.query(u, pw, "shop", "INSERT INTO items (v) VALUES ('on a replica')"); err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Fatalf("a write on replica %s: %v, want it refused as read-only", replicas[i], err)
		}
	}

	// Writes on the primary reach both; lag is shown while they run.
	var maxLag float64
	maxBehind := -1.0 // transactions_behind; stays -1 if never shown
	sawState := map[string]string{}
	writeStart := time.Now()
	for n := 1; time.Since(writeStart) < 20*time.Second; n++ {
		if err := write(primary, n); err != nil {
			t.Fatal(err)
		}
		for _, id := range replicas {
			rep, _ := api.instance(t, id)["replication"].(map[string]any)
			if rep == nil {
				t.Fatalf("replica %s shows no replication", id)
			}
			if st := fmt.Sprint(rep["state"]); sawState[st] == "" {
				sawState[st] = fmt.Sprintf("%s after %.0fs (%v)", id, time.Since(writeStart).Seconds(), rep)
			}
			if s, ok := rep["seconds_behind"].(float64); ok {
				maxLag = max(maxLag, s)
			}
			if n, ok := rep["transactions_behind"].(float64); ok {
				maxBehind = max(maxBehind, n)
			}
		}
	}
	wrote := time.Now()
	want = digest(primary)
	for i, db := range dbs {
		waitTrue(t, "replica "+replicas[i]+" to catch up", 3*time.Minute, func() bool { return digest(db) == want })
	}
	t.Logf("FIGURE replication under a write load (2000-row inserts and updates for 20s): max seconds_behind shown %.0f, max transactions_behind %.0f (-1: not shown); both replicas equal %.1fs after the last write; states seen %v",
		maxLag, maxBehind, time.Since(wrote).Seconds(), sawState)
	if sawState["RUNNING"] == "" || len(sawState) != 1 {
		t.Fatalf("replication states shown during the writes: %v, want RUNNING only", sawState)
	}
	// A replica whose VM dies comes back (recovery starts it again) and
	// catches up with what the primary took meanwhile (make e2e-all: a
	// reboot under TCG, about 90 s).
	if os.Getenv("STRATA_E2E_DATASTORES") == "all" {
		killed := time.Now()
		killVM(t, state, replicas[0])
		if err := write(primary, 50); err != nil {
			t.Fatal(err)
		}
		want = digest(primary)
		waitTrue(t, "the killed replica to come back and catch up", 10*time.Minute, func() bool {
			in := api.instance(t, replicas[0])
			rep, _ := in["replication"].(map[string]any)
			if in["status"] != "ACTIVE" || rep == nil || rep["state"] != "RUNNING" {
				return false
			}
			got, err := dbs[0].query(u, pw, "shop", "SELECT COUNT(*) FROM items")
			return err == nil && got+" "+dbs[0].must(t, u, pw, "shop", "CHECKSUM TABLE items") == want
		})
		t.Logf("FIGURE replica VM killed → back, RUNNING and caught up: %.0fs", time.Since(killed).Seconds())

		// The network between the second replica and the primary is cut
		// for a minute while the primary takes writes: the link's open
		// connection goes silent (its relay is stopped: no reset, no
		// data) and new connections find no route (the replica's route
		// file is moved aside). The lag shows throughout — the replica's
		// agent still reports — and the replica catches up by itself once
		// the network is back; the first replica never stops following.
		cut, cutDB := replicas[1], dbs[1]
		route := filepath.Join(state, "compute", "qemu", cut, "replication-source")
		relays := peerRelays(t, route)
		if len(relays) == 0 {
			t.Fatalf("no relay carries %s's link to the primary (%s)", cut, route)
		}
		if err := os.Rename(route, route+".cut"); err != nil {
			t.Fatal(err)
		}
		for _, pid := range relays {
			syscall.Kill(pid, syscall.SIGSTOP)
		}
		cutAt := time.Now()
		shownCut := map[string]int{}
		maxCutBehind := 0.0
		var reason string
		for n := 400; time.Since(cutAt) < time.Minute; n++ {
			if err := write(primary, n); err != nil {
				t.Fatal(err)
			}
			rep, _ := api.instance(t, cut)["replication"].(map[string]any)
			st := fmt.Sprint(rep["state"])
			shownCut[st]++
			if b, ok := rep["transactions_behind"].(float64); ok {
				maxCutBehind = max(maxCutBehind, b)
			}
			if st == "ERROR" && reason == "" {
				reason = fmt.Sprint(rep["reason"])
			}
			time.Sleep(2 * time.Second)
		}
		want = digest(primary)
		waitTrue(t, "the first replica to follow while the second is cut off", 3*time.Minute, func() bool { return digest(dbs[0]) == want })
		if got := digest(cutDB); got == want {
			t.Fatalf("the cut-off replica %s has the writes made during the cut: the cut did not cut", cut)
		}
		if shownCut["UNKNOWN"] > 0 || maxCutBehind < 1 {
			t.Fatalf("the cut-off replica's replication during the cut: states %v, max transactions_behind %.0f; want its lag shown (no UNKNOWN, transactions_behind > 0)", shownCut, maxCutBehind)
		}
		if err := os.Rename(route+".cut", route); err != nil {
			t.Fatal(err)
		}
		for _, pid := range relays {
			syscall.Kill(pid, syscall.SIGCONT)
		}
		restored := time.Now()
		waitTrue(t, "the cut-off replica to catch up once the network is back", 5*time.Minute, func() bool {
			rep, _ := api.instance(t, cut)["replication"].(map[string]any)
			return rep != nil && rep["state"] == "RUNNING" && digest(cutDB) == want
		})
		t.Logf("FIGURE network between a replica and its primary cut for %.0fs under writes: states shown %v (first ERROR reason %q), max transactions_behind %.0f; RUNNING and caught up %.1fs after the network came back",
			restored.Sub(cutAt).Seconds(), shownCut, reason, maxCutBehind, time.Since(restored).Seconds())
	}

	var shown map[string]any
	osc.json(t, &shown, "database", "instance", "show", src)
	if r := fmt.Sprint(shown["replicas"]); !strings.Contains(r, replicas[0]) || !strings.Contains(r, replicas[1]) {
		t.Fatalf("openstack database instance show %s: replicas %q", src, r)
	}

	// The primary goes nowhere while it has replicas.
	if code, body := api.do(t, "DELETE", "/instances/"+src, nil); code != 400 || !strings.Contains(fmt.Sprint(body), "replica") {
		t.Fatalf("DELETE of a primary with replicas: %d %v", code, body)
	}

	// Switchover to the first replica (Trove's promote-to-replica-source):
	// a client writing to the primary all along loses no committed write;
	// the old primary and the other replica follow the new one.
	newP, newDB := replicas[0], dbs[0]
	// The client writes to the primary until it refuses, then to the
	// promoted replica until it accepts, from before the request on.
	var lastOld, firstNew time.Time
	var acceptedOld atomic.Int64
	switched := make(chan struct{})
	go func() {
		defer close(switched)
		for began := time.Now(); time.Since(began) < 5*time.Minute; {
			if _, err := primary.query(u, pw, "shop", "INSERT INTO items (v) VALUES ('before-switch')"); err == nil {
				lastOld = time.Now()
				acceptedOld.Add(1)
				continue
			}
			if _, err := newDB.query(u, pw, "shop", "INSERT INTO items (v) VALUES ('after-switch')"); err == nil {
				firstNew = time.Now()
				return
			}
		}
	}()
	for acceptedOld.Load() == 0 { // the request starts with writes flowing
		time.Sleep(100 * time.Millisecond)
	}
	requested = time.Now()
	osc.run(t, "database", "instance", "promote", newP)
	<-switched
	if firstNew.IsZero() {
		t.Fatal("the promoted replica took no write within 5 minutes")
	}
	if got := newDB.must(t, u, pw, "shop", "SELECT COUNT(*) FROM items WHERE v = 'before-switch'"); got != fmt.Sprint(acceptedOld.Load()) {
		t.Fatalf("the old primary accepted %d writes during the switchover; the new primary has %s of them", acceptedOld.Load(), got)
	}
	waitTrue(t, "the group to show the new primary", 3*time.Minute, func() bool {
		in := api.instance(t, newP)
		rs, _ := in["replicas"].([]any)
		ro, _ := api.instance(t, src)["replica_of"].(map[string]any)
		return in["status"] == "ACTIVE" && in["replica_of"] == nil && len(rs) == 2 && ro != nil && ro["id"] == newP
	})
	t.Logf("FIGURE switchover (promote) under a client writing back to back: writes unavailable %.2fs (last write on the old primary → first on the new); request→group shown %.0fs; %d writes accepted by the old primary before and during it, all on the new one",
		firstNew.Sub(lastOld).Seconds(), time.Since(requested).Seconds(), acceptedOld.Load())
	if err := write(newDB, 60); err != nil {
		t.Fatal(err)
	}
	want = digest(newDB)
	for _, db := range []mariadbClient{primary, dbs[1]} {
		waitTrue(t, "the old primary and the other replica to follow the new primary", 3*time.Minute, func() bool { return digest(db) == want })
	}
	if _, err := primary.query(u, pw, "shop", "INSERT INTO items (v) VALUES ('on the old primary')"); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("a write on the old primary after the switchover: %v, want it refused as read-only", err)
	}
	if os.Getenv("STRATA_E2E_DATASTORES") == "all" {
		// The old primary, a replica now, is rebuilt onto its image: its
		// read_only and server_id were on the root disk the rebuild
		// replaces (the new agent writes them again, seeing the link in
		// its data), and the rebuild's relink gives its account a new
		// password and repoints it to the same source.
		requested = time.Now()
		api.must(t, 202, "POST", "/mgmt/instances/"+src+"/action", map[string]any{"rebuild": map[string]any{"image_id": imageID}})
		waitTrue(t, "the rebuilt replica ACTIVE", 15*time.Minute, func() bool {
			in := api.instance(t, src)
			return in["status"] == "ACTIVE" && countRows(t, state, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'rebuild' AND state = 'queued'", src) == 0
		})
		if f := api.instance(t, src)["fault"]; f != nil {
			t.Fatalf("the rebuilt replica has a fault: %v", f)
		}
		if err := write(newDB, 70); err != nil {
			t.Fatal(err)
		}
		want = digest(newDB)
		waitTrue(t, "the rebuilt replica to follow its source", 3*time.Minute, func() bool { return digest(primary) == want })
		t.Logf("FIGURE MariaDB rebuild of a replica request→following its source again with a new write: %.0fs", time.Since(requested).Seconds())
		if _, err := primary.query(u, pw, "shop", "INSERT INTO items (v) VALUES ('on the rebuilt replica')"); err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Fatalf("a write on the rebuilt replica: %v, want it refused as read-only", err)
		}
		if id := primary.must(t, u, pw, "shop", "SELECT @@server_id"); id == "1" || id == newDB.must(t, u, pw, "shop", "SELECT @@server_id") {
			t.Fatalf("the rebuilt replica's server_id is %s: want one of its own", id)
		}
	}

	// Detach the second replica: writable, and no longer following.
	osc.run(t, "database", "instance", "update", replicas[1], "--detach-replica-source")
	waitTrue(t, "the detached replica to be standalone", 2*time.Minute, func() bool {
		in := api.instance(t, replicas[1])
		rs, _ := api.instance(t, newP)["replicas"].([]any)
		return in["replica_of"] == nil && in["status"] == "ACTIVE" && len(rs) == 1
	})
	if err := write(dbs[1], 100); err != nil {
		t.Fatalf("a write on the detached replica: %v", err)
	}
	detached := digest(dbs[1])
	if err := write(newDB, 101); err != nil {
		t.Fatal(err)
	}
	want = digest(newDB)
	waitTrue(t, "the old primary to follow", 2*time.Minute, func() bool { return digest(primary) == want })
	time.Sleep(2 * time.Second)
	if got := digest(dbs[1]); got != detached {
		t.Fatalf("the detached replica changed with the primary: %s, was %s", got, detached)
	}

	// Automatic failover: the group's source gets the shortest grace
	// period; its VM dies and nobody ejects it. Once its heartbeat is
	// older than the grace period, the controller fences it (recovery was
	// restarting it) and promotes its replica, which takes writes; the
	// dead source's VM stays off.
	{
		grace := 25
		api.must(t, 202, "PATCH", "/instances/"+newP, map[string]any{"instance": map[string]any{"auto_failover": map[string]any{"grace_seconds": grace}}})
		killed := time.Now()
		killVM(t, state, newP)
		// The grace period counts from the last heartbeat, which came up
		// to a heartbeat interval before the kill; the controller logs
		// when it starts the failover.
		var started time.Time
		waitTrue(t, "the automatic failover: the replica takes writes", 5*time.Minute, func() bool {
			if started.IsZero() && strings.Contains(ctl.log(), "automatic failover started") {
				started = time.Now()
			}
			return write(primary, 200) == nil
		})
		writable := time.Now()
		if started.IsZero() {
			started = writable
		}
		t.Logf("FIGURE automatic failover (grace %ds from the last heartbeat): started %.1fs after the primary's VM was killed; writes accepted on the elected replica %.1fs after it started, %.1fs after the kill",
			grace, started.Sub(killed).Seconds(), writable.Sub(started).Seconds(), writable.Sub(killed).Seconds())
		var in map[string]any
		waitTrue(t, "the failover task to end with the old source's fault", 2*time.Minute, func() bool {
			in = api.instance(t, newP)
			f, _ := in["fault"].(map[string]any)
			return f != nil && strings.Contains(fmt.Sprint(f["message"]), "failed over automatically")
		})
		if !strings.Contains(ctl.log(), "automatic failover started") {
			t.Fatalf("the controller did not log the automatic failover:\n%s", tail(ctl.log(), 40))
		}
		data, err := os.ReadFile(filepath.Join(state, "compute", "qemu", newP, "server.json"))
		if err != nil || !strings.Contains(string(data), `"fenced": true`) && !strings.Contains(string(data), `"fenced":true`) {
			t.Fatalf("the old source's server is not fenced: %v %s", err, data)
		}
		if p := vmPID(t, state, newP); syscall.Kill(p, 0) == nil {
			if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); strings.Contains(string(cmd), newP) {
				t.Fatalf("the fenced old source's VM runs (pid %d)", p)
			}
		}
	}
	if os.Getenv("STRATA_E2E_DATASTORES") == "all" {
		// The ejected source rejoins (strata's own rejoin_as_replica): its
		// fence is lifted, it boots, is made read-only, and — every write
		// it took having reached the elected replica — follows it from
		// its own GTID position.
		rejoinAt := time.Now()
		api.must(t, 202, "POST", "/instances/"+newP+"/action", map[string]any{"rejoin_as_replica": map[string]any{}})
		waitTrue(t, "the ejected source to rejoin as a replica", 10*time.Minute, func() bool {
			in := api.instance(t, newP)
			of, _ := in["replica_of"].(map[string]any)
			rep, _ := in["replication"].(map[string]any)
			return in["status"] == "ACTIVE" && of != nil && of["id"] == src && in["fault"] == nil && rep != nil && rep["state"] == "RUNNING"
		})
		rejoined := time.Since(rejoinAt)
		if err := write(primary, 300); err != nil {
			t.Fatal(err)
		}
		want = digest(primary)
		waitTrue(t, "the rejoined source to follow", 3*time.Minute, func() bool { return digest(newDB) == want })
		if _, err := newDB.query(u, pw, "shop", "INSERT INTO items (v) VALUES ('on the rejoined source')"); err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Fatalf("a write on the rejoined source: %v, want it refused as read-only", err)
		}
		t.Logf("FIGURE rejoin of the ejected source (fence lifted, boot under TCG, read-only, follows): request→RUNNING link %.0fs", rejoined.Seconds())
	}
	order := []string{newP, src, replicas[1]}
	for i, id := range order {
		api.must(t, 202, "DELETE", "/instances/"+id, nil)
		if i == 0 {
			api.waitGone(t, id, 5*time.Minute)
		}
	}
	for _, id := range order[1:] {
		api.waitGone(t, id, 5*time.Minute)
	}
	osc.run(t, "database", "backup", "delete", nightly.id)
	waitTrue(t, "the nightly backup to be deleted", 2*time.Minute, func() bool {
		bs, _ := api.must(t, 200, "GET", "/backups", nil)["backups"].([]any)
		return len(bs) == 0
	})
	ctl.stop(t)
	t.Logf("FIGURE replication e2e wall time: %.0fs", time.Since(start).Seconds())
}

// killVM kills an instance's qemu with SIGKILL, as a host's OOM killer or
// a crash would.
func killVM(t *testing.T, state, id string) {
	t.Helper()
	if pid := vmPID(t, state, id); syscall.Kill(pid, syscall.SIGKILL) != nil {
		t.Fatalf("killing the VM of %s (pid %d)", id, pid)
	}
}

// peerRelays are the processes that carry a replica's connections to its
// replication source: the qemu driver's relays started with the replica's
// route file (controller/compute/qemu/peers.go).
func peerRelays(t *testing.T, route string) []int {
	t.Helper()
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmd, err := os.ReadFile(p)
		argv0, _, _ := strings.Cut(string(cmd), "\x00")
		if err != nil || strings.Contains(filepath.Base(argv0), "qemu") || // its command line names the relay too
			!strings.Contains(string(cmd), "--peer") || !strings.Contains(string(cmd), route) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

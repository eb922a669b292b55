//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// replicaCase is what the PostgreSQL and Redis replica run needs to know
// of a datastore beyond its datastoreCase.
type replicaCase struct {
	// write adds n to the data; digest is what a replica must equal.
	write  func(t *testing.T, ep endpoint, u, p string, n int)
	digest func(t *testing.T, ep endpoint, u, p string) string
	// refused tries a write on a replica and returns its error text.
	refused func(ep endpoint, u, p string) string
	// readOnly is what the server says when it refuses it.
	readOnly string
	// lag are the view's fields a linked replica shows.
	lag []string
}

var replicaCases = map[string]replicaCase{
	"postgresql": {
		write: func(t *testing.T, ep endpoint, u, p string, n int) {
			psql(t, ep, u, p, fmt.Sprintf("CREATE TABLE IF NOT EXISTS items (id serial PRIMARY KEY, v text); "+
				"INSERT INTO items (v) SELECT 'part-%d-' || g FROM generate_series(1, 2000) g", n))
		},
		digest: func(t *testing.T, ep endpoint, u, p string) string {
			return psql(t, ep, u, p, "SELECT count(*) || ' ' || md5(string_agg(v, ',' ORDER BY id)) FROM items")
		},
		refused: func(ep endpoint, u, p string) string {
			out, err := exec.Command("psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
				fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=shop sslmode=disable", ep.host, ep.port, u, p),
				"-c", "INSERT INTO items (v) VALUES ('on a replica')").CombinedOutput()
			if err == nil {
				return ""
			}
			return string(out)
		},
		readOnly: "read-only transaction",
		lag:      []string{"received_lsn", "replayed_lsn", "bytes_behind"},
	},
	"redis": {
		write: func(t *testing.T, ep endpoint, u, p string, n int) {
			args := []string{"MSET"}
			for i := 0; i < 200; i++ {
				args = append(args, fmt.Sprintf("k-%d-%d", n, i), fmt.Sprintf("v-%d-%d", n, i))
			}
			redisCLI(t, ep, u, p, args...)
		},
		digest: func(t *testing.T, ep endpoint, u, p string) string {
			// DBSIZE and one key of every batch: the keys are unique per
			// batch, so equal counts with the last batch present is equal
			// data here.
			return redisCLI(t, ep, u, p, "DBSIZE") + " " + redisCLI(t, ep, u, p, "GET", "k-last-0")
		},
		refused: func(ep endpoint, u, p string) string {
			cmd := exec.Command("redis-cli", "-h", ep.host, "-p", fmt.Sprint(ep.port), "--user", u, "--no-auth-warning", "SET", "on-a-replica", "1")
			cmd.Env = append(cmd.Environ(), "REDISCLI_AUTH="+p)
			out, _ := cmd.CombinedOutput()
			if s := strings.TrimSpace(string(out)); s != "OK" {
				return s
			}
			return ""
		},
		readOnly: "READONLY",
		lag:      []string{"repl_offset", "last_io_seconds_ago"},
	},
}

// TestReplicasOfPostgreSQLAndRedisFollowAndSwitchOver is issue 17's end to
// end for the other two datastores (make e2e-all; make e2e DATASTORE=
// postgresql or redis runs one): a primary with data, a replica made
// through Trove's client, seeded from a backup and reaching its source
// through the fence's second opening; it holds the primary's data,
// refuses writes with the server's own error, follows new writes and
// shows its datastore's positions; a switchover (promote) makes it the
// source and takes writes, and the old primary follows the new one
// (PostgreSQL's rejoins as a standby: docs/replication.md); rebuilt onto
// its image, it follows the new source again. Then the source's VM dies
// and the automatic failover promotes the replica, which takes writes;
// PostgreSQL's ejected source rejoins (rewound) and follows, and a
// switchover back whose old primary's VM is killed after its stop ends
// with that primary following once its VM is back.
// Everything is deleted.
func TestReplicasOfPostgreSQLAndRedisFollowAndSwitchOver(t *testing.T) {
	for _, tool := range []string{"psql", "redis-cli", "qemu-system-x86_64", "qemu-img", "openstack"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install the test dependencies with `ci/deps.sh build boot test` (or `make test`)", tool)
		}
	}
	ran := 0
	for _, ds := range e2eDatastores() {
		if ds == "mariadb" {
			continue // TestReplicasOfAMariaDBInstanceFollowItShowTheirLagAndDetach
		}
		rc, ok := replicaCases[ds]
		if !ok {
			t.Fatalf("STRATA_E2E_DATASTORES names %q; known: mariadb, postgresql, redis", ds)
		}
		ran++
		t.Run(ds, func(t *testing.T) { runReplicaCase(t, datastoreCases[ds], rc) })
	}
	if ran == 0 {
		t.Fatalf("STRATA_E2E_DATASTORES=%q names neither postgresql nor redis (make test leaves this test out)", strings.Join(e2eDatastores(), ","))
	}
}

func runReplicaCase(t *testing.T, c datastoreCase, rc replicaCase) {
	start := time.Now()
	out := t.TempDir()
	state := buildAndRegister(t, out, c.name, c.version, "30m")

	ctl := startController(t, state)
	api := ctl.login(t)
	osc := ctl.openstack(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log (tail):\n%s", tail(ctl.log(), 80))
		}
	})
	inst := map[string]any{"name": "primary", "flavorRef": "strata.small", "volume": map[string]any{"size": 1},
		"datastore": map[string]any{"type": c.name, "version": c.version}}
	c.create(inst)
	src := api.must(t, 200, "POST", "/instances", map[string]any{"instance": inst})["instance"].(map[string]any)["id"].(string)
	consoleOnFailure(t, state, src)
	pEP := endpointOf(t, api.waitStatus(t, src, "ACTIVE", 20*time.Minute), c.port)
	// Redis: root's password (the default user's) travels with the seed
	// backup's ACL file, so the replica answers the same credentials.
	u, pw := c.prepareClient(t, api, src)
	for n := 0; n < 3; n++ {
		rc.write(t, pEP, u, pw, n)
	}
	if c.name == "redis" {
		redisCLI(t, pEP, u, pw, "SET", "k-last-0", "seeded")
	}

	requested := time.Now()
	var created map[string]any
	osc.json(t, &created, "database", "instance", "create", "replica", "--replica-of", src)
	rid, _ := created["id"].(string)
	if rid == "" {
		t.Fatalf("the replica create answered %v", created)
	}
	consoleOnFailure(t, state, rid)
	rin := api.waitStatus(t, rid, "ACTIVE", 30*time.Minute)
	t.Logf("FIGURE %s replica create request→ACTIVE: %.0fs (%s)", c.name, time.Since(requested).Seconds(), accelOf(ctl.log()))
	if ro, _ := rin["replica_of"].(map[string]any); ro == nil || ro["id"] != src {
		t.Fatalf("replica %s: replica_of %v, want %s", rid, rin["replica_of"], src)
	}
	rEP := endpointOf(t, rin, c.port)
	if got, want := rc.digest(t, rEP, u, pw), rc.digest(t, pEP, u, pw); got != want {
		t.Fatalf("the replica after its create: %s, the primary %s", got, want)
	}
	if msg := rc.refused(rEP, u, pw); !strings.Contains(msg, rc.readOnly) {
		t.Fatalf("a write on the replica: %q, want it refused with %q", msg, rc.readOnly)
	}

	// New writes arrive; the view shows the datastore's own positions.
	rc.write(t, pEP, u, pw, 10)
	if c.name == "redis" {
		redisCLI(t, pEP, u, pw, "SET", "k-last-0", "followed")
	}
	wrote := time.Now()
	want := rc.digest(t, pEP, u, pw)
	waitTrue(t, "the replica to follow", 3*time.Minute, func() bool { return rc.digest(t, rEP, u, pw) == want })
	caught := time.Since(wrote)
	var rep map[string]any
	waitTrue(t, "the replica's view to show its positions", 2*time.Minute, func() bool {
		rep, _ = api.instance(t, rid)["replication"].(map[string]any)
		if rep == nil || rep["state"] != "RUNNING" {
			return false
		}
		for _, k := range rc.lag {
			if _, ok := rep[k]; !ok {
				return false
			}
		}
		return true
	})
	t.Logf("FIGURE %s replica equal %.1fs after a write; view %v", c.name, caught.Seconds(), rep)
	for _, k := range []string{"gtid_slave_pos", "gtid_io_pos", "transactions_behind"} {
		if v, ok := rep[k]; ok {
			t.Errorf("the %s replica's view shows MariaDB's %s = %v", c.name, k, v)
		}
	}

	if c.name == "redis" {
		// Redis replicates keys, not users: a user made on the source
		// after the replica reaches it through the controller's user
		// sync, and logs in there (and writes on it once it is the
		// source, below).
		api.must(t, 202, "POST", "/instances/"+src+"/users", map[string]any{"users": []any{map[string]any{"name": "late", "password": "late-user-pw-1"}}})
		made := time.Now()
		waitTrue(t, "the user made on the source after the replica to log in on the replica", 3*time.Minute, func() bool {
			cmd := exec.Command("redis-cli", "-h", rEP.host, "-p", fmt.Sprint(rEP.port), "--user", "late", "--no-auth-warning", "GET", "k-last-0")
			cmd.Env = append(cmd.Environ(), "REDISCLI_AUTH=late-user-pw-1")
			out, _ := cmd.CombinedOutput()
			return strings.TrimSpace(string(out)) == "followed"
		})
		t.Logf("FIGURE redis a user made on the source logs in on the replica %.1fs after its create request", time.Since(made).Seconds())
	}

	// Switchover. Writes are tried on the replica from the moment the
	// command returns: the first accepted one is when it took writes.
	requested = time.Now()
	osc.run(t, "database", "instance", "promote", rid)
	cliReturned := time.Now()
	for msg := rc.refused(rEP, u, pw); msg != ""; msg = rc.refused(rEP, u, pw) {
		if time.Since(cliReturned) > 5*time.Minute {
			t.Fatalf("the replica still refuses writes 5 minutes after the promote: %s", msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("FIGURE %s switchover: the new source took a write %.1fs after the promote command returned (%.1fs after it was run)",
		c.name, time.Since(cliReturned).Seconds(), time.Since(requested).Seconds())
	waitTrue(t, "the replica to be the source", 5*time.Minute, func() bool {
		in := api.instance(t, rid)
		return in["status"] == "ACTIVE" && in["replica_of"] == nil && api.instance(t, src)["status"] != "PROMOTE"
	})
	rc.write(t, rEP, u, pw, 20)
	if c.name == "redis" {
		redisCLI(t, rEP, u, pw, "SET", "k-last-0", "switched")
		redisCLI(t, rEP, "late", "late-user-pw-1", "SET", "written-by-late", "1")
	}
	t.Logf("FIGURE %s switchover request→the task done, the new source shown ACTIVE: %.0fs", c.name, time.Since(requested).Seconds())
	want = rc.digest(t, rEP, u, pw)
	// The old primary follows the new one (PostgreSQL: it was stopped
	// cleanly, and rejoins as a standby of the new timeline).
	waitTrue(t, "the old primary to follow the new one", 3*time.Minute, func() bool {
		old := api.instance(t, src)
		ro, _ := old["replica_of"].(map[string]any)
		return ro != nil && ro["id"] == rid && old["status"] == "ACTIVE" && rc.digest(t, pEP, u, pw) == want
	})
	t.Logf("FIGURE %s switchover request→the old primary follows the new one with its writes: %.0fs", c.name, time.Since(requested).Seconds())
	if f := api.instance(t, src)["fault"]; f != nil {
		t.Fatalf("the old primary follows with a fault: %v", f)
	}
	if msg := rc.refused(pEP, u, pw); !strings.Contains(msg, rc.readOnly) {
		t.Fatalf("a write on the old primary: %q, want %q", msg, rc.readOnly)
	}

	// The old primary, a replica now, is rebuilt onto its image: its
	// link's settings were on the root disk the rebuild replaces, and
	// the rebuild gives it its link back.
	requested = time.Now()
	api.must(t, 202, "POST", "/mgmt/instances/"+src+"/action", map[string]any{"rebuild": map[string]any{"image_id": versionImage(t, state, c.name, c.version)}})
	waitTrue(t, "the rebuilt replica ACTIVE", 15*time.Minute, func() bool {
		in := api.instance(t, src)
		return in["status"] == "ACTIVE" && countRows(t, state, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'rebuild' AND state = 'queued'", src) == 0
	})
	if f := api.instance(t, src)["fault"]; f != nil {
		t.Fatalf("the rebuilt replica has a fault: %v", f)
	}
	rc.write(t, rEP, u, pw, 30)
	want = rc.digest(t, rEP, u, pw)
	waitTrue(t, "the rebuilt replica to follow its source", 3*time.Minute, func() bool { return rc.digest(t, pEP, u, pw) == want })
	t.Logf("FIGURE %s rebuild of a replica request→following its source again with a new write: %.0fs", c.name, time.Since(requested).Seconds())
	if msg := rc.refused(pEP, u, pw); !strings.Contains(msg, rc.readOnly) {
		t.Fatalf("a write on the rebuilt replica: %q, want %q", msg, rc.readOnly)
	}
	// Failover: the group's source gets the shortest grace period; its
	// VM dies (the recovery that restarts it is cancelled), and once its
	// heartbeat is older than the grace period the controller fences it
	// and promotes the replica, which takes writes.
	grace := 25
	api.must(t, 202, "PATCH", "/instances/"+rid, map[string]any{"instance": map[string]any{"auto_failover": map[string]any{"grace_seconds": grace}}})
	killed := time.Now()
	killVM(t, state, rid)
	waitTrue(t, "the automatic failover: the replica takes writes", 5*time.Minute, func() bool { return rc.refused(pEP, u, pw) == "" })
	t.Logf("FIGURE %s automatic failover (grace %ds from the last heartbeat): writes accepted on the elected replica %.1fs after the source's VM was killed",
		c.name, grace, time.Since(killed).Seconds())
	waitTrue(t, "the failover to end with the old source's fault", 3*time.Minute, func() bool {
		in := api.instance(t, rid)
		f, _ := in["fault"].(map[string]any)
		return f != nil && strings.Contains(fmt.Sprint(f["message"]), "ejected") && api.instance(t, src)["replica_of"] == nil
	})
	if c.name == "postgresql" {
		// The ejected PostgreSQL source rejoins: fence lifted, booted
		// read-only, rewound to the new primary's history (pg_rewind:
		// it crashed, so its WAL ran past the fork), and a standby.
		rc.write(t, pEP, u, pw, 40)
		requested = time.Now()
		api.must(t, 202, "POST", "/instances/"+rid+"/action", map[string]any{"rejoin_as_replica": map[string]any{}})
		waitTrue(t, "the ejected source to rejoin as a standby", 10*time.Minute, func() bool {
			in := api.instance(t, rid)
			ro, _ := in["replica_of"].(map[string]any)
			if f, _ := in["fault"].(map[string]any); f != nil && strings.Contains(fmt.Sprint(f["message"]), "rejoin refused") {
				t.Fatalf("the rejoin failed: %v", f["message"])
			}
			return in["status"] == "ACTIVE" && ro != nil && ro["id"] == src && in["fault"] == nil
		})
		want = rc.digest(t, pEP, u, pw)
		waitTrue(t, "the rejoined source to follow", 3*time.Minute, func() bool { return rc.digest(t, rEP, u, pw) == want })
		t.Logf("FIGURE %s rejoin of the ejected source (boot, rewind, standby) request→following with the new writes: %.0fs", c.name, time.Since(requested).Seconds())
		if msg := rc.refused(rEP, u, pw); !strings.Contains(msg, rc.readOnly) {
			t.Fatalf("a write on the rejoined source: %q, want %q", msg, rc.readOnly)
		}

		// A switchover back whose old primary's VM dies once the
		// switchover stopped its server: the VM is started again, its
		// agent keeps the server stopped (stopped on request, shut down
		// cleanly), and the rejoin makes it a standby of the new source
		// once it is back. (A server that ran or crashed after the stop
		// rejoins through pg_rewind at the promotion's fork: tested on
		// real servers in agent/datastore/postgresql and with fake
		// guests; a VM gives no way to start it in between.)
		api.must(t, 202, "PATCH", "/instances/"+src, map[string]any{"instance": map[string]any{"auto_failover": map[string]any{"grace_seconds": 0}}})
		stops := countRows(t, state, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = 'stop' AND done_at IS NOT NULL", src)
		requested = time.Now()
		osc.run(t, "database", "instance", "promote", rid)
		waitTrue(t, "the old primary's server stopped by the switchover", 5*time.Minute, func() bool {
			return countRows(t, state, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = 'stop' AND done_at IS NOT NULL", src) > stops
		})
		killVM(t, state, src)
		killed := time.Now()
		waitTrue(t, "the old primary, its VM killed after its stop, to follow the new one", 15*time.Minute, func() bool {
			old, nw := api.instance(t, src), api.instance(t, rid)
			ro, _ := old["replica_of"].(map[string]any)
			if f, _ := old["fault"].(map[string]any); f != nil && strings.Contains(fmt.Sprint(f["message"]), "could not rejoin") {
				t.Fatalf("the old primary left the group: %v", f["message"])
			}
			return nw["status"] == "ACTIVE" && nw["replica_of"] == nil && old["status"] == "ACTIVE" && ro != nil && ro["id"] == rid
		})
		t.Logf("FIGURE %s switchover whose old primary's VM was killed after its stop: the old primary followed %.0fs after the kill", c.name, time.Since(killed).Seconds())
		rc.write(t, rEP, u, pw, 50)
		want = rc.digest(t, rEP, u, pw)
		waitTrue(t, "the rewound old primary to follow with the new writes", 3*time.Minute, func() bool { return rc.digest(t, pEP, u, pw) == want })
		t.Logf("FIGURE %s switchover whose old primary's VM was killed after its stop: request→old primary following with a new write (VM restart, rejoin): %.0fs", c.name, time.Since(requested).Seconds())
		if msg := rc.refused(pEP, u, pw); !strings.Contains(msg, rc.readOnly) {
			t.Fatalf("a write on the rewound old primary: %q, want %q", msg, rc.readOnly)
		}
		if f := api.instance(t, src)["fault"]; f != nil {
			t.Fatalf("the rewound old primary has a fault: %v", f)
		}
	}
	order := []string{rid, src} // the replica first: a source with replicas is not deleted
	if api.instance(t, rid)["replica_of"] == nil {
		order = []string{src, rid}
	}
	for _, id := range order {
		api.must(t, 202, "DELETE", "/instances/"+id, nil)
		api.waitGone(t, id, 5*time.Minute)
	}
	ctl.stop(t)
	t.Logf("FIGURE %s replication e2e wall time: %.0fs", c.name, time.Since(start).Seconds())
}

// versionImage is the image id the controller's registry holds for a
// datastore version.
func versionImage(t *testing.T, state, datastore, version string) string {
	t.Helper()
	var id string
	queryRow(t, state, &id, `SELECT v.image_id FROM datastore_versions v JOIN datastores d ON d.id = v.datastore_id
		WHERE d.name = ? AND v.name = ?`, datastore, version)
	return id
}

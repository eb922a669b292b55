//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// backupCase is what one datastore's backup end-to-end run needs.
type backupCase struct {
	name, version string
	create        func(inst map[string]any)
	// login returns the credentials a client uses on the source (and, as
	// the users come from the backup, on every restore).
	login func(t *testing.T, api *apiClient, id string) (user, password string)
	// write adds the dataset's part n (0: the initial dataset) through
	// the real client; digest is every table's (key's) count and checksum.
	write       func(t *testing.T, ep endpoint, user, password string, n int)
	digest      func(t *testing.T, ep endpoint, user, password string) string
	incremental bool
}

var backupCases = map[string]backupCase{
	"mariadb": {
		name: "mariadb", version: "10.11", incremental: true,
		create: datastoreCases["mariadb"].create,
		login:  datastoreCases["mariadb"].prepareClient,
		write: func(t *testing.T, ep endpoint, u, p string, n int) {
			db := mariadbClient{ep}
			if n == 0 {
				db.must(t, u, p, "shop", "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), b VARBINARY(256))")
			}
			db.must(t, u, p, "shop", fmt.Sprintf("CREATE TABLE part%d (k INT PRIMARY KEY, v TEXT); "+
				"INSERT INTO part%d SELECT seq, REPEAT(MD5(seq), 4) FROM seq_1_to_%d; "+
				"INSERT INTO items (v, b) SELECT CONCAT('row-%d-', seq), RANDOM_BYTES(200) FROM seq_1_to_5000; "+
				"UPDATE items SET v = CONCAT(v, '-touched') WHERE id %% 11 = %d", n, n, 1000*(n+1), n, n))
		},
		digest: func(t *testing.T, ep endpoint, u, p string) string {
			db := mariadbClient{ep}
			tables := strings.Fields(db.must(t, u, p, "shop", "SELECT table_name FROM information_schema.tables WHERE table_schema = 'shop' ORDER BY 1"))
			var b strings.Builder
			for _, tb := range tables {
				fmt.Fprintf(&b, "%s: %s; %s\n", tb, db.must(t, u, p, "shop", "SELECT COUNT(*) FROM "+tb),
					db.must(t, u, p, "shop", "CHECKSUM TABLE "+tb))
			}
			return b.String()
		},
	},
	"postgresql": {
		name: "postgresql", version: "15", incremental: true,
		create: datastoreCases["postgresql"].create,
		login:  datastoreCases["postgresql"].prepareClient,
		write: func(t *testing.T, ep endpoint, u, p string, n int) {
			if n == 0 {
				psql(t, ep, u, p, "CREATE TABLE items (id serial PRIMARY KEY, v text, b bytea)")
			}
			psql(t, ep, u, p, fmt.Sprintf("CREATE TABLE part%d AS SELECT g AS k, repeat(md5(g::text), 4) AS v FROM generate_series(1, %d) g; "+
				"INSERT INTO items (v, b) SELECT 'row-%d-' || g, decode(md5(random()::text) || md5(random()::text), 'hex') FROM generate_series(1, 5000) g; "+
				"UPDATE items SET v = v || '-touched' WHERE id %% 11 = %d", n, 1000*(n+1), n, n))
		},
		digest: func(t *testing.T, ep endpoint, u, p string) string {
			tables := strings.Fields(psql(t, ep, u, p, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"))
			var b strings.Builder
			for _, tb := range tables {
				fmt.Fprintf(&b, "%s: %s\n", tb, psql(t, ep, u, p, "SELECT count(*) || ' ' || md5(string_agg(x::text, ',' ORDER BY x::text)) FROM "+tb+" x"))
			}
			return b.String()
		},
	},
	"redis": {
		name: "redis", version: "7",
		create: datastoreCases["redis"].create,
		login:  datastoreCases["redis"].prepareClient,
		write: func(t *testing.T, ep endpoint, u, p string, n int) {
			args := []string{"MSET"}
			for i := range 500 {
				args = append(args, fmt.Sprintf("k:%d:%d", n, i), strings.Repeat(fmt.Sprint(i), 30))
			}
			redisCLI(t, ep, u, p, args...)
		},
		digest: func(t *testing.T, ep endpoint, u, p string) string {
			return redisCLI(t, ep, u, p, "DBSIZE") + " " + redisCLI(t, ep, u, p, "EVAL",
				"local ks = redis.call('KEYS', '*'); table.sort(ks); local s = ''; for _, k in ipairs(ks) do s = redis.sha1hex(s .. k .. '=' .. redis.call('GET', k)) end; return s", "0")
		},
	},
}

// e2eBackupDatastores are the datastores whose backups run end to end:
// STRATA_E2E_BACKUP_DATASTORES (comma list or all), by default MariaDB
// only (make test); make e2e-all runs all three.
func e2eBackupDatastores() []string {
	v := os.Getenv("STRATA_E2E_BACKUP_DATASTORES")
	switch v {
	case "":
		return []string{"mariadb"}
	case "all":
		return []string{"mariadb", "postgresql", "redis"}
	}
	return strings.Split(v, ",")
}

// TestBackupsRestoreIntoNewInstancesWithExactlyTheirData is issue 14's
// end-to-end proof, per datastore, driven by the real `openstack database
// backup ...` client: a dataset written through the datastore's own
// client, a full backup, more data, an incremental (not Redis), each
// backup restored into a new instance (`instance create --backup`) whose
// every table (key) has the same count and checksum as the source had
// when that backup was taken; then deleting the full backup deletes the
// chain and leaves the store empty.
func TestBackupsRestoreIntoNewInstancesWithExactlyTheirData(t *testing.T) {
	for _, ds := range e2eBackupDatastores() {
		c, ok := backupCases[ds]
		if !ok {
			t.Fatalf("STRATA_E2E_BACKUP_DATASTORES names %q; known: mariadb, postgresql, redis", ds)
		}
		t.Run(ds, func(t *testing.T) { runBackupCase(t, c) })
	}
}

// bulkMB is STRATA_E2E_BACKUP_MB: a MariaDB dataset of that many MiB
// (half random, half compressible) added to the first write, for
// `make bench-backup-vm` (restore of 1 GiB to ACTIVE under TCG).
func bulkMB() int {
	n, _ := strconv.Atoi(os.Getenv("STRATA_E2E_BACKUP_MB"))
	return n
}

// fillBulk writes a table bulk of mb MiB (half random, half
// compressible) in 20000-row inserts through the client, and logs how
// long it took.
func fillBulk(t *testing.T, name string, db mariadbClient, user, password string, mb int) {
	t.Helper()
	began := time.Now()
	db.must(t, user, password, "shop", "CREATE TABLE bulk (id INT AUTO_INCREMENT PRIMARY KEY, r VARBINARY(1024), c VARCHAR(1024))")
	for done := 0; done < mb*512; done += 20000 {
		db.must(t, user, password, "shop", fmt.Sprintf("INSERT INTO bulk (r, c) SELECT RANDOM_BYTES(1024), "+
			"REPEAT(CONCAT('order ', seq, ' shipped to warehouse ', seq %% 17, '; '), 20) FROM seq_1_to_%d", min(20000, mb*512-done)))
	}
	t.Logf("FIGURE %s bulk dataset: %d MiB written through the client in %.0fs", name, mb, time.Since(began).Seconds())
}

func runBackupCase(t *testing.T, c backupCase) {
	start := time.Now()
	volumeGB := 1 + bulkMB()*3/1024
	out := t.TempDir()
	// Three guests boot at once here (the source and two restores).
	state := buildAndRegister(t, out, c.name, c.version, "30m")

	ctl := startController(t, state)
	api := ctl.login(t)
	osc := ctl.openstack(t)
	inst := map[string]any{
		"name": "src-" + c.name, "flavorRef": "strata.small", "volume": map[string]any{"size": volumeGB},
		"datastore": map[string]any{"type": c.name, "version": c.version},
	}
	c.create(inst)
	src := api.must(t, 200, "POST", "/instances", map[string]any{"instance": inst})["instance"].(map[string]any)["id"].(string)
	consoleOnFailure(t, state, src)
	ep := endpointOf(t, api.waitStatus(t, src, "ACTIVE", 20*time.Minute), datastoreCases[c.name].port)
	user, password := c.login(t, api, src)

	c.write(t, ep, user, password, 0)
	if mb := bulkMB(); mb > 0 && c.name == "mariadb" {
		fillBulk(t, c.name, mariadbClient{ep}, user, password, mb)
	}
	full := backupThroughCLI(t, osc, api, "full", src)
	wantFull := c.digest(t, ep, user, password)
	t.Logf("FIGURE %s full backup: %s", c.name, full.figure)

	chain := []backupRun{full}
	want := []string{wantFull}
	if c.incremental {
		c.write(t, ep, user, password, 1)
		inc := backupThroughCLI(t, osc, api, "inc", src, "--incremental")
		if inc.parent != full.id {
			t.Fatalf("the incremental's parent is %q, want the full backup %s", inc.parent, full.id)
		}
		t.Logf("FIGURE %s incremental backup: %s", c.name, inc.figure)
		chain = append(chain, inc)
		want = append(want, c.digest(t, ep, user, password))
	}
	c.write(t, ep, user, password, 9) // after the last backup: in no restore

	var listed []map[string]any
	osc.json(t, &listed, "database", "backup", "list", "instance", src)
	if len(listed) != len(chain) {
		t.Fatalf("backup list instance: %v", listed)
	}

	// Restore every backup into a new instance, all at once; make test
	// (STRATA_E2E_BACKUP_DATASTORES unset) restores the whole chain only —
	// one VM fewer under TCG; the full backup alone is restored by the
	// agent's real-server tests and by make e2e-all.
	first := 0
	if os.Getenv("STRATA_E2E_BACKUP_DATASTORES") == "" {
		first = len(chain) - 1
	}
	restored := make([]string, len(chain))
	for i, b := range chain {
		if i < first {
			continue
		}
		var created map[string]any
		osc.json(t, &created, "database", "instance", "create", fmt.Sprintf("restored-%s-%d", c.name, i), "--flavor", "strata.small",
			"--size", strconv.Itoa(volumeGB), "--datastore", c.name, "--datastore-version", c.version, "--backup", b.id)
		restored[i] = created["id"].(string)
		consoleOnFailure(t, state, restored[i])
	}
	began := time.Now()
	for i := first; i < len(chain); i++ {
		in := api.waitStatus(t, restored[i], "ACTIVE", 30*time.Minute)
		t.Logf("FIGURE %s restore of %s to ACTIVE: %.0fs (%s)", c.name, chain[i].name, time.Since(began).Seconds(), accelOf(ctl.log()))
		if got := c.digest(t, endpointOf(t, in, datastoreCases[c.name].port), user, password); got != want[i] {
			t.Fatalf("restore of %s: data differs\n got %s\nwant %s", chain[i].name, got, want[i])
		}
	}

	// Deleting the full backup deletes the chain; the store is empty.
	osc.run(t, "database", "backup", "delete", full.id)
	for _, b := range chain {
		waitTrue(t, "backup "+b.name+" to be gone", time.Minute, func() bool {
			code, _ := api.do(t, "GET", "/backups/"+b.id, nil)
			return code == 404
		})
	}
	waitTrue(t, "the backup store to empty", time.Minute, func() bool { return len(storeFiles(t, state)) == 0 })
	instances := append(restored[first:], src)
	for _, id := range instances {
		api.must(t, 202, "DELETE", "/instances/"+id, nil)
	}
	for _, id := range instances {
		api.waitGone(t, id, 5*time.Minute)
	}
	ctl.stop(t)
	t.Logf("FIGURE %s backup e2e wall time: %.0fs", c.name, time.Since(start).Seconds())
}

type backupRun struct {
	id, name, parent, figure string
}

// backupThroughCLI takes a backup with `openstack database backup create`
// and waits for it to complete.
func backupThroughCLI(t *testing.T, osc *oscRunner, api *apiClient, name, instance string, extra ...string) backupRun {
	t.Helper()
	var created map[string]any
	osc.json(t, &created, append([]string{"database", "backup", "create", name, "--instance", instance}, extra...)...)
	id := created["id"].(string)
	began := time.Now()
	var b map[string]any
	waitTrue(t, "backup "+name+" to complete", 20*time.Minute, func() bool {
		b = api.must(t, 200, "GET", "/backups/"+id, nil)["backup"].(map[string]any)
		if b["status"] == "FAILED" {
			t.Fatalf("backup %s failed: %v", name, b["fail_reason"])
		}
		return b["status"] == "COMPLETED"
	})
	secs := time.Since(began).Seconds()
	raw, stored := b["raw_bytes"].(float64), b["size_bytes"].(float64)
	parent, _ := b["parent_id"].(string)
	var shown map[string]any
	osc.json(t, &shown, "database", "backup", "show", id)
	if shown["status"] != "COMPLETED" {
		t.Fatalf("openstack database backup show: %v", shown)
	}
	return backupRun{id: id, name: name, parent: parent, figure: fmt.Sprintf("%.0f MB raw, %.1f MB stored, %.0fs (%.1f MB/s raw, polled every 1s)",
		raw/1e6, stored/1e6, secs, raw/1e6/max(secs, 1))}
}

// storeFiles lists the objects of the local backup store.
func storeFiles(t *testing.T, state string) []string {
	var out []string
	filepath.Walk(filepath.Join(state, "backups", "objects"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func consoleOnFailure(t *testing.T, state, id string) {
	t.Cleanup(func() {
		if t.Failed() {
			console, _ := os.ReadFile(filepath.Join(state, "compute", "qemu", id, "console.log"))
			t.Logf("console of %s (tail):\n%s", id, tail(string(console), 60))
		}
	})
}

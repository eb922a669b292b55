package mariadb_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/datastore/servertest"
	"strata/agent/dispatch"
	"strata/agent/streams/streamstest"
	"strata/agent/wire"
)

// fill adds n rows of mixed random and repetitive data to shop.items.
func fill(t *testing.T, db *sql.DB, n int) {
	t.Helper()
	for i := 0; i < n; i += 100 {
		if _, err := db.Exec(`INSERT INTO shop.items (v, b) SELECT CONCAT('row-', seq), RANDOM_BYTES(512) FROM shop.seq_1_to_100`); err != nil {
			t.Fatal(err)
		}
	}
}

// checksums is every user table's row count and CHECKSUM TABLE.
func checksums(t *testing.T, db *sql.DB) string {
	t.Helper()
	var b strings.Builder
	for _, table := range userTables(t, db) {
		var count int64
		db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&count)
		var name string
		var sum sql.NullInt64
		if err := db.QueryRow("CHECKSUM TABLE "+table).Scan(&name, &sum); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s rows=%d checksum=%d\n", table, count, sum.Int64)
	}
	return b.String()
}

func userTables(t *testing.T, db *sql.DB) []string {
	rows, err := db.Query(`SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLES
		WHERE TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		rows.Scan(&s)
		out = append(out, s)
	}
	return out
}

// backupCtx bounds a backup test: several backups and restores, each a
// server start, on a machine that may be loaded.
func backupCtx(t *testing.T) context.Context { return servertest.Context(t, 10*time.Minute) }

func TestFullAndIncrementalBackupsRestoreExactly(t *testing.T) {
	ctx := backupCtx(t)
	src, _ := mariadbtest.PreparedT(t, wire.PrepareArgs{Databases: []wire.Database{{Name: "shop"}}})
	db := admin(t, src)
	if _, err := db.Exec(`CREATE TABLE shop.items (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), b BLOB) ENGINE=InnoDB`); err != nil {
		t.Fatal(err)
	}
	fill(t, db, 2000)
	mem := streamstest.NewMemory()
	d := &dispatch.Dispatcher{Manager: src.Manager, Streams: mem, Datastore: "mariadb"}
	full, err := streamstest.Backup(ctx, d, "b-full", nil)
	if err != nil {
		t.Fatal(err)
	}
	atFull := checksums(t, db)
	if full.Position.EndLSN == "" || full.RawBytes == 0 || full.Stream.Bytes != int64(len(mem.Written("b-full"))) {
		t.Fatalf("full backup result %+v, stream %d bytes", full, len(mem.Written("b-full")))
	}

	fill(t, db, 1000)
	if _, err := db.Exec(`UPDATE shop.items SET v = 'changed' WHERE id % 7 = 0`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE shop.later (k INT PRIMARY KEY) ENGINE=InnoDB`); err != nil {
		t.Fatal(err)
	}
	db.Exec(`INSERT INTO shop.later SELECT seq FROM shop.seq_1_to_500`)
	inc, err := streamstest.Backup(ctx, d, "b-inc", &full.Position)
	if err != nil {
		t.Fatal(err)
	}
	atInc := checksums(t, db)
	t.Logf("full: %d raw, %d sent; incremental: %d raw, %d sent", full.RawBytes, full.Stream.Bytes, inc.RawBytes, inc.Stream.Bytes)
	if inc.Position.StartLSN != full.Position.EndLSN {
		t.Fatalf("incremental %+v after full %+v", inc.Position, full.Position)
	}
	fill(t, db, 100) // after the last backup: must not appear anywhere

	for name, c := range map[string]struct {
		chain []streamstest.Link
		want  string
	}{
		"full":             {[]streamstest.Link{mem.Stored("b-full", full)}, atFull},
		"full+incremental": {[]streamstest.Link{mem.Stored("b-full", full), mem.Stored("b-inc", inc)}, atInc},
	} {
		t.Run(name, func(t *testing.T) {
			dst := mariadbtest.NewT(t)
			dd := &dispatch.Dispatcher{Manager: dst.Manager, Streams: mem, Datastore: "mariadb"}
			res, err := streamstest.Restore(ctx, dd, mem, "r-"+strings.ReplaceAll(name, "+", "-"), wire.RestoreArgs{}, c.chain...)
			if err != nil {
				t.Fatal(err)
			}
			if res.Backups != len(c.chain) {
				t.Fatalf("restore result %+v", res)
			}
			if got := checksums(t, admin(t, dst)); got != c.want {
				t.Fatalf("restored data differs:\n got %s\nwant %s", got, c.want)
			}
			if st := dst.Manager.Status(ctx); st.Status != wire.StatusRunning {
				t.Fatalf("status after restore: %+v", st)
			}
			// A restored guest is prepared: neither prepare nor restore
			// runs again.
			_, err = dst.Manager.Prepare(ctx, wire.PrepareArgs{})
			wantCode(t, err, wire.CodeFailedPrecondition, "prepared already")
		})
	}
}

func TestARestoreOfDamagedDataNeverServes(t *testing.T) {
	ctx := backupCtx(t)
	src, _ := mariadbtest.PreparedT(t, wire.PrepareArgs{Databases: []wire.Database{{Name: "shop"}}})
	db := admin(t, src)
	db.Exec(`CREATE TABLE shop.items (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), b BLOB) ENGINE=InnoDB`)
	fill(t, db, 500)
	mem := streamstest.NewMemory()
	d := &dispatch.Dispatcher{Manager: src.Manager, Streams: mem, Datastore: "mariadb"}
	full, err := streamstest.Backup(ctx, d, "b-full", nil)
	if err != nil {
		t.Fatal(err)
	}
	link := mem.Stored("b-full", full)
	damaged := link
	damaged.Data = append([]byte(nil), link.Data...)
	damaged.Data[len(damaged.Data)/2] ^= 0x01

	dst := mariadbtest.NewT(t)
	dd := &dispatch.Dispatcher{Manager: dst.Manager, Streams: mem, Datastore: "mariadb"}
	_, err = streamstest.Restore(ctx, dd, mem, "r-bad", wire.RestoreArgs{}, damaged)
	wantCode(t, err, wire.CodeInternal, "backup b-full")
	// Which check sees the flipped bit first depends on where it fell: the
	// stream's digest, zstd's own frame checks, or mbstream's checksum.
	if msg := err.Error(); !strings.Contains(msg, "digest") && !strings.Contains(msg, "checksum") && !strings.Contains(msg, "corrupt") {
		t.Fatalf("damage not reported as such: %v", err)
	}
	if dst.Process.Running() {
		t.Fatal("the server runs on a damaged restore")
	}
	if st := dst.Manager.Status(ctx); st.Status != wire.StatusFailed {
		t.Fatalf("status after a failed restore: %+v", st)
	}
	// The failure sticks: a second try is refused, not run on top.
	_, err = streamstest.Restore(ctx, dd, mem, "r-again", wire.RestoreArgs{}, link)
	wantCode(t, err, wire.CodeFailedPrecondition, "rebuild the instance")

	// The source kept serving throughout.
	if st := src.Manager.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("source status: %+v", st)
	}
}

func TestABackupWhoseStreamIsRefusedFailsAndLeavesTheSourceAlone(t *testing.T) {
	ctx := backupCtx(t)
	src := sharedServer(t)
	before := snapshot(t, src)
	mem := streamstest.NewMemory()
	mem.Refuse = true
	d := &dispatch.Dispatcher{Manager: src.Manager, Streams: mem, Datastore: "mariadb"}
	_, err := streamstest.Backup(ctx, d, "b-refused", nil)
	wantCode(t, err, wire.CodeUnavailable, "refused")
	_, err = streamstest.Backup(ctx, &dispatch.Dispatcher{Manager: src.Manager, Streams: streamstest.NewMemory()}, "b-bad-parent", &wire.BackupPosition{EndLSN: "1; DROP"})
	wantCode(t, err, wire.CodeInvalidArgument, "not an InnoDB LSN")
	assertUnchanged(t, src, before)
}

func TestABackupCutMidStreamStopsTheToolAndLeavesNothing(t *testing.T) {
	ctx := backupCtx(t)
	src, _ := mariadbtest.PreparedT(t, wire.PrepareArgs{Databases: []wire.Database{{Name: "shop"}}})
	db := admin(t, src)
	db.Exec(`CREATE TABLE shop.items (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), b BLOB) ENGINE=InnoDB`)
	fill(t, db, 2000)
	before := checksums(t, db)
	mem := streamstest.NewMemory()
	mem.CutAfter = 256 << 10
	d := &dispatch.Dispatcher{Manager: src.Manager, Streams: mem, Datastore: "mariadb"}
	_, err := streamstest.Backup(ctx, d, "b-cut", nil)
	if err == nil || !strings.Contains(err.Error(), streamstest.ErrCut.Error()) {
		t.Fatalf("a cut stream: %v", err)
	}
	if out, _ := exec.Command("pgrep", "-f", "mariadb-backup --defaults-file="+src.Config.DefaultsFile).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("mariadb-backup still runs after the stream was cut: %s", out)
	}
	if left, _ := filepath.Glob(filepath.Join(src.Manager.DataPath(), ".strata-backup-*")); len(left) > 0 {
		t.Fatalf("scratch left behind: %v", left)
	}
	if st := src.Manager.Status(ctx); st.Status != wire.StatusRunning || checksums(t, db) != before {
		t.Fatalf("source after a cut backup: %+v", st)
	}
	// The next backup works.
	mem.CutAfter = 0
	if _, err := streamstest.Backup(ctx, d, "b-next", nil); err != nil {
		t.Fatal(err)
	}
}

func TestARestoreThatRunsOutOfSpaceFailsAndNeverServes(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test mounts a small tmpfs as the data volume: run it as root (make test does)")
	}
	ctx := backupCtx(t)
	src, _ := mariadbtest.PreparedT(t, wire.PrepareArgs{Databases: []wire.Database{{Name: "shop"}}})
	db := admin(t, src)
	db.Exec(`CREATE TABLE shop.items (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), b BLOB) ENGINE=InnoDB`)
	fill(t, db, 2000)
	mem := streamstest.NewMemory()
	d := &dispatch.Dispatcher{Manager: src.Manager, Streams: mem, Datastore: "mariadb"}
	full, err := streamstest.Backup(ctx, d, "b-full", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	dst, err := mariadbtest.New(dir, mariadbtest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dst.Close)
	dd := &dispatch.Dispatcher{Manager: dst.Manager, Streams: mem, Datastore: "mariadb"}
	_, err = streamstest.Restore(ctx, dd, mem, "r-full", wire.RestoreArgs{}, mem.Stored("b-full", full))
	if err == nil || !strings.Contains(err.Error(), "backup b-full") {
		t.Fatalf("a restore onto a full volume: %v", err)
	}
	t.Logf("restore onto a 12 MB volume: %v", err)
	if dst.Process.Running() {
		t.Fatal("the server runs on a half-restored data directory")
	}
	if st := dst.Manager.Status(ctx); st.Status != wire.StatusFailed {
		t.Fatalf("status: %+v", st)
	}
}

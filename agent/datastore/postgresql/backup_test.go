package postgresql_test

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/datastore/servertest"
	"strata/agent/dispatch"
	"strata/agent/streams/streamstest"
	"strata/agent/wire"
)

// pgChecksums is every user table's row count and an md5 over its rows.
func pgChecksums(t *testing.T, db *sql.DB) string {
	t.Helper()
	rows, err := db.Query(`SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var s string
		rows.Scan(&s)
		tables = append(tables, s)
	}
	rows.Close()
	var b strings.Builder
	for _, table := range tables {
		var n int64
		var sum sql.NullString
		if err := db.QueryRow(`SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t::text)) FROM `+table+` t`).Scan(&n, &sum); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s rows=%d md5=%s\n", table, n, sum.String)
	}
	return b.String()
}

func fillPG(t *testing.T, db *sql.DB, n int) {
	t.Helper()
	if _, err := db.Exec(fmt.Sprintf(`INSERT INTO items (v, b) SELECT 'row-' || g, decode(md5(random()::text) || md5(random()::text), 'hex')
		FROM generate_series(1, %d) g`, n)); err != nil {
		t.Fatal(err)
	}
}

func TestFullBackupAndWALIncrementalsRestoreExactly(t *testing.T) {
	// Several backups and restores, each a server start, maybe on a
	// loaded machine.
	ctx := servertest.Context(t, 10*time.Minute)
	src, _ := postgresqltest.PreparedT(t, wire.PrepareArgs{Databases: []wire.Database{{Name: "shop"}}})
	db := admin(t, src, "shop")
	if _, err := db.Exec(`CREATE TABLE items (id serial PRIMARY KEY, v text, b bytea)`); err != nil {
		t.Fatal(err)
	}
	fillPG(t, db, 20000)
	mem := streamstest.NewMemory()
	d := &dispatch.Dispatcher{Manager: src.Manager, Streams: mem, Datastore: "postgresql"}
	full, err := streamstest.Backup(ctx, d, "b-full", nil)
	if err != nil {
		t.Fatal(err)
	}
	atFull := pgChecksums(t, db)

	fillPG(t, db, 5000)
	db.Exec(`UPDATE items SET v = 'changed' WHERE id % 7 = 0`)
	db.Exec(`CREATE TABLE later AS SELECT g AS k FROM generate_series(1, 1000) g`)
	inc1, err := streamstest.Backup(ctx, d, "b-inc1", &full.Position)
	if err != nil {
		t.Fatal(err)
	}
	atInc1 := pgChecksums(t, db)

	db.Exec(`DELETE FROM items WHERE id % 3 = 0`)
	inc2, err := streamstest.Backup(ctx, d, "b-inc2", &inc1.Position)
	if err != nil {
		t.Fatal(err)
	}
	atInc2 := pgChecksums(t, db)
	fillPG(t, db, 100) // after the last backup: in no restore
	t.Logf("full %d raw / %d sent (%s..%s); inc1 %d / %d (%s..%s); inc2 %d / %d", full.RawBytes, full.Stream.Bytes,
		full.Position.StartLSN, full.Position.EndLSN, inc1.RawBytes, inc1.Stream.Bytes, inc1.Position.StartLSN, inc1.Position.EndLSN,
		inc2.RawBytes, inc2.Stream.Bytes)

	// An incremental on a parent whose WAL the slot no longer keeps is
	// refused with a reason, not streamed wrong.
	_, err = streamstest.Backup(ctx, d, "b-stale", &full.Position)
	wantCode(t, err, wire.CodeFailedPrecondition, "take a full backup")

	links := map[string]streamstest.Link{}
	for id, r := range map[string]wire.BackupResult{"b-full": full, "b-inc1": inc1, "b-inc2": inc2} {
		links[id] = mem.Stored(id, r)
	}
	for _, c := range []struct {
		name  string
		chain []string
		want  string
	}{
		{"full", []string{"b-full"}, atFull},
		{"full-inc1", []string{"b-full", "b-inc1"}, atInc1},
		{"full-inc1-inc2", []string{"b-full", "b-inc1", "b-inc2"}, atInc2},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := postgresqltest.NewT(t)
			dd := &dispatch.Dispatcher{Manager: dst.Manager, Streams: mem, Datastore: "postgresql"}
			var chain []streamstest.Link
			for _, id := range c.chain {
				chain = append(chain, links[id])
			}
			res, err := streamstest.Restore(ctx, dd, mem, "r-"+c.name, wire.RestoreArgs{}, chain...)
			if err != nil {
				t.Fatal(err)
			}
			if res.Backups != len(chain) {
				t.Fatalf("restore result %+v", res)
			}
			if got := pgChecksums(t, admin(t, dst, "shop")); got != c.want {
				t.Fatalf("restored data differs:\n got %s\nwant %s", got, c.want)
			}
			if st := dst.Manager.Status(ctx); st.Status != wire.StatusRunning {
				t.Fatalf("status after restore: %+v", st)
			}
		})
	}

	// A damaged incremental: the restore fails and the server never runs.
	bad := links["b-inc1"]
	bad.Data = append([]byte(nil), bad.Data...)
	bad.Data[len(bad.Data)/3] ^= 0x10
	dst := postgresqltest.NewT(t)
	dd := &dispatch.Dispatcher{Manager: dst.Manager, Streams: mem, Datastore: "postgresql"}
	_, err = streamstest.Restore(ctx, dd, mem, "r-bad", wire.RestoreArgs{}, links["b-full"], bad)
	wantCode(t, err, wire.CodeInternal, "backup b-inc1")
	if dst.Process.Running() {
		t.Fatal("the server runs on a damaged restore")
	}
	if st := dst.Manager.Status(ctx); st.Status != wire.StatusFailed {
		t.Fatalf("status after a failed restore: %+v", st)
	}
}

package store_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"

	"strata/controller/store"
	"strata/controller/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

func TestMigrationsAreNumberedWithoutGaps(t *testing.T) {
	ms, err := store.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Version != 1 {
		t.Fatalf("migrations = %+v", ms)
	}
}

func TestSchemaIsCreatedOnceAndTheSameInBothDialects(t *testing.T) {
	var tables [][]string
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ms, _ := store.Migrations()
		v, err := db.SchemaVersion(ctx)
		if err != nil || v != len(ms) {
			t.Fatalf("schema version %d, %v; want %d", v, err, len(ms))
		}
		// A second Migrate is a no-op.
		if err := db.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if n := storetest.Count(t, db, "schema_migrations"); n != len(ms) {
			t.Fatalf("%d migration rows after a second Migrate, want %d", n, len(ms))
		}
		tables = append(tables, storetest.Tables(t, db))
	})
	if len(tables) == 2 && !slices.Equal(tables[0], tables[1]) {
		t.Fatalf("sqlite tables %v differ from postgres tables %v", tables[0], tables[1])
	}
	for _, want := range []string{"instances", "instance_reports", "agent_ops", "tasks", "datastore_versions"} {
		if !slices.Contains(tables[0], want) {
			t.Errorf("table %s missing", want)
		}
	}
}

func TestPlaceholdersUniqueViolationsAndRollback(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ins := `INSERT INTO flavors (id, name, ram_mb, vcpus, disk_gb, created_at) VALUES (?, ?, ?, ?, ?, ?)`
		if _, err := db.Exec(ctx, ins, "f1", "small", 1024, 1, 0, 1); err != nil {
			t.Fatal(err)
		}
		_, err := db.Exec(ctx, ins, "f2", "small", 1024, 1, 0, 1)
		if !store.IsUniqueViolation(err) {
			t.Fatalf("duplicate name: %v, want a unique violation", err)
		}
		err = db.InTx(ctx, func(tx *store.Tx) error {
			if _, err := tx.Exec(ctx, ins, "f3", "medium", 2048, 2, 0, 1); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, ins, "f1", "again", 1, 1, 0, 1)
			return err
		})
		if !store.IsUniqueViolation(err) {
			t.Fatalf("tx error %v, want a unique violation", err)
		}
		if n := storetest.Count(t, db, "SELECT COUNT(*) FROM flavors WHERE id = ?", "f3"); n != 0 {
			t.Fatal("a failed transaction left its first insert behind")
		}
	})
}

func TestConcurrentOpenersMigrateOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.db")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			db, err := store.Open(context.Background(), path)
			if err == nil {
				db.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// The database holds password hashes, token hashes and, for a while,
// operations' arguments: its files are the controller's alone, whatever
// the umask, and an existing database with looser modes is tightened.
func TestSQLiteFilesArePrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "controller.db")
	check := func(when string) {
		t.Helper()
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %s has mode %o, want 600", when, filepath.Base(p), fi.Mode().Perm())
			}
		}
	}
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `INSERT INTO flavors (id, name, ram_mb, vcpus, disk_gb, created_at) VALUES ('f', 'f', 1, 1, 1, 0)`); err != nil {
		t.Fatal(err)
	}
	check("a new database")
	db.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		os.Chmod(p, 0o644)
	}
	db, err = store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(ctx, `UPDATE flavors SET ram_mb = 2`); err != nil {
		t.Fatal(err)
	}
	check("an existing database that was readable by all")
}

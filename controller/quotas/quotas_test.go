package quotas_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"strata/controller/quotas"
	"strata/controller/store"
	"strata/controller/store/storetest"
	"strata/controller/tasks"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

func insertBackup(ctx context.Context, q store.Querier, project, id string) error {
	_, err := q.Exec(ctx, `INSERT INTO backups (id, project_id, instance_id, name, chain_position, datastore_version_id, status, store, location, created_at, updated_at)
		VALUES (?, ?, 'i', 'b', 0, 'v', 'NEW', 'local', 'x', 0, 0)`, id, project)
	return err
}

// TestCheckIsAtomicInTheInsertingTransaction races n transactions that
// each check the backups quota (one slot) and insert a backup, on SQLite
// and on PostgreSQL: exactly one commits, every other one is refused
// with Trove's message.
func TestCheckIsAtomicInTheInsertingTransaction(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		q := &quotas.Quotas{DB: db, Defaults: quotas.Limits{quotas.Backups: 1}}
		const n = 12
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = db.InTx(ctx, func(tx *store.Tx) error {
					if err := q.Check(ctx, tx, "p1", quotas.Limits{quotas.Backups: 1}); err != nil {
						return err
					}
					return insertBackup(ctx, tx, "p1", fmt.Sprintf("b%d", i))
				})
			})
		}
		close(start)
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case errors.Is(err, quotas.ErrExceeded) && err.Error() == "Quota exceeded for resources: ['backups'].":
			default:
				t.Errorf("transaction %d: %v", i, err)
			}
		}
		if won != 1 || storetest.Count(t, db, "backups") != 1 {
			t.Fatalf("%d transactions passed a quota of 1; %d rows", won, storetest.Count(t, db, "backups"))
		}
		// Another project has its own slot.
		if err := db.InTx(ctx, func(tx *store.Tx) error { return q.Check(ctx, tx, "p2", quotas.Limits{quotas.Backups: 1}) }); err != nil {
			t.Fatalf("another project: %v", err)
		}
	})
}

// TestLimitsSetAndUsage: set limits override the defaults per resource;
// usage counts live instances, their gigabytes plus the growth of queued
// resizes, and live backups; -1 never refuses; several resources over
// are named in Trove's sorted order.
func TestLimitsSetAndUsage(t *testing.T) {
	db := storetest.SQLite(t)
	ctx := context.Background()
	q := &quotas.Quotas{DB: db, Defaults: quotas.Limits{quotas.Instances: 2}}
	l, err := q.Limits(ctx, db, "p")
	if err != nil || l[quotas.Instances] != 2 || l[quotas.Volumes] != 40 || l[quotas.Backups] != 50 {
		t.Fatalf("defaults: %v %v", l, err)
	}
	if _, err := q.Set(ctx, "p", quotas.Limits{"cpus": 1}); err == nil {
		t.Fatal("an unknown resource was set")
	}
	if _, err := q.Set(ctx, "p", quotas.Limits{quotas.Backups: -2}); err == nil {
		t.Fatal("a limit of -2 was set")
	}
	if l, err = q.Set(ctx, "p", quotas.Limits{quotas.Volumes: 5, quotas.Backups: quotas.Unlimited}); err != nil ||
		l[quotas.Instances] != 2 || l[quotas.Volumes] != 5 || l[quotas.Backups] != -1 {
		t.Fatalf("after set: %v %v", l, err)
	}
	if l, err = q.Set(ctx, "p", quotas.Limits{quotas.Volumes: 6}); err != nil || l[quotas.Volumes] != 6 {
		t.Fatalf("set again: %v %v", l, err)
	}

	// Two instances of 2 GB, one deleted of 9 GB, one resize to 3 GB queued
	// and one done (it no longer counts: its size is the instance's).
	for _, stmt := range []string{
		`INSERT INTO datastores (id, name, created_at, updated_at) VALUES ('d', 'mariadb', 0, 0)`,
		`INSERT INTO datastore_versions (id, datastore_id, name, manager, image_id, active, port, boot_timeout_s, created_at, updated_at)
			VALUES ('v', 'd', '10.11', 'mariadb', 'img', 1, 3306, 60, 0, 0)`,
		`INSERT INTO flavors (id, name, ram_mb, vcpus, disk_gb, created_at) VALUES ('f', 'small', 512, 1, 1, 0)`,
		`INSERT INTO instances (id, project_id, name, datastore_version_id, flavor_id, volume_size_gb, task, created_at, updated_at) VALUES ('i1', 'p', 'a', 'v', 'f', 2, 'RESIZING', 0, 0)`,
		`INSERT INTO instances (id, project_id, name, datastore_version_id, flavor_id, volume_size_gb, task, created_at, updated_at) VALUES ('i2', 'p', 'b', 'v', 'f', 2, 'NONE', 0, 0)`,
		`INSERT INTO instances (id, project_id, name, datastore_version_id, flavor_id, volume_size_gb, task, created_at, updated_at, deleted_at) VALUES ('i3', 'p', 'c', 'v', 'f', 9, 'NONE', 0, 0, 1)`,
	} {
		if _, err := db.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	err = db.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tasks.Enqueue(ctx, tx, tasks.New{InstanceID: "i1", Kind: "resize_volume", Step: "extend", Payload: map[string]int{"size_gb": 3}}, time.Now()); err != nil {
			return err
		}
		id, err := tasks.Enqueue(ctx, tx, tasks.New{InstanceID: "i2", Kind: "resize_volume", Step: "extend", Payload: map[string]int{"size_gb": 7}}, time.Now())
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE tasks SET state = 'done' WHERE id = ?`, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := insertBackup(ctx, db, "p", "b1"); err != nil {
		t.Fatal(err)
	}
	u, err := quotas.Usage(ctx, db, "p")
	if err != nil || u[quotas.Instances] != 2 || u[quotas.Volumes] != 5 || u[quotas.Backups] != 1 {
		t.Fatalf("usage: %v %v (want 2 instances, 2+2+1 GB, 1 backup)", u, err)
	}
	check := func(d quotas.Limits) error {
		return db.InTx(ctx, func(tx *store.Tx) error { return q.Check(ctx, tx, "p", d) })
	}
	if err := check(quotas.Limits{quotas.Volumes: 1, quotas.Backups: 1000}); err != nil {
		t.Fatalf("6 of 6 GB and unlimited backups: %v", err)
	}
	err = check(quotas.Limits{quotas.Instances: 1, quotas.Volumes: 2})
	if err == nil || err.Error() != "Quota exceeded for resources: ['instances', 'volumes']." {
		t.Fatalf("over two: %v", err)
	}
}

// BenchmarkCheckInTx is the cost a create pays for its quota: a write
// transaction that checks a project with 1000 backups (SQLite).
func BenchmarkCheckInTx(b *testing.B) {
	db := storetest.SQLite(b)
	ctx := context.Background()
	q := &quotas.Quotas{DB: db, Defaults: quotas.Limits{quotas.Backups: quotas.Unlimited}}
	for i := range 1000 {
		if err := insertBackup(ctx, db, "p", fmt.Sprintf("b%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if err := db.InTx(ctx, func(tx *store.Tx) error {
			return q.Check(ctx, tx, "p", quotas.Limits{quotas.Instances: 1, quotas.Volumes: 1, quotas.Backups: 1})
		}); err != nil {
			b.Fatal(err)
		}
	}
}

package mariadb_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/dispatch"
	"strata/agent/streams/streamstest"
	"strata/agent/wire"
)

// linkReplica seeds a replica from a backup of primary and starts
// replication with its own account.
func linkReplica(t *testing.T, ctx context.Context, primary *mariadbtest.Instance, mem *streamstest.Memory, seed string,
	full wire.BackupResult, acct, pw string) *mariadbtest.Instance {
	t.Helper()
	r := mariadbtest.NewTCPT(t)
	rd := &dispatch.Dispatcher{Manager: r.Manager, Streams: mem, Datastore: "mariadb"}
	if _, err := streamstest.Restore(ctx, rd, mem, "restore-"+acct, wire.RestoreArgs{}, mem.Stored(seed, full)); err != nil {
		t.Fatal(err)
	}
	if _, err := primary.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: acct, Password: pw}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: primary.Config.Port,
		Account: acct, Password: pw, GTIDSlavePos: full.Position.GTID}); err != nil {
		t.Fatal(err)
	}
	return r
}

func wantReadOnlyRefusal(t *testing.T, err error, where string) {
	t.Helper()
	var me *mysql.MySQLError
	if err == nil {
		t.Fatalf("a user's write on %s succeeded", where)
	} else if !errors.As(err, &me) || me.Number != 1290 {
		t.Fatalf("write on %s: %v, want error 1290 (read-only)", where, err)
	}
}

// Three real servers, P with replicas R and B: a switchover whose wait
// times out changes nothing and is rolled back (P writable again, R still
// its replica); the real one, under a user writing all along, fences P,
// promotes R once it applied P's last position, makes P a replica of R
// from its own position and repoints B. Every write a user saw succeed is
// on every server; writes on R reach P and B; P and B refuse users'
// writes (1290).
func TestSwitchoverLosesNoCommittedWriteAndRepointsTheGroup(t *testing.T) {
	ctx := backupCtx(t)
	p := mariadbtest.NewTCPT(t)
	mustPrepare(t, p, wire.PrepareArgs{
		Databases: []wire.Database{{Name: "shop"}},
		Users:     []wire.User{{Name: "app", Password: "app-secret-1", Databases: []string{"shop"}}},
	})
	pdb := admin(t, p)
	if _, err := pdb.Exec(`CREATE TABLE shop.items (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), b BLOB) ENGINE=InnoDB`); err != nil {
		t.Fatal(err)
	}
	fill(t, pdb, 300)
	mem := streamstest.NewMemory()
	full, err := streamstest.Backup(ctx, &dispatch.Dispatcher{Manager: p.Manager, Streams: mem, Datastore: "mariadb"}, "seed", nil)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, pdb, 100)
	const pwR, pwB, pwP = "repl-Secret-R-0123456789", "repl-Secret-B-0123456789", "repl-Secret-P-0123456789"
	r := linkReplica(t, ctx, p, mem, "seed", full, "strata_repl_r", pwR)
	b := linkReplica(t, ctx, p, mem, "seed", full, "strata_repl_b", pwB)
	waitApplied(t, ctx, p, r)
	waitApplied(t, ctx, p, b)
	rdb, bdb := admin(t, r), admin(t, b)

	// Lifting a fence on a replica is refused: it stays read-only.
	_, err = r.Manager.SetReadOnly(ctx, false)
	wantCode(t, err, wire.CodeFailedPrecondition, "detach it first")

	// 1. A wait that times out: R's SQL thread is stopped, so it cannot
	// reach P's last position. Nothing changes; P's fence is lifted.
	if _, err := rdb.Exec("STOP SLAVE SQL_THREAD"); err != nil {
		t.Fatal(err)
	}
	fill(t, pdb, 100)
	fenced, err := p.Manager.SetReadOnly(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if !fenced.ReadOnly || fenced.GTIDBinlogPos == "" {
		t.Fatalf("fenced primary: %+v", fenced)
	}
	app := tcpLogin(t, p, "app", "app-secret-1")
	_, err = app.Exec("INSERT INTO shop.items (v) VALUES ('fenced')")
	wantReadOnlyRefusal(t, err, "the fenced primary")
	_, err = r.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{GTIDPos: fenced.GTIDBinlogPos, TimeoutSeconds: 1})
	wantCode(t, err, wire.CodeFailedPrecondition, "did not apply")
	if st, err := r.Manager.ReplicationStatus(ctx); err != nil || st.Role != wire.RoleReplica || !st.ReadOnly {
		t.Fatalf("replica after a timed-out promote: %+v, %v", st, err)
	}
	if st, err := p.Manager.SetReadOnly(ctx, false); err != nil || st.ReadOnly {
		t.Fatalf("lifting the fence: %+v, %v", st, err)
	}
	if _, err := app.Exec("INSERT INTO shop.items (v) VALUES ('after rollback')"); err != nil {
		t.Fatalf("write on the primary after the rollback: %v", err)
	}
	if _, err := rdb.Exec("START SLAVE SQL_THREAD"); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, ctx, p, r)

	// 2. The switchover, while a user writes to whichever server is the
	// primary: ok counts the inserts the user saw succeed.
	var ok atomic.Int64
	var target atomic.Pointer[mariadbtest.Instance]
	target.Store(p)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conns := map[*mariadbtest.Instance]func(string) error{}
		for _, in := range []*mariadbtest.Instance{p, r} {
			c := tcpLogin(t, in, "app", "app-secret-1")
			conns[in] = func(q string) error { _, err := c.Exec(q); return err }
		}
		for {
			select {
			case <-stop:
				return
			default:
			}
			if conns[target.Load()]("INSERT INTO shop.items (v) VALUES ('load')") == nil {
				ok.Add(1)
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)

	t0 := time.Now()
	fenced, err = p.Manager.SetReadOnly(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	promoted, err := r.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{GTIDPos: fenced.GTIDBinlogPos, TimeoutSeconds: 30})
	if err != nil {
		t.Fatal(err)
	}
	target.Store(r)
	writable := time.Since(t0)
	if promoted.Role != wire.RoleStandalone || promoted.ReadOnly {
		t.Fatalf("promoted replica: %+v", promoted)
	}
	// P follows R from its own position; B moves to R with a new
	// account (its name exists on R already: accounts replicate).
	for _, a := range []wire.ReplicationAccountArgs{{Name: "strata_repl_p", Password: pwP}, {Name: "strata_repl_b", Password: pwB + "x"}} {
		if _, err := r.Manager.CreateReplicationAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: r.Config.Port,
		Account: "strata_repl_p", Password: pwP, GTIDSlavePos: fenced.GTIDBinlogPos}); err != nil {
		t.Fatal(err)
	}
	repoint := wire.StartReplicationArgs{Host: "127.0.0.1", Port: r.Config.Port, Account: "strata_repl_b", Password: pwB + "x", Repoint: true}
	if _, err := b.Manager.StartReplication(ctx, repoint); err != nil {
		t.Fatal(err)
	}
	if err := r.Manager.DropReplicationAccount(ctx, "strata_repl_r"); err != nil {
		t.Fatal(err)
	}
	whole := time.Since(t0)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("switchover: writes refused for %v (fence to writable primary); whole switchover %v; %d user inserts succeeded during the run",
		writable, whole, ok.Load())

	// No committed write lost: every insert the user saw succeed is on
	// R, and P and B have exactly R's data. The loader's rows are counted
	// by their value: a count of the table taken after the loader started
	// raced its first inserts (CI saw 502 of 504).
	if got := count(t, rdb, "shop.items WHERE v = 'load'"); int64(got) != ok.Load() {
		t.Fatalf("R has %d of the loader's rows, the user saw %d inserts succeed", got, ok.Load())
	}
	fill(t, rdb, 100) // on the new primary: reaches P and B
	for name, in := range map[string]*mariadbtest.Instance{"old primary": p, "other replica": b} {
		st := waitApplied(t, ctx, r, in)
		if st.Role != wire.RoleReplica || !st.ReadOnly || st.SourcePort != r.Config.Port || !st.IORunning || !st.SQLRunning {
			t.Fatalf("%s after the switchover: %+v", name, st)
		}
		if got, want := checksums(t, admin(t, in)), checksums(t, rdb); got != want {
			t.Fatalf("%s differs from the new primary:\n%s\n%s", name, got, want)
		}
		_, err := tcpLogin(t, in, "app", "app-secret-1").Exec("INSERT INTO shop.items (v) VALUES ('diverge')")
		wantReadOnlyRefusal(t, err, name)
	}
	if _, err := tcpLogin(t, r, "app", "app-secret-1").Exec("INSERT INTO shop.items (v) VALUES ('new primary')"); err != nil {
		t.Fatalf("write on the new primary: %v", err)
	}
	// R's own account was dropped on R and, by replication, everywhere.
	waitApplied(t, ctx, r, p)
	var n int
	pdb.QueryRow("SELECT COUNT(*) FROM mysql.user WHERE User = 'strata_repl_r'").Scan(&n)
	if n != 0 {
		t.Fatal("the promoted replica's account is still on the old primary")
	}
	// A re-run of each step converges: promote again (position reached,
	// detached already), repoint again.
	if st, err := r.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{GTIDPos: fenced.GTIDBinlogPos, TimeoutSeconds: 1}); err != nil || st.ReadOnly {
		t.Fatalf("re-run of promote: %+v, %v", st, err)
	}
	if _, err := b.Manager.StartReplication(ctx, repoint); err != nil {
		t.Fatalf("re-run of repoint: %v", err)
	}
	fill(t, rdb, 100)
	waitApplied(t, ctx, r, b)
	if got, want := checksums(t, bdb), checksums(t, rdb); got != want {
		t.Fatalf("other replica after a re-run of repoint:\n%s\n%s", got, want)
	}
	// A restarted old primary stays a read-only replica of R.
	if err := p.Manager.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if st := waitApplied(t, ctx, r, p); !st.ReadOnly || st.SourcePort != r.Config.Port {
		t.Fatalf("old primary after restart: %+v", st)
	}
}

// Failover on real servers: P stops (killed with its primary role), B's
// SQL thread is behind, R received everything. The most current replica
// (by what it received, gtid_io_pos) is R; promote_replica with R's own
// received position applies all of it first; B repoints to R from its own
// position and catches up. Every row P committed and a replica received
// is on both.
func TestFailoverPromotesTheMostCurrentReplicaAndRepointsTheOther(t *testing.T) {
	ctx := backupCtx(t)
	p := mariadbtest.NewTCPT(t)
	mustPrepare(t, p, wire.PrepareArgs{Databases: []wire.Database{{Name: "shop"}}})
	pdb := admin(t, p)
	if _, err := pdb.Exec(`CREATE TABLE shop.items (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), b BLOB) ENGINE=InnoDB`); err != nil {
		t.Fatal(err)
	}
	fill(t, pdb, 200)
	mem := streamstest.NewMemory()
	full, err := streamstest.Backup(ctx, &dispatch.Dispatcher{Manager: p.Manager, Streams: mem, Datastore: "mariadb"}, "seed", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := linkReplica(t, ctx, p, mem, "seed", full, "strata_repl_r", "repl-Secret-R-0123456789")
	b := linkReplica(t, ctx, p, mem, "seed", full, "strata_repl_b", "repl-Secret-B-0123456789")
	waitApplied(t, ctx, p, r)
	waitApplied(t, ctx, p, b)
	rdb, bdb := admin(t, r), admin(t, b)
	if _, err := bdb.Exec("STOP SLAVE SQL_THREAD"); err != nil {
		t.Fatal(err)
	}
	fill(t, pdb, 300)
	want := count(t, pdb, "shop.items")
	waitApplied(t, ctx, p, r)
	if err := p.Manager.Stop(ctx); err != nil { // the primary is gone
		t.Fatal(err)
	}

	// Elect by what each replica received.
	rs, err := r.Manager.ReplicationStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := b.Manager.ReplicationStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rs.GTIDIOPos == "" || bs.GTIDSlavePos == rs.GTIDSlavePos {
		t.Fatalf("the test needs B behind R: R %+v, B %+v", rs, bs)
	}
	t0 := time.Now()
	st, err := r.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{GTIDPos: rs.GTIDIOPos, TimeoutSeconds: 30})
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != wire.RoleStandalone || st.ReadOnly {
		t.Fatalf("elected replica after promote: %+v", st)
	}
	if _, err := r.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_b", Password: "repl-Secret-B2-0123456789"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: r.Config.Port,
		Account: "strata_repl_b", Password: "repl-Secret-B2-0123456789", Repoint: true}); err != nil {
		t.Fatal(err)
	}
	t.Logf("failover (agent operations, primary already gone): %v", time.Since(t0))
	if n := count(t, rdb, "shop.items"); n != want {
		t.Fatalf("the new primary has %d rows, the old one committed %d", n, want)
	}
	fill(t, rdb, 100)
	waitApplied(t, ctx, r, b)
	if got, want := checksums(t, bdb), checksums(t, rdb); got != want {
		t.Fatalf("the other replica differs from the new primary:\n%s\n%s", got, want)
	}
}

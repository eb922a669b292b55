package postgresql_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"strata/agent/datastore/postgresql"
	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/datastore/servertest"
	"strata/agent/dispatch"
	"strata/agent/streams/streamstest"
	"strata/agent/wire"
)

// failoverPair is a primary P and its standby R (restored from a seed of
// P, streaming through the account strata_repl_r), both on TCP.
type failoverPair struct {
	p, r         *postgresqltest.Instance
	pPort, rPort int
	pdb          *sql.DB
}

const failoverPassword = "a-long-random-password"

func newFailoverPair(t *testing.T, ctx context.Context) *failoverPair {
	t.Helper()
	f := &failoverPair{p: postgresqltest.NewT(t), r: postgresqltest.NewT(t), pPort: freePort(t), rPort: freePort(t)}
	if err := f.p.ListenTCP(f.pPort); err != nil {
		t.Fatal(err)
	}
	if err := f.r.ListenTCP(f.rPort); err != nil {
		t.Fatal(err)
	}
	servertest.MustPrepare(t, f.p.Manager, wire.PrepareArgs{Databases: []wire.Database{{Name: "shop"}}}, 2*time.Minute)
	f.pdb = admin(t, f.p, "shop")
	if _, err := f.pdb.Exec(`CREATE TABLE items (id serial PRIMARY KEY, v text, b bytea)`); err != nil {
		t.Fatal(err)
	}
	fillPG(t, f.pdb, 1000)
	mem := streamstest.NewMemory()
	seed, err := streamstest.Backup(ctx, &dispatch.Dispatcher{Manager: f.p.Manager, Streams: mem, Datastore: "postgresql"}, "seed", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.p.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_r", Password: failoverPassword}); err != nil {
		t.Fatal(err)
	}
	dd := &dispatch.Dispatcher{Manager: f.r.Manager, Streams: mem, Datastore: "postgresql"}
	if _, err := streamstest.Restore(ctx, dd, mem, "restore-r", wire.RestoreArgs{Standby: true}, mem.Stored("seed", seed)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: f.pPort, Account: "strata_repl_r", Password: failoverPassword}); err != nil {
		t.Fatal(err)
	}
	return f
}

// caughtUp waits until R received P's current WAL position.
func (f *failoverPair) caughtUp(t *testing.T, ctx context.Context) {
	t.Helper()
	var want string
	if err := admin(t, f.p, "postgres").QueryRow(`SELECT pg_current_wal_lsn()::text`).Scan(&want); err != nil {
		t.Fatal(err)
	}
	rdb := admin(t, f.r, "postgres")
	waitUntil(t, time.Minute, "the standby received the primary's WAL", func() bool {
		var ok bool
		rdb.QueryRow(`SELECT coalesce(pg_last_wal_receive_lsn() >= $1::pg_lsn, false)`, want).Scan(&ok)
		return ok
	})
}

// kill ends P's postmaster with SIGKILL (a crash: no shutdown
// checkpoint) and waits for its backends to go.
func (f *failoverPair) kill(t *testing.T) {
	t.Helper()
	if err := f.p.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the killed primary's processes gone", func() bool {
		out, _ := exec.Command("pgrep", "-f", "config_file="+f.p.Config.ConfigFile).Output()
		return strings.TrimSpace(string(out)) == ""
	})
}

// killLeavingABackend is kill with one of P's backends stopped first
// (SIGSTOP) and let go 2 s after the postmaster died: until it ends, the
// data directory's shared memory is still in use, as it is for a moment
// after any crash.
func (f *failoverPair) killLeavingABackend(t *testing.T, ctx context.Context) {
	t.Helper()
	conn, err := admin(t, f.p, "shop").Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := conn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL); syscall.Kill(pid, syscall.SIGCONT); conn.Close() })
	f.kill(t)
	time.AfterFunc(2*time.Second, func() { syscall.Kill(pid, syscall.SIGCONT) })
}

// failOverAfter is a failover in which P ran one statement R never
// received: R is stopped, P runs stmt and crashes, R comes back alone and
// is promoted at its fork, which it returns.
func (f *failoverPair) failOverAfter(t *testing.T, ctx context.Context, stmt string) string {
	t.Helper()
	if err := f.r.Manager.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pdb.Exec(stmt); err != nil {
		t.Fatal(err)
	}
	f.kill(t)
	if err := f.r.Manager.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	fork := forkLSN(t, ctx, f.r)
	if _, err := f.r.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{LSN: fork, TimeoutSeconds: 30}); err != nil {
		t.Fatal(err)
	}
	return fork
}

// forkLSN is what R received from P, as the controller reads it at a
// failover (its heartbeat's received_lsn while it streamed; a standby
// that restarted without its primary: what it replayed, all it has).
func forkLSN(t *testing.T, ctx context.Context, r *postgresqltest.Instance) string {
	t.Helper()
	st := replStatus(t, ctx, r)
	// A WAL receiver that restarted reports the start of the segment it
	// asks for, not what it has: the further of what it received and
	// what it replayed, as the controller's election takes.
	recv, err1 := postgresql.ParseLSN(st.ReceivedLSN)
	replayed, err2 := postgresql.ParseLSN(st.ReplayedLSN)
	switch {
	case err2 != nil && err1 != nil:
		t.Fatalf("the standby's status has no position: %+v", st)
	case err1 != nil || err2 == nil && replayed > recv:
		return st.ReplayedLSN
	}
	return st.ReceivedLSN
}

// tcpSession is an SQL session over TCP (TLS) as user, through pg_hba's
// host rules.
func tcpSession(port int, user, password, dbName string) (*sql.DB, error) {
	db, err := sql.Open("pgx", fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=require connect_timeout=10", port, user, password, dbName))
	if err != nil {
		return nil, err
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// A failover on two real servers: P crashes after R received all of its
// WAL, R is promoted and written to, P is started again as a primary and
// fenced (the fence's own transaction and an aborted insert write WAL
// past the fork, none of it committed data). rejoin_replication with the
// fork position rewinds P with pg_rewind and starts it as R's standby: it
// has R's rows, refuses writes, and R streams to it through its slot.
func TestRejoinWithAForkRewindsAFormerPrimaryThatRanPastIt(t *testing.T) {
	ctx := servertest.Context(t, 10*time.Minute)
	f := newFailoverPair(t, ctx)
	fillPG(t, f.pdb, 2000)
	f.caughtUp(t, ctx)
	f.kill(t)
	fork := forkLSN(t, ctx, f.r)
	if _, err := f.r.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{LSN: fork, TimeoutSeconds: 30}); err != nil {
		t.Fatal(err)
	}
	rdb := admin(t, f.r, "shop")
	if _, err := rdb.Exec(`INSERT INTO items (v) SELECT 'on R after the failover ' || g FROM generate_series(1, 100) g`); err != nil {
		t.Fatal(err)
	}
	// P's account on R: the role came with the data, the slot did not.
	if _, err := f.r.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_p", Password: failoverPassword}); err != nil {
		t.Fatal(err)
	}
	// The account reaches R's postgres database over TCP and may list and
	// read its files, as pg_rewind does; every other database stays
	// closed to it.
	if acct, err := tcpSession(f.rPort, "strata_repl_p", failoverPassword, "postgres"); err != nil {
		t.Fatalf("the replication account in the postgres database: %v", err)
	} else {
		if n := queryInt(t, acct, `SELECT count(*) FROM pg_ls_dir('.', false, false) WHERE pg_ls_dir = 'global'`); n != 1 {
			t.Fatalf("pg_ls_dir as the replication account found %d global directories", n)
		}
		if n := queryInt(t, acct, `SELECT length(pg_read_binary_file('global/pg_control', 0, 16, false))`); n != 16 {
			t.Fatalf("pg_read_binary_file as the replication account read %d bytes", n)
		}
		acct.Close()
	}
	if _, err := tcpSession(f.rPort, "strata_repl_p", failoverPassword, "shop"); err == nil || !strings.Contains(err.Error(), "pg_hba.conf rejects") {
		t.Fatalf("the replication account in a user database: %v", err)
	}

	// P comes back as a primary (its VM rebooted), fenced as the
	// controller does — twice, through the agent's dispatcher, whose
	// durability flush after each is a transaction of its own — and
	// writes WAL past the fork.
	waitUntil(t, time.Minute, "the old primary started again", func() bool { return f.p.Manager.Restart(ctx) == nil })
	pd := &dispatch.Dispatcher{Manager: f.p.Manager, Datastore: "postgresql"}
	fenceArgs, _ := json.Marshal(wire.SetReadOnlyArgs{ReadOnly: true})
	for i := range 2 {
		if res := pd.Run(ctx, wire.Operation{ID: fmt.Sprintf("fence-%d", i), Kind: wire.KindSetReadOnly, Args: fenceArgs}); res.Error != nil {
			t.Fatalf("fence %d: %v", i, res.Error)
		}
	}
	pdb := admin(t, f.p, "shop")
	tx, err := pdb.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`SET TRANSACTION READ WRITE`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO items (v, b) SELECT 'rolled back on P', decode(md5(g::text), 'hex') FROM generate_series(1, 3000) g`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if _, err := pdb.Exec(`CHECKPOINT`); err != nil {
		t.Fatal(err)
	}
	var pEnd string
	if err := pdb.QueryRow(`SELECT pg_current_wal_lsn()::text`).Scan(&pEnd); err != nil {
		t.Fatal(err)
	}
	// Without the fork position the old refusal stands.
	back := wire.StartReplicationArgs{Host: "127.0.0.1", Port: f.rPort, Account: "strata_repl_p", Password: failoverPassword}
	_, err = f.p.Manager.RejoinReplication(ctx, back)
	wantCode(t, err, wire.CodeFailedPrecondition, "runs as a primary", "pg_rewind")

	back.ForkLSN = fork
	// A source pg_rewind cannot use (a wrong password) is found by the
	// dry run: nothing is rewound, and the server runs again as it did.
	wrong := back
	wrong.Password = "not-the-password"
	_, err = f.p.Manager.RejoinReplication(ctx, wrong)
	wantCode(t, err, wire.CodeFailedPrecondition, "pg_rewind --dry-run", "not rewound", "password authentication failed")
	if st := replStatus(t, ctx, f.p); st.Role != wire.RoleStandalone || !st.ReadOnly || st.LSN == "" {
		t.Fatalf("the old primary after a failed dry run: %+v", st)
	}
	if n := queryInt(t, admin(t, f.p, "shop"), `SELECT count(*) FROM items WHERE v LIKE 'on R after the failover %'`); n != 0 {
		t.Fatalf("the failed dry run brought %d of R's rows", n)
	}
	start := time.Now()
	st, err := f.p.Manager.RejoinReplication(ctx, back)
	if err != nil {
		f.p.LogTail(t)
		t.Fatal(err)
	}
	rejoinTook := time.Since(start)
	if st.Role != wire.RoleReplica || st.SourcePort != f.rPort || !st.ReadOnly {
		t.Fatalf("the rewound old primary's status %+v", st)
	}
	pdb = admin(t, f.p, "shop")
	seen := waitUntil(t, time.Minute, "R's rows on the rewound old primary", func() bool {
		return queryInt(t, pdb, `SELECT count(*) FROM items WHERE v LIKE 'on R after the failover %'`) == 100
	})
	if _, err := rdb.Exec(`INSERT INTO items (v) VALUES ('after the rejoin')`); err != nil {
		t.Fatal(err)
	}
	streamed := waitUntil(t, time.Minute, "a later write on the rewound old primary", func() bool {
		return queryInt(t, pdb, `SELECT count(*) FROM items WHERE v = 'after the rejoin'`) == 1
	})
	if a, b := pgChecksums(t, rdb), pgChecksums(t, pdb); a != b {
		t.Fatalf("the rewound old primary differs from the new primary:\n%s\n%s", a, b)
	}
	_, err = pdb.Exec(`INSERT INTO items (v) VALUES ('on the rewound old primary')`)
	wantReadOnlyRefusal(t, err, "a write on the rewound old primary")
	if got := servertest.QueryStrings(t, admin(t, f.r, "postgres"), `SELECT r.application_name || ' ' || r.state || ' ' || s.active
		FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid`); strings.Join(got, "|") != "strata_repl_p streaming true" {
		t.Fatalf("the new primary's replicas: %q", got)
	}
	// The agent's files: the link replaced the fence, standby.signal is
	// in place, no rewind marker, no slot of P's old life.
	link, err := os.ReadFile(filepath.Join(filepath.Dir(f.p.Config.OverridesFile), "strata-replication.conf"))
	if err != nil || !strings.Contains(string(link), fmt.Sprintf("# source: 127.0.0.1 %d strata_repl_p", f.rPort)) || strings.Contains(string(link), "fence") {
		t.Fatalf("the link file after the rewind: %q, %v", link, err)
	}
	for _, c := range []struct {
		path string
		want bool
	}{
		{filepath.Join(f.p.Config.DataDir, "standby.signal"), true},
		{filepath.Join(filepath.Dir(f.p.Config.OverridesFile), "strata-rewind-in-progress"), false},
	} {
		if _, err := os.Stat(c.path); (err == nil) != c.want {
			t.Fatalf("%s: %v, want present %v", c.path, err, c.want)
		}
	}
	if slots, _ := os.ReadDir(filepath.Join(f.p.Config.DataDir, "pg_replslot")); len(slots) != 0 {
		t.Fatalf("slots left on the rewound old primary: %v", slots)
	}
	// A re-run (a lost answer) finds a standby of the same source.
	if st, err := f.p.Manager.RejoinReplication(ctx, back); err != nil || !st.IORunning || st.SourcePort != f.rPort {
		t.Fatalf("rejoin re-run: %+v, %v", st, err)
	}
	t.Logf("FIGURE pg_rewind rejoin: the old primary ran from the fork %s to %s; rejoin_replication (count, fast stop, dry run, pg_rewind, start as a standby) took %s",
		fork, pEnd, rejoinTook.Round(time.Millisecond))
	t.Logf("FIGURE pg_rewind rejoin: the new primary's rows were on the old primary %s after the rejoin returned; a later write streamed in %s",
		seen.Round(time.Millisecond), streamed.Round(time.Millisecond))
}

// A former primary that committed a transaction its standby never
// received: R stopped while P committed a row, P crashed, R promoted.
// The rejoin with R's fork position counts the commit in P's WAL and
// refuses, changing nothing: P's data directory is as the crash left it,
// and P started alone still has the row.
func TestRejoinWithAForkRefusesAFormerPrimaryThatCommittedPastIt(t *testing.T) {
	ctx := servertest.Context(t, 10*time.Minute)
	f := newFailoverPair(t, ctx)
	f.caughtUp(t, ctx)
	fork := f.failOverAfter(t, ctx, `INSERT INTO items (v) VALUES ('only on P')`)
	if n := queryInt(t, admin(t, f.r, "shop"), `SELECT count(*) FROM items WHERE v = 'only on P'`); n != 0 {
		t.Fatalf("the promoted standby has the row it never received (%d)", n)
	}
	if _, err := f.r.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_p", Password: failoverPassword}); err != nil {
		t.Fatal(err)
	}
	before := dirListing(t, f.p.Config.DataDir)
	etc := dirListing(t, filepath.Dir(f.p.Config.OverridesFile))
	start := time.Now()
	_, err := f.p.Manager.RejoinReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: f.rPort, Account: "strata_repl_p", Password: failoverPassword, ForkLSN: fork})
	wantCode(t, err, wire.CodeFailedPrecondition, "committed 1 transaction(s)", "fork "+fork, "drop them", "nothing was changed")
	t.Logf("FIGURE pg_rewind rejoin refused in %s: %v", time.Since(start).Round(time.Millisecond), err)
	if after := dirListing(t, f.p.Config.DataDir); after != before {
		t.Fatalf("the refused rejoin changed the data directory:\n%s\n---\n%s", before, after)
	}
	if after := dirListing(t, filepath.Dir(f.p.Config.OverridesFile)); after != etc {
		t.Fatalf("the refused rejoin changed the configuration:\n%s\n---\n%s", etc, after)
	}
	if st := f.p.Manager.Status(ctx); st.Status != wire.StatusShutdown && st.Status != wire.StatusCrashed {
		t.Fatalf("the refused old primary is %+v, want it stopped as it was", st)
	}
	if err := f.p.Manager.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, admin(t, f.p, "shop"), `SELECT count(*) FROM items WHERE v = 'only on P'`); n != 1 {
		t.Fatalf("the old primary lost its row after a refused rejoin (%d)", n)
	}
}

// dirListing is every file under dir with its size and modification
// time: what a refusal must leave alone.
func dirListing(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %d %s\n", p, fi.Size(), fi.ModTime().Format(time.RFC3339Nano))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// The same failover with the old primary left as the crash left it (its
// server not started again): the rejoin finishes its crash recovery in
// single-user mode (an end-of-recovery checkpoint past the fork), rewinds
// it and starts it as R's standby.
func TestRejoinWithAForkRewindsACrashedFormerPrimaryWhileItIsStopped(t *testing.T) {
	ctx := servertest.Context(t, 10*time.Minute)
	f := newFailoverPair(t, ctx)
	fillPG(t, f.pdb, 2000)
	f.caughtUp(t, ctx)
	f.kill(t)
	fork := forkLSN(t, ctx, f.r)
	if _, err := f.r.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{LSN: fork, TimeoutSeconds: 30}); err != nil {
		t.Fatal(err)
	}
	rdb := admin(t, f.r, "shop")
	if _, err := rdb.Exec(`INSERT INTO items (v) VALUES ('on R after the failover')`); err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_p", Password: failoverPassword}); err != nil {
		t.Fatal(err)
	}
	if st := f.p.Manager.Status(ctx); st.Status != wire.StatusCrashed {
		t.Fatalf("the killed old primary is %+v", st)
	}
	back := wire.StartReplicationArgs{Host: "127.0.0.1", Port: f.rPort, Account: "strata_repl_p", Password: failoverPassword, ForkLSN: fork}
	took := f.rewoundFollows(t, ctx, back, rdb, "on R after the failover")
	t.Logf("FIGURE pg_rewind rejoin of a crashed, stopped old primary (crash recovery, dry run, pg_rewind, start as a standby): %s", took.Round(time.Millisecond))
}

// rewoundFollows rejoins P with back (a fork: rewound), and checks that
// it is R's standby, has R's row rRow and R's exact data, and refuses
// writes. It returns how long the rejoin took.
func (f *failoverPair) rewoundFollows(t *testing.T, ctx context.Context, back wire.StartReplicationArgs, rdb *sql.DB, rRow string) time.Duration {
	t.Helper()
	start := time.Now()
	st, err := f.p.Manager.RejoinReplication(ctx, back)
	if err != nil {
		f.p.LogTail(t)
		t.Fatal(err)
	}
	took := time.Since(start)
	if st.Role != wire.RoleReplica || st.SourcePort != f.rPort {
		t.Fatalf("the rewound old primary's status %+v", st)
	}
	pdb := admin(t, f.p, "shop")
	waitUntil(t, time.Minute, "R's row on the rewound old primary", func() bool {
		return queryInt(t, pdb, `SELECT count(*) FROM items WHERE v = $1`, rRow) == 1
	})
	if a, b := pgChecksums(t, rdb), pgChecksums(t, pdb); a != b {
		t.Fatalf("the rewound old primary differs from the new primary:\n%s\n%s", a, b)
	}
	_, err = pdb.Exec(`INSERT INTO items (v) VALUES ('on the rewound old primary')`)
	wantReadOnlyRefusal(t, err, "a write on the rewound old primary")
	return took
}

// A former primary whose only commits past the fork are an ANALYZE's
// (autovacuum's, for one: the planner's statistics, computed again by the
// next ANALYZE) is rewound, not refused.
func TestRejoinWithAForkRewindsAFormerPrimaryWhoseOnlyCommitsPastItAreStatistics(t *testing.T) {
	ctx := servertest.Context(t, 10*time.Minute)
	f := newFailoverPair(t, ctx)
	fillPG(t, f.pdb, 500)
	f.caughtUp(t, ctx)
	fork := f.failOverAfter(t, ctx, `ANALYZE items`)
	if _, err := f.r.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_p", Password: failoverPassword}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.p.Manager.RejoinReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: f.rPort, Account: "strata_repl_p", Password: failoverPassword, ForkLSN: fork}); err != nil {
		t.Fatalf("rejoin of a former primary that only analyzed past the fork: %v", err)
	}
	if st, err := f.p.Manager.ReplicationStatus(ctx); err != nil || st.Role != wire.RoleReplica {
		t.Fatalf("after the rejoin: %+v %v", st, err)
	}
}

// A switchover's old primary that crashed after the switchover stopped
// it (its VM rebooted, so its server started again — fenced, as a
// primary — and was then killed): its WAL runs past the fork, and the
// plain rejoin is refused. The promotion reported the fork (its new
// timeline's switch point: the end of P's WAL that R replayed, checked
// here against R's own replay position), and the rejoin with it rewinds
// P, which follows R.
func TestASwitchedOverPrimaryThatCrashedAfterItsStopRejoinsAtThePromotionsFork(t *testing.T) {
	ctx := servertest.Context(t, 10*time.Minute)
	f := newFailoverPair(t, ctx)
	fillPG(t, f.pdb, 500)
	f.caughtUp(t, ctx)
	// The switchover: P fenced (through the dispatcher, as the
	// controller does) and stopped cleanly, R promoted at the fence.
	pd := &dispatch.Dispatcher{Manager: f.p.Manager, Datastore: "postgresql"}
	fenceArgs, _ := json.Marshal(wire.SetReadOnlyArgs{ReadOnly: true})
	res := pd.Run(ctx, wire.Operation{ID: "fence", Kind: wire.KindSetReadOnly, Args: fenceArgs})
	var fenced wire.ReplicationStatus
	if res.Error != nil || res.Decode(&fenced) != nil || fenced.LSN == "" {
		t.Fatalf("fence: %+v", res)
	}
	if err := f.p.Manager.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(filepath.Dir(f.p.Config.InitDB), "pg_controldata"), "-D", f.p.Config.DataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_controldata: %v: %s", err, out)
	}
	var checkpoint uint64
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "Latest checkpoint location" {
			checkpoint, err = postgresql.ParseLSN(strings.TrimSpace(v))
		}
	}
	if checkpoint == 0 || err != nil {
		t.Fatalf("P's shutdown checkpoint: %v\n%s", err, out)
	}
	rpg := admin(t, f.r, "postgres")
	var replayed string
	waitUntil(t, time.Minute, "R replayed P's shutdown checkpoint", func() bool {
		rpg.QueryRow(`SELECT pg_last_wal_replay_lsn()::text`).Scan(&replayed)
		v, err := postgresql.ParseLSN(replayed)
		return err == nil && v > checkpoint
	})
	prom, err := f.r.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{LSN: fenced.LSN, TimeoutSeconds: 30})
	if err != nil {
		t.Fatal(err)
	}
	if prom.ForkLSN != replayed {
		t.Fatalf("the promotion reported the fork %q; R had replayed P's WAL to %s", prom.ForkLSN, replayed)
	}
	// A re-run (a lost answer) reports the same fork.
	if again, err := f.r.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{LSN: fenced.LSN, TimeoutSeconds: 30}); err != nil || again.ForkLSN != prom.ForkLSN {
		t.Fatalf("promote re-run: fork %q, %v; want %s", again.ForkLSN, err, prom.ForkLSN)
	}
	rdb := admin(t, f.r, "shop")
	if _, err := rdb.Exec(`INSERT INTO items (v) VALUES ('on R after the switchover')`); err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_p", Password: failoverPassword}); err != nil {
		t.Fatal(err)
	}

	// P's VM reboots: its server starts again, still fenced, then dies.
	if err := f.p.Manager.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = admin(t, f.p, "shop").Exec(`INSERT INTO items (v) VALUES ('on P after the switchover')`)
	wantReadOnlyRefusal(t, err, "a write on the restarted old primary")
	// A backend outlives the postmaster for a moment: the crash
	// recovery waits for it to let go of the shared memory.
	f.killLeavingABackend(t, ctx)
	back := wire.StartReplicationArgs{Host: "127.0.0.1", Port: f.rPort, Account: "strata_repl_p", Password: failoverPassword}
	_, err = f.p.Manager.RejoinReplication(ctx, back)
	wantCode(t, err, wire.CodeFailedPrecondition, `"in production"`, "pg_rewind")
	back.ForkLSN = prom.ForkLSN
	took := f.rewoundFollows(t, ctx, back, rdb, "on R after the switchover")
	t.Logf("FIGURE a switchover's crashed old primary rejoined at the promotion's fork %s (crash recovery, dry run, pg_rewind, start as a standby): %s", prom.ForkLSN, took.Round(time.Millisecond))
}

// A timeline history file's last entry is the fork; comments and blank
// lines are skipped, a file without an entry or with a bad one is an
// error.
func TestHistorySwitchPointReadsTheLastEntry(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"1\t0/3000148\tno recovery target specified\n", "0/3000148", ""},
		{"1\t0/3000148\tno recovery target specified\n\n2\t1/A0000D8\tno recovery target specified\n", "1/A0000D8", ""},
		{"# a comment\n1\t0/0301A2B0\tat restore point\n", "0/301A2B0", ""},
		{"", "", "no entry"},
		{"x\t0/3000148\treason\n", "", "parent timeline"},
		{"1\t03000148\treason\n", "", "no slash"},
	} {
		got, err := postgresql.HistorySwitchPoint(c.in)
		if got != c.want || (err == nil) != (c.err == "") || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("HistorySwitchPoint(%q) = %q, %v; want %q, error with %q", c.in, got, err, c.want, c.err)
		}
	}
}

// pg_waldump's records past a fork: the fence's own commit and a
// statistics-only transaction are left out; a transaction that wrote a
// table counts, named by the relations it wrote.
func TestClassifyPastCommitsLeavesOutTheFenceAndStatistics(t *testing.T) {
	out := strings.Join([]string{
		"rmgr: Heap        len (rec/tot):     54/   218, tx:        740, lsn: 0/03000100, prev 0/030000C8, desc: INSERT off 3 flags 0x00, blkref #0: rel 1663/5/2619 blk 12 FPW",
		"rmgr: Btree       len (rec/tot):     64/    64, tx:        740, lsn: 0/03000200, prev 0/03000100, desc: INSERT_LEAF off 40, blkref #0: rel 1663/5/2696 blk 4",
		"rmgr: Heap        len (rec/tot):     76/    76, tx:        740, lsn: 0/03000220, prev 0/03000200, desc: INPLACE off 9, blkref #0: rel 1663/5/1259 blk 1",
		"rmgr: Transaction len (rec/tot):     34/    34, tx:        740, lsn: 0/03000240, prev 0/03000200, desc: COMMIT 2026-12-05 21:45:00.000000 UTC",
		"rmgr: Transaction len (rec/tot):     34/    34, tx:        741, lsn: 0/03000280, prev 0/03000240, desc: COMMIT 2026-12-05 21:45:01.000000 UTC",
		"rmgr: Heap        len (rec/tot):     59/    59, tx:        742, lsn: 0/030002C0, prev 0/03000280, desc: INSERT off 4 flags 0x00, blkref #0: rel 1663/16384/16390 blk 0",
		"rmgr: Transaction len (rec/tot):     34/    34, tx:        742, lsn: 0/03000300, prev 0/030002C0, desc: COMMIT 2026-12-05 21:45:02.000000 UTC",
		"rmgr: Heap        len (rec/tot):     59/    59, tx:        743, lsn: 0/03000340, prev 0/03000300, desc: UPDATE off 4 xmax 743, blkref #0: rel 1663/16384/2619 blk 0, blkref #1: rel 1663/16384/16390 blk 1",
		"rmgr: Transaction len (rec/tot):     34/    34, tx:        743, lsn: 0/03000380, prev 0/03000340, desc: COMMIT 2026-12-05 21:45:03.000000 UTC",
	}, "\n")
	count, stats, first, rels := postgresql.ClassifyPastCommits(out, map[uint32]bool{741: true})
	if count != 2 || stats != 1 || first != "0/3000300" || rels != "16390" {
		t.Fatalf("classified %d commits (the first at %s, writing %q) and %d of statistics; want 2 (the first at 0/3000300, writing 16390) and 1",
			count, first, rels, stats)
	}
}

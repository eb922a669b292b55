package postgresql_test

import (
	"context"
	"database/sql"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"strata/agent/datastore"
	"strata/agent/datastore/postgresql"
	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/datastore/servertest"
	"strata/agent/dispatch"
	"strata/agent/streams/streamstest"
	"strata/agent/wire"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitUntil polls cond every 20 ms until it holds or d passes, and
// returns how long it took.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func replStatus(t *testing.T, ctx context.Context, inst *postgresqltest.Instance) wire.ReplicationStatus {
	t.Helper()
	st, err := inst.Manager.ReplicationStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func queryInt(t *testing.T, db *sql.DB, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func wantReadOnlyRefusal(t *testing.T, err error, what string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), "read-only transaction") {
		t.Fatalf("%s: want the server's read-only refusal, got %v", what, err)
	}
}

// Two real servers: a primary on TCP, and replicas restored from a seed
// backup of it with the manager's own restore (standby), attached with
// start_replication. Rows written before and after the link arrive; the
// replica refuses writes; lag in bytes and seconds shows a paused replay
// and goes back to zero; a second start naming another source is
// refused; a promotion that cannot reach its position times out changing
// nothing; a fenced primary's position is reached and the promoted
// replica has every row and is writable; a detached replica is writable
// and cannot follow again; dropping the account removes slot and role.
func TestReplicaRestoredAsAStandbyFollowsThePrimaryPromotesAndDetaches(t *testing.T) {
	ctx := servertest.Context(t, 10*time.Minute)
	src := postgresqltest.NewT(t)
	port := freePort(t)
	if err := src.ListenTCP(port); err != nil {
		t.Fatal(err)
	}
	servertest.MustPrepare(t, src.Manager, wire.PrepareArgs{Databases: []wire.Database{{Name: "shop"}},
		Users: []wire.User{{Name: "app", Password: "app-secret", Databases: []string{"shop"}}}}, 2*time.Minute)
	db := admin(t, src, "shop")
	for _, q := range []string{`CREATE TABLE items (id serial PRIMARY KEY, v text, b bytea)`, `GRANT ALL ON items, items_id_seq TO app`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	fillPG(t, db, 2000)

	mem := streamstest.NewMemory()
	d := &dispatch.Dispatcher{Manager: src.Manager, Streams: mem, Datastore: "postgresql"}
	seed, err := streamstest.Backup(ctx, d, "seed", nil)
	if err != nil {
		t.Fatal(err)
	}
	fillPG(t, db, 500) // after the seed: only streaming brings these

	// The accounts, after the seed as the controller makes them; the
	// password has a quote and a backslash, which both the SQL and the
	// conninfo in postgresql.conf must carry.
	const pw = `pw'with\back"slash`
	var first wire.ReplicationSourceResult
	for _, acct := range []string{"strata_repl_r1", "strata_repl_r2"} {
		if first, err = src.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: acct, Password: pw}); err != nil {
			t.Fatal(err)
		}
	}
	if wire.CheckLSN(first.LSN) != nil || first.LSN == "" {
		t.Fatalf("account result %+v", first)
	}
	pdb := admin(t, src, "postgres")
	verifier := func() string {
		return strings.Join(servertest.QueryStrings(t, pdb, `SELECT rolpassword FROM pg_authid WHERE rolname = 'strata_repl_r1'`), "")
	}
	before := verifier()
	if _, err := src.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_r1", Password: pw}); err != nil {
		t.Fatal(err)
	}
	if verifier() == before {
		t.Fatal("a re-run kept the old password verifier")
	}
	if got := servertest.QueryStrings(t, pdb, `SELECT r.rolname || ' ' || r.rolcanlogin || ' ' || r.rolreplication || ' ' || r.rolsuper || ' ' || r.rolcreaterole || ' ' || r.rolcreatedb || ' ' ||
		pg_has_role(r.oid, 'strata_replication', 'MEMBER') || ' ' || (s.slot_type IS NOT DISTINCT FROM 'physical')
		FROM pg_roles r LEFT JOIN pg_replication_slots s ON s.slot_name = r.rolname WHERE r.rolname LIKE 'strata\_repl\_%' ORDER BY 1`); strings.Join(got, "|") !=
		"strata_repl_r1 true true false false false true true|strata_repl_r2 true true false false false true true" {
		t.Fatalf("accounts and slots: %q", got)
	}
	// A re-run keeps the grants pg_rewind needs on a source.
	if got := servertest.QueryStrings(t, pdb, `SELECT f || ' ' || has_function_privilege('strata_repl_r1', f, 'EXECUTE') FROM unnest(ARRAY[
		'pg_ls_dir(text, boolean, boolean)', 'pg_stat_file(text, boolean)', 'pg_read_binary_file(text)', 'pg_read_binary_file(text, bigint, bigint, boolean)']) f`); strings.Join(got, "|") !=
		"pg_ls_dir(text, boolean, boolean) true|pg_stat_file(text, boolean) true|pg_read_binary_file(text) true|pg_read_binary_file(text, bigint, bigint, boolean) true" {
		t.Fatalf("the account's rewind grants after a re-run: %q", got)
	}
	// The account streams WAL and reaches the postgres database over
	// TCP only (rewind_test.go): no SQL session over the socket; users
	// never see it.
	if _, err := connect(t, src, "strata_repl_r1", pw, "postgres"); err == nil || !strings.Contains(err.Error(), "pg_hba.conf rejects") {
		t.Fatalf("an SQL session as the replication account: %v", err)
	}
	users, err := src.Manager.ListUsers(ctx)
	if err != nil || len(users) != 1 || users[0].Name != "app" {
		t.Fatalf("users %+v, %v", users, err)
	}

	// Two replicas seeded from the one backup, restored as standbys.
	restoreReplica := func(id string) *postgresqltest.Instance {
		dst := postgresqltest.NewT(t)
		dd := &dispatch.Dispatcher{Manager: dst.Manager, Streams: mem, Datastore: "postgresql"}
		if _, err := streamstest.Restore(ctx, dd, mem, "restore-"+id, wire.RestoreArgs{Standby: true}, mem.Stored("seed", seed)); err != nil {
			t.Fatal(err)
		}
		st := replStatus(t, ctx, dst)
		if st.Role != wire.RoleReplica || !st.ReadOnly || !strings.Contains(st.LastError, "no source yet") {
			t.Fatalf("a standby restore's status: %+v", st)
		}
		return dst
	}
	r1, r2 := restoreReplica("r1"), restoreReplica("r2")
	r1db := admin(t, r1, "shop")
	if n := queryInt(t, r1db, `SELECT count(*) FROM items`); n != 2000 {
		t.Fatalf("the seed has %d rows, want 2000", n)
	}

	link := wire.StartReplicationArgs{Host: "127.0.0.1", Port: port, Account: "strata_repl_r1", Password: pw}
	start := time.Now()
	st, err := r1.Manager.StartReplication(ctx, link)
	if err != nil {
		t.Fatal(err)
	}
	startTook := time.Since(start)
	if st.Role != wire.RoleReplica || st.SourceHost != "127.0.0.1" || st.SourcePort != port || !st.ReadOnly {
		t.Fatalf("status after start: %+v", st)
	}
	caughtUp := waitUntil(t, time.Minute, "the rows written after the seed on the replica", func() bool {
		return queryInt(t, r1db, `SELECT count(*) FROM items`) == 2500
	})
	t.Logf("start_replication took %s; the rows written after the seed were on the replica %s after it returned",
		startTook, caughtUp)
	if a, b := pgChecksums(t, db), pgChecksums(t, r1db); a != b {
		t.Fatalf("replica differs:\n%s\n%s", a, b)
	}
	// A row written now arrives by streaming.
	if _, err := db.Exec(`INSERT INTO items (v) VALUES ('live')`); err != nil {
		t.Fatal(err)
	}
	visible := waitUntil(t, 30*time.Second, "a live row on the replica", func() bool {
		return queryInt(t, r1db, `SELECT count(*) FROM items WHERE v = 'live'`) == 1
	})
	t.Logf("a row committed on the primary was visible on the replica after %s", visible)
	st = replStatus(t, ctx, r1)
	if !st.IORunning || !st.SQLRunning || st.LastError != "" || st.ReplayedLSN == "" || st.ReceivedLSN == "" || st.LSN != st.ReplayedLSN {
		t.Fatalf("a streaming replica's status: %+v", st)
	}
	// The link is TLS, named after the account, through its slot.
	if got := servertest.QueryStrings(t, pdb, `SELECT r.application_name || ' ' || r.state || ' ' || l.ssl || ' ' || s.active
		FROM pg_stat_replication r JOIN pg_stat_ssl l USING (pid) JOIN pg_replication_slots s ON s.active_pid = r.pid`); strings.Join(got, "|") != "strata_repl_r1 streaming true true" {
		t.Fatalf("the primary's view of its replica: %q", got)
	}

	// The server refuses writes on a replica, the admin's included.
	_, err = r1db.Exec(`INSERT INTO items (v) VALUES ('on the replica')`)
	wantReadOnlyRefusal(t, err, "an insert on the replica")
	_, err = r1db.Exec(`CREATE TABLE nope (k int)`)
	wantReadOnlyRefusal(t, err, "DDL on the replica")

	// Lag: replay paused, the primary writes, the figures grow; resumed,
	// they go back to zero.
	if _, err := r1db.Exec(`SELECT pg_wal_replay_pause()`); err != nil {
		t.Fatal(err)
	}
	fillPG(t, db, 3000)
	time.Sleep(1100 * time.Millisecond)
	var lagged wire.ReplicationStatus
	waitUntil(t, 30*time.Second, "lag in bytes and seconds", func() bool {
		lagged = replStatus(t, ctx, r1)
		return lagged.BytesBehind != nil && *lagged.BytesBehind > 0 && lagged.SecondsBehind != nil && *lagged.SecondsBehind >= 1
	})
	if lagged.SQLRunning || !lagged.IORunning {
		t.Fatalf("paused replay's status: %+v", lagged)
	}
	if _, err := r1db.Exec(`SELECT pg_wal_replay_resume()`); err != nil {
		t.Fatal(err)
	}
	took := waitUntil(t, time.Minute, "lag back to zero", func() bool {
		s := replStatus(t, ctx, r1)
		return s.BytesBehind != nil && *s.BytesBehind == 0 && s.SecondsBehind != nil && *s.SecondsBehind == 0
	})
	t.Logf("paused replay: %d bytes and %d s behind; resumed, back to zero in %s", *lagged.BytesBehind, *lagged.SecondsBehind, took)

	// A re-run with the same source changes nothing; another source is
	// refused; a repoint or a start on the primary is refused.
	if _, err := r1.Manager.StartReplication(ctx, link); err != nil {
		t.Fatal(err)
	}
	other := link
	other.Port = port + 1
	_, err = r1.Manager.StartReplication(ctx, other)
	wantCode(t, err, wire.CodeFailedPrecondition, "follows 127.0.0.1:", "detach it first")
	if st := replStatus(t, ctx, r1); st.SourcePort != port {
		t.Fatalf("a refused start moved the link: %+v", st)
	}
	repoint := link
	repoint.Repoint = true
	_, err = src.Manager.StartReplication(ctx, repoint)
	wantCode(t, err, wire.CodeFailedPrecondition, "follows no source")
	_, err = src.Manager.StartReplication(ctx, link)
	wantCode(t, err, wire.CodeFailedPrecondition, "not a standby")

	// A promotion whose position never comes times out and changes
	// nothing.
	_, err = r1.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{LSN: "FF/0", TimeoutSeconds: 1})
	wantCode(t, err, wire.CodeFailedPrecondition, "did not replay the primary's position FF/0 within 1 s", "nothing was changed")
	if st := replStatus(t, ctx, r1); st.Role != wire.RoleReplica || !st.IORunning {
		t.Fatalf("after a timed-out promotion: %+v", st)
	}
	_, err = r1db.Exec(`INSERT INTO items (v) VALUES ('still a replica')`)
	wantReadOnlyRefusal(t, err, "an insert after a timed-out promotion")

	// Switchover: an application session on the primary, the fence ends
	// it and new transactions are read-only; the replica promoted at the
	// fence's position has every row and takes writes.
	appdb, err := connect(t, src, "app", "app-secret", "shop")
	if err != nil {
		t.Fatal(err)
	}
	session, err := appdb.Conn(ctx) // one session, which the fence ends
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	if _, err := session.ExecContext(ctx, `INSERT INTO items (v) VALUES ('by app before the fence')`); err != nil {
		t.Fatal(err)
	}
	fenceStart := time.Now()
	fenced, err := src.Manager.SetReadOnly(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	fenceTook := time.Since(fenceStart)
	if !fenced.ReadOnly || fenced.Role != wire.RoleStandalone || wire.CheckLSN(fenced.LSN) != nil || fenced.LSN == "" {
		t.Fatalf("fenced status %+v", fenced)
	}
	if _, err := session.ExecContext(ctx, `SELECT 1`); err == nil {
		t.Fatal("the application's session outlived the fence")
	}
	if n := queryInt(t, pdb, `SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'`); n != 0 {
		t.Fatalf("%d application sessions after the fence", n)
	}
	appdb2, err := connect(t, src, "app", "app-secret", "shop")
	if err != nil {
		t.Fatal(err)
	}
	_, err = appdb2.Exec(`INSERT INTO items (v) VALUES ('by app after the fence')`)
	wantReadOnlyRefusal(t, err, "an insert on the fenced primary")
	promoteStart := time.Now()
	promoted, err := r1.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{LSN: fenced.LSN, TimeoutSeconds: 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fence took %s (position %s); promote at it took %s", fenceTook, fenced.LSN, time.Since(promoteStart))
	if promoted.Role != wire.RoleStandalone || promoted.ReadOnly {
		t.Fatalf("promoted status %+v", promoted)
	}
	r1db = admin(t, r1, "shop") // a promotion keeps sessions; a fresh one for clarity
	if a, b := pgChecksums(t, db), pgChecksums(t, r1db); a != b {
		t.Fatalf("the promoted replica differs from the fenced primary:\n%s\n%s", a, b)
	}
	if _, err := r1db.Exec(`INSERT INTO items (v) VALUES ('on the new primary')`); err != nil {
		t.Fatalf("a write on the promoted replica: %v", err)
	}
	// A re-run finds the position reached and changes nothing more.
	if st, err := r1.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{LSN: fenced.LSN, TimeoutSeconds: 1}); err != nil || st.Role != wire.RoleStandalone {
		t.Fatalf("promote re-run: %+v, %v", st, err)
	}
	// The old primary lifts its fence (a switchover rolled back).
	if st, err := src.Manager.SetReadOnly(ctx, false); err != nil || st.ReadOnly {
		t.Fatalf("lift the fence: %+v, %v", st, err)
	}
	if _, err := appdb2.Exec(`INSERT INTO items (v) VALUES ('by app after the fence was lifted')`); err != nil {
		t.Fatalf("a write after the fence was lifted: %v", err)
	}

	// Detach: the second replica, attached then detached, is writable
	// and cannot follow again.
	link2 := link
	link2.Account = "strata_repl_r2"
	if _, err := r2.Manager.StartReplication(ctx, link2); err != nil {
		t.Fatal(err)
	}
	r2db := admin(t, r2, "shop")
	waitUntil(t, time.Minute, "the second replica caught up", func() bool {
		return queryInt(t, r2db, `SELECT count(*) FROM items WHERE v = 'by app after the fence was lifted'`) == 1
	})
	_, err = r2.Manager.SetReadOnly(ctx, false)
	wantCode(t, err, wire.CodeFailedPrecondition, "this server is a standby")
	det, err := r2.Manager.DetachReplica(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if det.Role != wire.RoleStandalone || det.ReadOnly {
		t.Fatalf("detached status %+v", det)
	}
	if _, err := admin(t, r2, "shop").Exec(`INSERT INTO items (v) VALUES ('on the detached replica')`); err != nil {
		t.Fatalf("a write on the detached replica: %v", err)
	}
	if _, err := r2.Manager.DetachReplica(ctx); err != nil {
		t.Fatalf("detach re-run: %v", err)
	}
	_, err = r2.Manager.StartReplication(ctx, link2)
	wantCode(t, err, wire.CodeFailedPrecondition, "not a standby", "pg_rewind")
	// A primary that runs cannot rejoin either: only one stopped cleanly.
	_, err = r2.Manager.RejoinReplication(ctx, link2)
	wantCode(t, err, wire.CodeFailedPrecondition, "runs as a primary", "pg_rewind")
	if _, err := admin(t, r2, "shop").Exec(`INSERT INTO items (v) VALUES ('after the refused rejoin')`); err != nil {
		t.Fatalf("the refused rejoin changed the server: %v", err)
	}

	// Drop: slot and role gone, sessions ended; a re-run is fine.
	for _, acct := range []string{"strata_repl_r1", "strata_repl_r2"} {
		if err := src.Manager.DropReplicationAccount(ctx, acct); err != nil {
			t.Fatal(err)
		}
	}
	if n := queryInt(t, pdb, `SELECT (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'strata\_repl\_%') + (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'strata\_repl\_%')`); n != 0 {
		t.Fatalf("%d roles and slots left after the drops", n)
	}
	if err := src.Manager.DropReplicationAccount(ctx, "strata_repl_r1"); err != nil {
		t.Fatalf("drop re-run: %v", err)
	}
}

// Bad arguments are refused naming the field, before anything changes.
func TestReplicationRefusesBadArguments(t *testing.T) {
	ctx := ctxT(t)
	inst := sharedServer(t)
	m := inst.Manager
	before := snapshot(t, inst)
	_, err := m.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: `strata_repl_a"; DROP ROLE postgres; --`, Password: "p"})
	wantCode(t, err, wire.CodeInvalidArgument, "replication account")
	_, err = m.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "app", Password: "p"})
	wantCode(t, err, wire.CodeInvalidArgument, "replication account", wire.ReplicationAccountPrefix)
	_, err = m.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_a", Password: ""})
	wantCode(t, err, wire.CodeInvalidArgument, "password")
	_, err = m.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_a", Password: "pä"})
	wantCode(t, err, wire.CodeInvalidArgument, "password")
	err = m.DropReplicationAccount(ctx, "strata_repl_a' OR '1'='1")
	wantCode(t, err, wire.CodeInvalidArgument, "replication account")

	good := wire.StartReplicationArgs{Host: "10.0.2.101", Port: 5432, Account: "strata_repl_a", Password: "p"}
	for _, c := range []struct {
		mod  func(*wire.StartReplicationArgs)
		want string
	}{
		{func(a *wire.StartReplicationArgs) { a.Host = "h' sslmode=disable" }, "host"},
		{func(a *wire.StartReplicationArgs) { a.Host = "h\nprimary_slot_name = 'x'" }, "host"},
		{func(a *wire.StartReplicationArgs) { a.Port = 0 }, "port"},
		{func(a *wire.StartReplicationArgs) { a.Account = "strata_repl_a password=x" }, "replication account"},
		{func(a *wire.StartReplicationArgs) { a.Password = "" }, "password"},
		{func(a *wire.StartReplicationArgs) { a.Password = "p\n" }, "password"},
		{func(a *wire.StartReplicationArgs) { a.GTIDSlavePos = "0-1-2" }, "gtid_slave_pos"},
	} {
		a := good
		c.mod(&a)
		_, err := m.StartReplication(ctx, a)
		wantCode(t, err, wire.CodeInvalidArgument, c.want)
	}
	for _, c := range []struct {
		args wire.PromoteReplicaArgs
		want string
	}{
		{wire.PromoteReplicaArgs{LSN: "0/1'; SELECT pg_promote(); --", TimeoutSeconds: 1}, "lsn"},
		{wire.PromoteReplicaArgs{LSN: "0/1", TimeoutSeconds: 0}, "timeout_seconds"},
		{wire.PromoteReplicaArgs{GTIDPos: "0-1-2", TimeoutSeconds: 1}, "gtid_pos"},
		{wire.PromoteReplicaArgs{TimeoutSeconds: 1}, "gtid_pos"},
		{wire.PromoteReplicaArgs{ReplOffset: new(int64), TimeoutSeconds: 1}, "give lsn"},
	} {
		_, err := m.PromoteReplica(ctx, c.args)
		wantCode(t, err, wire.CodeInvalidArgument, c.want)
	}
	// Users can neither create nor drop the replication roles' names.
	for _, name := range []string{"strata_repl_a", "STRATA_REPL_b", postgresql.ReplicationGroup} {
		err := m.CreateUsers(ctx, []wire.User{{Name: name, Password: "p"}})
		wantCode(t, err, wire.CodeInvalidArgument, "reserved")
		err = m.DeleteUser(ctx, wire.UserRef{Name: name})
		wantCode(t, err, wire.CodeInvalidArgument, "reserved")
	}
	// A fork position of the wrong shape is refused before the rejoin
	// looks at the server.
	for _, fork := range []string{"0/1'; SELECT 1; --", "1234", "G/0", "123456789/0"} {
		a := good
		a.ForkLSN = fork
		_, err := m.RejoinReplication(ctx, a)
		wantCode(t, err, wire.CodeInvalidArgument, "fork_lsn")
	}
	// On a server that is no replica, the replica kinds are refused
	// before anything is written.
	_, err = m.StartReplication(ctx, good)
	wantCode(t, err, wire.CodeFailedPrecondition, "not a standby")
	assertUnchanged(t, inst, before)
}

// A switchover on three real servers: the primary fenced and stopped
// cleanly, one replica promoted at the fence's position, the other
// repointed to it (a new slot on the new primary, conninfo reloaded)
// follows its new timeline.
func TestSwitchoverRepointsTheOtherReplicaToThePromotedOne(t *testing.T) {
	ctx := servertest.Context(t, 10*time.Minute)
	src := postgresqltest.NewT(t)
	p0 := freePort(t)
	if err := src.ListenTCP(p0); err != nil {
		t.Fatal(err)
	}
	servertest.MustPrepare(t, src.Manager, wire.PrepareArgs{Databases: []wire.Database{{Name: "shop"}}}, 2*time.Minute)
	db := admin(t, src, "shop")
	if _, err := db.Exec(`CREATE TABLE items (id serial PRIMARY KEY, v text, b bytea)`); err != nil {
		t.Fatal(err)
	}
	fillPG(t, db, 1000)
	mem := streamstest.NewMemory()
	seed, err := streamstest.Backup(ctx, &dispatch.Dispatcher{Manager: src.Manager, Streams: mem, Datastore: "postgresql"}, "seed", nil)
	if err != nil {
		t.Fatal(err)
	}
	// An instance prepared before the replication rules: its pg_hba.conf
	// lacks them, and the first account brings the file up to date.
	hba, err := os.ReadFile(src.Config.HBAFile)
	if err != nil {
		t.Fatal(err)
	}
	var old []string
	for _, l := range strings.Split(string(hba), "\n") {
		if !strings.Contains(l, "strata_replication") {
			old = append(old, l)
		}
	}
	if err := os.WriteFile(src.Config.HBAFile, []byte(strings.Join(old, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := admin(t, src, "postgres").Exec(`SELECT pg_reload_conf()`); err != nil {
		t.Fatal(err)
	}
	const pw = "a-long-random-password"
	replicas := map[string]*postgresqltest.Instance{}
	p1 := freePort(t)
	for _, id := range []string{"r1", "r2"} {
		acct := "strata_repl_" + id
		if _, err := src.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: acct, Password: pw}); err != nil {
			t.Fatal(err)
		}
		r := postgresqltest.NewT(t)
		if id == "r1" { // the future primary: its replica reaches it over TCP
			if err := r.ListenTCP(p1); err != nil {
				t.Fatal(err)
			}
		}
		dd := &dispatch.Dispatcher{Manager: r.Manager, Streams: mem, Datastore: "postgresql"}
		if _, err := streamstest.Restore(ctx, dd, mem, "restore-"+id, wire.RestoreArgs{Standby: true}, mem.Stored("seed", seed)); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: p0, Account: acct, Password: pw}); err != nil {
			t.Fatal(err)
		}
		replicas[id] = r
	}
	r1, r2 := replicas["r1"], replicas["r2"]
	fillPG(t, db, 500)
	r2db := admin(t, r2, "shop")
	waitUntil(t, time.Minute, "both replicas caught up", func() bool {
		return queryInt(t, admin(t, r1, "shop"), `SELECT count(*) FROM items`) == 1500 && queryInt(t, r2db, `SELECT count(*) FROM items`) == 1500
	})

	start := time.Now()
	fenced, err := src.Manager.SetReadOnly(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	// The fenced primary still writes WAL of its own (the background
	// writer's snapshots, autovacuum); one replica may receive a record
	// the other, promoted, never had, and could not follow its timeline.
	// A clean stop (the stop kind) ends that: the WAL senders wait until
	// every replica flushed the shutdown checkpoint, so all of them hold
	// the same WAL and the promoted one replays all of it.
	if err := src.Manager.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := time.Since(start)
	if _, err := r1.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{LSN: fenced.LSN, TimeoutSeconds: 30}); err != nil {
		t.Fatal(err)
	}
	r1db := admin(t, r1, "shop")
	if _, err := r1db.Exec(`INSERT INTO items (v) VALUES ('first on the new primary')`); err != nil {
		t.Fatal(err)
	}
	unavailable := time.Since(start)
	// The link is down: no lag figures, and the reason.
	waitUntil(t, 30*time.Second, "the other replica sees its primary gone", func() bool {
		st := replStatus(t, ctx, r2)
		return !st.IORunning && st.BytesBehind == nil && st.SecondsBehind == nil && strings.Contains(st.LastError, "not streaming")
	})
	t.Logf("a replica whose primary is gone: %q", replStatus(t, ctx, r2).LastError)
	// The roles came with the data; the slot is the new primary's own.
	if _, err := r1.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_r2", Password: pw}); err != nil {
		t.Fatal(err)
	}
	repointStart := time.Now()
	st, err := r2.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: p1, Account: "strata_repl_r2", Password: pw, Repoint: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != wire.RoleReplica || st.SourcePort != p1 {
		t.Fatalf("repointed status %+v", st)
	}
	waitUntil(t, time.Minute, "the new primary's write on the repointed replica", func() bool {
		return queryInt(t, r2db, `SELECT count(*) FROM items WHERE v = 'first on the new primary'`) == 1
	})
	t.Logf("fence and stop of the old primary %s; fence to the first write on the new primary %s; the repointed replica had that write %s after the repoint",
		stopped, unavailable, time.Since(repointStart))
	if a, b := pgChecksums(t, r1db), pgChecksums(t, r2db); a != b {
		t.Fatalf("the repointed replica differs from the new primary:\n%s\n%s", a, b)
	}
	if st := replStatus(t, ctx, r2); !st.IORunning || st.SourcePort != p1 {
		t.Fatalf("repointed replica's status %+v", st)
	}
	if got := servertest.QueryStrings(t, admin(t, r1, "postgres"), `SELECT application_name || ' ' || state FROM pg_stat_replication`); strings.Join(got, "|") != "strata_repl_r2 streaming" {
		t.Fatalf("the new primary's replicas: %q", got)
	}

	// The old primary, stopped cleanly and still fenced, rejoins as a
	// standby of the new one: no pg_rewind, its WAL ends where the new
	// timeline begins.
	if _, err := r1.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_p0", Password: pw}); err != nil {
		t.Fatal(err)
	}
	back := wire.StartReplicationArgs{Host: "127.0.0.1", Port: p1, Account: "strata_repl_p0", Password: pw}
	if st := src.Manager.Status(ctx); st.Status != wire.StatusShutdown {
		t.Fatalf("the old primary before its rejoin: %+v", st)
	}
	rejoinStart := time.Now()
	st, err = src.Manager.RejoinReplication(ctx, back)
	if err != nil {
		src.LogTail(t)
		t.Fatal(err)
	}
	if st.Role != wire.RoleReplica || st.SourcePort != p1 || !st.ReadOnly {
		t.Fatalf("the rejoined old primary's status %+v", st)
	}
	if st := src.Manager.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("the rejoined old primary is %+v", st)
	}
	srcdb := admin(t, src, "shop")
	waitUntil(t, time.Minute, "the new primary's write on the old primary", func() bool {
		return queryInt(t, srcdb, `SELECT count(*) FROM items WHERE v = 'first on the new primary'`) == 1
	})
	rejoined := time.Since(rejoinStart)
	if _, err := r1db.Exec(`INSERT INTO items (v) VALUES ('after the rejoin')`); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Minute, "a later write on the old primary", func() bool {
		return queryInt(t, srcdb, `SELECT count(*) FROM items WHERE v = 'after the rejoin'`) == 1
	})
	_, err = srcdb.Exec(`INSERT INTO items (v) VALUES ('on the rejoined old primary')`)
	wantReadOnlyRefusal(t, err, "a write on the rejoined old primary")
	if a, b := pgChecksums(t, r1db), pgChecksums(t, srcdb); a != b {
		t.Fatalf("the rejoined old primary differs from the new primary:\n%s\n%s", a, b)
	}
	if st := replStatus(t, ctx, src); !st.IORunning || st.SourcePort != p1 {
		t.Fatalf("the rejoined old primary's status %+v", st)
	}
	// A re-run (a lost answer) finds it following the same source.
	if st, err := src.Manager.RejoinReplication(ctx, back); err != nil || !st.IORunning {
		t.Fatalf("rejoin re-run: %+v, %v", st, err)
	}
	if got := servertest.QueryStrings(t, admin(t, r1, "postgres"), `SELECT application_name || ' ' || state FROM pg_stat_replication ORDER BY 1`); strings.Join(got, "|") != "strata_repl_p0 streaming|strata_repl_r2 streaming" {
		t.Fatalf("the new primary's replicas after the rejoin: %q", got)
	}
	t.Logf("the old primary rejoined and had the new primary's first write %s after the rejoin began", rejoined)
}

// A primary that stopped without a shutdown checkpoint (killed) may have
// written WAL its replicas never received: its rejoin is refused naming
// the cluster state, and nothing is written.
func TestRejoinRefusesAServerThatCrashed(t *testing.T) {
	ctx := servertest.Context(t, 5*time.Minute)
	inst := postgresqltest.NewT(t)
	servertest.MustPrepare(t, inst.Manager, wire.PrepareArgs{}, 2*time.Minute)
	if _, err := admin(t, inst, "postgres").Exec(`CREATE TABLE t AS SELECT generate_series(1, 1000) AS n`); err != nil {
		t.Fatal(err)
	}
	pid, err := datastore.ReadPidFile(inst.Config.PidFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the killed server gone", func() bool { return !datastore.ProcessAlive(pid) })
	_, err = inst.Manager.RejoinReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: 5999, Account: "strata_repl_x1", Password: "a-long-random-password"})
	wantCode(t, err, wire.CodeFailedPrecondition, `"in production"`, "pg_rewind")
	for _, f := range []string{filepath.Join(inst.Config.DataDir, "standby.signal"), filepath.Join(filepath.Dir(inst.Config.OverridesFile), "strata-replication.conf")} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Fatalf("%s after a refused rejoin: %v", f, err)
		}
	}
	_, err = inst.Manager.RejoinReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: 5999, Account: "strata_repl_x1", Password: "a-long-random-password", Repoint: true})
	wantCode(t, err, wire.CodeInvalidArgument, "repoint")
}

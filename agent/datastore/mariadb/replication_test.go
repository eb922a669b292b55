package mariadb_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"strata/agent/datastore/mariadb"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/dispatch"
	"strata/agent/heartbeat"
	"strata/agent/streams/streamstest"
	"strata/agent/wire"
)

// tcpLogin connects to a test server over TCP as a database user.
func tcpLogin(t *testing.T, inst *mariadbtest.Instance, user, password string) *sql.DB {
	t.Helper()
	c := mysql.NewConfig()
	c.Net, c.Addr, c.User, c.Passwd = "tcp", "127.0.0.1:"+strconv.Itoa(inst.Config.Port), user, password
	db, err := sql.Open("mysql", c.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// waitApplied waits until the replica applied everything the primary
// wrote to its binary log, and returns the replica's last status.
func waitApplied(t *testing.T, ctx context.Context, primary, replica *mariadbtest.Instance) wire.ReplicationStatus {
	t.Helper()
	var want string
	if err := admin(t, primary).QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&want); err != nil {
		t.Fatal(err)
	}
	for {
		st, err := replica.Manager.ReplicationStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.GTIDSlavePos == want {
			return st
		}
		if st.LastError != "" {
			t.Fatalf("replication broke: %+v", st)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("replica never reached the primary's position %s: %+v", want, st)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func count(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Two real servers: the replica is seeded from a backup of the primary,
// follows it by GTID from the backup's position with its own account,
// refuses users' writes, survives a restart, and once detached is
// writable and forgets the link; the primary's account is dropped after.
func TestReplicaSeededFromABackupFollowsThePrimaryAndDetaches(t *testing.T) {
	ctx := backupCtx(t)
	primary := mariadbtest.NewTCPT(t)
	mustPrepare(t, primary, wire.PrepareArgs{
		Databases: []wire.Database{{Name: "shop"}},
		Users:     []wire.User{{Name: "app", Password: "app-secret-1", Databases: []string{"shop"}}},
	})
	pdb := admin(t, primary)
	if _, err := pdb.Exec(`CREATE TABLE shop.items (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), b BLOB) ENGINE=InnoDB`); err != nil {
		t.Fatal(err)
	}
	fill(t, pdb, 500)

	// Seed: a full backup of the primary restored onto a fresh server.
	mem := streamstest.NewMemory()
	full, err := streamstest.Backup(ctx, &dispatch.Dispatcher{Manager: primary.Manager, Streams: mem, Datastore: "mariadb"}, "seed", nil)
	if err != nil {
		t.Fatal(err)
	}
	gtid := full.Position.GTID
	if gtid == "" {
		t.Fatalf("the seed backup carries no GTID position: %+v", full.Position)
	}
	fill(t, pdb, 200) // written after the seed: must arrive by replication
	replica := mariadbtest.NewTCPT(t)
	rd := &dispatch.Dispatcher{Manager: replica.Manager, Streams: mem, Datastore: "mariadb"}
	if _, err := streamstest.Restore(ctx, rd, mem, "restore", wire.RestoreArgs{}, mem.Stored("seed", full)); err != nil {
		t.Fatal(err)
	}
	rdb := admin(t, replica)
	if n := count(t, rdb, "shop.items"); n != 500 {
		t.Fatalf("seeded replica has %d rows, want the backup's 500", n)
	}

	// The account on the primary: hidden from users, refused as a user.
	const acct, pw = "strata_repl_r1", "repl-Secret-0123456789"
	src, err := primary.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: acct, Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	if src.GTIDBinlogPos == "" {
		t.Fatalf("source result %+v: no binlog position", src)
	}
	users, err := primary.Manager.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if u.Name == acct {
			t.Fatalf("list users shows the replication account: %+v", users)
		}
	}
	wantCode(t, primary.Manager.CreateUsers(ctx, []wire.User{{Name: "strata_repl_x", Password: "whatever-123"}}), wire.CodeInvalidArgument, "reserved")
	// Creating it again (a re-run) converges.
	if _, err := primary.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: acct, Password: pw}); err != nil {
		t.Fatalf("re-run of create_replication_account: %v", err)
	}

	start := wire.StartReplicationArgs{Host: "127.0.0.1", Port: primary.Config.Port, Account: acct, Password: pw, GTIDSlavePos: gtid}
	st, err := replica.Manager.StartReplication(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != wire.RoleReplica || !st.ReadOnly || st.SourcePort != primary.Config.Port {
		t.Fatalf("status after start: %+v", st)
	}
	st = waitApplied(t, ctx, primary, replica)
	if n := count(t, rdb, "shop.items"); n != 700 {
		t.Fatalf("replica has %d rows, want 700", n)
	}
	if !st.IORunning || !st.SQLRunning || st.SecondsBehind == nil || *st.SecondsBehind != 0 || st.GTIDIOPos == "" {
		t.Fatalf("caught-up status: %+v", st)
	}
	// The heartbeat carries a replica's link, and the primary's binary
	// log position (no link): the caught-up replica applied exactly it.
	if hb := (heartbeat.Builder{Status: replica.Manager, Replication: replica.Manager.ReplicationStatus}).Heartbeat(ctx); hb.Replication == nil ||
		hb.Replication.SecondsBehind == nil || hb.Replication.GTIDSlavePos != st.GTIDSlavePos {
		t.Fatalf("replica heartbeat: %+v", hb.Replication)
	}
	if hb := (heartbeat.Builder{Status: primary.Manager, Replication: primary.Manager.ReplicationStatus}).Heartbeat(ctx); hb.Replication == nil ||
		hb.Replication.Role != wire.RoleStandalone || hb.Replication.SourceHost != "" || hb.Replication.GTIDBinlogPos != st.GTIDSlavePos {
		t.Fatalf("primary heartbeat: %+v, want its gtid_binlog_pos %s and no link", hb.Replication, st.GTIDSlavePos)
	}
	if got := checksums(t, rdb); got != checksums(t, pdb) {
		t.Fatalf("replica differs from primary:\n%s\n%s", got, checksums(t, pdb))
	}

	// Users cannot write on the replica (read_only); the app account came
	// with the seed.
	app := tcpLogin(t, replica, "app", "app-secret-1")
	if _, err := app.Exec("INSERT INTO shop.items (v) VALUES ('diverge')"); err == nil {
		t.Fatal("a user's write on the replica succeeded")
	} else if me, ok := err.(*mysql.MySQLError); !ok || me.Number != 1290 {
		t.Fatalf("write on the replica: %v, want error 1290 (read-only)", err)
	}

	// A re-run of start (an interrupted operation) must not rewind the
	// replica to the seed's position, which would apply rows twice.
	if _, err := replica.Manager.StartReplication(ctx, start); err != nil {
		t.Fatalf("re-run of start_replication: %v", err)
	}
	fill(t, pdb, 100)
	waitApplied(t, ctx, primary, replica)
	if n := count(t, rdb, "shop.items"); n != 800 {
		t.Fatalf("after a re-run of start the replica has %d rows, want 800", n)
	}
	// A different source while linked is refused.
	other := start
	other.Port++
	_, err = replica.Manager.StartReplication(ctx, other)
	wantCode(t, err, wire.CodeFailedPrecondition, "detach it first")

	// A restarted replica stays read-only and catches up by itself.
	if err := replica.Manager.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	fill(t, pdb, 100)
	st = waitApplied(t, ctx, primary, replica)
	if !st.ReadOnly || !st.IORunning {
		t.Fatalf("after restart: %+v", st)
	}

	// Detach: standalone, writable, link gone; the settings file keeps
	// the server_id alone, so a restart keeps it too (not the default 1).
	var replicaID int
	if err := rdb.QueryRow("SELECT @@global.server_id").Scan(&replicaID); err != nil || replicaID <= 1 {
		t.Fatalf("the replica's server_id: %d, %v", replicaID, err)
	}
	st, err = replica.Manager.DetachReplica(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != wire.RoleStandalone || st.ReadOnly {
		t.Fatalf("status after detach: %+v", st)
	}
	settings, err := os.ReadFile(filepath.Join(filepath.Dir(replica.Config.OverridesFile), "97-strata-replication.cnf"))
	if err != nil || !strings.Contains(string(settings), fmt.Sprintf("server_id = %d\n", replicaID)) || strings.Contains(string(settings), "read_only") {
		t.Fatalf("replication settings file after detach: %q, %v", settings, err)
	}
	if err := replica.Manager.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	rdb = admin(t, replica)
	var readOnly, idAfter int
	if err := rdb.QueryRow("SELECT @@global.read_only, @@global.server_id").Scan(&readOnly, &idAfter); err != nil || readOnly != 0 || idAfter != replicaID {
		t.Fatalf("the detached replica after a restart: read_only %d, server_id %d (%v); want writable with server_id %d", readOnly, idAfter, err, replicaID)
	}
	// Fenced (it is a source now): read-only across a restart, with its
	// server_id; the fence lifted, the server_id alone again.
	settingsFile := filepath.Join(filepath.Dir(replica.Config.OverridesFile), "97-strata-replication.cnf")
	if _, err := replica.Manager.SetReadOnly(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := replica.Manager.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	rdb = admin(t, replica)
	if err := rdb.QueryRow("SELECT @@global.read_only, @@global.server_id").Scan(&readOnly, &idAfter); err != nil || readOnly != 1 || idAfter != replicaID {
		t.Fatalf("the fenced server after a restart: read_only %d, server_id %d (%v); want read-only with server_id %d", readOnly, idAfter, err, replicaID)
	}
	if _, err := replica.Manager.SetReadOnly(ctx, false); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(settingsFile); err != nil || string(b) != string(settings) {
		t.Fatalf("settings after the fence was lifted: %q, %v; want %q", b, err, settings)
	}
	app = tcpLogin(t, replica, "app", "app-secret-1")
	if _, err := app.Exec("INSERT INTO shop.items (v) VALUES ('mine now')"); err != nil {
		t.Fatalf("write on the detached replica: %v", err)
	}
	fill(t, pdb, 100) // no longer arrives
	time.Sleep(500 * time.Millisecond)
	if n := count(t, rdb, "shop.items"); n != 901 {
		t.Fatalf("detached replica has %d rows, want 901", n)
	}
	if _, err := replica.Manager.DetachReplica(ctx); err != nil {
		t.Fatalf("detach again: %v", err)
	}

	// The primary drops the account; a second drop is not_found.
	if err := primary.Manager.DropReplicationAccount(ctx, acct); err != nil {
		t.Fatal(err)
	}
	var n int
	pdb.QueryRow("SELECT COUNT(*) FROM mysql.user WHERE User = ?", acct).Scan(&n)
	if n != 0 {
		t.Fatal("replication account still exists after drop")
	}
	wantCode(t, primary.Manager.DropReplicationAccount(ctx, acct), wire.CodeNotFound, "does not exist")
}

// Bad arguments change nothing and say what is wrong.
func TestReplicationRefusesBadArguments(t *testing.T) {
	ctx := ctxT(t)
	inst := sharedServer(t)
	before := snapshot(t, inst)
	_, err := inst.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "app", Password: "long-enough-1"})
	wantCode(t, err, wire.CodeInvalidArgument, "strata_repl_")
	_, err = inst.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_a", Password: ""})
	wantCode(t, err, wire.CodeInvalidArgument, "password")
	for _, a := range []wire.StartReplicationArgs{
		{Host: "127.0.0.1'; DROP", Port: 3306, Account: "strata_repl_a", Password: "x"},
		{Host: "127.0.0.1", Port: 0, Account: "strata_repl_a", Password: "x"},
		{Host: "127.0.0.1", Port: 3306, Account: "root", Password: "x"},
		{Host: "127.0.0.1", Port: 3306, Account: "strata_repl_a", Password: "x", GTIDSlavePos: "0-1-2'"},
	} {
		_, err := inst.Manager.StartReplication(ctx, a)
		wantCode(t, err, wire.CodeInvalidArgument, "start replication")
	}
	wantCode(t, inst.Manager.DropReplicationAccount(ctx, "strata_repl_none"), wire.CodeNotFound, "does not exist")
	for _, a := range []wire.PromoteReplicaArgs{
		{GTIDPos: "", TimeoutSeconds: 5},
		{GTIDPos: "0-1-2'; SELECT", TimeoutSeconds: 5},
		{GTIDPos: "0-1-2", TimeoutSeconds: 0},
		{GTIDPos: "0-1-2", TimeoutSeconds: wire.MaxPromoteWait + 1},
		{ReplOffset: new(int64), TimeoutSeconds: 5},
	} {
		_, err := inst.Manager.PromoteReplica(ctx, a)
		wantCode(t, err, wire.CodeInvalidArgument, "promote")
	}
	// A repoint needs a link to move.
	_, err = inst.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: 3306, Account: "strata_repl_a",
		Password: "long-enough-1", Repoint: true})
	wantCode(t, err, wire.CodeFailedPrecondition, "follows no source")
	assertUnchanged(t, inst, before)
}

func mustPrepare(t *testing.T, inst *mariadbtest.Instance, args wire.PrepareArgs) {
	t.Helper()
	if _, err := inst.Manager.Prepare(ctxT(t), args); err != nil {
		t.Fatal(err)
	}
}

// A replica whose root disk was replaced (a rebuild: its replication
// settings file is gone with the agent's state and configuration, while
// its link and GTID position are in its data) starts read-only, with a
// server_id of its own, from the new agent's prepare on — a user's write
// before the relink would be a transaction its source never had — and
// follows its source again after what the controller's relink sends: the
// account's password reset on the primary, then a repoint to the same
// source with it. Nothing is lost or applied twice.
func TestAReplicaThatLostItsSettingsFollowsAgainAfterARepointToItsSource(t *testing.T) {
	ctx := backupCtx(t)
	primary := mariadbtest.NewTCPT(t)
	mustPrepare(t, primary, wire.PrepareArgs{Databases: []wire.Database{{Name: "shop"}}})
	pdb := admin(t, primary)
	if _, err := pdb.Exec(`CREATE TABLE shop.items (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), b BLOB) ENGINE=InnoDB`); err != nil {
		t.Fatal(err)
	}
	fill(t, pdb, 100)
	mem := streamstest.NewMemory()
	full, err := streamstest.Backup(ctx, &dispatch.Dispatcher{Manager: primary.Manager, Streams: mem, Datastore: "mariadb"}, "seed", nil)
	if err != nil {
		t.Fatal(err)
	}
	replica := mariadbtest.NewTCPT(t)
	rd := &dispatch.Dispatcher{Manager: replica.Manager, Streams: mem, Datastore: "mariadb"}
	if _, err := streamstest.Restore(ctx, rd, mem, "restore", wire.RestoreArgs{}, mem.Stored("seed", full)); err != nil {
		t.Fatal(err)
	}
	const acct = "strata_repl_r1"
	if _, err := primary.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: acct, Password: "repl-Secret-0123456789"}); err != nil {
		t.Fatal(err)
	}
	if _, err := replica.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: primary.Config.Port, Account: acct,
		Password: "repl-Secret-0123456789", GTIDSlavePos: full.Position.GTID}); err != nil {
		t.Fatal(err)
	}
	fill(t, pdb, 50)
	waitApplied(t, ctx, primary, replica)

	// The rebuild: a new root disk (no agent state, no configuration,
	// no settings file), the data directory kept; the new agent's
	// prepare adopts it.
	if err := replica.Manager.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	replica.Manager.Close()
	settings := filepath.Join(filepath.Dir(replica.Config.OverridesFile), "97-strata-replication.cnf")
	for _, f := range []string{replica.Config.StateFile, replica.Config.ConfigFile, replica.Config.OverridesFile, settings} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	m2, err := mariadb.New(replica.Config)
	if err != nil {
		t.Fatal(err)
	}
	replica.Manager = m2
	if res, err := m2.Prepare(ctx, wire.PrepareArgs{}); err != nil || res.Initialized {
		t.Fatalf("the rebuilt replica's prepare: %+v, %v", res, err)
	}
	rdb := admin(t, replica)
	var readOnly, serverID int
	if err := rdb.QueryRow("SELECT @@global.read_only, @@global.server_id").Scan(&readOnly, &serverID); err != nil {
		t.Fatal(err)
	}
	if readOnly != 1 || serverID == 1 {
		t.Fatalf("the rebuilt replica before its relink has read_only %d, server_id %d; want read-only with a server_id of its own", readOnly, serverID)
	}
	fill(t, pdb, 25) // written before the relink

	// The relink: a new password, then a repoint to the same source.
	const pw2 = "repl-Secret-new-9876543210"
	if _, err := primary.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: acct, Password: pw2}); err != nil {
		t.Fatal(err)
	}
	st, err := replica.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: primary.Config.Port, Account: acct, Password: pw2, Repoint: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != wire.RoleReplica || !st.ReadOnly {
		t.Fatalf("status after the repoint: %+v", st)
	}
	fill(t, pdb, 25)
	st = waitApplied(t, ctx, primary, replica)
	if n, want := count(t, rdb, "shop.items"), count(t, pdb, "shop.items"); n != want || !st.IORunning || !st.SQLRunning {
		t.Fatalf("the relinked replica has %d rows (the primary %d), status %+v", n, want, st)
	}
	if err := rdb.QueryRow("SELECT @@global.read_only, @@global.server_id").Scan(&readOnly, &serverID); err != nil {
		t.Fatal(err)
	}
	if readOnly != 1 || serverID == 1 {
		t.Fatalf("the relinked replica has read_only %d, server_id %d", readOnly, serverID)
	}
	// It survives a restart: the settings file is back.
	if err := replica.Manager.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	fill(t, pdb, 10)
	if st := waitApplied(t, ctx, primary, replica); !st.ReadOnly {
		t.Fatalf("after a restart: %+v", st)
	}
}

// The agent's own housekeeping writes no transaction to the binary log:
// an operation's durability flush after a fence (set_read_only) leaves
// the server's gtid_binlog_pos where the fence reported it. A flush that
// went to the binary log would give a replica or a fenced primary a
// transaction of its own that its group never had (a failover's ejected
// source could then not follow the new one).
func TestAnOperationsFlushWritesNothingToTheBinaryLog(t *testing.T) {
	ctx := backupCtx(t)
	inst := mariadbtest.NewTCPT(t)
	mustPrepare(t, inst, wire.PrepareArgs{Databases: []wire.Database{{Name: "shop"}}})
	db := admin(t, inst)
	if _, err := db.Exec(`CREATE TABLE shop.items (id INT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	var before string
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&before); err != nil || before == "" {
		t.Fatalf("gtid_binlog_pos %q, %v", before, err)
	}
	d := &dispatch.Dispatcher{Manager: inst.Manager, Datastore: "mariadb"}
	args, _ := json.Marshal(wire.SetReadOnlyArgs{ReadOnly: true})
	res := d.Run(ctx, wire.Operation{ID: "fence", Kind: wire.KindSetReadOnly, Args: args})
	var st wire.ReplicationStatus
	if err := res.Decode(&st); err != nil || !st.ReadOnly {
		t.Fatalf("fence: %+v %v", st, err)
	}
	var after string
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after != before || st.GTIDBinlogPos != before {
		t.Fatalf("gtid_binlog_pos %s before the fence, %s after its flush (the fence reported %s)", before, after, st.GTIDBinlogPos)
	}
}

// Real servers: a link the source refuses for good (it lacks the
// replica's GTID position: error 1236) is reported stopped, so the
// controller gives up at once; a link that cannot reach its source is
// reconnecting (MASTER_CONNECT_RETRY), with its error shown, and is not
// stopped.
func TestALinkTheSourceRefusesIsStoppedAndAnUnreachableOneIsNot(t *testing.T) {
	ctx := ctxT(t)
	p := mariadbtest.NewTCPT(t)
	mustPrepare(t, p, wire.PrepareArgs{})
	const acct, pw = "strata_repl_s", "repl-Secret-S-0123456789"
	if _, err := p.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: acct, Password: pw}); err != nil {
		t.Fatal(err)
	}
	ahead := mariadbtest.NewTCPT(t)
	mustPrepare(t, ahead, wire.PrepareArgs{})
	if _, err := ahead.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: p.Config.Port,
		Account: acct, Password: pw, GTIDSlavePos: "0-1-999999"}); err != nil {
		t.Fatal(err)
	}
	var st wire.ReplicationStatus
	deadline := time.Now().Add(30 * time.Second)
	for ; time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var err error
		if st, err = ahead.Manager.ReplicationStatus(ctx); err != nil {
			t.Fatal(err)
		}
		if st.LinkStopped {
			break
		}
	}
	if !st.LinkStopped || st.IORunning || !strings.Contains(st.LastError, "1236") {
		t.Fatalf("a replica asking for a position its source lacks: %+v; want its link stopped with the source's 1236", st)
	}

	unreachable := mariadbtest.NewTCPT(t)
	mustPrepare(t, unreachable, wire.PrepareArgs{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now
	if _, err := unreachable.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: port,
		Account: acct, Password: pw}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for ; time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if st, err = unreachable.Manager.ReplicationStatus(ctx); err != nil {
			t.Fatal(err)
		}
		if st.LastError != "" {
			break
		}
	}
	if st.LastError == "" || st.IORunning || st.LinkStopped {
		t.Fatalf("a replica whose source does not answer: %+v; want it reconnecting (an error shown, I/O not running, not stopped)", st)
	}
}

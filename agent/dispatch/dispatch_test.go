package dispatch_test

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"strata/agent/datastore"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/dispatch"
	"strata/agent/wire"
)

type fakeAgentLog struct{}

func (fakeAgentLog) Info(context.Context) wire.LogInfo {
	return wire.LogInfo{Name: dispatch.AgentLogName, Type: "agent", Enabled: true}
}
func (fakeAgentLog) Tail(_ context.Context, n int) (wire.LogTail, error) {
	return wire.LogTail{Name: dispatch.AgentLogName, Lines: []string{"agent line"}}, nil
}

var server *mariadbtest.Instance

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "strata-dispatch-")
	if err != nil {
		panic(err)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		inst, err := mariadbtest.New(dir, mariadbtest.Logger())
		if err != nil {
			println(err.Error())
			return 1
		}
		defer inst.Close()
		server = inst
		return m.Run()
	}()
	os.Exit(code)
}

func run(t *testing.T, d *dispatch.Dispatcher, kind wire.Kind, args string) wire.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	op := wire.Operation{ID: "t", Kind: kind}
	if args != "" {
		op.Args = json.RawMessage(args)
	}
	return d.Run(ctx, op)
}

func wantError(t *testing.T, r wire.Result, code wire.ErrorCode, part string) {
	t.Helper()
	if r.Error == nil || r.Error.Code != code || !strings.Contains(r.Error.Message, part) {
		t.Fatalf("result = %+v, want %s mentioning %q", r.Error, code, part)
	}
}

func TestOperationsReachTheManager(t *testing.T) {
	d := &dispatch.Dispatcher{Manager: server.Manager, AgentLog: fakeAgentLog{}}
	if r := run(t, d, wire.KindPrepare, `{"databases":[{"name":"first"}]}`); r.Error != nil {
		t.Fatalf("prepare: %+v", r.Error)
	}
	var st wire.StatusResult
	if err := run(t, d, wire.KindStatus, "").Decode(&st); err != nil || st.Status != wire.StatusRunning {
		t.Fatalf("status: %+v %v", st, err)
	}
	if r := run(t, d, wire.KindCreateDatabases, `{"databases":[{"name":"second","character_set":"utf8mb4"}]}`); r.Error != nil {
		t.Fatal(r.Error)
	}
	var dbs wire.ListDatabasesResult
	run(t, d, wire.KindListDatabases, "").Decode(&dbs)
	if len(dbs.Databases) != 2 || dbs.Databases[0].Name != "first" || dbs.Databases[1].Name != "second" {
		t.Fatalf("databases: %+v", dbs)
	}
	if r := run(t, d, wire.KindCreateUsers, `{"users":[{"name":"u1","password":"pw","databases":["second"]}]}`); r.Error != nil {
		t.Fatal(r.Error)
	}
	var access wire.ListAccessResult
	run(t, d, wire.KindListAccess, `{"name":"u1"}`).Decode(&access)
	if len(access.Databases) != 1 || access.Databases[0] != "second" {
		t.Fatalf("access: %+v", access)
	}
	if r := run(t, d, wire.KindUpdateUser, `{"user":{"name":"u1"},"new_name":"u2","new_password":"pw2"}`); r.Error != nil {
		t.Fatalf("update_user: %+v", r.Error)
	}
	if r := run(t, d, wire.KindChangePasswords, `{"users":[{"name":"u2","password":"pw3"}]}`); r.Error != nil {
		t.Fatalf("change_passwords: %+v", r.Error)
	}
	run(t, d, wire.KindListAccess, `{"name":"u2"}`).Decode(&access)
	if len(access.Databases) != 1 || access.Databases[0] != "second" {
		t.Fatalf("access after the rename: %+v", access)
	}
	var creds wire.RootCredentials
	if err := run(t, d, wire.KindEnableRoot, "").Decode(&creds); err != nil || creds.Password == "" {
		t.Fatalf("enable_root: %+v %v", creds, err)
	}
	var root wire.IsRootEnabledResult
	run(t, d, wire.KindIsRootEnabled, "").Decode(&root)
	if !root.Enabled {
		t.Fatal("root not enabled")
	}
	var fs wire.FilesystemStats
	if err := run(t, d, wire.KindFilesystemStats, "").Decode(&fs); err != nil || fs.TotalBytes == 0 || fs.Path != server.Manager.DataPath() {
		t.Fatalf("filesystem_stats: %+v %v", fs, err)
	}
	var logs wire.ListLogsResult
	run(t, d, wire.KindListLogs, "").Decode(&logs)
	if len(logs.Logs) != 3 || logs.Logs[2].Name != "agent" {
		t.Fatalf("logs: %+v", logs)
	}
	var tail wire.LogTail
	run(t, d, wire.KindTailLog, `{"name":"agent","lines":5}`).Decode(&tail)
	if len(tail.Lines) != 1 {
		t.Fatalf("agent tail: %+v", tail)
	}
	if err := run(t, d, wire.KindTailLog, `{"name":"error","lines":5}`).Decode(&tail); err != nil || len(tail.Lines) == 0 {
		t.Fatalf("error log tail: %+v %v", tail, err)
	}
	var conf wire.EffectiveConfiguration
	if err := run(t, d, wire.KindGetConfiguration, "").Decode(&conf); err != nil || string(conf.Values["character_set_server"]) != `"utf8mb4"` {
		t.Fatalf("get_configuration: %v %v", conf.Values, err)
	}
	// Every kind of the protocol is known to the dispatcher.
	for _, k := range wire.Kinds {
		if r := run(t, d, k, `{"no_such_argument":1}`); r.Error != nil && r.Error.Code == wire.CodeNotSupported {
			t.Errorf("kind %s is not dispatched", k)
		}
	}
}

func TestBadArgumentsAreTypedErrors(t *testing.T) {
	inst, _ := mariadbtest.PreparedT(t, wire.PrepareArgs{Databases: []wire.Database{{Name: "keep"}}})
	d := &dispatch.Dispatcher{Manager: inst.Manager}
	before := run(t, d, wire.KindListDatabases, "")
	if before.Error != nil || !strings.Contains(string(before.Payload), "keep") {
		t.Fatalf("list: %+v", before)
	}
	wantError(t, run(t, d, "drop_everything", ""), wire.CodeNotSupported, "drop_everything")
	wantError(t, run(t, d, wire.KindCreateDatabases, `{"databases":[{"name":"x"}],"drop":true}`), wire.CodeInvalidArgument, `unknown parameter "drop"`)
	wantError(t, run(t, d, wire.KindCreateDatabases, `{"databases":[{"name":"x","owner":"me"}]}`), wire.CodeInvalidArgument, `unknown parameter "owner"`)
	wantError(t, run(t, d, wire.KindCreateDatabases, `{"databases":"x"}`), wire.CodeInvalidArgument, "bad arguments")
	wantError(t, run(t, d, wire.KindCreateDatabases, ""), wire.CodeInvalidArgument, "arguments are required")
	wantError(t, run(t, d, wire.KindCreateDatabases, `{"databases":[{"name":"x"}]} {}`), wire.CodeInvalidArgument, "trailing")
	wantError(t, run(t, d, wire.KindStatus, `{"verbose":true}`), wire.CodeInvalidArgument, "takes no arguments")
	wantError(t, run(t, d, wire.KindTailLog, `{"name":"agent","lines":5}`), wire.CodeNotFound, "no log named")
	wantError(t, run(t, d, wire.KindGetConfiguration, `{"all":true}`), wire.CodeInvalidArgument, "takes no arguments")
	after := run(t, d, wire.KindListDatabases, "")
	if string(before.Payload) != string(after.Payload) {
		t.Fatalf("databases changed: %s → %s", before.Payload, after.Payload)
	}
}

// A manager without datastore.UserUpdater answers not_supported, naming
// its datastore.
func TestAccountUpdatesNeedTheCapability(t *testing.T) {
	d := &dispatch.Dispatcher{Manager: datastore.Unsupported{Datastore: "exotic"}, Datastore: "exotic"}
	wantError(t, run(t, d, wire.KindUpdateUser, `{"user":{"name":"a"},"new_password":"x"}`), wire.CodeNotSupported, "exotic does not support changing a user")
	wantError(t, run(t, d, wire.KindChangePasswords, `{"users":[{"name":"a","password":"x"}]}`), wire.CodeNotSupported, "exotic does not support changing passwords")
	wantError(t, run(t, d, wire.KindUpdateUser, `{"user":{"name":"a"},"rename_to":"b"}`), wire.CodeInvalidArgument, `unknown parameter "rename_to"`)
}

// A manager without datastore.ConfigurationReader answers get_configuration
// with not_supported naming its datastore, never an empty configuration.
func TestGetConfigurationNeedsTheCapability(t *testing.T) {
	d := &dispatch.Dispatcher{Manager: datastore.Unsupported{Datastore: "exotic"}, Datastore: "exotic"}
	wantError(t, run(t, d, wire.KindGetConfiguration, ""), wire.CodeNotSupported, "exotic does not support reporting its configuration")
}

type growFunc func(ctx context.Context) error

func (g growFunc) Grow(ctx context.Context) error { return g(ctx) }

func TestResizeFilesystemGrowsTheVolumeThenReportsItsStats(t *testing.T) {
	d := &dispatch.Dispatcher{Manager: server.Manager}
	wantError(t, run(t, d, wire.KindResizeFilesystem, ""), wire.CodeNotSupported, "no separate data volume")
	grown := 0
	d.Volume = growFunc(func(context.Context) error { grown++; return nil })
	var fs wire.FilesystemStats
	if err := run(t, d, wire.KindResizeFilesystem, "").Decode(&fs); err != nil || grown != 1 || fs.Path != server.Manager.DataPath() || fs.TotalBytes == 0 {
		t.Fatalf("resize_filesystem: %+v %v (grown %d times)", fs, err, grown)
	}
	d.Volume = growFunc(func(context.Context) error {
		return wire.Errorf(wire.CodeFailedPrecondition, "data device has no filesystem yet")
	})
	wantError(t, run(t, d, wire.KindResizeFilesystem, ""), wire.CodeFailedPrecondition, "no filesystem")
	wantError(t, run(t, d, wire.KindResizeFilesystem, `{"size":1}`), wire.CodeInvalidArgument, "takes no arguments")
}

// flushCounter is the real manager, counting the flushes dispatch asks for.
type flushCounter struct {
	datastore.Manager
	flushes atomic.Int32
}

func (f *flushCounter) Flush(ctx context.Context) error {
	f.flushes.Add(1)
	return f.Manager.(datastore.Flusher).Flush(ctx)
}

func runAttempt(t *testing.T, d *dispatch.Dispatcher, kind wire.Kind, attempt int, args string) wire.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return d.Run(ctx, wire.Operation{ID: "t", Kind: kind, Attempt: attempt, Args: json.RawMessage(args)})
}

// TestAReRunConvergesAndAChangeIsFlushedBeforeItIsReported, against the
// real MariaDB: a re-run of an interrupted creation creates what is
// missing and counts what exists as done, while a first run still says
// already_exists; a re-run of a removal finds it done; every change is
// flushed (the datastore's flush, then the filesystems) and its result
// carries the datastore's status, reads are neither.
func TestAReRunConvergesAndAChangeIsFlushedBeforeItIsReported(t *testing.T) {
	fc := &flushCounter{Manager: server.Manager}
	d := &dispatch.Dispatcher{Manager: fc}
	run(t, d, wire.KindPrepare, `{}`) // prepared already by an earlier test, or now
	fc.flushes.Store(0)

	// The interrupted run created rr_a (and, for the user, the account but
	// not its grant).
	if r := runAttempt(t, d, wire.KindCreateDatabases, 0, `{"databases":[{"name":"rr_a"}]}`); r.Error != nil {
		t.Fatal(r.Error)
	}
	if r := runAttempt(t, d, wire.KindCreateDatabases, 1, `{"databases":[{"name":"rr_a"},{"name":"rr_b"}]}`); r.Error != nil {
		t.Fatalf("re-run: %v", r.Error)
	}
	var dbs wire.ListDatabasesResult
	run(t, d, wire.KindListDatabases, "").Decode(&dbs)
	names := map[string]bool{}
	for _, db := range dbs.Databases {
		names[db.Name] = true
	}
	if !names["rr_a"] || !names["rr_b"] {
		t.Fatalf("after the re-run: %+v", dbs)
	}
	if r := runAttempt(t, d, wire.KindCreateDatabases, 0, `{"databases":[{"name":"rr_a"}]}`); r.Error == nil || r.Error.Code != wire.CodeAlreadyExists {
		t.Fatalf("a genuine duplicate: %+v", r.Error)
	}
	if r := runAttempt(t, d, wire.KindCreateUsers, 0, `{"users":[{"name":"rr_u","password":"pw-rr-1"}]}`); r.Error != nil {
		t.Fatal(r.Error)
	}
	if r := runAttempt(t, d, wire.KindCreateUsers, 1, `{"users":[{"name":"rr_u","password":"pw-rr-1","databases":["rr_b"]}]}`); r.Error != nil {
		t.Fatalf("re-run of create_users: %v", r.Error)
	}
	var access wire.ListAccessResult
	run(t, d, wire.KindListAccess, `{"name":"rr_u"}`).Decode(&access)
	if len(access.Databases) != 1 || access.Databases[0] != "rr_b" {
		t.Fatalf("the re-run did not grant what the cut-short run had not: %+v", access)
	}
	if r := runAttempt(t, d, wire.KindDeleteDatabase, 0, `{"name":"rr_a"}`); r.Error != nil {
		t.Fatal(r.Error)
	}
	if r := runAttempt(t, d, wire.KindDeleteDatabase, 1, `{"name":"rr_a"}`); r.Error != nil {
		t.Fatalf("re-run of a delete that was done: %v", r.Error)
	}
	if r := runAttempt(t, d, wire.KindDeleteDatabase, 0, `{"name":"rr_a"}`); r.Error == nil || r.Error.Code != wire.CodeNotFound {
		t.Fatalf("a first delete of what does not exist: %+v", r.Error)
	}
	// 8 changes (2 of them failed), 2 reads.
	if n := fc.flushes.Load(); n != 8 {
		t.Fatalf("%d flushes for 8 changing operations", n)
	}
	fc.flushes.Store(0)
	// A re-run of a prepare that finished before its result was recorded
	// is done; a first run still says prepared already.
	if r := runAttempt(t, d, wire.KindPrepare, 1, `{}`); r.Error != nil {
		t.Fatalf("re-run of a finished prepare: %v", r.Error)
	}
	if r := runAttempt(t, d, wire.KindPrepare, 0, `{}`); r.Error == nil || r.Error.Code != wire.CodeFailedPrecondition {
		t.Fatalf("a second prepare: %+v", r.Error)
	}
	r := runAttempt(t, d, wire.KindCreateDatabases, 0, `{"databases":[{"name":"rr_c"}]}`)
	if r.Datastore == nil || r.Datastore.Status != wire.StatusRunning {
		t.Fatalf("a change's result carries no status: %+v", r)
	}
	if r := run(t, d, wire.KindListDatabases, ""); r.Datastore != nil {
		t.Fatal("a read carries a status")
	}
}

// A manager without datastore.Replicator answers every replication kind
// with not_supported naming its datastore.
func TestReplicationNeedsTheCapability(t *testing.T) {
	d := &dispatch.Dispatcher{Manager: datastore.Unsupported{Datastore: "exotic"}, Datastore: "exotic"}
	for kind, args := range map[wire.Kind]string{
		wire.KindCreateReplicationAccount: `{"name":"strata_repl_a","password":"p"}`,
		wire.KindDropReplicationAccount:   `{"name":"strata_repl_a"}`,
		wire.KindStartReplication:         `{"host":"10.0.2.101","port":3306,"account":"strata_repl_a","password":"p"}`,
		wire.KindReplicationStatus:        ``,
		wire.KindDetachReplica:            ``,
		wire.KindSetReadOnly:              `{"read_only":true}`,
		wire.KindPromoteReplica:           `{"gtid_pos":"0-1-2","timeout_seconds":5}`,
	} {
		wantError(t, run(t, d, kind, args), wire.CodeNotSupported, "exotic does not support replication")
	}
}

// A manager without datastore.UserSyncer (MariaDB, PostgreSQL: their
// replication carries users) answers the user sync kinds with
// not_supported naming its datastore, after checking the arguments.
func TestUserSyncNeedsTheCapability(t *testing.T) {
	d := &dispatch.Dispatcher{Manager: datastore.Unsupported{Datastore: "exotic"}, Datastore: "exotic"}
	wantError(t, run(t, d, wire.KindExportUsers, ``), wire.CodeNotSupported, "exotic does not support carrying users")
	wantError(t, run(t, d, wire.KindImportUsers, `{"users":["user a on ~* &* +@all -@admin"]}`), wire.CodeNotSupported, "exotic does not support carrying users")
	wantError(t, run(t, d, wire.KindExportUsers, `{"all":true}`), wire.CodeInvalidArgument, "takes no arguments")
	wantError(t, run(t, d, wire.KindImportUsers, ``), wire.CodeInvalidArgument, "arguments are required")
	wantError(t, run(t, d, wire.KindImportUsers, `{"users":[],"force":true}`), wire.CodeInvalidArgument, `unknown parameter "force"`)
}

func TestApplyFlavorNeedsTheCapabilityAndAMemorySize(t *testing.T) {
	d := &dispatch.Dispatcher{Manager: datastore.Unsupported{Datastore: "exotic"}, Datastore: "exotic"}
	wantError(t, run(t, d, wire.KindApplyFlavor, `{"memory_mb":1024}`), wire.CodeNotSupported, "exotic cannot re-derive")
	d = &dispatch.Dispatcher{Manager: server.Manager}
	for args, want := range map[string]string{
		``:                            "arguments are required",
		`{"memory_mb":0}`:             "memory_mb is required",
		`{"memory_mb":-5}`:            "memory_mb",
		`{"memory_mb":1024,"cpus":2}`: "bad arguments",
		`{"memory_mb":"1024"}`:        "bad arguments",
	} {
		wantError(t, run(t, d, wire.KindApplyFlavor, args), wire.CodeInvalidArgument, want)
	}
}

func TestUpgradeDatastoreNeedsTheCapabilityAndTakesNoArguments(t *testing.T) {
	d := &dispatch.Dispatcher{Manager: datastore.Unsupported{Datastore: "exotic"}, Datastore: "exotic"}
	wantError(t, run(t, d, wire.KindUpgradeDatastore, ``), wire.CodeNotSupported, "exotic has no upgrade step")
	d = &dispatch.Dispatcher{Manager: server.Manager}
	wantError(t, run(t, d, wire.KindUpgradeDatastore, `{"to":"11.8"}`), wire.CodeInvalidArgument, "takes no arguments")
}

package mariadb_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/agent/datastore/mariadb"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

func TestPrepareInitialisesStartsAndCreatesInitialDatabasesAndUsers(t *testing.T) {
	inst, res := mariadbtest.PreparedT(t, wire.PrepareArgs{
		MemoryMB:   512,
		Databases:  []wire.Database{{Name: "shop", CharacterSet: "latin1"}, {Name: "blog"}},
		Users:      []wire.User{{Name: "app", Password: "s3cret pass'word", Databases: []string{"shop"}}},
		EnableRoot: true,
		Configuration: &wire.ConfigurationArgs{
			Values: map[string]json.RawMessage{"max_connections": json.RawMessage(`123`)},
			Rules:  []wire.ParameterRule{{Name: "max_connections", Type: "integer", Min: num("1"), Max: num("100000")}},
		},
	})
	ctx := ctxT(t)
	m := inst.Manager
	if !res.Initialized || res.Formatted {
		t.Fatalf("result = %+v, want initialized, not formatted (no device)", res)
	}
	if st := m.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("status = %+v", st)
	}
	dbs, err := m.ListDatabases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(dbs) != 2 || dbs[0].Name != "blog" || dbs[1].Name != "shop" || dbs[1].CharacterSet != "latin1" {
		t.Fatalf("databases = %+v", dbs)
	}

	// The user really logs in with its password and reaches its database
	// only.
	app, err := login(t, inst, "app", "s3cret pass'word", "shop")
	if err != nil {
		t.Fatalf("app cannot log in: %v", err)
	}
	if _, err := app.Exec("CREATE TABLE t (id INT)"); err != nil {
		t.Fatalf("app cannot use its database: %v", err)
	}
	if _, err := app.Exec("CREATE TABLE blog.t (id INT)"); err == nil {
		t.Fatal("app can write to a database it was not given")
	}
	if _, err := login(t, inst, "app", "wrong", "shop"); err == nil {
		t.Fatal("wrong password accepted")
	}

	// Root on create: a generated password, stored as its hash.
	if res.Root == nil || res.Root.Name != "root" || len(res.Root.Password) < 32 {
		t.Fatalf("root credentials = %+v", res.Root)
	}
	adm := admin(t, inst)
	var plugin, hash string
	adm.QueryRow("SELECT plugin, authentication_string FROM mysql.user WHERE User='root' AND Host='%'").Scan(&plugin, &hash)
	if plugin != "mysql_native_password" || hash == "" || strings.Contains(hash, res.Root.Password) {
		t.Fatalf("root@%% plugin %q hash %q", plugin, hash)
	}
	// The local admin account has no password at all (socket only) when the
	// agent runs as root; no anonymous accounts, no test database.
	if n := servertest.QueryStrings(t, adm, "SELECT User FROM mysql.user WHERE User=''"); len(n) != 0 {
		t.Fatalf("anonymous accounts left: %v", n)
	}
	if n := servertest.QueryStrings(t, adm, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='test'"); len(n) != 0 {
		t.Fatal("test database left")
	}
	var maxConn int
	adm.QueryRow("SELECT @@GLOBAL.max_connections").Scan(&maxConn)
	if maxConn != 123 {
		t.Fatalf("max_connections = %d, want 123 from the initial configuration", maxConn)
	}
	var pool int64
	adm.QueryRow("SELECT @@GLOBAL.innodb_buffer_pool_size").Scan(&pool)
	if pool != 256<<20 {
		t.Fatalf("innodb_buffer_pool_size = %d, want half of 512 MiB", pool)
	}
	if _, err := m.Prepare(ctx, wire.PrepareArgs{}); err == nil {
		t.Fatal("second prepare accepted")
	} else {
		wantCode(t, err, wire.CodeFailedPrecondition, "prepared already")
	}
}

func TestPrepareKeepsAnExistingDataDirectory(t *testing.T) {
	inst, _ := mariadbtest.PreparedT(t, wire.PrepareArgs{Databases: []wire.Database{{Name: "keepme"}}})
	ctx := ctxT(t)
	if err := inst.Manager.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	inst.Manager.Close()
	// A rebuild: new root disk (no agent state), old data volume.
	os.Remove(inst.Config.StateFile)
	m2, err := mariadb.New(inst.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if st := m2.Status(ctx); st.Status != wire.StatusNew {
		t.Fatalf("status before prepare = %+v", st)
	}
	res, err := m2.Prepare(ctx, wire.PrepareArgs{Databases: []wire.Database{{Name: "other"}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Initialized {
		t.Fatal("prepare re-initialised an existing data directory")
	}
	dbs, _ := m2.ListDatabases(ctx)
	if len(dbs) != 1 || dbs[0].Name != "keepme" {
		t.Fatalf("databases after rebuild = %+v", dbs)
	}
}

// TestARebuiltGuestAdoptsTheDataVolume: what the controller's rebuild
// asks of a new agent on a new root disk — a prepare with the flavor's
// memory and the attached group, no databases, users or root — adopts the
// initialised data directory: rows, users with their passwords and root
// survive, nothing is re-initialised, and the group (whose file was on
// the old root disk) is applied again.
func TestARebuiltGuestAdoptsTheDataVolume(t *testing.T) {
	rules := []wire.ParameterRule{{Name: "max_connections", Type: "integer", Min: num("1"), Max: num("100000")}}
	inst, res := mariadbtest.PreparedT(t, wire.PrepareArgs{
		MemoryMB:   512,
		Databases:  []wire.Database{{Name: "shop"}},
		Users:      []wire.User{{Name: "app", Password: "app pass 1", Databases: []string{"shop"}}},
		EnableRoot: true,
		Configuration: &wire.ConfigurationArgs{
			Values: map[string]json.RawMessage{"max_connections": json.RawMessage(`321`)}, Rules: rules},
	})
	ctx := ctxT(t)
	app, err := login(t, inst, "app", "app pass 1", "shop")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"CREATE TABLE orders (id INT PRIMARY KEY, what TEXT)", "INSERT INTO orders VALUES (1, 'kept across the rebuild')"} {
		if _, err := app.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	app.Close()
	if err := inst.Manager.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	inst.Manager.Close()
	// The new root disk: no agent state, no rendered configuration.
	for _, f := range []string{inst.Config.StateFile, inst.Config.ConfigFile, inst.Config.OverridesFile} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	m2, err := mariadb.New(inst.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	res2, err := m2.Prepare(ctx, wire.PrepareArgs{MemoryMB: 512, Configuration: &wire.ConfigurationArgs{
		Values: map[string]json.RawMessage{"max_connections": json.RawMessage(`321`)}, Rules: rules}})
	if err != nil {
		t.Fatal(err)
	}
	if res2.Initialized || res2.Formatted || res2.Root != nil {
		t.Fatalf("prepare of a rebuilt guest = %+v (first prepare %+v): it must adopt, not initialise", res2, res)
	}
	if res.TLSFingerprint == "" || res2.TLSFingerprint != res.TLSFingerprint {
		t.Fatalf("TLS fingerprint before the rebuild %q, after %q: the certificate on the data volume must be kept", res.TLSFingerprint, res2.TLSFingerprint)
	}
	app, err = login(t, inst, "app", "app pass 1", "shop")
	if err != nil {
		t.Fatalf("the user's password did not survive the rebuild: %v", err)
	}
	defer app.Close()
	var what string
	if err := app.QueryRow("SELECT what FROM orders WHERE id = 1").Scan(&what); err != nil || what != "kept across the rebuild" {
		t.Fatalf("row after the rebuild: %q, %v", what, err)
	}
	if on, err := m2.IsRootEnabled(ctx); err != nil || !on {
		t.Fatalf("root after the rebuild: %v, %v", on, err)
	}
	var maxConn int
	admin(t, inst).QueryRow("SELECT @@GLOBAL.max_connections").Scan(&maxConn)
	if maxConn != 321 {
		t.Fatalf("max_connections after the rebuild = %d, want the group's 321 applied again", maxConn)
	}
	if st := m2.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("status after the rebuild's prepare = %+v", st)
	}
}

func TestPrepareRejectsBadArgumentsBeforeTouchingAnything(t *testing.T) {
	inst := mariadbtest.NewT(t)
	ctx := ctxT(t)
	bad := []struct {
		name string
		args wire.PrepareArgs
		want string
	}{
		{"injection db", wire.PrepareArgs{Databases: []wire.Database{{Name: "x'; DROP DATABASE mysql; --"}}}, "database name"},
		{"user db not created", wire.PrepareArgs{Users: []wire.User{{Name: "u", Password: "p", Databases: []string{"nope"}}}}, "not among the databases"},
		{"memory", wire.PrepareArgs{MemoryMB: -1}, "memory_mb"},
		{"auth plugin", wire.PrepareArgs{AuthPlugin: "sha256_password"}, "auth_plugin"},
		{"unknown parameter", wire.PrepareArgs{Configuration: &wire.ConfigurationArgs{Values: map[string]json.RawMessage{"foo": json.RawMessage(`1`)}}}, "unknown parameter"},
	}
	for _, tc := range bad {
		_, err := inst.Manager.Prepare(ctx, tc.args)
		wantCode(t, err, wire.CodeInvalidArgument, tc.want)
	}
	servertest.CheckNothingPrepared(t, ctx, inst.Manager, inst.Process, inst.Config.DataDir, inst.Config.ConfigFile, inst.Config.StateFile)
}

func TestFailedPrepareReportsFailedAndIsNotRetried(t *testing.T) {
	inst := mariadbtest.NewT(t)
	ctx := ctxT(t)
	// Break the server's configuration so it cannot start.
	inst.Process.DefaultsFile = filepath.Join(inst.Dir, "missing.cnf")
	inst.Config.StartTimeout = 2 * time.Second
	servertest.CheckFailedPrepareSticks(t, ctx, func() (servertest.Manager, error) { return mariadb.New(inst.Config) })
}

// TestAPrepareCutShortResumes: prepare is cut short (the agent or the VM
// stopped) — once half-way through mariadb-install-db, once after the
// first of its databases — and run again: it redoes the half-done
// initialisation, creates only what is missing, and ends prepared with
// everything it was asked for. Meanwhile the status says building, not
// failed: the controller runs it again.
func TestAPrepareCutShortResumes(t *testing.T) {
	inst := mariadbtest.NewT(t)
	ctx := ctxT(t)
	inst.Manager.Close()
	args := wire.PrepareArgs{Databases: []wire.Database{{Name: "shop"}, {Name: "blog"}},
		Users: []wire.User{{Name: "app", Password: "app-pw-1", Databases: []string{"shop"}}}}

	// Cut short inside mariadb-install-db: a data directory with some of
	// its files.
	writeFile := func(path, content string) {
		t.Helper()
		os.MkdirAll(filepath.Dir(path), 0o750)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(filepath.Join(inst.Config.DataDir, "mysql", "half-written.frm"), "junk")
	writeFile(inst.Config.StateFile, `{"prepare_started":"2026-01-01T00:00:00Z","datadir_init_started":true}`)
	m, err := mariadb.New(inst.Config)
	if err != nil {
		t.Fatal(err)
	}
	if st := m.Status(ctx); st.Status != wire.StatusBuilding {
		t.Fatalf("status of a prepare cut short: %+v, want building", st)
	}
	res, err := m.Prepare(ctx, args)
	if err != nil {
		t.Fatalf("resumed prepare: %v", err)
	}
	if !res.Initialized {
		t.Fatal("the half-done initialisation was kept")
	}
	if _, err := os.Stat(filepath.Join(inst.Config.DataDir, "mysql", "half-written.frm")); !os.IsNotExist(err) {
		t.Fatal("the half-written data directory was not started over")
	}
	if _, err := login(t, inst, "app", "app-pw-1", "shop"); err != nil {
		t.Fatalf("user of the resumed prepare: %v", err)
	}

	// Cut short after "shop" and the user were made (the data directory
	// was initialised by this prepare): run again, it converges.
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	m.Close()
	writeFile(inst.Config.StateFile, `{"prepare_started":"2026-01-01T00:00:00Z","datadir_init_started":true,"datadir_initialized":true}`)
	m2, err := mariadb.New(inst.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	args.Databases = append(args.Databases, wire.Database{Name: "extra"})
	if _, err := m2.Prepare(ctx, args); err != nil {
		t.Fatalf("prepare resumed after its databases: %v", err)
	}
	dbs, _ := m2.ListDatabases(ctx)
	if len(dbs) != 3 {
		t.Fatalf("databases after the resumed prepare: %+v", dbs)
	}
	if st := m2.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("status %+v", st)
	}
	if _, err := m2.Prepare(ctx, args); err == nil {
		t.Fatal("a finished prepare ran again")
	}
}

// Trixie's mariadb-server ships no /var/log/mysql (bookworm's does):
// prepare makes a missing log directory for the server's account, so the
// error log exists and the log operations read it.
func TestPrepareMakesAMissingLogDirectory(t *testing.T) {
	inst := mariadbtest.NewT(t)
	inst.Manager.Close()
	logs := filepath.Join(inst.Dir, "var-log-mysql")
	inst.Config.ErrorLog = filepath.Join(logs, "error.log")
	inst.Config.SlowQueryLog = filepath.Join(logs, "slow.log")
	m, err := mariadb.New(inst.Config)
	if err != nil {
		t.Fatal(err)
	}
	inst.Manager = m
	servertest.MustPrepare(t, m, wire.PrepareArgs{}, 2*time.Minute)
	st, err := os.Stat(logs)
	if err != nil || !st.IsDir() || st.Mode().Perm() != 0o750 {
		t.Fatalf("log directory: %v %v", st, err)
	}
	tail, err := m.TailLog(ctxT(t), mariadb.LogError, 50)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(tail.Lines, "\n"), "ready for connections") {
		t.Fatalf("the error log in the new directory lacks the start-up:\n%s", strings.Join(tail.Lines, "\n"))
	}
}

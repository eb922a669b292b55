package postgresql_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/agent/datastore/postgresql"
	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

func TestPrepareInitialisesStartsAndCreatesInitialDatabasesAndUsers(t *testing.T) {
	inst, res := postgresqltest.PreparedT(t, wire.PrepareArgs{
		MemoryMB:   512,
		Databases:  []wire.Database{{Name: "shop", CharacterSet: "latin1"}, {Name: "blog"}},
		Users:      []wire.User{{Name: "app", Password: `s3cret pass'word"\`, Databases: []string{"shop"}}},
		EnableRoot: true,
		Configuration: &wire.ConfigurationArgs{
			Values: map[string]json.RawMessage{"work_mem": json.RawMessage(`8192`), "max_connections": json.RawMessage(`42`)},
			Rules: []wire.ParameterRule{
				{Name: "work_mem", Type: "integer", Min: num("64"), Max: num("2147483647")},
				{Name: "max_connections", Type: "integer", Min: num("1"), Max: num("10000"), RestartRequired: true},
			},
		},
	})
	ctx := ctxT(t)
	m := inst.Manager
	if !res.Initialized || res.Formatted {
		t.Fatalf("result = %+v, want initialized, not formatted (no device)", res)
	}
	if st := m.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("status = %+v (a restart-required initial configuration is applied by restarting during prepare)", st)
	}
	dbs, err := m.ListDatabases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(dbs) != 2 || dbs[0].Name != "blog" || dbs[1].Name != "shop" || dbs[1].CharacterSet != "LATIN1" || dbs[1].Collation != "C" ||
		dbs[0].CharacterSet != "UTF8" {
		t.Fatalf("databases = %+v", dbs)
	}

	// The user logs in with its password and may use its database only.
	app, err := connect(t, inst, "app", `s3cret pass'word"\`, "shop")
	if err != nil {
		t.Fatalf("app cannot log in: %v", err)
	}
	if _, err := app.Exec("CREATE TABLE t (id int)"); err != nil {
		t.Fatalf("app cannot use its database: %v", err)
	}
	if _, err := connect(t, inst, "app", `s3cret pass'word"\`, "blog"); err == nil {
		t.Fatal("app can connect to a database it was not given")
	}
	if _, err := connect(t, inst, "app", "wrong", "shop"); err == nil {
		t.Fatal("wrong password accepted")
	}

	// Root on create: a generated password; the server stores a SCRAM
	// verifier, never the password.
	if res.Root == nil || res.Root.Name != "root" || len(res.Root.Password) < 32 {
		t.Fatalf("root credentials = %+v", res.Root)
	}
	rootDB, err := connect(t, inst, "root", res.Root.Password, "postgres")
	if err != nil {
		t.Fatalf("root cannot log in: %v", err)
	}
	var super bool
	rootDB.QueryRow("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super)
	if !super {
		t.Fatal("root is not a superuser")
	}
	adm := admin(t, inst, "postgres")
	for _, who := range []string{"root", "app"} {
		var verifier string
		adm.QueryRow("SELECT rolpassword FROM pg_authid WHERE rolname = $1", who).Scan(&verifier)
		if !strings.HasPrefix(verifier, "SCRAM-SHA-256$4096:") || strings.Contains(verifier, res.Root.Password) || strings.Contains(verifier, "s3cret") {
			t.Fatalf("%s's stored password = %q", who, verifier)
		}
	}
	// The admin role has no password; only peer authentication over the
	// socket reaches it.
	var adminPW *string
	adm.QueryRow("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'").Scan(&adminPW)
	if adminPW != nil {
		t.Fatal("the admin role has a password")
	}
	if _, err := connect(t, inst, "postgres", "anything", "postgres"); err != nil {
		// The test runs as the mapped OS user, so peer authentication lets
		// it in whatever password it sends: that is the point of peer.
		t.Fatalf("admin over the socket: %v", err)
	}
	hba, _ := os.ReadFile(inst.Config.HBAFile)
	if !strings.Contains(string(hba), "host    all          postgres    0.0.0.0/0  reject") {
		t.Fatalf("pg_hba.conf does not reject the admin role from the network:\n%s", hba)
	}

	var workMem, maxConn, sharedBuffers string
	adm.QueryRow("SELECT current_setting('work_mem'), current_setting('max_connections'), current_setting('shared_buffers')").Scan(&workMem, &maxConn, &sharedBuffers)
	if workMem != "8MB" || maxConn != "42" || sharedBuffers != "128MB" {
		t.Fatalf("work_mem %s max_connections %s shared_buffers %s; want 8MB, 42 (initial configuration), 128MB (a quarter of 512)", workMem, maxConn, sharedBuffers)
	}
	if _, err := m.Prepare(ctx, wire.PrepareArgs{}); err == nil {
		t.Fatal("second prepare accepted")
	} else {
		wantCode(t, err, wire.CodeFailedPrecondition, "prepared already")
	}
}

func TestPrepareKeepsAnExistingDataDirectory(t *testing.T) {
	inst, _ := postgresqltest.PreparedT(t, wire.PrepareArgs{Databases: []wire.Database{{Name: "keepme"}}})
	ctx := ctxT(t)
	if err := inst.Manager.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	inst.Manager.Close()
	// A rebuild: new root disk (no agent state, no configuration), old
	// data volume.
	os.Remove(inst.Config.StateFile)
	os.RemoveAll(filepath.Dir(inst.Config.ConfigFile))
	m2, err := postgresql.New(inst.Config)
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

func TestPrepareRejectsBadArgumentsBeforeTouchingAnything(t *testing.T) {
	inst := postgresqltest.NewT(t)
	ctx := ctxT(t)
	bad := []struct {
		name string
		args wire.PrepareArgs
		want string
	}{
		{"injection db", wire.PrepareArgs{Databases: []wire.Database{{Name: "x'; DROP DATABASE postgres; --"}}}, "database name"},
		{"user db not created", wire.PrepareArgs{Users: []wire.User{{Name: "u", Password: "p", Databases: []string{"nope"}}}}, "not among the databases"},
		{"non-ASCII password", wire.PrepareArgs{Users: []wire.User{{Name: "u", Password: "pässword"}}}, "printable ASCII"},
		{"memory", wire.PrepareArgs{MemoryMB: -1}, "memory_mb"},
		{"unknown parameter", wire.PrepareArgs{Configuration: &wire.ConfigurationArgs{Values: map[string]json.RawMessage{"foo": json.RawMessage(`1`)}}}, "unknown parameter"},
		{"managed parameter", wire.PrepareArgs{Configuration: &wire.ConfigurationArgs{
			Values: map[string]json.RawMessage{"archive_command": json.RawMessage(`"rm -rf /"`)},
			Rules:  []wire.ParameterRule{{Name: "archive_command", Type: "string"}}}}, "managed by the agent"},
	}
	for _, tc := range bad {
		_, err := inst.Manager.Prepare(ctx, tc.args)
		wantCode(t, err, wire.CodeInvalidArgument, tc.want)
	}
	servertest.CheckNothingPrepared(t, ctx, inst.Manager, inst.Process, inst.Config.DataDir, inst.Config.ConfigFile, inst.Config.StateFile)
}

func TestFailedPrepareReportsFailedAndIsNotRetried(t *testing.T) {
	inst := postgresqltest.NewT(t)
	ctx := ctxT(t)
	// Point the server at a configuration file that does not exist.
	inst.Process.ConfigFile = filepath.Join(inst.Dir, "missing.conf")
	inst.Config.StartTimeout = 2 * time.Second
	servertest.CheckFailedPrepareSticks(t, ctx, func() (servertest.Manager, error) { return postgresql.New(inst.Config) })
}

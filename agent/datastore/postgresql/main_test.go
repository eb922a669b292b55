package postgresql_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"strata/agent/datastore/postgresql"
	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/wire"
)

// One prepared server serves the tests that only need a running
// PostgreSQL; tests that stop, kill or re-prepare a server start their own.
var (
	sharedOnce sync.Once
	shared     *postgresqltest.Instance
	sharedErr  error
	sharedDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Close()
	}
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
	os.Exit(code)
}

func sharedServer(t *testing.T) *postgresqltest.Instance {
	t.Helper()
	sharedOnce.Do(func() {
		sharedDir, sharedErr = os.MkdirTemp("", "strata-pg-shared-")
		if sharedErr != nil {
			return
		}
		if sharedErr = os.Chmod(sharedDir, 0o755); sharedErr != nil {
			return
		}
		shared, sharedErr = postgresqltest.New(sharedDir, postgresqltest.Logger())
		if sharedErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, sharedErr = shared.Manager.Prepare(ctx, wire.PrepareArgs{})
	})
	if sharedErr != nil {
		t.Fatalf("shared PostgreSQL: %v", sharedErr)
	}
	return shared
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func num(s string) *json.Number { n := json.Number(s); return &n }

func values(kv ...string) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i]] = json.RawMessage(kv[i+1])
	}
	return out
}

// connect opens a connection to dbName on the instance's socket as user
// with password ("" for the admin role's peer authentication),
// independent of the manager under test.
func connect(t *testing.T, inst *postgresqltest.Instance, user, password, dbName string) (*sql.DB, error) {
	t.Helper()
	c, err := pgx.ParseConfig("")
	if err != nil {
		t.Fatal(err)
	}
	c.Host, c.Port, c.User, c.Password, c.Database = inst.Config.SocketDir, uint16(inst.Config.Port), user, password, dbName
	c.TLSConfig, c.Fallbacks = nil, nil
	db := stdlib.OpenDB(*c)
	db.SetMaxOpenConns(1)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, err
	}
	t.Cleanup(func() { db.Close() })
	return db, nil
}

// admin opens the test's own admin connection.
func admin(t *testing.T, inst *postgresqltest.Instance, dbName string) *sql.DB {
	t.Helper()
	db, err := connect(t, inst, postgresql.AdminRole, "", dbName)
	if err != nil {
		t.Fatalf("admin connection: %v", err)
	}
	return db
}

func queryStrings(t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, v := range vals {
			parts = append(parts, v.String)
		}
		out = append(out, strings.Join(parts, "|"))
	}
	return out
}

// snapshot captures everything a bad operation could have changed:
// databases with their ACLs, roles with their attributes and password
// verifiers, schema privileges in every database, settings, and the
// manager's files.
func snapshot(t *testing.T, inst *postgresqltest.Instance) string {
	t.Helper()
	db := admin(t, inst, "postgres")
	var b strings.Builder
	for _, q := range []string{
		"SELECT datname, pg_encoding_to_char(encoding), datcollate, datctype, datacl::text FROM pg_database ORDER BY 1",
		"SELECT rolname, rolsuper, rolcanlogin, rolcreatedb, rolcreaterole, rolpassword FROM pg_authid ORDER BY 1",
		"SELECT name, setting, sourcefile FROM pg_settings ORDER BY 1",
		"SELECT sourcefile, name, setting FROM pg_file_settings ORDER BY 1, 2",
	} {
		fmt.Fprintf(&b, "%s\n%s\n", q, strings.Join(queryStrings(t, db, q), "\n"))
	}
	for _, name := range queryStrings(t, db, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1") {
		in := admin(t, inst, name)
		q := "SELECT nspname, nspacl::text FROM pg_namespace ORDER BY 1"
		fmt.Fprintf(&b, "%s: %s\n%s\n", name, q, strings.Join(queryStrings(t, in, q), "\n"))
	}
	for _, f := range []string{inst.Config.OverridesFile, inst.Config.ConfigFile, inst.Config.HBAFile, inst.Config.IdentFile, inst.Config.StateFile} {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "%s\n%s\n", f, data)
	}
	return b.String()
}

func assertUnchanged(t *testing.T, inst *postgresqltest.Instance, before string) {
	t.Helper()
	if after := snapshot(t, inst); after != before {
		t.Fatalf("server changed by a rejected operation:\n%s", diff(before, after))
	}
}

func diff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	inA := map[string]bool{}
	for _, l := range al {
		inA[l] = true
	}
	inB := map[string]bool{}
	for _, l := range bl {
		inB[l] = true
	}
	var out []string
	for _, l := range al {
		if !inB[l] {
			out = append(out, "- "+l)
		}
	}
	for _, l := range bl {
		if !inA[l] {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// wantCode asserts err is a *wire.OpError with code and a message
// containing each of parts.
func wantCode(t *testing.T, err error, code wire.ErrorCode, parts ...string) {
	t.Helper()
	var oe *wire.OpError
	if !errors.As(err, &oe) {
		t.Fatalf("err = %v (%T), want a %s error", err, err, code)
	}
	if oe.Code != code {
		t.Fatalf("code = %s (%s), want %s", oe.Code, oe.Message, code)
	}
	for _, p := range parts {
		if !strings.Contains(oe.Message, p) {
			t.Fatalf("message %q does not contain %q", oe.Message, p)
		}
	}
}

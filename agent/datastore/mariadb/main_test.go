package mariadb_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/wire"
)

// One prepared server serves the tests that only need a running MariaDB;
// tests that stop, kill or re-prepare a server start their own.
var (
	sharedOnce sync.Once
	shared     *mariadbtest.Instance
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

func sharedServer(t *testing.T) *mariadbtest.Instance {
	t.Helper()
	sharedOnce.Do(func() {
		sharedDir, sharedErr = os.MkdirTemp("", "strata-mariadb-")
		if sharedErr != nil {
			return
		}
		shared, sharedErr = mariadbtest.New(sharedDir, mariadbtest.Logger())
		if sharedErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, sharedErr = shared.Manager.Prepare(ctx, wire.PrepareArgs{})
	})
	if sharedErr != nil {
		t.Fatalf("shared MariaDB: %v", sharedErr)
	}
	return shared
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// admin opens the test's own connection to the server (as the admin
// account, over the socket), independent of the manager under test.
func admin(t *testing.T, inst *mariadbtest.Instance) *sql.DB {
	t.Helper()
	c := mysql.NewConfig()
	c.Net, c.Addr, c.User = "unix", inst.Config.Socket, inst.Config.AdminUser
	db, err := sql.Open("mysql", c.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// login opens a connection as a database user with a password.
func login(t *testing.T, inst *mariadbtest.Instance, user, password, dbName string) (*sql.DB, error) {
	t.Helper()
	c := mysql.NewConfig()
	c.Net, c.Addr, c.User, c.Passwd, c.DBName = "unix", inst.Config.Socket, user, password, dbName
	db, err := sql.Open("mysql", c.FormatDSN())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, err
	}
	t.Cleanup(func() { db.Close() })
	return db, nil
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
// schemas, accounts and their credentials, grants, global variables, and
// the manager's files.
func snapshot(t *testing.T, inst *mariadbtest.Instance) string {
	t.Helper()
	db := admin(t, inst)
	var b strings.Builder
	for _, q := range []string{
		"SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA ORDER BY 1",
		"SELECT User, Host, plugin, authentication_string FROM mysql.user ORDER BY 1, 2",
		"SELECT Host, Db, User FROM mysql.db ORDER BY 1, 2, 3",
		"SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES ORDER BY 1",
	} {
		fmt.Fprintf(&b, "%s\n%s\n", q, strings.Join(queryStrings(t, db, q), "\n"))
	}
	for _, f := range []string{inst.Config.OverridesFile, inst.Config.ConfigFile, inst.Config.StateFile} {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "%s\n%s\n", f, data)
	}
	return b.String()
}

func assertUnchanged(t *testing.T, inst *mariadbtest.Instance, before string) {
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

package mariadb_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// One prepared server serves the tests that only need a running MariaDB;
// tests that stop, kill or re-prepare a server start their own.
var shared servertest.Shared[*mariadbtest.Instance]

func TestMain(m *testing.M) { os.Exit(shared.Run(m)) }

func sharedServer(t *testing.T) *mariadbtest.Instance {
	t.Helper()
	return shared.Get(t, "MariaDB", "strata-mariadb-", func(dir string) (*mariadbtest.Instance, error) {
		inst, _, err := mariadbtest.Prepared(dir, wire.PrepareArgs{})
		return inst, err
	})
}

// serverVersion is the major.minor version of the MariaDB the tests run:
// the host's, or the Debian root's the tests run in (ci/test-in-root.sh). The recipe and
// validation rules the tests check are that version's.
func serverVersion(t *testing.T) string {
	t.Helper()
	var v string
	if err := admin(t, sharedServer(t)).QueryRow("SELECT VERSION()").Scan(&v); err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 3 {
		t.Fatalf("VERSION() = %q: no major.minor", v)
	}
	t.Logf("MariaDB %s", v)
	return parts[0] + "." + parts[1]
}

// recipeFile and rulesFile are the image recipe and validation rules of
// the MariaDB version under test.
func recipeFile(t *testing.T) string {
	return "../../../images/mariadb-" + serverVersion(t) + ".yaml"
}

func rulesFile(t *testing.T) string {
	return "../../../validation-rules/mariadb-" + serverVersion(t) + ".json"
}

func ctxT(t *testing.T) context.Context { return servertest.Context(t, 2*time.Minute) }

// Shorthands used throughout the tests.
var (
	wantCode = servertest.WantCode
	num      = servertest.Num
	values   = servertest.Values
)

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
//
// The Go driver (v1.10.1) trims a trailing zero byte from every auth
// switch request's data, so when the server's random 32-byte ed25519
// scramble ends in zero (one login in 256) it answers "malformed packet"
// without trying the password. A new connection gets a new scramble:
// login tries again on that error alone, so a wrong password still fails
// with the server's own refusal.
func login(t *testing.T, inst *mariadbtest.Instance, user, password, dbName string) (*sql.DB, error) {
	t.Helper()
	c := mysql.NewConfig()
	c.Net, c.Addr, c.User, c.Passwd, c.DBName = "unix", inst.Config.Socket, user, password, dbName
	db, err := sql.Open("mysql", c.FormatDSN())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	for try := 0; ; try++ {
		err = db.Ping()
		if err == nil || !errors.Is(err, mysql.ErrMalformPkt) || try == 4 {
			break
		}
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	t.Cleanup(func() { db.Close() })
	return db, nil
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
		// The GTID positions count binary log events, which an operation
		// that undoes its own change still writes: history, not state.
		"SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES WHERE VARIABLE_NAME NOT LIKE 'GTID\\_%' ORDER BY 1",
	} {
		fmt.Fprintf(&b, "%s\n%s\n", q, strings.Join(servertest.QueryStrings(t, db, q), "\n"))
	}
	b.WriteString(servertest.Files(inst.Config.OverridesFile, inst.Config.ConfigFile, inst.Config.StateFile))
	return b.String()
}

func assertUnchanged(t *testing.T, inst *mariadbtest.Instance, before string) {
	t.Helper()
	servertest.AssertUnchanged(t, before, snapshot(t, inst))
}

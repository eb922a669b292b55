package postgresql_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"strata/agent/datastore/postgresql"
	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// One prepared server serves the tests that only need a running
// PostgreSQL; tests that stop, kill or re-prepare a server start their own.
var shared servertest.Shared[*postgresqltest.Instance]

func TestMain(m *testing.M) { os.Exit(shared.Run(m)) }

func sharedServer(t *testing.T) *postgresqltest.Instance {
	t.Helper()
	return shared.Get(t, "PostgreSQL", "strata-pg-shared-", func(dir string) (*postgresqltest.Instance, error) {
		inst, _, err := postgresqltest.Prepared(dir, wire.PrepareArgs{})
		return inst, err
	})
}

// serverVersion is the major version of the PostgreSQL the tests run
// (server_version_num / 10000): the host's, or the one in the Debian root
// the tests run in (make verify-rules-trixie). The recipe and validation
// rules the tests check are that version's.
func serverVersion(t *testing.T) string {
	t.Helper()
	var v, num string
	if err := admin(t, sharedServer(t), "postgres").QueryRow("SELECT version(), current_setting('server_version_num')").Scan(&v, &num); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", v)
	if len(num) < 5 {
		t.Fatalf("server_version_num = %q", num)
	}
	return strings.TrimLeft(num[:len(num)-4], "0")
}

// recipeFile and rulesFile are the image recipe and validation rules of
// the PostgreSQL version under test.
func recipeFile(t *testing.T) string {
	return "../../../images/postgresql-" + serverVersion(t) + ".yaml"
}

func rulesFile(t *testing.T) string {
	return "../../../validation-rules/postgresql-" + serverVersion(t) + ".json"
}

func ctxT(t *testing.T) context.Context { return servertest.Context(t, 2*time.Minute) }

// Shorthands used throughout the tests.
var (
	wantCode = servertest.WantCode
	num      = servertest.Num
	values   = servertest.Values
)

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
		fmt.Fprintf(&b, "%s\n%s\n", q, strings.Join(servertest.QueryStrings(t, db, q), "\n"))
	}
	for _, name := range servertest.QueryStrings(t, db, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1") {
		in := admin(t, inst, name)
		q := "SELECT nspname, nspacl::text FROM pg_namespace ORDER BY 1"
		fmt.Fprintf(&b, "%s: %s\n%s\n", name, q, strings.Join(servertest.QueryStrings(t, in, q), "\n"))
	}
	b.WriteString(servertest.Files(inst.Config.OverridesFile, inst.Config.ConfigFile, inst.Config.HBAFile, inst.Config.IdentFile, inst.Config.StateFile))
	return b.String()
}

func assertUnchanged(t *testing.T, inst *postgresqltest.Instance, before string) {
	t.Helper()
	servertest.AssertUnchanged(t, before, snapshot(t, inst))
}

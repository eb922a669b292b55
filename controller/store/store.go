// Package store opens the controller's SQL database and keeps its schema:
// embedded SQLite (pure Go, no cgo) by default, PostgreSQL through a DSN
// when several controller replicas share one database. Migrations are
// numbered SQL files applied once each, in order, under a lock.
//
// store owns the connection, the dialect differences and the schema; the
// queries belong to the packages that own the tables (registry, instances,
// agentendpoint, tasks...). It must not grow domain logic.
package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect says which SQL server is behind a DB.
type Dialect int

const (
	SQLite Dialect = iota
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "postgres"
	}
	return "sqlite"
}

// DB is the controller's database. Queries use ? placeholders; DB rewrites
// them for PostgreSQL.
type DB struct {
	sql     *sql.DB
	dialect Dialect
	// where describes the database for messages, without credentials.
	where string
}

// Querier runs statements: a *DB or a *Tx. Repository functions take one so
// callers can make several of them one transaction.
type Querier interface {
	Exec(ctx context.Context, query string, args ...any) (sql.Result, error)
	Query(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRow(ctx context.Context, query string, args ...any) *sql.Row
	Dialect() Dialect
}

// IsPostgresDSN reports whether dsn names a PostgreSQL database.
func IsPostgresDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Open connects to dsn — a postgres:// or postgresql:// URL, or the path of
// an SQLite file (created if missing) — and migrates the schema.
func Open(ctx context.Context, dsn string) (*DB, error) { return OpenAt(ctx, dsn, 0) }

// OpenAt is Open with the schema migrated up to version only (0: all), for
// tests that put data into an older schema and migrate it.
func OpenAt(ctx context.Context, dsn string, version int) (*DB, error) {
	db, err := open(dsn)
	if err != nil {
		return nil, err
	}
	if err := db.sql.PingContext(ctx); err != nil {
		db.sql.Close()
		return nil, fmt.Errorf("database %s: %w", db.where, err)
	}
	if err := db.MigrateTo(ctx, version); err != nil {
		db.sql.Close()
		return nil, err
	}
	return db, nil
}

func open(dsn string) (*DB, error) {
	if IsPostgresDSN(dsn) {
		s, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, fmt.Errorf("database: %w", err)
		}
		s.SetMaxOpenConns(16)
		s.SetConnMaxIdleTime(5 * time.Minute)
		return &DB{sql: s, dialect: Postgres, where: redactDSN(dsn)}, nil
	}
	path := strings.TrimPrefix(dsn, "sqlite:")
	if path == "" {
		return nil, errors.New("database: empty SQLite path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if err := privateFiles(path); err != nil {
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	// WAL lets the CLI read and write while serve runs; immediate
	// transactions take the write lock up front so two writers queue on
	// busy_timeout instead of failing on a lock upgrade.
	q := "?_pragma=busy_timeout(15000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	s, err := sql.Open("sqlite", "file:"+path+q)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	s.SetMaxOpenConns(8)
	return &DB{sql: s, dialect: SQLite, where: path}, nil
}

// privateFiles makes the SQLite database at path, and its -wal and -shm
// files if they exist, readable by their owner only: they hold password
// and token hashes and, for a while, operations' arguments. SQLite gives
// the -wal and -shm files it creates the database file's mode, so the
// database file is created 0600 before SQLite opens it, whatever the
// umask; an existing one with looser modes is tightened.
func privateFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, 0o600); err != nil {
				return fmt.Errorf("%s is readable by others (mode %o) and could not be tightened: %w", p, fi.Mode().Perm(), err)
			}
		}
	}
	return nil
}

// redactDSN drops the password from a URL DSN.
func redactDSN(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	scheme := strings.Index(dsn, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return dsn
	}
	userinfo := dsn[scheme+3 : at]
	if i := strings.Index(userinfo, ":"); i >= 0 {
		userinfo = userinfo[:i] + ":***"
	}
	return dsn[:scheme+3] + userinfo + dsn[at:]
}

// Close closes the connections.
func (db *DB) Close() error { return db.sql.Close() }

// Dialect returns the SQL dialect.
func (db *DB) Dialect() Dialect { return db.dialect }

// String describes the database without credentials.
func (db *DB) String() string { return db.dialect.String() + " " + db.where }

// SQL exposes the pool (for health checks and tests).
func (db *DB) SQL() *sql.DB { return db.sql }

func (db *DB) Exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return db.sql.ExecContext(ctx, rebind(db.dialect, q), args...)
}

func (db *DB) Query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return db.sql.QueryContext(ctx, rebind(db.dialect, q), args...)
}

func (db *DB) QueryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return db.sql.QueryRowContext(ctx, rebind(db.dialect, q), args...)
}

// Tx is a transaction.
type Tx struct {
	tx      *sql.Tx
	dialect Dialect
}

func (t *Tx) Exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, rebind(t.dialect, q), args...)
}

func (t *Tx) Query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, rebind(t.dialect, q), args...)
}

func (t *Tx) QueryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, rebind(t.dialect, q), args...)
}

func (t *Tx) Dialect() Dialect { return t.dialect }

// InTx runs fn in a transaction and commits it if fn returns nil. A
// serialization failure or deadlock (PostgreSQL) or a busy database
// (SQLite) is retried a few times: fn must be safe to run again.
func (db *DB) InTx(ctx context.Context, fn func(tx *Tx) error) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt*attempt) * 20 * time.Millisecond):
			}
		}
		err = db.inTx(ctx, fn)
		if err == nil || !retryable(err) {
			return err
		}
	}
	return err
}

func (db *DB) inTx(ctx context.Context, fn func(tx *Tx) error) (err error) {
	stx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	tx := &Tx{tx: stx, dialect: db.dialect}
	defer func() {
		if p := recover(); p != nil {
			stx.Rollback()
			panic(p)
		}
		if err != nil {
			stx.Rollback()
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	if err = stx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code() & 0xff
		return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
	}
	return false
}

// IsUniqueViolation reports whether err is a unique or primary key
// constraint violation.
func IsUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// rebind turns ? placeholders into $1, $2... for PostgreSQL. Queries in
// this code base never contain a literal '?'.
func rebind(d Dialect, q string) string {
	if d != Postgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// Millis is the form times are stored in: milliseconds since the epoch,
// UTC, in a BIGINT — portable and sortable in both dialects.
func Millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// FromMillis converts a stored time back; 0 is the zero time.
func FromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// NullMillis converts a nullable stored time.
func NullMillis(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return FromMillis(v.Int64)
}

// Bool converts a Go bool to the stored INTEGER 0/1.
func Bool(b bool) int {
	if b {
		return 1
	}
	return 0
}

// NewID returns a random UUID (version 4), the form every controller
// resource id takes (python-troveclient tells ids from names by it).
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// IsID reports whether s has the form of an id NewID makes.
func IsID(s string) bool { return uuidPattern.MatchString(s) }

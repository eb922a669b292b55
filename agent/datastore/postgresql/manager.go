// Package postgresql is the PostgreSQL datastore manager: it prepares
// Debian's PostgreSQL server in a fresh guest and carries out the
// controller's database, user, root, configuration, service and log
// operations.
//
// Layout, shared with every manager: manager.go (config, state, status),
// prepare.go, databases.go, users.go, root.go, configuration.go,
// service.go (start/stop/restart), logs.go, names.go (validation,
// quoting, password verifiers), pgconf.go (rendered configuration).
//
// The agent logs in as the bootstrap superuser "postgres" over the local
// unix socket with peer authentication, mapped from the agent's own OS
// account in pg_ident.conf: no admin password exists to leak, and
// pg_hba.conf rejects "postgres" from the network. Every name and value is
// validated before any statement runs; a bad one returns an
// invalid_argument error and changes nothing. This package must not talk
// to the controller or decide policy: it does what a validated operation
// asks.
package postgresql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// Config says where everything is. GuestConfig gives the values for a
// Debian guest; tests point everything into a temporary directory.
type Config struct {
	// MountPoint is where the data volume is (mounted); DataDir, below
	// it, is the cluster's data directory (a subdirectory, so the
	// filesystem's lost+found stays out of it).
	MountPoint string
	DataDir    string
	// DataDevice, if set, is formatted (when blank) and mounted at
	// MountPoint by prepare.
	DataDevice string
	// SocketDir holds the server's unix socket; the agent connects there.
	SocketDir string
	Port      int
	// ListenAddresses is listen_addresses: "*" in the guest, "" for no
	// TCP at all (tests).
	ListenAddresses string
	// ConfigFile is the rendered postgresql.conf; HBAFile and IdentFile
	// the rendered authentication files; OverridesFile, included last by
	// ConfigFile, holds the configuration group.
	ConfigFile    string
	HBAFile       string
	IdentFile     string
	OverridesFile string
	// ConfigTemplate is the image's default configuration template
	// (wire.RenderConfigTemplate): rendered for the flavor into the
	// defaults layer, included after ConfigFile and before the group.
	// Empty or absent: ConfigFile's built-in sizing only.
	ConfigTemplate string
	// StartConf, if set, is Debian's start.conf for the cluster (written
	// "auto" so pg_ctlcluster and its systemd unit manage it).
	StartConf string
	// PidFile is external_pid_file.
	PidFile string
	// ClusterName is cluster_name (Debian: "15/main"); may be empty.
	ClusterName string
	// LogFile is where the server's stderr goes (Debian's pg_ctlcluster
	// and the tests both send it there).
	LogFile string
	// StateFile keeps the manager's own facts (prepared, restart needed).
	StateFile string
	// OSUser owns the data directory and runs the server (and initdb,
	// which refuses to run as root).
	OSUser string
	// AgentOSUser is the OS account the agent runs as; pg_ident.conf maps
	// it to the admin role (default: the current user).
	AgentOSUser string
	// InitDB is the initdb binary; BaseBackup is pg_basebackup (default:
	// beside initdb).
	InitDB     string
	BaseBackup string
	// ServiceUnit is the server's systemd unit, for the data-volume mount
	// dependency.
	ServiceUnit string
	Service     datastore.Service
	// Volume prepares DataDevice; nil uses volume.Volume defaults.
	Volume datastore.VolumePreparer
	// StartTimeout bounds waiting for the server to answer after a start.
	StartTimeout time.Duration
	Logger       *slog.Logger
}

// Manager is the PostgreSQL datastore manager.
type Manager struct {
	cfg Config
	log *slog.Logger
	lc  *datastore.Lifecycle

	dbOnce sync.Once
	db     *sql.DB
}

var _ datastore.Manager = (*Manager)(nil)

// New returns a manager; it loads the state file but touches nothing else.
func New(cfg Config) (*Manager, error) {
	if cfg.Service == nil {
		return nil, errors.New("postgresql: Config.Service is required")
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Port == 0 {
		cfg.Port = 5432
	}
	if cfg.InitDB == "" {
		cfg.InitDB = "initdb"
	}
	if cfg.BaseBackup == "" {
		cfg.BaseBackup = "pg_basebackup"
		if dir := filepath.Dir(cfg.InitDB); dir != "." {
			cfg.BaseBackup = filepath.Join(dir, "pg_basebackup")
		}
	}
	if cfg.AgentOSUser == "" {
		me, err := currentUser()
		if err != nil {
			return nil, err
		}
		cfg.AgentOSUser = me
	}
	lc, err := datastore.LoadLifecycle("postgresql", cfg.StateFile)
	if err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, log: cfg.Logger.With("component", "postgresql"), lc: lc}, nil
}

// tool is one of the server's programs beside initdb (pg_controldata).
func (m *Manager) tool(name string) string {
	if dir := filepath.Dir(m.cfg.InitDB); dir != "." {
		return filepath.Join(dir, name)
	}
	return name
}

// Close releases the database connections.
func (m *Manager) Close() error {
	if m.db != nil {
		return m.db.Close()
	}
	return nil
}

func (m *Manager) DataPath() string {
	if m.cfg.MountPoint != "" {
		return m.cfg.MountPoint
	}
	return m.cfg.DataDir
}

// connConfig is the admin connection to database dbName over the socket.
func (m *Manager) connConfig(dbName string) *pgx.ConnConfig {
	c, err := pgx.ParseConfig("")
	if err != nil {
		panic(fmt.Sprintf("postgresql: connection config: %v", err)) // static: a bug
	}
	c.Host = m.cfg.SocketDir
	c.Port = uint16(m.cfg.Port)
	c.User = AdminRole
	c.Database = dbName
	c.Password = ""
	c.TLSConfig = nil
	c.Fallbacks = nil
	c.ConnectTimeout = 5 * time.Second
	c.RuntimeParams = map[string]string{"application_name": "strata-agent", "standard_conforming_strings": "on"}
	return c
}

// conn returns the pool of admin connections to the "postgres" database.
func (m *Manager) conn() *sql.DB {
	m.dbOnce.Do(func() {
		m.db = stdlib.OpenDB(*m.connConfig("postgres"))
		m.db.SetMaxOpenConns(2)
		m.db.SetMaxIdleConns(1)
		m.db.SetConnMaxIdleTime(30 * time.Second)
	})
	return m.db
}

// inDatabase runs statements in another database (grants on its schema,
// ownership hand-over), on a connection of its own.
func (m *Manager) inDatabase(ctx context.Context, dbName string, stmts ...string) error {
	c, err := pgx.ConnectConfig(ctx, m.connConfig(dbName))
	if err != nil {
		return fmt.Errorf("connect to database %s: %w", show(dbName), err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	for _, s := range stmts {
		if _, err := c.Exec(ctx, s); err != nil {
			return fmt.Errorf("database %s: %s: %w", show(dbName), datastore.FirstWords(s), err)
		}
	}
	return nil
}

// exec runs statements that take no arguments one by one.
func (m *Manager) exec(ctx context.Context, stmts ...string) error {
	return datastore.Exec(ctx, m.conn(), stmts...)
}

// sqlState is the SQLSTATE of a server error, or "".
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// pgMessage is a server error's message without the driver's decoration.
func pgMessage(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Message
	}
	return err.Error()
}

// ready fails with failed_precondition before prepare and unavailable when
// the server does not answer.
func (m *Manager) ready(ctx context.Context) error { return m.lc.Ready(ctx, m.ping) }

// ping asks the server for SELECT 1. A pooled session the server ended
// (a restart under the agent) fails once and is dropped, so a failure
// that is not a timeout is tried once more, on a new session.
func (m *Manager) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var err error
	for range 2 {
		var one int
		if err = m.conn().QueryRowContext(ctx, "SELECT 1").Scan(&one); err == nil || ctx.Err() != nil {
			break
		}
	}
	return err
}

// Status follows Trove's reading: answering → running (or
// restart_required); a live process that does not answer → blocked; a pid
// file without a process → crashed; nothing → shutdown.
func (m *Manager) Status(ctx context.Context) wire.StatusResult {
	return m.lc.Status(ctx, "postgres", m.cfg.PidFile, m.ping)
}

// Package mariadb is the MariaDB (and MySQL-compatible) datastore manager:
// it prepares the server in a fresh guest and carries out the controller's
// database, user, root, configuration, service and log operations.
//
// Layout, shared with every manager: manager.go (config, state, status),
// prepare.go, databases.go, users.go, root.go, configuration.go,
// service.go (start/stop/restart), logs.go, names.go (validation and
// quoting), mycnf.go (rendered configuration).
//
// The agent logs in as the server's admin account over the unix socket
// (unix_socket authentication: no password exists to leak). Every name and
// value is validated before any statement runs; a bad one returns an
// invalid_argument error and changes nothing. This package must not talk
// to the controller or decide policy (who may be root): it does what a
// validated operation asks.
package mariadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// Config says where everything is. GuestConfig gives the values for a
// Debian guest; tests point everything into a temporary directory.
type Config struct {
	// MountPoint is where the data volume is (mounted); DataDir, inside
	// it, is the server's datadir (a subdirectory, so the filesystem's
	// lost+found stays out of it).
	MountPoint string
	DataDir    string
	// DataDevice, if set, is formatted (when blank) and mounted at
	// MountPoint by prepare.
	DataDevice string
	Socket     string
	PidFile    string
	// ConfigFile is the rendered base configuration; OverridesFile holds
	// the configuration group's values. Both are read by the server after
	// the distribution's own files.
	ConfigFile    string
	OverridesFile string
	// ConfigTemplate is the image's default configuration template
	// (wire.RenderConfigTemplate): rendered for the flavor into the
	// defaults layer between ConfigFile and OverridesFile. Empty or
	// absent: ConfigFile's built-in sizing only.
	ConfigTemplate string
	ErrorLog       string
	SlowQueryLog   string
	// TmpDir, if set, is the server's tmpdir. Servers sharing one clean
	// each other's temporary tables away at start, so tests give each its
	// own.
	TmpDir string
	// SecureFileDir is secure_file_priv: the one directory LOAD DATA,
	// LOAD_FILE() and SELECT ... INTO OUTFILE may touch, so an account with
	// the FILE privilege (root, once enabled) cannot read or write the
	// guest's other files. Empty: "files" beside DataDir. Prepare makes it,
	// private to OSUser.
	SecureFileDir string
	// StateFile keeps the manager's own facts (prepared, restart needed).
	StateFile string
	// OSUser owns the data directory and runs the server.
	OSUser string
	// AdminUser is the account the agent logs in as via unix_socket: the
	// OS user the agent runs as.
	AdminUser   string
	Port        int
	BindAddress string
	// SkipNetworking renders skip-networking (tests: no TCP port at all).
	SkipNetworking bool
	// InstallDB is the mariadb-install-db binary; DefaultsFile, if set,
	// is passed to it as --defaults-file (tests; the guest reads
	// /etc/mysql/my.cnf).
	InstallDB    string
	DefaultsFile string
	// BackupTool is mariadb-backup; StreamTool is mbstream, which unpacks
	// its xbstream output.
	BackupTool string
	StreamTool string
	// UpgradeTool is mariadb-upgrade, the datastore's upgrade step.
	UpgradeTool string
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

// Manager is the MariaDB datastore manager.
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
		return nil, errors.New("mariadb: Config.Service is required")
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Port == 0 {
		cfg.Port = 3306
	}
	if cfg.InstallDB == "" {
		cfg.InstallDB = "mariadb-install-db"
	}
	if cfg.BackupTool == "" {
		cfg.BackupTool = "mariadb-backup"
	}
	if cfg.StreamTool == "" {
		cfg.StreamTool = "mbstream"
	}
	if cfg.UpgradeTool == "" {
		cfg.UpgradeTool = "mariadb-upgrade"
	}
	lc, err := datastore.LoadLifecycle("mariadb", cfg.StateFile)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, log: cfg.Logger.With("component", "mariadb"), lc: lc}
	// The driver's own chatter (broken idle connections after a restart,
	// which it retries) goes to debug level instead of stderr.
	mysql.SetLogger(driverLog{m.log})
	return m, nil
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

// conn returns the pool. Every session pins sql_mode with
// NO_BACKSLASH_ESCAPES, which quoteString relies on, whatever the server's
// global sql_mode says.
func (m *Manager) conn() *sql.DB {
	m.dbOnce.Do(func() {
		c := mysql.NewConfig()
		c.Net = "unix"
		c.Addr = m.cfg.Socket
		c.User = m.cfg.AdminUser
		c.Timeout = 5 * time.Second
		c.ReadTimeout = 5 * time.Minute
		c.WriteTimeout = time.Minute
		c.Params = map[string]string{"sql_mode": "'NO_BACKSLASH_ESCAPES,STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"}
		connector, err := mysql.NewConnector(c)
		if err != nil {
			panic(fmt.Sprintf("mariadb: connector config: %v", err)) // static config: a bug
		}
		m.db = sql.OpenDB(connector)
		m.db.SetMaxOpenConns(2)
		m.db.SetMaxIdleConns(1)
		m.db.SetConnMaxIdleTime(30 * time.Second)
	})
	return m.db
}

// ready fails with failed_precondition before prepare and unavailable when
// the server does not answer.
func (m *Manager) ready(ctx context.Context) error { return m.lc.Ready(ctx, m.ping) }

// exec runs statements that take no arguments one by one.
func (m *Manager) exec(ctx context.Context, stmts ...string) error {
	return datastore.Exec(ctx, m.conn(), stmts...)
}

func (m *Manager) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var one int
	return m.conn().QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

// Status follows Trove's reading: answering → running (or
// restart_required); a live process that does not answer → blocked; a pid
// file without a process → crashed; nothing → shutdown. Unlike the other
// managers' (m.lc.Status), a blocked status does not say why the server
// does not answer.
func (m *Manager) Status(ctx context.Context) wire.StatusResult {
	if st, ok := m.lc.EarlyStatus(); ok {
		return st
	}
	st, _ := m.lc.State()
	if m.ping(ctx) == nil {
		if st.RestartRequired {
			return wire.StatusResult{Status: wire.StatusRestartRequired, Detail: "configuration changes wait for a restart"}
		}
		return wire.StatusResult{Status: wire.StatusRunning}
	}
	return datastore.ProcessStatus("mariadbd", m.cfg.PidFile, st.Stopped)
}

type driverLog struct{ log *slog.Logger }

func (d driverLog) Print(v ...any) {
	d.log.Debug("mysql driver: " + strings.TrimSpace(fmt.Sprint(v...)))
}

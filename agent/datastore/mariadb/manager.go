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
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	ErrorLog      string
	SlowQueryLog  string
	// TmpDir, if set, is the server's tmpdir. Servers sharing one clean
	// each other's temporary tables away at start, so tests give each its
	// own.
	TmpDir string
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
	// ServiceUnit is the server's systemd unit, for the data-volume mount
	// dependency.
	ServiceUnit string
	Service     datastore.Service
	// Volume prepares DataDevice; nil uses volume.Volume defaults.
	Volume VolumePreparer
	// StartTimeout bounds waiting for the server to answer after a start.
	StartTimeout time.Duration
	Logger       *slog.Logger
}

// VolumePreparer formats and mounts the data device (package volume).
type VolumePreparer interface {
	Prepare(ctx context.Context, dependentUnit string) (formatted bool, err error)
}

// Manager is the MariaDB datastore manager.
type Manager struct {
	cfg Config
	log *slog.Logger

	dbOnce sync.Once
	db     *sql.DB

	mu        sync.Mutex
	state     state
	preparing bool
}

// state is what the manager must remember across agent restarts.
type state struct {
	PrepareStarted  time.Time `json:"prepare_started,omitzero"`
	Prepared        bool      `json:"prepared"`
	PrepareError    string    `json:"prepare_error,omitempty"`
	Stopped         bool      `json:"stopped"`
	RestartRequired bool      `json:"restart_required"`
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
	m := &Manager{cfg: cfg, log: cfg.Logger.With("component", "mariadb")}
	// The driver's own chatter (broken idle connections after a restart,
	// which it retries) goes to debug level instead of stderr.
	mysql.SetLogger(driverLog{m.log})
	data, err := os.ReadFile(cfg.StateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("mariadb: state: %w", err)
	default:
		if err := json.Unmarshal(data, &m.state); err != nil {
			return nil, fmt.Errorf("mariadb: state file %s is corrupt: %w", cfg.StateFile, err)
		}
	}
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

// exec runs statements that take no arguments one by one.
func (m *Manager) exec(ctx context.Context, stmts ...string) error {
	for _, s := range stmts {
		if _, err := m.conn().ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", firstWords(s), err)
		}
	}
	return nil
}

// firstWords names a statement in errors without its literals.
func firstWords(s string) string {
	f := strings.Fields(s)
	if len(f) > 2 {
		f = f[:2]
	}
	return strings.Join(f, " ")
}

// ready fails with failed_precondition before prepare and unavailable when
// the server does not answer.
func (m *Manager) ready(ctx context.Context) error {
	m.mu.Lock()
	prepared, preparing := m.state.Prepared, m.preparing
	m.mu.Unlock()
	if !prepared && !preparing {
		return wire.Errorf(wire.CodeFailedPrecondition, "mariadb is not prepared yet")
	}
	if err := m.ping(ctx); err != nil {
		return wire.Errorf(wire.CodeUnavailable, "mariadb does not answer: %v", err)
	}
	return nil
}

func (m *Manager) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var one int
	return m.conn().QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

func (m *Manager) updateState(f func(*state)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(&m.state)
	data, _ := json.Marshal(m.state)
	if err := os.MkdirAll(filepath.Dir(m.cfg.StateFile), 0o700); err != nil {
		return fmt.Errorf("mariadb: state: %w", err)
	}
	return writeFileAtomic(m.cfg.StateFile, data, 0o600)
}

// Status follows Trove's reading: answering → running (or
// restart_required); a live process that does not answer → blocked; a pid
// file without a process → crashed; nothing → shutdown.
func (m *Manager) Status(ctx context.Context) wire.StatusResult {
	m.mu.Lock()
	st, preparing := m.state, m.preparing
	m.mu.Unlock()
	switch {
	case preparing:
		return wire.StatusResult{Status: wire.StatusBuilding}
	case !st.Prepared && st.PrepareError != "":
		return wire.StatusResult{Status: wire.StatusFailed, Detail: "prepare failed: " + st.PrepareError}
	case !st.Prepared && !st.PrepareStarted.IsZero():
		return wire.StatusResult{Status: wire.StatusFailed, Detail: "prepare was interrupted at " + st.PrepareStarted.Format(time.RFC3339)}
	case !st.Prepared:
		return wire.StatusResult{Status: wire.StatusNew}
	}
	if err := m.ping(ctx); err == nil {
		if st.RestartRequired {
			return wire.StatusResult{Status: wire.StatusRestartRequired, Detail: "configuration changes wait for a restart"}
		}
		return wire.StatusResult{Status: wire.StatusRunning}
	}
	pid, err := readPid(m.cfg.PidFile)
	switch {
	case err == nil && processAlive(pid):
		return wire.StatusResult{Status: wire.StatusBlocked, Detail: fmt.Sprintf("mariadbd (pid %d) runs but does not answer", pid)}
	case err == nil:
		return wire.StatusResult{Status: wire.StatusCrashed, Detail: fmt.Sprintf("pid file names %d, which is gone", pid)}
	case st.Stopped:
		return wire.StatusResult{Status: wire.StatusShutdown, Detail: "stopped by request"}
	default:
		return wire.StatusResult{Status: wire.StatusShutdown, Detail: "mariadbd is not running"}
	}
}

func readPid(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	// Zombies (a test's unreaped child) are not alive.
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z' && stat[i+2] != 'X'
	}
	return true
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

type driverLog struct{ log *slog.Logger }

func (d driverLog) Print(v ...any) {
	d.log.Debug("mysql driver: " + strings.TrimSpace(fmt.Sprint(v...)))
}

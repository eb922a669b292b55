// Package redis is the Redis datastore manager: it prepares Debian's
// redis-server in a fresh guest and carries out the controller's user,
// root, configuration, service and log operations. Redis has numbered
// databases, not named ones, and its ACL users cannot be limited to a
// database, so the database and access operations answer not_supported,
// as Trove's Redis guest did (DatastoreOperationNotSupported).
//
// Layout, shared with every manager: manager.go (config, state, status),
// prepare.go, databases.go, users.go, root.go, configuration.go,
// service.go (start/stop/restart), logs.go, names.go (validation,
// password hashes), redisconf.go (rendered configuration and ACL file),
// resp.go (the wire protocol).
//
// The agent logs in over the unix socket as its own ACL user, os_admin,
// whose password comes from crypto/rand at every prepare and is kept in a
// root-only file in the agent's state directory; the server's ACL file
// (on the data volume) holds only its SHA-256. Every name and value is
// validated before any command runs; a bad one returns an
// invalid_argument error and changes nothing. This package must not talk
// to the controller or decide policy.
package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// Config says where everything is. GuestConfig gives the values for a
// Debian guest; tests point everything into a temporary directory.
type Config struct {
	// MountPoint is where the data volume is (mounted); DataDir, below
	// it, is the server's dir (RDB, AOF and the ACL file).
	MountPoint string
	DataDir    string
	// DataDevice, if set, is formatted (when blank) and mounted at
	// MountPoint by prepare.
	DataDevice string
	// Socket is the server's unix socket; the agent connects there.
	Socket string
	// BindAddress and Port are where clients connect; an empty
	// BindAddress means no TCP at all (port 0, tests).
	BindAddress string
	Port        int
	// ConfigFile is the rendered redis.conf; OverridesFile, included at
	// its end, holds the configuration group; ACLFile the users.
	ConfigFile    string
	OverridesFile string
	// ConfigTemplate is the image's default configuration template
	// (wire.RenderConfigTemplate): rendered for the flavor into the
	// defaults layer, included after ConfigFile and before the group.
	// Empty or absent: ConfigFile's built-in sizing only.
	ConfigTemplate string
	ACLFile        string
	PidFile        string
	LogFile        string
	// StateFile keeps the manager's own facts; SecretFile the agent's
	// password (root-only, never on the data volume).
	StateFile  string
	SecretFile string
	// OSUser owns the data directory and runs the server.
	OSUser string
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

// Manager is the Redis datastore manager.
type Manager struct {
	cfg Config
	log *slog.Logger
	lc  *datastore.Lifecycle

	// mu serialises commands on the one admin connection.
	mu   sync.Mutex
	conn *Conn

	// digest caches UsersDigest (usersync.go).
	digest usersDigestCache
}

var _ datastore.Manager = (*Manager)(nil)

// New returns a manager; it loads the state file but touches nothing else.
func New(cfg Config) (*Manager, error) {
	if cfg.Service == nil {
		return nil, errors.New("redis: Config.Service is required")
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	lc, err := datastore.LoadLifecycle("redis", cfg.StateFile)
	if err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, log: cfg.Logger.With("component", "redis"), lc: lc}, nil
}

// Close drops the admin connection.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn != nil {
		err := m.conn.Close()
		m.conn = nil
		return err
	}
	return nil
}

func (m *Manager) DataPath() string {
	if m.cfg.MountPoint != "" {
		return m.cfg.MountPoint
	}
	return m.cfg.DataDir
}

// do runs one command as the admin user, (re)connecting and
// authenticating as needed. A broken connection is dropped so the next
// command dials again.
func (m *Manager) do(ctx context.Context, args ...string) (Reply, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	reused := m.conn != nil
	r, err := m.doLocked(ctx, args...)
	if reused && closedByPeer(err) {
		// The server went away since the last command (restarted under
		// the agent): it never saw this one, so one fresh try is safe.
		r, err = m.doLocked(ctx, args...)
	}
	return r, err
}

func (m *Manager) doLocked(ctx context.Context, args ...string) (Reply, error) {
	if m.conn == nil {
		secret, err := os.ReadFile(m.cfg.SecretFile)
		if err != nil {
			return Reply{}, fmt.Errorf("admin password: %w", err)
		}
		c, err := Dial(ctx, m.cfg.Socket)
		if err != nil {
			return Reply{}, err
		}
		c.Timeout = 5 * time.Minute // ACL SAVE, CONFIG SET appendonly
		if _, err := c.Do(ctx, "AUTH", AdminUser, strings.TrimSpace(string(secret))); err != nil {
			c.Close()
			return Reply{}, fmt.Errorf("authenticate as %s: %w", AdminUser, err)
		}
		m.conn = c
	}
	r, err := m.conn.Do(ctx, args...)
	var se *ServerError
	if err != nil && !errors.As(err, &se) {
		m.conn.Close()
		m.conn = nil
	}
	return r, err
}

// closedByPeer tells a connection the server closed (EOF, reset, broken
// pipe) from a timeout, after which a command may have run.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// ready fails with failed_precondition before prepare and unavailable when
// the server does not answer.
func (m *Manager) ready(ctx context.Context) error { return m.lc.Ready(ctx, m.ping) }

func (m *Manager) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := m.do(ctx, "PING")
	if err == nil && r.Str != "PONG" {
		err = fmt.Errorf("PING answered %q", r.Str)
	}
	return err
}

// Status follows Trove's reading: answering → running (or
// restart_required); a live process that does not answer → blocked; a pid
// file without a process → crashed; nothing → shutdown.
func (m *Manager) Status(ctx context.Context) wire.StatusResult {
	return m.lc.Status(ctx, "redis-server", m.cfg.PidFile, m.ping)
}

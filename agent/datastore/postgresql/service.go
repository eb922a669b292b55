package postgresql

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"syscall"

	"strata/agent/datastore"
	"strata/agent/datastore/systemd"
	"strata/agent/datastore/volume"
)

var versionPattern = regexp.MustCompile(`^[0-9]{1,2}$`)

// GuestConfig is the configuration for a Debian guest running PostgreSQL
// major version (e.g. "15") as Debian's cluster "<version>/main": the
// postgresql@<version>-main unit (pg_ctlcluster) reads
// /etc/postgresql/<version>/main, the data directory is
// <mountPoint>/<version>/main on the data volume (default mount point
// /var/lib/postgresql), the server logs to /var/log/postgresql.
func GuestConfig(version, stateDir, dataDevice, mountPoint string, log *slog.Logger) (Config, error) {
	if !versionPattern.MatchString(version) {
		return Config{}, fmt.Errorf("postgresql: version %q is not a major version number (e.g. 15)", version)
	}
	if mountPoint == "" {
		mountPoint = "/var/lib/postgresql"
	}
	etc := filepath.Join("/etc/postgresql", version, "main")
	unit := "postgresql@" + version + "-main.service"
	cfg := Config{
		MountPoint:      mountPoint,
		DataDir:         filepath.Join(mountPoint, version, "main"),
		DataDevice:      dataDevice,
		SocketDir:       "/run/postgresql",
		Port:            5432,
		ListenAddresses: "*",
		ConfigFile:      filepath.Join(etc, "postgresql.conf"),
		HBAFile:         filepath.Join(etc, "pg_hba.conf"),
		IdentFile:       filepath.Join(etc, "pg_ident.conf"),
		OverridesFile:   filepath.Join(etc, "strata-overrides.conf"),
		ConfigTemplate:  datastore.GuestConfigTemplate,
		StartConf:       filepath.Join(etc, "start.conf"),
		PidFile:         "/run/postgresql/" + version + "-main.pid",
		ClusterName:     version + "/main",
		LogFile:         "/var/log/postgresql/postgresql-" + version + "-main.log",
		StateFile:       filepath.Join(stateDir, "postgresql.json"),
		OSUser:          "postgres",
		InitDB:          filepath.Join("/usr/lib/postgresql", version, "bin", "initdb"),
		ServiceUnit:     unit,
		Service:         systemd.Unit{Name: unit},
		Logger:          log,
	}
	if dataDevice != "" {
		cfg.Volume = volume.Volume{Device: dataDevice, MountPoint: mountPoint}
	}
	return cfg, nil
}

// sysProcAttr runs a command as the server's account (initdb refuses
// root).
func sysProcAttr(u datastore.OSUser) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: u.Credential()}
}

// Restart restarts (or starts) the server and waits until it answers; the
// restart-required flag is cleared.
func (m *Manager) Restart(ctx context.Context) error {
	return m.lc.Restart(ctx, m.cfg.Service, m.waitReady)
}

// Stop stops the server; status then reports shutdown.
func (m *Manager) Stop(ctx context.Context) error { return m.lc.Stop(ctx, m.cfg.Service) }

// Flush makes what the server acknowledged durable whatever its settings
// say (synchronous_commit=off, a long wal_writer_delay): a transaction
// that gets an id and commits synchronously flushes the WAL up to its
// commit record, which covers every commit before it. With fsync=off the
// WAL is only written, and the agent's syncfs of the filesystems that
// follows makes it durable. A server that does not answer has nothing to
// flush.
func (m *Manager) Flush(ctx context.Context) error {
	if m.ping(ctx) != nil {
		return nil
	}
	// A standby writes no WAL of its own: what it received its WAL
	// receiver flushed, and no transaction may get an id.
	if rec, err := m.inRecovery(ctx); err != nil || rec {
		return nil
	}
	// A fenced primary's flush is one of the fence's own transactions:
	// noted in the fence file, so that a rejoin after a failover does not
	// count it as a commit past the fork (it wrote nothing).
	note := func(uint32) error { return nil }
	if _, fenced := m.fenceFile(); fenced {
		note = m.noteFenceXID
	}
	if err := m.flushPastCommits(ctx, note); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}

var _ datastore.Flusher = (*Manager)(nil)

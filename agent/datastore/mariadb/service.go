package mariadb

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"strata/agent/datastore/systemd"
	"strata/agent/datastore/volume"
	"strata/agent/wire"
)

// GuestConfig is the configuration for a Debian guest: the server runs as
// mariadb.service, reads /etc/mysql, and keeps its data in a subdirectory
// of the data volume's mount point (default /var/lib/mysql).
func GuestConfig(stateDir, dataDevice, mountPoint string, log *slog.Logger) Config {
	if mountPoint == "" {
		mountPoint = "/var/lib/mysql"
	}
	cfg := Config{
		MountPoint:    mountPoint,
		DataDir:       filepath.Join(mountPoint, "data"),
		DataDevice:    dataDevice,
		Socket:        "/run/mysqld/mysqld.sock",
		PidFile:       "/run/mysqld/mysqld.pid",
		ConfigFile:    "/etc/mysql/mariadb.conf.d/90-strata.cnf",
		OverridesFile: "/etc/mysql/mariadb.conf.d/95-strata-overrides.cnf",
		ErrorLog:      "/var/log/mysql/error.log",
		SlowQueryLog:  "/var/log/mysql/mariadb-slow.log",
		StateFile:     filepath.Join(stateDir, "mariadb.json"),
		OSUser:        "mysql",
		AdminUser:     "root",
		Port:          3306,
		BindAddress:   "0.0.0.0",
		InstallDB:     "mariadb-install-db",
		ServiceUnit:   "mariadb.service",
		Service:       systemd.Unit{Name: "mariadb.service"},
		Logger:        log,
	}
	if dataDevice != "" {
		cfg.Volume = volume.Volume{Device: dataDevice, MountPoint: mountPoint}
	}
	return cfg
}

func (m *Manager) requirePrepared() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.state.Prepared {
		return wire.Errorf(wire.CodeFailedPrecondition, "mariadb is not prepared yet")
	}
	return nil
}

// Restart restarts (or starts) the server and waits until it answers; the
// restart-required flag is cleared.
func (m *Manager) Restart(ctx context.Context) error {
	if err := m.requirePrepared(); err != nil {
		return err
	}
	if err := m.cfg.Service.Restart(ctx); err != nil {
		return fmt.Errorf("restart mariadb: %w", err)
	}
	if err := m.waitReady(ctx); err != nil {
		return err
	}
	return m.updateState(func(s *state) { s.RestartRequired, s.Stopped = false, false })
}

// Stop stops the server; status then reports shutdown.
func (m *Manager) Stop(ctx context.Context) error {
	if err := m.requirePrepared(); err != nil {
		return err
	}
	if err := m.updateState(func(s *state) { s.Stopped = true }); err != nil {
		return err
	}
	if err := m.cfg.Service.Stop(ctx); err != nil {
		return fmt.Errorf("stop mariadb: %w", err)
	}
	return nil
}

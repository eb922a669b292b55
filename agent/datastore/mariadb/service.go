package mariadb

import (
	"context"
	"log/slog"
	"path/filepath"

	"strata/agent/datastore/systemd"
	"strata/agent/datastore/volume"
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

// Restart restarts (or starts) the server and waits until it answers; the
// restart-required flag is cleared.
func (m *Manager) Restart(ctx context.Context) error {
	return m.lc.Restart(ctx, m.cfg.Service, m.waitReady)
}

// Stop stops the server; status then reports shutdown.
func (m *Manager) Stop(ctx context.Context) error { return m.lc.Stop(ctx, m.cfg.Service) }

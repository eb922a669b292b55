package mariadb

import (
	"context"
	"log/slog"
	"path/filepath"

	"strata/agent/datastore"
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
		MountPoint:     mountPoint,
		DataDir:        filepath.Join(mountPoint, "data"),
		DataDevice:     dataDevice,
		Socket:         "/run/mysqld/mysqld.sock",
		PidFile:        "/run/mysqld/mysqld.pid",
		ConfigFile:     "/etc/mysql/mariadb.conf.d/90-strata.cnf",
		OverridesFile:  "/etc/mysql/mariadb.conf.d/95-strata-overrides.cnf",
		ConfigTemplate: datastore.GuestConfigTemplate,
		ErrorLog:       "/var/log/mysql/error.log",
		SlowQueryLog:   "/var/log/mysql/mariadb-slow.log",
		StateFile:      filepath.Join(stateDir, "mariadb.json"),
		OSUser:         "mysql",
		AdminUser:      "root",
		Port:           3306,
		BindAddress:    "0.0.0.0",
		InstallDB:      "mariadb-install-db",
		ServiceUnit:    "mariadb.service",
		Service:        systemd.Unit{Name: "mariadb.service"},
		Logger:         log,
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

// Flush makes what the server acknowledged durable whatever its settings
// say (innodb_flush_log_at_trx_commit=0 or 2, sync_binlog=0): InnoDB's
// redo log and the binary log are written and synced, and the grant tables
// (Aria, where accounts live) are written out; the agent then syncs the
// filesystems, which covers what MariaDB leaves to the page cache
// (database directories). A server that does not answer has nothing to
// flush: it wrote everything when it stopped, or lost it when it crashed.
// The flush is LOCAL: written to the binary log, it would be a
// transaction of this server's own after every operation — on a replica
// or a fenced primary, one its replication group never had.
func (m *Manager) Flush(ctx context.Context) error {
	if m.ping(ctx) != nil {
		return nil
	}
	return m.exec(ctx, "FLUSH LOCAL ENGINE LOGS",
		"FLUSH LOCAL TABLES mysql.global_priv, mysql.db, mysql.tables_priv, mysql.columns_priv, mysql.procs_priv, mysql.proxies_priv, mysql.roles_mapping")
}

var _ datastore.Flusher = (*Manager)(nil)

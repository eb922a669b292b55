package redis

import (
	"context"
	"log/slog"
	"path/filepath"

	"strata/agent/datastore"
	"strata/agent/datastore/systemd"
	"strata/agent/datastore/volume"
)

// GuestConfig is the configuration for a Debian guest: the server runs as
// redis-server.service (Debian's unit: user redis, --supervised systemd)
// reading /etc/redis/redis.conf, with its data (and ACL file) in a
// subdirectory of the data volume's mount point (default /var/lib/redis).
func GuestConfig(stateDir, dataDevice, mountPoint string, log *slog.Logger) Config {
	if mountPoint == "" {
		mountPoint = "/var/lib/redis"
	}
	dataDir := filepath.Join(mountPoint, "data")
	cfg := Config{
		MountPoint:     mountPoint,
		DataDir:        dataDir,
		DataDevice:     dataDevice,
		Socket:         "/run/redis/redis-server.sock",
		BindAddress:    "* -::*",
		Port:           6379,
		ConfigFile:     "/etc/redis/redis.conf",
		OverridesFile:  "/etc/redis/strata-overrides.conf",
		ConfigTemplate: datastore.GuestConfigTemplate,
		ACLFile:        filepath.Join(dataDir, "users.acl"),
		PidFile:        "/run/redis/redis-server.pid",
		LogFile:        "/var/log/redis/redis-server.log",
		StateFile:      filepath.Join(stateDir, "redis.json"),
		SecretFile:     filepath.Join(stateDir, "redis-admin.secret"),
		OSUser:         "redis",
		ServiceUnit:    "redis-server.service",
		Service:        systemd.Unit{Name: "redis-server.service"},
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
	if err := m.lc.RequirePrepared(); err != nil {
		return err
	}
	m.settle(ctx)
	return m.lc.Restart(ctx, m.cfg.Service, m.waitReady)
}

// Stop stops the server (which saves a snapshot first when save points
// are set); status then reports shutdown.
func (m *Manager) Stop(ctx context.Context) error {
	if err := m.lc.RequirePrepared(); err != nil {
		return err
	}
	m.settle(ctx)
	return m.lc.Stop(ctx, m.cfg.Service)
}

// settle lets a running AOF rewrite finish before a stop, which Redis
// would otherwise refuse; a server that does not answer is stopped
// anyway.
func (m *Manager) settle(ctx context.Context) {
	if m.ping(ctx) != nil {
		return
	}
	if err := m.waitPersistence(ctx); err != nil {
		m.log.Warn("stopping redis while an append-only file is still being written", "err", err)
	}
}

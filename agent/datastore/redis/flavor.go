package redis

import (
	"context"
	"fmt"
	"os"

	"strata/agent/datastore"
	"strata/agent/wire"
)

var _ datastore.FlavorApplier = (*Manager)(nil)

// ApplyFlavor writes redis.conf for the flavor's memory (maxmemory, as
// prepare derives it); the server reads it at its next start. The
// configuration group's file and the ACL file are left alone.
func (m *Manager) ApplyFlavor(ctx context.Context, args wire.FlavorArgs) (wire.FlavorResult, error) {
	conf, err := renderConfig(m.cfg, args.MemoryMB)
	if err != nil {
		return wire.FlavorResult{}, err
	}
	if datastore.SameFileContent(m.cfg.ConfigFile, conf) {
		return wire.FlavorResult{}, nil
	}
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return wire.FlavorResult{}, err
	}
	// As prepare writes it: group-readable by the server's account.
	if err := datastore.WriteConfigFile(m.cfg.ConfigFile, conf, 0o640); err != nil {
		return wire.FlavorResult{}, err
	}
	if err := os.Lchown(m.cfg.ConfigFile, os.Getuid(), osUser.GID); err != nil {
		return wire.FlavorResult{}, fmt.Errorf("chown %s: %w", m.cfg.ConfigFile, err)
	}
	m.log.Info("base configuration written for a new flavor", "memory_mb", args.MemoryMB)
	return wire.FlavorResult{Changed: true}, nil
}

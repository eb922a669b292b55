package mariadb

import (
	"context"

	"strata/agent/datastore"
	"strata/agent/wire"
)

var _ datastore.FlavorApplier = (*Manager)(nil)

// ApplyFlavor writes the base configuration for the flavor's memory (the
// buffer pool and connection limit prepare derives); the server reads it
// at its next start. The configuration group's file is left alone.
func (m *Manager) ApplyFlavor(ctx context.Context, args wire.FlavorArgs) (wire.FlavorResult, error) {
	cnf, err := renderBaseConfig(m.cfg, args.MemoryMB)
	if err != nil {
		return wire.FlavorResult{}, err
	}
	if datastore.SameFileContent(m.cfg.ConfigFile, cnf) {
		return wire.FlavorResult{}, nil
	}
	if err := datastore.WriteConfigFile(m.cfg.ConfigFile, cnf, 0o644); err != nil {
		return wire.FlavorResult{}, err
	}
	m.log.Info("base configuration written for a new flavor", "memory_mb", args.MemoryMB)
	return wire.FlavorResult{Changed: true}, nil
}

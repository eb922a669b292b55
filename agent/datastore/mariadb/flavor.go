package mariadb

import (
	"context"

	"strata/agent/datastore"
	"strata/agent/wire"
)

var _ datastore.FlavorApplier = (*Manager)(nil)

// ApplyFlavor writes the base configuration and the defaults layer (the
// image's template) for the flavor's memory, as prepare derives them; the
// server reads them at its next start. The configuration group's file is left alone.
func (m *Manager) ApplyFlavor(ctx context.Context, args wire.FlavorArgs) (wire.FlavorResult, error) {
	changed, err := m.writeBaseConfig(args.MemoryMB)
	if err != nil || !changed {
		return wire.FlavorResult{}, err
	}
	m.log.Info("base configuration written for a new flavor", "memory_mb", args.MemoryMB)
	return wire.FlavorResult{Changed: true}, nil
}

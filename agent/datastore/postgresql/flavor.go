package postgresql

import (
	"context"
	"path/filepath"

	"strata/agent/datastore"
	"strata/agent/wire"
)

var _ datastore.FlavorApplier = (*Manager)(nil)

// ApplyFlavor writes postgresql.conf for the flavor's memory (the
// memory-sized settings prepare derives); the server reads it at its next
// start. The configuration group's file and the access files are left
// alone.
func (m *Manager) ApplyFlavor(ctx context.Context, args wire.FlavorArgs) (wire.FlavorResult, error) {
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return wire.FlavorResult{}, err
	}
	cert, err := datastore.EnsureCertificate(m.log, filepath.Join(m.DataPath(), "tls"), osUser)
	if err != nil {
		return wire.FlavorResult{}, err
	}
	conf, _, _, err := renderConfig(m.cfg, args.MemoryMB, cert)
	if err != nil {
		return wire.FlavorResult{}, err
	}
	if datastore.SameFileContent(m.cfg.ConfigFile, conf) {
		return wire.FlavorResult{}, nil
	}
	if err := datastore.WriteConfigFile(m.cfg.ConfigFile, conf, 0o644); err != nil {
		return wire.FlavorResult{}, err
	}
	m.log.Info("base configuration written for a new flavor", "memory_mb", args.MemoryMB)
	return wire.FlavorResult{Changed: true}, nil
}

package postgresql

import (
	"context"
	"path/filepath"

	"strata/agent/datastore"
	"strata/agent/wire"
)

var _ datastore.FlavorApplier = (*Manager)(nil)

// ApplyFlavor writes postgresql.conf and the defaults layer (the image's
// template) for the flavor's memory, as prepare derives them; the server
// reads them at its next start. The configuration group's file and the access files are left
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
	layer, conf, err := renderDefaultsLayer(m.cfg, args.MemoryMB, conf)
	if err != nil {
		return wire.FlavorResult{}, err
	}
	changed, err := datastore.WriteLayer(m.cfg.ConfigFile, conf, 0o644)
	if err != nil {
		return wire.FlavorResult{}, err
	}
	layerChanged, err := datastore.WriteLayer(defaultsFile(m.cfg), layer, 0o644)
	if err != nil || !changed && !layerChanged {
		return wire.FlavorResult{}, err
	}
	m.log.Info("base configuration written for a new flavor", "memory_mb", args.MemoryMB)
	return wire.FlavorResult{Changed: true}, nil
}

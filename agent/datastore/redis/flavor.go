package redis

import (
	"context"
	"fmt"
	"os"

	"strata/agent/datastore"
	"strata/agent/wire"
)

var _ datastore.FlavorApplier = (*Manager)(nil)

// ApplyFlavor writes redis.conf and the defaults layer (the image's
// template) for the flavor's memory, as prepare derives them; the server
// reads them at its next start. The
// configuration group's file and the ACL file are left alone.
func (m *Manager) ApplyFlavor(ctx context.Context, args wire.FlavorArgs) (wire.FlavorResult, error) {
	conf, err := renderConfig(m.cfg, args.MemoryMB)
	if err != nil {
		return wire.FlavorResult{}, err
	}
	layer, conf, err := renderDefaultsLayer(m.cfg, args.MemoryMB, conf)
	if err != nil {
		return wire.FlavorResult{}, err
	}
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return wire.FlavorResult{}, err
	}
	changed := false
	for _, f := range []struct {
		path string
		data []byte
	}{{m.cfg.ConfigFile, conf}, {defaultsFile(m.cfg), layer}} {
		// As prepare writes them: group-readable by the server's account.
		c, err := datastore.WriteLayer(f.path, f.data, 0o640)
		if err != nil {
			return wire.FlavorResult{}, err
		}
		if c {
			if err := os.Lchown(f.path, os.Getuid(), osUser.GID); err != nil {
				return wire.FlavorResult{}, fmt.Errorf("chown %s: %w", f.path, err)
			}
		}
		changed = changed || c
	}
	if !changed {
		return wire.FlavorResult{}, nil
	}
	m.log.Info("base configuration written for a new flavor", "memory_mb", args.MemoryMB)
	return wire.FlavorResult{Changed: true}, nil
}

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
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return wire.FlavorResult{}, err
	}
	changed, err := m.writeServerConfig(args.MemoryMB, osUser)
	if err != nil || !changed {
		return wire.FlavorResult{}, err
	}
	m.log.Info("base configuration written for a new flavor", "memory_mb", args.MemoryMB)
	return wire.FlavorResult{Changed: true}, nil
}

// writeServerConfig writes redis.conf and the defaults layer for the
// flavor's memory (prepare, apply_flavor); changed says whether either
// file changed.
func (m *Manager) writeServerConfig(memoryMB int, osUser datastore.OSUser) (changed bool, err error) {
	conf, err := renderConfig(m.cfg, memoryMB)
	if err != nil {
		return false, err
	}
	layer, conf, err := renderDefaultsLayer(m.cfg, memoryMB, conf)
	if err != nil {
		return false, err
	}
	for path, data := range map[string][]byte{m.cfg.ConfigFile: conf, defaultsFile(m.cfg): layer} {
		if !datastore.SameFileContent(path, data) {
			changed = true
		}
		if err := writeServerFile(path, data, osUser); err != nil {
			return false, err
		}
	}
	// Redis refuses to start on a missing include: a server prepared
	// before redis.conf included the replication file, or rebuilt onto a
	// new root disk, gets one with its new redis.conf (fenced on a
	// replica's data); an existing one (a replica's link, a fence) is
	// kept.
	if !exists(replicationFile(m.cfg)) {
		if err := writeServerFile(replicationFile(m.cfg), initialReplicationFile(m.cfg), osUser); err != nil {
			return false, err
		}
	}
	return changed, nil
}

// writeServerFile writes one of the server's configuration files: the
// server reads it as its own account (group-readable), it is owned by
// root, which only the agent writes.
func writeServerFile(path string, data []byte, osUser datastore.OSUser) error {
	if err := datastore.WriteConfigFile(path, data, 0o640); err != nil {
		return err
	}
	if err := os.Lchown(path, os.Getuid(), osUser.GID); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

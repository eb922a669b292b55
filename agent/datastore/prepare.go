package datastore

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"strata/agent/chaos"
	"strata/agent/datastore/volume"
	"strata/agent/wire"
)

// VolumePreparer formats and mounts the data device (package volume).
type VolumePreparer interface {
	Prepare(ctx context.Context, dependentUnit string) (formatted bool, err error)
}

// PrepareVolume formats device (only if blank) and mounts it at
// mountPoint, with unit depending on the mount, through vp (nil: a
// volume.Volume). Without a device there is nothing to do.
func PrepareVolume(ctx context.Context, log *slog.Logger, vp VolumePreparer, device, mountPoint, unit string) (formatted bool, err error) {
	if device == "" {
		return false, nil
	}
	if vp == nil {
		vp = volume.Volume{Device: device, MountPoint: mountPoint}
	}
	formatted, err = vp.Prepare(ctx, unit)
	if err != nil {
		return false, fmt.Errorf("data volume: %w", err)
	}
	log.Info("data volume ready", "device", device, "mount_point", mountPoint, "formatted", formatted)
	chaos.Point(wire.GuestPointPrefix + "prepare.volume")
	return formatted, nil
}

// WriteConfigFile writes a rendered configuration file atomically,
// making its directory first.
func WriteConfigFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("config dir: %w", err)
	}
	return WriteFileAtomic(path, data, mode)
}

// WaitReady pings the server every 200 ms until it answers (nil) or ctx
// ends (ctx's error). When timeout passes first, the error is
// notReady's, given what the last ping said.
func WaitReady(ctx context.Context, timeout time.Duration, ping func(context.Context) error, notReady func(last error) error) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = ping(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return notReady(err)
}

// MaxMemoryMB bounds the flavor's memory a prepare may name (16 TiB).
const MaxMemoryMB = 16 << 20

// CheckMemoryMB validates prepare's memory_mb.
func CheckMemoryMB(mb int) error {
	if mb < 0 || mb > MaxMemoryMB {
		return Invalid("memory_mb: %d is outside 0..%d", mb, MaxMemoryMB)
	}
	return nil
}

// CheckUsersDatabases fails when one of prepare's users names a database
// that is not among the databases prepare creates.
func CheckUsersDatabases(users []wire.User, dbs []wire.Database) error {
	known := map[string]bool{}
	for _, d := range dbs {
		known[d.Name] = true
	}
	for _, u := range users {
		for _, db := range u.Databases {
			if !known[db] {
				return Invalid("user %s: database %s is not among the databases prepare creates", Show(u.Name), Show(db))
			}
		}
	}
	return nil
}

// EnableRootAtPrepare runs enable (the manager's EnableRoot) when prepare
// asks for root: with the controller's password if it gave one
// (root_on_create, handed out in the create response already, so not
// echoed back), else with a generated one, which is returned once.
func EnableRootAtPrepare(ctx context.Context, args wire.PrepareArgs, enable func(context.Context, string) (wire.RootCredentials, error)) (*wire.RootCredentials, error) {
	if !args.EnableRoot {
		return nil, nil
	}
	creds, err := enable(ctx, args.RootPassword)
	if err != nil || args.RootPassword != "" {
		return nil, err
	}
	return &creds, nil
}

package redis

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// Prepare turns a fresh guest into a running Redis: data volume (format
// only if blank, then mount), data directory, a new admin password (the
// ACL file keeps every other user, so a rebuilt instance keeps its users
// and data), rendered redis.conf, start, then the initial users, root and
// configuration group. Redis has no named databases: prepare with
// databases is not_supported. Arguments are validated before anything
// happens.
//
// Prepare runs until it succeeds once. If it fails the status is failed
// and a second prepare is refused: the controller rebuilds the instance.
// If it is cut short (agent or VM stopped), running it again resumes it:
// the ACL file keeps the users made so far, and only missing ones are
// created.
func (m *Manager) Prepare(ctx context.Context, args wire.PrepareArgs) (wire.PrepareResult, error) {
	return m.lc.Prepare(ctx, m.log, args, m.checkPrepareArgs, m.prepare)
}

func (m *Manager) checkPrepareArgs(args *wire.PrepareArgs) ([]datastore.Setting, error) {
	if err := datastore.CheckMemoryMB(args.MemoryMB); err != nil {
		return nil, err
	}
	if args.AuthPlugin != "" {
		return nil, datastore.Invalid("auth_plugin %s: Redis has no choice of authentication plugin", datastore.Show(args.AuthPlugin))
	}
	if len(args.Databases) > 0 {
		return nil, errNoNamedDatabases
	}
	if len(args.Users) > 0 {
		if err := checkUsers(args.Users); err != nil {
			return nil, err
		}
	}
	if args.Configuration == nil {
		return nil, nil
	}
	return checkConfiguration(*args.Configuration)
}

func (m *Manager) prepare(ctx context.Context, args wire.PrepareArgs, settings []datastore.Setting) (wire.PrepareResult, error) {
	return m.setUp(ctx, args, settings, nil)
}

// setUp is prepare's body; seed, if set, fills the empty data directory
// (and the ACL file) before the server first starts: a restore.
func (m *Manager) setUp(ctx context.Context, args wire.PrepareArgs, settings []datastore.Setting, seed func(datastore.OSUser) error) (wire.PrepareResult, error) {
	formatted, err := datastore.PrepareVolume(ctx, m.log, m.cfg.Volume, m.cfg.DataDevice, m.cfg.MountPoint, m.cfg.ServiceUnit)
	if err != nil {
		return wire.PrepareResult{}, err
	}
	res := wire.PrepareResult{Formatted: formatted}
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return res, err
	}
	if err := os.MkdirAll(m.cfg.DataDir, 0o750); err != nil {
		return res, fmt.Errorf("data directory: %w", err)
	}
	if err := osUser.Chown(m.cfg.DataDir); err != nil {
		return res, err
	}
	if seed != nil {
		if err := seed(osUser); err != nil {
			return res, err
		}
	}

	// The agent's password: new at every prepare, kept root-only outside
	// the data volume; the ACL file gets its hash.
	existingACL, err := os.ReadFile(m.cfg.ACLFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		res.Initialized = true
	case err != nil:
		return res, fmt.Errorf("acl file: %w", err)
	default:
		m.log.Info("data directory holds users already; keeping them", "aclfile", m.cfg.ACLFile)
	}
	secret := datastore.GeneratePassword()
	if err := os.MkdirAll(filepath.Dir(m.cfg.SecretFile), 0o700); err != nil {
		return res, fmt.Errorf("secret: %w", err)
	}
	if err := datastore.WriteFileAtomic(m.cfg.SecretFile, []byte(secret+"\n"), 0o600); err != nil {
		return res, err
	}
	// Redis rewrites the ACL file itself (ACL SAVE), so it must own it.
	if err := datastore.WriteFileAtomic(m.cfg.ACLFile, renderACL(existingACL, secret), 0o640); err != nil {
		return res, err
	}
	if err := osUser.Chown(m.cfg.ACLFile); err != nil {
		return res, err
	}

	if _, err := m.writeServerConfig(args.MemoryMB, osUser); err != nil {
		return res, err
	}
	if err := writeServerFile(m.cfg.OverridesFile, renderOverrides(nil), osUser); err != nil {
		return res, err
	}
	// The socket and pid file's directory is the service's own (systemd's
	// RuntimeDirectory in the guest); the log directory comes with the
	// package and is made here only if it is missing.
	if dir := filepath.Dir(m.cfg.LogFile); !exists(dir) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return res, fmt.Errorf("log directory: %w", err)
		}
		if err := osUser.Chown(dir); err != nil {
			return res, err
		}
	}
	m.Close() // a connection from before knows the old password

	if err := m.cfg.Service.Enable(ctx); err != nil {
		return res, fmt.Errorf("enable redis: %w", err)
	}
	if err := m.cfg.Service.Restart(ctx); err != nil {
		return res, fmt.Errorf("start redis: %w", err)
	}
	if err := m.waitReady(ctx); err != nil {
		return res, err
	}
	if err := datastore.CreateMissingUsers(ctx, m, args.Users); err != nil {
		return res, err
	}
	root, err := datastore.EnableRootAtPrepare(ctx, args, m.EnableRoot)
	if err != nil {
		return res, err
	}
	res.Root = root
	// At prepare there is no earlier group: nothing is dropped.
	apply := func(ctx context.Context, s []datastore.Setting) (wire.ConfigurationResult, error) {
		return m.applyConfiguration(ctx, wire.ConfigurationArgs{}, s)
	}
	if err := m.lc.ApplyInitialConfiguration(ctx, settings, apply, m.cfg.Service, m.waitReady); err != nil {
		return res, err
	}
	return res, nil
}

// waitReady waits until the server answers, up to StartTimeout.
func (m *Manager) waitReady(ctx context.Context) error {
	return datastore.WaitReady(ctx, m.cfg.StartTimeout, m.ping, func(last error) error {
		tail, _ := datastore.TailFile(LogServer, m.cfg.LogFile, 10, 8<<10)
		return wire.Errorf(wire.CodeUnavailable, "redis did not answer within %s (%v); log ends: %s",
			m.cfg.StartTimeout, last, strings.Join(tail.Lines, " | "))
	})
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

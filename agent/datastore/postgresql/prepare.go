package postgresql

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"strata/agent/chaos"
	"strata/agent/datastore"
	"strata/agent/wire"
)

// Prepare turns a fresh guest into a running PostgreSQL: data volume
// (format only if blank, then mount), data directory (initdb only if it
// holds no cluster, so a rebuilt instance keeps its data), rendered
// postgresql.conf / pg_hba.conf / pg_ident.conf, start, then on a fresh
// cluster the initial databases and users. Root enable on create and the
// initial configuration group come last. Arguments are validated before
// anything happens.
//
// Prepare runs until it succeeds once. If it fails the status is failed
// and a second prepare is refused: the controller rebuilds the instance.
// If it is cut short (agent or VM stopped), running it again resumes it:
// each step converges on what the data volume holds.
func (m *Manager) Prepare(ctx context.Context, args wire.PrepareArgs) (wire.PrepareResult, error) {
	return m.lc.Prepare(ctx, m.log, args, m.checkPrepareArgs, m.prepare)
}

func (m *Manager) checkPrepareArgs(args *wire.PrepareArgs) ([]datastore.Setting, error) {
	if err := datastore.CheckMemoryMB(args.MemoryMB); err != nil {
		return nil, err
	}
	if args.AuthPlugin != "" {
		return nil, datastore.Invalid("auth_plugin %s: PostgreSQL has no choice of authentication plugin", datastore.Show(args.AuthPlugin))
	}
	if len(args.Databases) > 0 {
		if err := checkDatabases(args.Databases); err != nil {
			return nil, err
		}
	}
	if len(args.Users) > 0 {
		if err := checkUsers(args.Users); err != nil {
			return nil, err
		}
		if err := datastore.CheckUsersDatabases(args.Users, args.Databases); err != nil {
			return nil, err
		}
	}
	if args.Configuration == nil {
		return nil, nil
	}
	return checkConfiguration(*args.Configuration)
}

func (m *Manager) prepare(ctx context.Context, args wire.PrepareArgs, settings []datastore.Setting) (wire.PrepareResult, error) {
	formatted, err := datastore.PrepareVolume(ctx, m.log, m.cfg.Volume, m.cfg.DataDevice, m.cfg.MountPoint, m.cfg.ServiceUnit)
	if err != nil {
		return wire.PrepareResult{}, err
	}
	res := wire.PrepareResult{Formatted: formatted}
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return res, err
	}

	fresh, err := m.initDataDir(ctx, osUser)
	if err != nil {
		return res, err
	}
	res.Initialized = fresh

	cert, err := m.writeConfigFiles(osUser, args.MemoryMB)
	if err != nil {
		return res, err
	}
	res.TLSFingerprint = cert.Fingerprint

	if err := m.cfg.Service.Enable(ctx); err != nil {
		return res, fmt.Errorf("enable postgresql: %w", err)
	}
	if err := m.cfg.Service.Start(ctx); err != nil {
		return res, fmt.Errorf("start postgresql: %w", err)
	}
	if err := m.waitReady(ctx); err != nil {
		return res, err
	}
	if fresh {
		// A resumed prepare may have made some of them already.
		if err := datastore.CreateMissingDatabases(ctx, m, args.Databases); err != nil {
			return res, err
		}
		chaos.Point(wire.GuestPointPrefix + "prepare.users")
		if err := datastore.CreateMissingUsers(ctx, m, args.Users); err != nil {
			return res, err
		}
	}
	root, err := datastore.EnableRootAtPrepare(ctx, args, m.EnableRoot)
	if err != nil {
		return res, err
	}
	res.Root = root
	if err := m.lc.ApplyInitialConfiguration(ctx, settings, m.applyConfiguration, m.cfg.Service, m.waitReady); err != nil {
		return res, err
	}
	return res, nil
}

// writeConfigFiles makes (or finds) the instance's TLS certificate, in
// "tls" at the top of the data volume (a rebuilt instance keeps it and
// the fingerprint its clients pinned), renders postgresql.conf, the
// defaults layer, pg_hba.conf, pg_ident.conf, an empty override set and Debian's
// start.conf, and makes the server's run and log directories.
func (m *Manager) writeConfigFiles(osUser datastore.OSUser, memoryMB int) (datastore.Certificate, error) {
	cert, err := datastore.EnsureCertificate(m.log, filepath.Join(m.DataPath(), "tls"), osUser)
	if err != nil {
		return cert, err
	}
	conf, hba, ident, err := renderConfig(m.cfg, memoryMB, cert)
	if err != nil {
		return cert, err
	}
	layer, conf, err := renderDefaultsLayer(m.cfg, memoryMB, conf)
	if err != nil {
		return cert, err
	}
	if _, err := datastore.WriteLayer(defaultsFile(m.cfg), layer, 0o644); err != nil {
		return cert, err
	}
	files := []struct {
		path string
		data []byte
	}{
		{m.cfg.ConfigFile, conf}, {m.cfg.HBAFile, hba}, {m.cfg.IdentFile, ident},
		{m.cfg.OverridesFile, renderOverrides(nil)},
	}
	if m.cfg.StartConf != "" {
		files = append(files, struct {
			path string
			data []byte
		}{m.cfg.StartConf, []byte("# Written by strata-agent: pg_ctlcluster and systemd start this cluster.\nauto\n")})
	}
	for _, f := range files {
		if err := datastore.WriteConfigFile(f.path, f.data, 0o644); err != nil {
			return cert, err
		}
	}
	for _, dir := range []string{m.cfg.SocketDir, filepath.Dir(m.cfg.PidFile), filepath.Dir(m.cfg.LogFile)} {
		if err := ensureDir(dir, osUser, false); err != nil {
			return cert, err
		}
	}
	return cert, nil
}

// initDataDir runs initdb unless the data directory holds a cluster
// already (an instance rebuilt onto its old volume), or redoes a run of it
// that was cut short (Lifecycle.InitDataDir). It reports whether the
// cluster is this prepare's.
func (m *Manager) initDataDir(ctx context.Context, osUser datastore.OSUser) (bool, error) {
	exists := func() bool {
		_, err := os.Stat(filepath.Join(m.cfg.DataDir, "PG_VERSION"))
		return err == nil
	}
	// The directories above the data directory stay root's; the server
	// only needs to pass through them.
	if err := os.MkdirAll(filepath.Dir(m.cfg.DataDir), 0o755); err != nil {
		return false, fmt.Errorf("data directory: %w", err)
	}
	if err := ensureDir(m.cfg.DataDir, osUser, true); err != nil {
		return false, err
	}
	return m.lc.InitDataDir(m.log, m.cfg.DataDir, exists, func() error { return m.initDB(ctx, osUser) })
}

func (m *Manager) initDB(ctx context.Context, osUser datastore.OSUser) error {
	if err := os.Chmod(m.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, m.cfg.InitDB,
		"--pgdata="+m.cfg.DataDir, "--username="+AdminRole,
		"--auth-local=peer", "--auth-host=scram-sha-256",
		"--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8", "HOME=" + m.cfg.DataDir}
	cmd.SysProcAttr = sysProcAttr(osUser)
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb: %w: %s", err, datastore.LastLines(out.String(), 12))
	}
	// initdb leaves its own configuration files in the data directory;
	// the server reads the rendered ones, so these would only mislead.
	for _, f := range []string{"postgresql.conf", "pg_hba.conf", "pg_ident.conf"} {
		if err := os.Remove(filepath.Join(m.cfg.DataDir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("initdb: %w", err)
		}
	}
	m.log.Info("data directory initialised", "datadir", m.cfg.DataDir, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// ensureDir creates dir (and parents) for the server's account: a new
// directory is given to it, an existing one only when claim is set (the
// guest's /run/postgresql and /var/log/postgresql come from the package
// with the right owner already).
func ensureDir(dir string, osUser datastore.OSUser, claim bool) error {
	_, err := os.Stat(dir)
	existed := err == nil
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("directory %s: %w", dir, err)
	}
	if existed && !claim {
		return nil
	}
	return osUser.Chown(dir)
}

// waitReady waits until the server answers, up to StartTimeout.
func (m *Manager) waitReady(ctx context.Context) error {
	return datastore.WaitReady(ctx, m.cfg.StartTimeout, m.ping, func(last error) error {
		tail, _ := datastore.TailFile(LogGeneral, m.cfg.LogFile, 10, 8<<10)
		return wire.Errorf(wire.CodeUnavailable, "postgresql did not answer within %s (%v); log ends: %s",
			m.cfg.StartTimeout, last, strings.Join(tail.Lines, " | "))
	})
}

func currentUser() (string, error) {
	u, err := user.Current()
	if err != nil {
		return "", fmt.Errorf("postgresql: current user: %w", err)
	}
	return u.Username, nil
}

package mariadb

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"strata/agent/chaos"
	"strata/agent/datastore"
	"strata/agent/wire"
)

// Prepare turns a fresh guest into a running MariaDB: data volume (format
// only if blank, then mount), data directory (initialised only if empty, so
// a rebuilt instance keeps its data), rendered configuration, start, then on
// a fresh data directory: lock down accounts, create the initial databases
// and users. Root enable on create and the initial configuration group are
// applied last. Arguments are validated before anything happens.
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
	if err := checkAuthPlugin(args.AuthPlugin); err != nil {
		return nil, err
	}
	if len(args.Databases) > 0 {
		if err := checkDatabases(args.Databases); err != nil {
			return nil, err
		}
	}
	if len(args.Users) > 0 {
		if err := m.checkUsers(args.Users); err != nil {
			return nil, err
		}
		if err := datastore.CheckUsersDatabases(args.Users, args.Databases); err != nil {
			return nil, err
		}
	}
	if args.Configuration == nil {
		return nil, nil
	}
	return datastore.CheckConfiguration(*args.Configuration, paramPattern.MatchString)
}

func (m *Manager) prepare(ctx context.Context, args wire.PrepareArgs, settings []datastore.Setting) (wire.PrepareResult, error) {
	formatted, err := datastore.PrepareVolume(ctx, m.log, m.cfg.Volume, m.cfg.DataDevice, m.cfg.MountPoint, m.cfg.ServiceUnit)
	if err != nil {
		return wire.PrepareResult{}, err
	}
	res := wire.PrepareResult{Formatted: formatted}

	if _, err := m.writeBaseConfig(args.MemoryMB); err != nil {
		return res, err
	}
	if err := datastore.WriteConfigFile(m.cfg.OverridesFile, renderOverrides(nil), 0o644); err != nil {
		return res, err
	}

	// Before mariadb-install-db: it reads the configuration too.
	if err := m.makeSecureFileDir(); err != nil {
		return res, err
	}
	if err := m.makeLogDirs(); err != nil {
		return res, err
	}
	cert, err := m.ensureCertificate()
	if err != nil {
		return res, err
	}
	res.TLSFingerprint = cert.Fingerprint
	fresh, err := m.initDataDir(ctx)
	if err != nil {
		return res, err
	}
	res.Initialized = fresh
	if !fresh {
		if err := m.keepReplicaReadOnly(); err != nil {
			return res, err
		}
	}

	if err := m.cfg.Service.Enable(ctx); err != nil {
		return res, fmt.Errorf("enable mariadb: %w", err)
	}
	if err := m.cfg.Service.Start(ctx); err != nil {
		return res, fmt.Errorf("start mariadb: %w", err)
	}
	if err := m.waitReady(ctx); err != nil {
		return res, err
	}
	// Before any account is made, on a kept data directory too: a rebuild
	// onto a version with another plugin gives later accounts that one.
	if err := m.ensureAuthPlugin(ctx, args.AuthPlugin); err != nil {
		return res, err
	}
	if fresh {
		if err := m.secure(ctx); err != nil {
			return res, err
		}
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
	// At prepare there is no earlier group: nothing is dropped, no rules
	// beyond the values' are needed.
	apply := func(ctx context.Context, s []datastore.Setting) (wire.ConfigurationResult, error) {
		return m.applyConfiguration(ctx, wire.ConfigurationArgs{}, s)
	}
	if err := m.lc.ApplyInitialConfiguration(ctx, settings, apply, m.cfg.Service, m.waitReady); err != nil {
		return res, err
	}
	return res, nil
}

// makeSecureFileDir makes secure_file_priv's directory, private to the
// server's OS user (the server refuses to start without it).
func (m *Manager) makeSecureFileDir() error {
	dir := secureFileDir(m.cfg)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("secure_file_priv directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("secure_file_priv directory: %w", err)
	}
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return err
	}
	return osUser.Chown(dir)
}

// makeLogDirs makes the directories of the error and slow query logs when
// they are missing, for the server's OS user: bookworm's mariadb-server
// ships /var/log/mysql, trixie's (11.8, logging to the journal by default)
// does not, and mariadbd then writes no error log at all (the log
// operations and prepare's failure messages read it). An existing
// directory is left as the package made it.
func (m *Manager) makeLogDirs() error {
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return err
	}
	for _, f := range []string{m.cfg.ErrorLog, m.cfg.SlowQueryLog} {
		dir := filepath.Dir(f)
		if _, err := os.Stat(dir); err == nil {
			continue
		}
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("log directory: %w", err)
		}
		if err := osUser.Chown(dir); err != nil {
			return fmt.Errorf("log directory: %w", err)
		}
	}
	return nil
}

// initDataDir runs mariadb-install-db unless the data directory holds a
// database already (an instance rebuilt onto its old volume), or redoes a
// run of it that was cut short (Lifecycle.InitDataDir). It reports whether
// the directory is this prepare's.
func (m *Manager) initDataDir(ctx context.Context) (bool, error) {
	exists := func() bool {
		_, err := os.Stat(filepath.Join(m.cfg.DataDir, "mysql"))
		return err == nil
	}
	if err := os.MkdirAll(m.cfg.DataDir, 0o750); err != nil {
		return false, fmt.Errorf("data directory: %w", err)
	}
	return m.lc.InitDataDir(m.log, m.cfg.DataDir, exists, func() error { return m.installDB(ctx) })
}

func (m *Manager) installDB(ctx context.Context) error {
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return err
	}
	if err := osUser.Chown(m.cfg.DataDir); err != nil {
		return err
	}
	var args []string
	if m.cfg.DefaultsFile != "" {
		args = append(args, "--defaults-file="+m.cfg.DefaultsFile) // must come first
	}
	args = append(args, "--datadir="+m.cfg.DataDir, "--user="+m.cfg.OSUser,
		"--auth-root-authentication-method=socket", "--skip-test-db")
	if m.cfg.AdminUser != "root" {
		args = append(args, "--auth-root-socket-user="+m.cfg.AdminUser)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, m.cfg.InstallDB, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		tail, _ := datastore.TailFile(LogError, m.cfg.ErrorLog, 8, 8<<10)
		return fmt.Errorf("mariadb-install-db: %w: %s; error log ends: %s", err, installDBError(out.String()), strings.Join(tail.Lines, " | "))
	}
	m.log.Info("data directory initialised", "datadir", m.cfg.DataDir, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// secure removes anonymous and remote-root accounts and leaves the local
// root account with unix_socket authentication only: no root password
// exists at all, so none can leak or be guessed.
func (m *Manager) secure(ctx context.Context) error {
	rows, err := m.conn().QueryContext(ctx,
		"SELECT User, Host FROM mysql.user WHERE User = '' OR (User = 'root' AND Host <> 'localhost')")
	if err != nil {
		return fmt.Errorf("secure: %w", err)
	}
	var drops []string
	for rows.Next() {
		var u wire.UserRef
		if err := rows.Scan(&u.Name, &u.Host); err != nil {
			rows.Close()
			return fmt.Errorf("secure: %w", err)
		}
		acct, err := account(u)
		if err != nil {
			rows.Close()
			return fmt.Errorf("secure: odd account in a fresh server: %w", err)
		}
		drops = append(drops, "DROP USER "+acct)
	}
	rows.Close()
	stmts := append(drops, "DROP DATABASE IF EXISTS test")
	if m.cfg.AdminUser == "root" {
		stmts = append(stmts, "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket")
	}
	return m.exec(ctx, stmts...)
}

// waitReady waits until the server answers, up to StartTimeout.
func (m *Manager) waitReady(ctx context.Context) error {
	return datastore.WaitReady(ctx, m.cfg.StartTimeout, m.ping, func(last error) error {
		tail, _ := datastore.TailFile(LogError, m.cfg.ErrorLog, 10, 8<<10)
		return wire.Errorf(wire.CodeUnavailable, "mariadb did not answer within %s (%v); error log ends: %s",
			m.cfg.StartTimeout, last, strings.Join(tail.Lines, " | "))
	})
}

// installDBError keeps the lines of mariadb-install-db's output that say
// what went wrong, not its closing advertisement.
func installDBError(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "ERROR") || strings.Contains(l, "rror") || strings.Contains(l, "annot") || strings.Contains(l, "FATAL") {
			keep = append(keep, strings.TrimSpace(l))
		}
	}
	if len(keep) == 0 {
		return datastore.LastLines(out, 20)
	}
	if len(keep) > 10 {
		keep = keep[:10]
	}
	return strings.Join(keep, " | ")
}

// checkAuthPlugin validates prepare's and restore's auth_plugin.
func checkAuthPlugin(p string) error {
	if !wire.ValidAuthPlugin(p) {
		return invalid("auth_plugin %s: use %s or %s", show(p), wire.AuthPluginNative, wire.AuthPluginEd25519)
	}
	return nil
}

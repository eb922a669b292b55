package mariadb

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"strata/agent/datastore"
	"strata/agent/wire"
)

var (
	_ datastore.Backuper = (*Manager)(nil)
	_ datastore.Restorer = (*Manager)(nil)
)

var lsnPattern = regexp.MustCompile(`^[0-9]{1,20}$`)

// Backup streams a hot backup made by mariadb-backup (xbstream format) to
// w: a full one, or with a parent an incremental holding the InnoDB pages
// changed since the parent's end LSN. Only the LSN bookkeeping file is
// written to the data volume (a scratch directory removed afterwards);
// the data goes straight to w.
func (m *Manager) Backup(ctx context.Context, args wire.BackupArgs, w io.Writer) (datastore.BackupInfo, error) {
	var info datastore.BackupInfo
	if args.Parent != nil && !lsnPattern.MatchString(args.Parent.EndLSN) {
		return info, wire.Errorf(wire.CodeInvalidArgument, "incremental backup: the parent's end LSN %q is not an InnoDB LSN", args.Parent.EndLSN)
	}
	if err := m.ready(ctx); err != nil {
		return info, err
	}
	if err := m.conn().QueryRowContext(ctx, "SELECT VERSION()").Scan(&info.ServerVersion); err != nil {
		return info, wire.Errorf(wire.CodeUnavailable, "mariadb: %v", err)
	}
	scratch, err := os.MkdirTemp(m.DataPath(), ".strata-backup-")
	if err != nil {
		return info, fmt.Errorf("backup scratch directory: %w", err)
	}
	defer os.RemoveAll(scratch)
	cmdArgs := m.backupToolArgs("--backup", "--stream=xbstream", "--datadir="+m.cfg.DataDir,
		"--socket="+m.cfg.Socket, "--user="+m.cfg.AdminUser, "--target-dir="+scratch,
		"--extra-lsndir="+filepath.Join(scratch, "lsn"), "--tmpdir="+scratch)
	if args.Parent != nil {
		cmdArgs = append(cmdArgs, "--incremental-lsn="+args.Parent.EndLSN)
	}
	cmd := exec.CommandContext(ctx, m.cfg.BackupTool, cmdArgs...)
	cmd.Dir = scratch
	if err := datastore.StreamFrom(cmd, w); err != nil {
		return info, fmt.Errorf("mariadb backup: %w", err)
	}
	checkpoints := backupMetaFile(filepath.Join(scratch, "lsn"), "checkpoints")
	cp, err := readCheckpoints(checkpoints)
	if err != nil {
		return info, fmt.Errorf("mariadb backup: %w", err)
	}
	info.Position = wire.BackupPosition{StartLSN: cp["from_lsn"], EndLSN: cp["to_lsn"]}
	if !lsnPattern.MatchString(info.Position.EndLSN) {
		return info, fmt.Errorf("mariadb backup: %s has no to_lsn", filepath.Base(checkpoints))
	}
	// The binary log position the backup is consistent with: where a
	// replica seeded from it starts (docs/replication.md).
	if b, err := os.ReadFile(backupMetaFile(filepath.Join(scratch, "lsn"), "info")); err == nil {
		info.Position.GTID = gtidOfLastChange(string(b))
	}
	m.log.Info("backup streamed", "backup", args.BackupID, "incremental", args.Parent != nil,
		"from_lsn", info.Position.StartLSN, "to_lsn", info.Position.EndLSN)
	return info, nil
}

// backupMetaFile is the path of mariadb-backup's metadata file kind
// ("checkpoints", "info") in dir: mariadb_backup_<kind> from MariaDB 11.x
// (trixie's 11.8), xtrabackup_<kind> before (bookworm's 10.11). When
// neither exists it names the newer one, for the error.
func backupMetaFile(dir, kind string) string {
	for _, prefix := range []string{"mariadb_backup_", "xtrabackup_"} {
		p := filepath.Join(dir, prefix+kind)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join(dir, "mariadb_backup_"+kind)
}

// backupToolArgs puts --defaults-file first when the tests set one.
func (m *Manager) backupToolArgs(args ...string) []string {
	if m.cfg.DefaultsFile != "" {
		return append([]string{"--defaults-file=" + m.cfg.DefaultsFile}, args...)
	}
	return args
}

var lastChangePattern = regexp.MustCompile(`GTID of the last change '([0-9,-]*)'`)

// gtidOfLastChange takes the GTID list out of mariadb_backup_info's
// (xtrabackup_info's before 11.x) binlog_pos
// line; "" when the server wrote no binary log or the list is malformed.
func gtidOfLastChange(info string) string {
	m := lastChangePattern.FindStringSubmatch(info)
	if m == nil || wire.CheckGTIDList(m[1]) != nil {
		return ""
	}
	return m[1]
}

// readCheckpoints parses mariadb-backup's "key = value" checkpoint file.
func readCheckpoints(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out, sc.Err()
}

// Restore makes this fresh guest's server from a chain of backups: data
// volume, configuration, then the full backup unpacked into the empty data
// directory and prepared, each incremental unpacked into a scratch
// directory on the data volume and applied in order, and only then the
// server started. Any failure leaves the server stopped and the status
// failed (Lifecycle.Restore).
func (m *Manager) Restore(ctx context.Context, args wire.RestoreArgs, chain datastore.ChainReader) (wire.RestoreResult, error) {
	return m.lc.Restore(ctx, m.log, args, m.checkRestoreArgs, func(ctx context.Context, args wire.RestoreArgs, settings []datastore.Setting) (wire.RestoreResult, error) {
		res, err := m.restore(ctx, args, settings, chain)
		if err != nil {
			// Never leave a server running on half the data.
			m.cfg.Service.Stop(context.WithoutCancel(ctx))
		}
		return res, err
	})
}

func (m *Manager) checkRestoreArgs(args *wire.RestoreArgs) ([]datastore.Setting, error) {
	if err := args.Validate(); err != nil {
		return nil, datastore.Invalid("restore: %v", err)
	}
	if err := datastore.CheckMemoryMB(args.MemoryMB); err != nil {
		return nil, err
	}
	if err := checkAuthPlugin(args.AuthPlugin); err != nil {
		return nil, err
	}
	for i, b := range args.Chain {
		if !lsnPattern.MatchString(b.Position.EndLSN) {
			return nil, datastore.Invalid("restore: backup %s (link %d) has no InnoDB end LSN", b.BackupID, i)
		}
		if i > 0 && b.Position.StartLSN != args.Chain[i-1].Position.EndLSN {
			return nil, datastore.Invalid("restore: backup %s starts at LSN %s but its parent %s ends at %s: the chain has a gap",
				b.BackupID, b.Position.StartLSN, args.Chain[i-1].BackupID, args.Chain[i-1].Position.EndLSN)
		}
	}
	if args.Configuration == nil {
		return nil, nil
	}
	return datastore.CheckConfiguration(*args.Configuration, paramPattern.MatchString)
}

func (m *Manager) restore(ctx context.Context, args wire.RestoreArgs, settings []datastore.Setting, chain datastore.ChainReader) (wire.RestoreResult, error) {
	formatted, err := datastore.PrepareVolume(ctx, m.log, m.cfg.Volume, m.cfg.DataDevice, m.cfg.MountPoint, m.cfg.ServiceUnit)
	if err != nil {
		return wire.RestoreResult{}, err
	}
	res := wire.RestoreResult{Formatted: formatted}
	if empty, err := datastore.EmptyDir(m.cfg.DataDir); err != nil {
		return res, fmt.Errorf("data directory: %w", err)
	} else if !empty {
		return res, wire.Errorf(wire.CodeFailedPrecondition, "restore: the data directory %s is not empty; a restore needs a fresh volume", m.cfg.DataDir)
	}
	if _, err := m.writeBaseConfig(args.MemoryMB); err != nil {
		return res, err
	}
	if err := datastore.WriteConfigFile(m.cfg.OverridesFile, renderOverrides(nil), 0o644); err != nil {
		return res, err
	}
	if err := os.MkdirAll(m.cfg.DataDir, 0o750); err != nil {
		return res, fmt.Errorf("data directory: %w", err)
	}
	for i, link := range args.Chain {
		dir := m.cfg.DataDir
		if i > 0 {
			if dir, err = os.MkdirTemp(m.DataPath(), ".strata-restore-"); err != nil {
				return res, fmt.Errorf("restore scratch directory: %w", err)
			}
		}
		err := m.restoreLink(ctx, chain, i, link, dir)
		if i > 0 {
			os.RemoveAll(dir)
		}
		if err != nil {
			return res, err
		}
		res.Backups++
	}
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return res, err
	}
	if err := osUser.ChownTree(m.cfg.DataDir); err != nil {
		return res, err
	}
	// The server refuses to start without its secure_file_priv directory,
	// which prepare makes and a restore must make too.
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
	if err := m.cfg.Service.Enable(ctx); err != nil {
		return res, fmt.Errorf("enable mariadb: %w", err)
	}
	if err := m.cfg.Service.Start(ctx); err != nil {
		return res, fmt.Errorf("start mariadb: %w", err)
	}
	if err := m.waitReady(ctx); err != nil {
		return res, err
	}
	// The backup's accounts keep their plugins; later ones get this.
	if err := m.ensureAuthPlugin(ctx, args.AuthPlugin); err != nil {
		return res, err
	}
	// As at prepare: a restored server has no earlier group to drop.
	apply := func(ctx context.Context, s []datastore.Setting) (wire.ConfigurationResult, error) {
		return m.applyConfiguration(ctx, wire.ConfigurationArgs{}, s)
	}
	if err := m.lc.ApplyInitialConfiguration(ctx, settings, apply, m.cfg.Service, m.waitReady); err != nil {
		return res, err
	}
	m.log.Info("restored", "backups", res.Backups, "to_lsn", args.Chain[len(args.Chain)-1].Position.EndLSN)
	return res, nil
}

// restoreLink unpacks link i into dir and prepares it: the full backup in
// place, an incremental applied onto the data directory.
func (m *Manager) restoreLink(ctx context.Context, chain datastore.ChainReader, i int, link wire.RestoreBackup, dir string) error {
	rc, err := chain(ctx, i)
	if err != nil {
		return err
	}
	err = datastore.FeedTo(exec.CommandContext(ctx, m.cfg.StreamTool, "-x", "-C", dir), rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("restore: unpacking backup %s: %w", link.BackupID, err)
	}
	prep := m.backupToolArgs("--prepare", "--target-dir="+m.cfg.DataDir)
	if i > 0 {
		prep = append(prep, "--incremental-dir="+dir)
	}
	if err := datastore.RunTool(exec.CommandContext(ctx, m.cfg.BackupTool, prep...)); err != nil {
		return fmt.Errorf("restore: preparing backup %s: %w", link.BackupID, err)
	}
	return nil
}

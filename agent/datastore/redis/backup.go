package redis

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"strata/agent/datastore"
	"strata/agent/wire"
)

var (
	_ datastore.Backuper = (*Manager)(nil)
	_ datastore.Restorer = (*Manager)(nil)
)

// Names inside a Redis backup's tar.
const (
	backupRDB = "dump.rdb"
	backupACL = "users.acl"
)

// Backup streams a snapshot: BGSAVE, then the RDB file it wrote (opened
// at once, so a later snapshot replacing the file does not change what
// is read) and the ACL file, as a tar. The RDB is Redis's own file on the
// data volume, not a copy staged for the backup. Redis has no
// incremental: one is refused with not_supported.
func (m *Manager) Backup(ctx context.Context, args wire.BackupArgs, w io.Writer) (datastore.BackupInfo, error) {
	var info datastore.BackupInfo
	if args.Parent != nil {
		return info, wire.Errorf(wire.CodeNotSupported, "redis does not support incremental backups: an RDB snapshot is always whole; take a full backup")
	}
	if err := m.ready(ctx); err != nil {
		return info, err
	}
	before, err := m.persistence(ctx)
	if err != nil {
		return info, err
	}
	info.ServerVersion = before["redis_version"]
	if _, err := m.do(ctx, "BGSAVE", "SCHEDULE"); err != nil {
		return info, fmt.Errorf("redis: BGSAVE: %w", err)
	}
	for {
		now, err := m.persistence(ctx)
		if err != nil {
			return info, err
		}
		if now["rdb_saves"] != before["rdb_saves"] && now["rdb_bgsave_in_progress"] == "0" {
			if now["rdb_last_bgsave_status"] != "ok" {
				tail, _ := datastore.TailFile(LogServer, m.cfg.LogFile, 5, 4<<10)
				return info, fmt.Errorf("redis: the snapshot failed: %s", strings.Join(tail.Lines, " | "))
			}
			break
		}
		select {
		case <-ctx.Done():
			return info, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	rdb, err := os.Open(filepath.Join(m.cfg.DataDir, backupRDB))
	if err != nil {
		return info, fmt.Errorf("redis: snapshot: %w", err)
	}
	defer rdb.Close()
	tw := tar.NewWriter(w)
	if err := addFile(tw, backupRDB, rdb); err != nil {
		return info, err
	}
	if acl, err := os.Open(m.cfg.ACLFile); err == nil {
		err = addFile(tw, backupACL, acl)
		acl.Close()
		if err != nil {
			return info, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return info, fmt.Errorf("redis: acl file: %w", err)
	}
	if err := tw.Close(); err != nil {
		return info, fmt.Errorf("backup stream: %w", err)
	}
	m.log.Info("backup streamed", "backup", args.BackupID, "rdb_saves", before["rdb_saves"])
	return info, nil
}

func addFile(tw *tar.Writer, name string, f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: st.Size(), ModTime: st.ModTime(), Typeflag: tar.TypeReg}); err != nil {
		return fmt.Errorf("backup stream: %w", err)
	}
	n, err := io.Copy(tw, f)
	if err != nil {
		return fmt.Errorf("backup stream: %s: %w", name, err)
	}
	if n != st.Size() {
		return fmt.Errorf("redis: %s changed size while it was read", name)
	}
	return nil
}

// persistence returns INFO's server and persistence fields.
func (m *Manager) persistence(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	for _, section := range []string{"server", "persistence"} {
		r, err := m.do(ctx, "INFO", section)
		if err != nil {
			return nil, fmt.Errorf("redis: info %s: %w", section, err)
		}
		addInfo(out, r.Str)
	}
	if _, err := strconv.Atoi(out["rdb_saves"]); err != nil {
		return nil, fmt.Errorf("redis: INFO persistence has no rdb_saves (Redis 7 or newer is needed)")
	}
	return out, nil
}

// Restore makes this fresh guest's server from a snapshot: as prepare,
// but the empty data directory first gets the backup's RDB file, and the
// backup's users are kept (the agent's own account gets this guest's new
// password). A snapshot that does not arrive whole fails the restore
// before the server ever starts on it.
func (m *Manager) Restore(ctx context.Context, args wire.RestoreArgs, chain datastore.ChainReader) (wire.RestoreResult, error) {
	return m.lc.Restore(ctx, m.log, args, m.checkRestoreArgs, func(ctx context.Context, args wire.RestoreArgs, settings []datastore.Setting) (wire.RestoreResult, error) {
		res := wire.RestoreResult{}
		seed := func(osUser datastore.OSUser) error {
			if empty, err := datastore.EmptyDir(m.cfg.DataDir); err != nil {
				return fmt.Errorf("data directory: %w", err)
			} else if !empty {
				return wire.Errorf(wire.CodeFailedPrecondition, "restore: the data directory %s is not empty; a restore needs a fresh volume", m.cfg.DataDir)
			}
			rc, err := chain(ctx, 0)
			if err != nil {
				return err
			}
			err = m.unpack(rc, osUser)
			if cerr := rc.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(filepath.Join(m.cfg.DataDir, backupRDB))
				return fmt.Errorf("restore: backup %s: %w", args.Chain[0].BackupID, err)
			}
			res.Backups = 1
			return nil
		}
		pres, err := m.setUp(ctx, wire.PrepareArgs{MemoryMB: args.MemoryMB}, settings, seed)
		res.Formatted = pres.Formatted
		if err != nil {
			m.cfg.Service.Stop(context.WithoutCancel(ctx))
		}
		return res, err
	})
}

func (m *Manager) checkRestoreArgs(args *wire.RestoreArgs) ([]datastore.Setting, error) {
	if err := args.Validate(); err != nil {
		return nil, datastore.Invalid("restore: %v", err)
	}
	if len(args.Chain) != 1 {
		return nil, wire.Errorf(wire.CodeNotSupported, "redis does not support incremental backups: a restore takes one snapshot, not a chain of %d", len(args.Chain))
	}
	if err := datastore.CheckMemoryMB(args.MemoryMB); err != nil {
		return nil, err
	}
	if args.Configuration == nil {
		return nil, nil
	}
	return checkConfiguration(*args.Configuration)
}

// unpack writes the RDB into the data directory and the users into the
// ACL file.
func (m *Manager) unpack(r io.Reader, osUser datastore.OSUser) error {
	tr := tar.NewReader(r)
	sawRDB := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		var path string
		switch {
		case h.Name == backupRDB && h.Typeflag == tar.TypeReg:
			path, sawRDB = filepath.Join(m.cfg.DataDir, backupRDB), true
		case h.Name == backupACL && h.Typeflag == tar.TypeReg:
			path = m.cfg.ACLFile
		default:
			return fmt.Errorf("unexpected entry %q in a Redis backup", h.Name)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return err
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		if err := osUser.Chown(path); err != nil {
			return err
		}
	}
	if !sawRDB {
		return errors.New("the backup holds no dump.rdb")
	}
	_, err := io.Copy(io.Discard, r)
	return err
}

package postgresql

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"strata/agent/datastore"
	"strata/agent/wire"
)

var (
	_ datastore.Backuper = (*Manager)(nil)
	_ datastore.Restorer = (*Manager)(nil)
)

// BackupSlot is the physical replication slot that keeps, on the server,
// the WAL written since the latest backup, so the next incremental can
// fetch it. It holds no more than the WAL since that backup, and
// max_slot_wal_keep_size (postgresql.conf) bounds it: past that the
// server drops it and the next incremental asks for a full backup.
const BackupSlot = "strata_backup"

var endPointPattern = regexp.MustCompile(`write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)`)
var startPointPattern = regexp.MustCompile(`write-ahead log start point: ([0-9A-F]+/[0-9A-F]+) on timeline ([0-9]+)`)
var walFilePattern = regexp.MustCompile(`^pg_wal/[0-9A-F]{24}$`)

// Backup streams a backup to w. A full backup is pg_basebackup's tar (one
// tablespace) with the WAL it needs inside, so it restores alone. An
// incremental is the WAL from the parent's end to now, fetched from the
// server over the replication protocol (the backup slot kept it) and
// written as a tar of whole WAL segment files: nothing is staged on the
// data volume.
func (m *Manager) Backup(ctx context.Context, args wire.BackupArgs, w io.Writer) (datastore.BackupInfo, error) {
	var info datastore.BackupInfo
	if err := m.ready(ctx); err != nil {
		return info, err
	}
	var sysID string
	var segBytes int64
	err := m.conn().QueryRowContext(ctx, `SELECT current_setting('server_version'), system_identifier::text,
		(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') FROM pg_control_system()`).
		Scan(&info.ServerVersion, &sysID, &segBytes)
	if err != nil {
		return info, wire.Errorf(wire.CodeUnavailable, "postgresql: %v", err)
	}
	if args.Parent != nil {
		return m.incremental(ctx, args, w, sysID, segBytes, info)
	}
	// The slot is made anew before the base backup: it keeps every WAL
	// segment from now on, those the backup fetches at its end included.
	if _, err := m.conn().ExecContext(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, BackupSlot); err != nil {
		return info, fmt.Errorf("postgresql: drop backup slot: %w", err)
	}
	if _, err := m.conn().ExecContext(ctx, `SELECT pg_create_physical_replication_slot($1, true)`, BackupSlot); err != nil {
		return info, fmt.Errorf("postgresql: create backup slot: %w", err)
	}
	cmd := exec.CommandContext(ctx, m.cfg.BaseBackup, "--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast",
		"--no-password", "--verbose", "--host="+m.cfg.SocketDir, "--port="+strconv.Itoa(m.cfg.Port), "--username="+AdminRole)
	cmd.Dir = "/"
	log := &lineTail{}
	if err := datastore.StreamFromLogging(cmd, w, log); err != nil {
		return info, fmt.Errorf("postgresql backup: %w", err)
	}
	end := endPointPattern.FindStringSubmatch(log.String())
	start := startPointPattern.FindStringSubmatch(log.String())
	if end == nil || start == nil {
		return info, fmt.Errorf("postgresql backup: pg_basebackup did not report its WAL start and end points: %s", log.String())
	}
	tli, _ := strconv.Atoi(start[2])
	info.Position = wire.BackupPosition{StartLSN: start[1], EndLSN: end[1], Timeline: tli, SystemID: sysID, WALSegmentBytes: segBytes}
	// WAL before the backup's end is no longer needed by the next
	// incremental.
	if err := m.advanceSlot(ctx, end[1]); err != nil {
		return info, err
	}
	m.log.Info("backup streamed", "backup", args.BackupID, "start_lsn", start[1], "end_lsn", end[1])
	return info, nil
}

// incremental streams the WAL from the parent's end to the server's
// flushed end now, as whole segment files in a tar.
func (m *Manager) incremental(ctx context.Context, args wire.BackupArgs, w io.Writer, sysID string, segBytes int64, info datastore.BackupInfo) (datastore.BackupInfo, error) {
	p := args.Parent
	if p.SystemID != sysID {
		return info, wire.Errorf(wire.CodeFailedPrecondition, "incremental backup: the parent is of another cluster (system %s, this one is %s); take a full backup", p.SystemID, sysID)
	}
	from, err := pglogrepl.ParseLSN(p.EndLSN)
	if err != nil {
		return info, wire.Errorf(wire.CodeInvalidArgument, "incremental backup: the parent's end %q is not a WAL location", p.EndLSN)
	}
	if p.WALSegmentBytes != segBytes || segBytes <= 0 {
		return info, wire.Errorf(wire.CodeFailedPrecondition, "incremental backup: the parent's WAL segment size %d is not this cluster's %d", p.WALSegmentBytes, segBytes)
	}
	var restart *string
	err = m.conn().QueryRowContext(ctx, `SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1 AND wal_status IN ('reserved', 'extended')`, BackupSlot).Scan(&restart)
	if err != nil || restart == nil {
		return info, wire.Errorf(wire.CodeFailedPrecondition, "incremental backup: the server no longer keeps the WAL since the parent (the backup slot is gone or was invalidated by max_slot_wal_keep_size); take a full backup")
	}
	kept, err := pglogrepl.ParseLSN(*restart)
	segStart := pglogrepl.LSN(uint64(from) - uint64(from)%uint64(segBytes))
	if err != nil || kept > from && kept/pglogrepl.LSN(segBytes) > segStart/pglogrepl.LSN(segBytes) {
		return info, wire.Errorf(wire.CodeFailedPrecondition, "incremental backup: the server keeps WAL only from %s, after the parent's end %s (a newer backup was taken since); take a full backup or an incremental on the latest backup", *restart, p.EndLSN)
	}
	var target pglogrepl.LSN
	var targetText string
	if err := m.conn().QueryRowContext(ctx, `SELECT pg_current_wal_flush_lsn()::text`).Scan(&targetText); err != nil {
		return info, fmt.Errorf("postgresql: %w", err)
	}
	if target, err = pglogrepl.ParseLSN(targetText); err != nil {
		return info, err
	}

	rc := m.connConfig("postgres")
	cfg, err := pgconn.ParseConfig("")
	if err != nil {
		return info, err
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Database, cfg.TLSConfig, cfg.Fallbacks = rc.Host, rc.Port, rc.User, "", nil, nil
	cfg.ConnectTimeout = 10 * time.Second
	cfg.RuntimeParams = map[string]string{"application_name": "strata-agent-backup", "replication": "true"}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return info, wire.Errorf(wire.CodeUnavailable, "postgresql: replication connection: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return info, fmt.Errorf("postgresql: identify system: %w", err)
	}
	if p.Timeline != 0 && int(sys.Timeline) != p.Timeline {
		return info, wire.Errorf(wire.CodeFailedPrecondition, "incremental backup: the cluster is on timeline %d, the parent on %d; take a full backup", sys.Timeline, p.Timeline)
	}
	if err := pglogrepl.StartReplication(ctx, conn, BackupSlot, segStart, pglogrepl.StartReplicationOptions{Mode: pglogrepl.PhysicalReplication}); err != nil {
		return info, fmt.Errorf("postgresql: start streaming WAL from %s: %w", segStart, err)
	}
	tw := &walTar{tw: tar.NewWriter(w), segBytes: segBytes, timeline: uint32(sys.Timeline), next: segStart}
	for tw.next < target {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return info, fmt.Errorf("postgresql: streaming WAL: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return info, fmt.Errorf("postgresql: WAL message: %w", err)
				}
				if err := tw.write(x.WALStart, x.WALData); err != nil {
					return info, err
				}
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err == nil && k.ReplyRequested {
					// Acknowledge only what the slot keeps anyway: the
					// slot must not move past the parent's end before the
					// controller has stored this backup.
					pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: segStart})
				}
			}
		case *pgproto3.ErrorResponse:
			return info, fmt.Errorf("postgresql: streaming WAL: %s", msg.Message)
		}
	}
	if err := tw.close(); err != nil {
		return info, err
	}
	info.Position = wire.BackupPosition{StartLSN: p.EndLSN, EndLSN: target.String(), Timeline: int(sys.Timeline), SystemID: sysID, WALSegmentBytes: segBytes}
	conn.Close(context.WithoutCancel(ctx))
	if err := m.advanceSlot(ctx, target.String()); err != nil {
		return info, err
	}
	m.log.Info("incremental backup streamed", "backup", args.BackupID, "from", p.EndLSN, "to", target.String())
	return info, nil
}

// advanceSlot releases the WAL before lsn. The WAL sender of a
// replication connection just closed may hold the slot a moment longer.
func (m *Manager) advanceSlot(ctx context.Context, lsn string) error {
	var err error
	for range 50 {
		if _, err = m.conn().ExecContext(ctx, `SELECT pg_replication_slot_advance($1, $2::pg_lsn)`, BackupSlot, lsn); sqlState(err) != "55006" {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("postgresql: advance backup slot: %w", err)
	}
	return nil
}

// walTar writes WAL as it arrives into a tar of whole segment files
// (pg_wal/<name>); the last segment is padded with zeros, which recovery
// reads as the end of WAL.
type walTar struct {
	tw       *tar.Writer
	segBytes int64
	timeline uint32
	next     pglogrepl.LSN // the next byte expected
	inSeg    int64         // bytes written of the current segment
	open     bool
}

func (t *walTar) segName(lsn pglogrepl.LSN) string {
	seg := uint64(lsn) / uint64(t.segBytes)
	perID := uint64(0x100000000) / uint64(t.segBytes)
	return fmt.Sprintf("pg_wal/%08X%08X%08X", t.timeline, seg/perID, seg%perID)
}

func (t *walTar) write(start pglogrepl.LSN, data []byte) error {
	if start > t.next {
		return fmt.Errorf("postgresql: WAL stream skipped from %s to %s", t.next, start)
	}
	if skip := uint64(t.next - start); skip > 0 { // a resent overlap
		if skip >= uint64(len(data)) {
			return nil
		}
		data = data[skip:]
	}
	for len(data) > 0 {
		if !t.open {
			if err := t.tw.WriteHeader(&tar.Header{Name: t.segName(t.next), Mode: 0o600, Size: t.segBytes, Typeflag: tar.TypeReg, ModTime: time.Now()}); err != nil {
				return fmt.Errorf("backup stream: %w", err)
			}
			t.open, t.inSeg = true, 0
		}
		n := min(int64(len(data)), t.segBytes-t.inSeg)
		if _, err := t.tw.Write(data[:n]); err != nil {
			return fmt.Errorf("backup stream: %w", err)
		}
		data, t.inSeg, t.next = data[n:], t.inSeg+n, t.next+pglogrepl.LSN(n)
		if t.inSeg == t.segBytes {
			t.open = false
		}
	}
	return nil
}

func (t *walTar) close() error {
	if t.open {
		zeros := make([]byte, 64<<10)
		for t.inSeg < t.segBytes {
			n := min(int64(len(zeros)), t.segBytes-t.inSeg)
			if _, err := t.tw.Write(zeros[:n]); err != nil {
				return fmt.Errorf("backup stream: %w", err)
			}
			t.inSeg += n
		}
		t.open = false
	}
	if err := t.tw.Close(); err != nil {
		return fmt.Errorf("backup stream: %w", err)
	}
	return nil
}

// lineTail keeps the last lines a tool wrote to stderr.
type lineTail struct{ b []byte }

func (l *lineTail) Write(p []byte) (int, error) {
	l.b = append(l.b, p...)
	if len(l.b) > 16<<10 {
		l.b = l.b[len(l.b)-16<<10:]
	}
	return len(p), nil
}

func (l *lineTail) String() string { return string(l.b) }

// Restore makes this fresh guest's cluster from a chain: the base
// backup's tar unpacked into the empty data directory, each incremental's
// WAL segments written into pg_wal (a later link's copy of a segment
// replaces an earlier one's, which it extends), then the server started:
// it recovers from the base backup's label through all of that WAL before
// it answers. Any failure leaves the server stopped and the status failed.
func (m *Manager) Restore(ctx context.Context, args wire.RestoreArgs, chain datastore.ChainReader) (wire.RestoreResult, error) {
	return m.lc.Restore(ctx, m.log, args, m.checkRestoreArgs, func(ctx context.Context, args wire.RestoreArgs, settings []datastore.Setting) (wire.RestoreResult, error) {
		res, err := m.restore(ctx, args, settings, chain)
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
	if err := datastore.CheckMemoryMB(args.MemoryMB); err != nil {
		return nil, err
	}
	for i, b := range args.Chain {
		if b.Position.SystemID == "" || b.Position.EndLSN == "" {
			return nil, datastore.Invalid("restore: backup %s (link %d) has no WAL position", b.BackupID, i)
		}
		if i > 0 {
			prev := args.Chain[i-1]
			if b.Position.SystemID != prev.Position.SystemID || b.Position.StartLSN != prev.Position.EndLSN {
				return nil, datastore.Invalid("restore: backup %s does not continue %s (starts at %s of system %s; the parent ends at %s of system %s)",
					b.BackupID, prev.BackupID, b.Position.StartLSN, b.Position.SystemID, prev.Position.EndLSN, prev.Position.SystemID)
			}
		}
	}
	if args.Configuration == nil {
		return nil, nil
	}
	return checkConfiguration(*args.Configuration)
}

func (m *Manager) restore(ctx context.Context, args wire.RestoreArgs, settings []datastore.Setting, chain datastore.ChainReader) (wire.RestoreResult, error) {
	formatted, err := datastore.PrepareVolume(ctx, m.log, m.cfg.Volume, m.cfg.DataDevice, m.cfg.MountPoint, m.cfg.ServiceUnit)
	if err != nil {
		return wire.RestoreResult{}, err
	}
	res := wire.RestoreResult{Formatted: formatted}
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return res, err
	}
	if empty, err := datastore.EmptyDir(m.cfg.DataDir); err != nil {
		return res, fmt.Errorf("data directory: %w", err)
	} else if !empty {
		return res, wire.Errorf(wire.CodeFailedPrecondition, "restore: the data directory %s is not empty; a restore needs a fresh volume", m.cfg.DataDir)
	}
	if err := os.MkdirAll(filepath.Dir(m.cfg.DataDir), 0o755); err != nil {
		return res, fmt.Errorf("data directory: %w", err)
	}
	if err := ensureDir(m.cfg.DataDir, osUser, true); err != nil {
		return res, err
	}
	if err := os.Chmod(m.cfg.DataDir, 0o700); err != nil {
		return res, fmt.Errorf("data directory: %w", err)
	}
	for i, link := range args.Chain {
		rc, err := chain(ctx, i)
		if err != nil {
			return res, err
		}
		err = untar(rc, m.cfg.DataDir, i > 0)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return res, fmt.Errorf("restore: backup %s: %w", link.BackupID, err)
		}
		res.Backups++
	}
	// The base backup carries the source's configuration files only if
	// it had them in its data directory; this guest's are rendered.
	// A backup taken on a standby may hold its signal files: whether
	// this server is a standby is the restore's to say.
	for _, f := range []string{"postgresql.conf", "pg_hba.conf", "pg_ident.conf", "postmaster.pid", "postmaster.opts", standbySignal, "recovery.signal"} {
		os.Remove(filepath.Join(m.cfg.DataDir, f))
	}
	if args.Standby {
		// A replica's seed: the server starts as a standby of no source
		// yet (read-only, consistent at the backup's end), so it never
		// writes WAL of its own and start_replication can attach it to
		// the primary (replication.go).
		if err := writeStandbySignal(m.cfg.DataDir); err != nil {
			return res, err
		}
	}
	if err := osUser.ChownTree(m.cfg.DataDir); err != nil {
		return res, err
	}
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
	if err := m.lc.ApplyInitialConfiguration(ctx, settings, m.applyConfiguration, m.cfg.Service, m.waitReady); err != nil {
		return res, err
	}
	m.log.Info("restored", "backups", res.Backups, "to_lsn", args.Chain[len(args.Chain)-1].Position.EndLSN, "standby", args.Standby)
	return res, nil
}

// untar unpacks a backup tar into dir. Names must stay inside dir; only
// files and directories are taken. walOnly admits pg_wal segment files
// only (an incremental).
func untar(r io.Reader, dir string, walOnly bool) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("tar entry %q leaves the data directory", h.Name)
		}
		if walOnly && !walFilePattern.MatchString(name) {
			return fmt.Errorf("tar entry %q is not a WAL segment", h.Name)
		}
		path := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		default:
			return fmt.Errorf("tar entry %q: type %q is not supported (tablespaces outside the data directory are not)", h.Name, string(h.Typeflag))
		}
	}
	// Whatever follows the tar's end must be nothing: read to EOF so the
	// stream's digest is checked.
	_, err := io.Copy(io.Discard, r)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}

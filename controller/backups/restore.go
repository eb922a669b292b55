package backups

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/backups/format"
	"strata/controller/instances"
	"strata/controller/lifecycle"
	"strata/controller/registry"
	"strata/controller/tasks"
)

// chain returns the backup and its ancestors, full backup first. Every
// link must be live and COMPLETED.
func (m *Manager) chain(ctx context.Context, b Backup) ([]Backup, error) {
	out := []Backup{b}
	for cur := b; cur.ParentID != ""; {
		if len(out) > wire.MaxChainLength {
			return nil, wrap(lifecycle.ErrUnprocessable, "backup %s: its chain is longer than %d backups", b.ID, wire.MaxChainLength)
		}
		p, err := getAny(ctx, m.DB, cur.ParentID)
		if errors.Is(err, ErrNotFound) || (err == nil && !p.DeletedAt.IsZero()) {
			return nil, wrap(lifecycle.ErrUnprocessable, "backup %s: the chain is incomplete: its parent %s is deleted", cur.ID, cur.ParentID)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, p)
		cur = p
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	for _, l := range out {
		if l.Status != StatusCompleted || l.Manifest == nil || l.Result == nil {
			return nil, wrap(lifecycle.ErrUnprocessable, "backup %s in the chain is %s, not COMPLETED", l.ID, l.Status)
		}
	}
	return out, nil
}

// CheckRestore says whether backupID can be restored into a new instance
// of version v with a volume of volumeGB, and returns its chain's ids
// (full backup first). Each refusal says which check failed: unknown
// backup (not found), another datastore or an incompatible version, a
// volume too small, an incomplete chain, a missing or damaged object (each
// segment's SHA-256 and every chunk's authentication tag are checked, so
// the whole chain is read once), or a key that does not open it.
func (m *Manager) CheckRestore(ctx context.Context, project, backupID string, v registry.Version, volumeGB int) ([]string, error) {
	b, err := Get(ctx, m.DB, project, backupID)
	if errors.Is(err, ErrNotFound) {
		return nil, wrap(lifecycle.ErrNotFound, "backup %q not found", trunc(backupID))
	}
	if err != nil {
		return nil, err
	}
	if b.Status != StatusCompleted {
		return nil, wrap(lifecycle.ErrUnprocessable, "backup %s is %s; only a COMPLETED backup can be restored", b.ID, b.Status)
	}
	src, err := m.Registry.Version(ctx, b.DatastoreVersionID)
	if err != nil {
		return nil, fmt.Errorf("backup %s: its datastore version: %w", b.ID, err)
	}
	if err := compatible(src, v); err != nil {
		return nil, wrap(lifecycle.ErrBadRequest, "backup %s: %v", b.ID, err)
	}
	links, err := m.chain(ctx, b)
	if err != nil {
		return nil, err
	}
	var raw int64
	for _, l := range links {
		raw += l.RawBytes
	}
	// The native data, with room for the filesystem and the server's
	// own files.
	needGB := int((raw + raw/5 + (1<<30 - 1)) >> 30)
	if volumeGB < needGB {
		return nil, wrap(lifecycle.ErrBadRequest, "backup %s: the volume of %d GB is too small: the chain holds %.2f GB of data, so at least %d GB are needed",
			b.ID, volumeGB, float64(raw)/(1<<30), needGB)
	}
	ids := make([]string, len(links))
	for i, l := range links {
		if l.Store != m.StoreName {
			return nil, wrap(lifecycle.ErrUnprocessable, "backup %s is in the %s object store; this controller uses %s", l.ID, l.Store, m.StoreName)
		}
		if err := format.CheckPresent(ctx, m.Store, l.Manifest); err != nil {
			return nil, wrap(lifecycle.ErrUnprocessable, "%s", naming(l.ID, err))
		}
		if err := format.Verify(ctx, m.Store, l.Manifest, m.KEK); err != nil {
			if errors.Is(err, format.ErrCorrupt) || errors.Is(err, format.ErrWrongKey) {
				return nil, wrap(lifecycle.ErrUnprocessable, "%s", naming(l.ID, err))
			}
			return nil, fmt.Errorf("backup %s: verifying its objects: %w", l.ID, err)
		}
		ids[i] = l.ID
	}
	return ids, nil
}

// naming makes sure a refusal names the backup (the format's errors
// usually do already).
func naming(id string, err error) string {
	if strings.Contains(err.Error(), id) {
		return err.Error()
	}
	return "backup " + id + ": " + err.Error()
}

// compatible: a backup restores into the same datastore, at the same
// version or a newer one the data format allows (MariaDB: same major and
// minor; PostgreSQL: same major; Redis: any newer).
func compatible(src, dst registry.Version) error {
	if src.Manager != dst.Manager || src.DatastoreID != dst.DatastoreID {
		return fmt.Errorf("it is a backup of %s, not %s", src.DatastoreName, dst.DatastoreName)
	}
	if src.ID == dst.ID {
		return nil
	}
	a, b := versionParts(src.Name), versionParts(dst.Name)
	same := 1
	switch src.Manager {
	case "mariadb", "mysql":
		same = 2
	case "redis":
		same = 0
	}
	for i := range same {
		if part(a, i) != part(b, i) {
			return fmt.Errorf("it is a backup of %s %s, which %s %s cannot read (a restore needs the same major version)", src.DatastoreName, src.Name, dst.DatastoreName, dst.Name)
		}
	}
	for i := range max(len(a), len(b)) {
		if part(a, i) != part(b, i) {
			if part(a, i) > part(b, i) {
				return fmt.Errorf("it is a backup of %s %s, newer than %s", src.DatastoreName, src.Name, dst.Name)
			}
			return nil
		}
	}
	return nil
}

func versionParts(s string) []int {
	var out []int
	for _, p := range strings.Split(s, ".") {
		n, err := strconv.Atoi(p)
		if err != nil {
			n = -1
		}
		out = append(out, n)
	}
	return out
}

func part(p []int, i int) int {
	if i < len(p) {
		return p[i]
	}
	return 0
}

// Restore runs the restore operation opID on the new instance: it queues
// the operation with the chain and serves each link's stream, read from
// the store with every segment and chunk checked, until the guest reports
// how the restore ended (or, before any data flowed, deadline passes). A failed restore is a
// *tasks.Failure saying why, the store's reason first (a damaged segment
// is named) — the guest then never starts its datastore on the data.
//
// A rerun after a controller restart queues the same operation (the
// agent runs it once) and serves streams the agent opens again; a stream
// cut by the restart has already failed the agent's restore.
func (m *Manager) Restore(ctx context.Context, instanceID, opID string, chainIDs []string, base wire.RestoreArgs, deadline time.Time) error {
	var links []Backup
	for _, id := range chainIDs {
		b, err := getAny(ctx, m.DB, id)
		if err != nil {
			return err
		}
		if !b.DeletedAt.IsZero() || b.Status != StatusCompleted || b.Manifest == nil || b.Result == nil {
			return tasks.Fail("", "restore: backup %s was deleted or is no longer COMPLETED", id)
		}
		links = append(links, b)
	}
	args := base
	args.Chain = nil
	for i, l := range links {
		args.Chain = append(args.Chain, wire.RestoreBackup{BackupID: l.ID, Incremental: i > 0, Position: l.Result.Position,
			Stream: l.Result.Stream, Compression: l.Result.Compression})
	}
	if err := args.Validate(); err != nil {
		return tasks.Fail("", "restore: %v", err)
	}
	data, err := wire.MarshalArgs(args)
	if err != nil {
		return err
	}
	op := wire.Operation{ID: opID, Kind: wire.KindRestore, Args: data}

	// Deferred in this order so that on return the waits close, then ctx
	// ends (stopping any stream still copying), then the servers are
	// waited for.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var serveErr error
	var started bool
	for i, l := range links {
		w, err := m.Agents.ExpectStream(instanceID, opID, i)
		if err != nil {
			return err
		}
		defer w.Close()
		wg.Go(func() {
			st, err := w.Wait(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			started = true
			mu.Unlock()
			// An error after ctx ended is this side closing the stream
			// (the guest has answered, or the task is stopping), not a
			// reason.
			if err := m.serve(ctx, st, l); err != nil && ctx.Err() == nil {
				m.log().Warn("restore stream failed", "instance", instanceID, "backup", l.ID, "err", err)
				mu.Lock()
				if serveErr == nil {
					serveErr = err
				}
				mu.Unlock()
			}
		})
	}
	if err := m.Agents.Queue(ctx, instanceID, op, agentendpoint.QueueOptions{}); err != nil {
		return fmt.Errorf("queue the restore operation: %w", err)
	}
	for {
		res, done, err := m.Agents.Result(ctx, instanceID, opID)
		if err != nil {
			return err
		}
		if done {
			if res.Error == nil {
				return nil
			}
			// The guest may answer before this side's stream has
			// ended (a stream cut here reaches it as a short stream):
			// wait for the streams to end, so the reason is this
			// side's failure when there is one.
			cancel()
			wg.Wait()
			mu.Lock()
			why := serveErr
			mu.Unlock()
			if why != nil {
				return tasks.Fail("", "restore failed: %v (the guest: %s)", why, res.Error.Message)
			}
			return tasks.Fail("", "restore failed in the guest: %s: %s", res.Error.Code, res.Error.Message)
		}
		// The deadline (the boot timeout) bounds the wait for the guest
		// to start; once data flows, the task's step timeout bounds it.
		mu.Lock()
		waiting := !started
		mu.Unlock()
		if waiting && !deadline.IsZero() && time.Now().After(deadline) {
			return tasks.Fail("", "the guest did not start restoring by %s (its boot timeout)", deadline.UTC().Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// serve streams one link from the store to the agent. Only bytes whose
// chunk passed its authentication tag are sent; on any damage the stream
// is closed without EOF, and the agent's restore fails.
func (m *Manager) serve(ctx context.Context, st agentendpoint.Stream, l Backup) error {
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()
	r, err := format.NewReader(ctx, m.Store, l.Manifest, m.KEK)
	if err != nil {
		return fmt.Errorf("backup %s: %w", l.ID, err)
	}
	defer r.Close()
	if err := SendStream(st, r); err != nil {
		return fmt.Errorf("backup %s: %w", l.ID, err)
	}
	return nil
}

// SendStream copies a backup's stream (the container's verifying reader)
// to the agent, reading and decrypting ahead of sending, and ends it with
// EOF; a read error (damage) returns before EOF is sent. When it returns,
// r is no longer being read.
func SendStream(st agentendpoint.Stream, r io.Reader) error {
	ra := newReadahead(r, 8, 1<<20)
	// The caller closes r once this returns: no Read of r may still run.
	defer ra.stopWait()
	if _, err := io.CopyBuffer(st, ra, make([]byte, 1<<20)); err != nil {
		return err
	}
	return st.CloseWrite()
}

// SeedBackup takes a backup of an instance to seed replicas from
// (lifecycle.Seeds): an ordinary backup of the source's project. With
// incremental, it is an incremental on the instance's newest completed
// backup when that one is of the instance's datastore version (an
// upgraded instance's older backups are not parents for a restore onto
// the new version) and its chain has room; else it is a full backup.
func (m *Manager) SeedBackup(ctx context.Context, project, instanceID, name string, incremental bool) (string, error) {
	r := CreateRequest{ProjectID: project, InstanceID: instanceID, Name: name,
		Description: "taken to seed replicas (docs/replication.md)"}
	if incremental {
		parent, err := m.seedParent(ctx, project, instanceID)
		if err != nil {
			return "", err
		}
		r.ParentID = parent
	}
	b, err := m.Create(ctx, r)
	return b.ID, err
}

// seedParent is the backup a seed's incremental applies on ("" for
// none: a full seed).
func (m *Manager) seedParent(ctx context.Context, project, instanceID string) (string, error) {
	in, err := instances.Get(ctx, m.DB, project, instanceID)
	if err != nil {
		return "", err
	}
	b, err := newestCompleted(ctx, m.DB, project, instanceID)
	if err != nil || b == nil || b.DatastoreVersionID != in.DatastoreVersionID || b.ChainPosition+1 >= wire.MaxChainLength {
		return "", err
	}
	return b.ID, nil
}

// SeedState reports whether a seed backup completed, its GTID position,
// and the chain to restore (its ancestors, full first, then the seed); a
// failed or deleted one, or one whose parent is gone, fails the replica
// with the reason.
func (m *Manager) SeedState(ctx context.Context, backupID string) (bool, string, []string, error) {
	b, err := getAny(ctx, m.DB, backupID)
	if errors.Is(err, ErrNotFound) {
		return false, "", nil, tasks.Fail("", "the seed backup %s is gone", backupID)
	}
	if err != nil {
		return false, "", nil, err
	}
	switch b.Status {
	case StatusCompleted:
		links, err := m.chain(ctx, b)
		if errors.Is(err, lifecycle.ErrUnprocessable) {
			// A link deleted or no longer COMPLETED.
			return false, "", nil, tasks.Fail("", "the seed backup %s cannot be restored: %v", backupID, err)
		}
		if err != nil {
			return false, "", nil, err
		}
		ids := make([]string, len(links))
		for i, l := range links {
			ids[i] = l.ID
		}
		var gtid string
		if b.Result != nil {
			gtid = b.Result.Position.GTID
		}
		return true, gtid, ids, nil
	case StatusNew, StatusBuilding:
		return false, "", nil, nil
	}
	return false, "", nil, tasks.Fail("", "the seed backup %s of the source is %s: %s", backupID, b.Status, b.FailReason)
}

// DeleteSeed deletes a seed backup the replicas restored; a gone one is
// fine.
func (m *Manager) DeleteSeed(ctx context.Context, backupID string) error {
	err := m.Delete(ctx, "", backupID)
	if errors.Is(err, lifecycle.ErrNotFound) || errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

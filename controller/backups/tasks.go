package backups

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/backups/format"
	"strata/controller/instances"
	"strata/controller/store"
	"strata/controller/tasks"
)

// Task kinds.
const (
	KindBackup = "backup"
	KindDelete = "backup_delete"
)

type taskPayload struct {
	BackupIDs []string `json:"backup_ids"`
}

// Kinds returns the backup task kinds for the engine. A backup streams in
// one step, so its step timeout is long; the step itself bounds waiting
// for the agent.
func (m *Manager) Kinds() map[string]tasks.Kind {
	return map[string]tasks.Kind{
		KindBackup: {Run: m.runBackup, StepTimeout: 24 * time.Hour},
		KindDelete: {Run: m.runDelete, OnFail: m.deleteFailed},
	}
}

func backupOpID(id string) string { return "backup-" + id }

// runBackup takes one backup. The backup ends COMPLETED or FAILED (with
// its objects removed) whatever happens; the task itself always ends
// done, because a failed backup does not break the instance.
//
// A step that finds its backup BUILDING is a rerun after the controller
// stopped mid-stream: the agent's stream ended with the connection (an
// operation is never resumed), so the backup is failed with that reason.
func (m *Manager) runBackup(ctx context.Context, t *tasks.Task) (tasks.Result, error) {
	var p taskPayload
	if err := t.Decode(&p); err != nil || len(p.BackupIDs) != 1 {
		return tasks.Result{}, tasks.Fail("", "backup task: bad payload %s", t.Payload)
	}
	b, err := getAny(ctx, m.DB, p.BackupIDs[0])
	if errors.Is(err, ErrNotFound) {
		return tasks.Result{Done: true}, m.clearInstanceTask(ctx, t.InstanceID)
	}
	if err != nil {
		return tasks.Result{}, err
	}
	switch {
	case !b.DeletedAt.IsZero() && b.Running():
		return tasks.Result{Done: true}, m.finishFailed(ctx, b, "the backup was deleted before it ran")
	case b.Status == StatusBuilding:
		return tasks.Result{Done: true}, m.finishFailed(ctx, b,
			"the controller stopped while this backup was streaming; a backup is not resumed (take a new one)")
	case b.Status != StatusNew:
		return tasks.Result{Done: true}, m.clearInstanceTask(ctx, t.InstanceID)
	}
	if err := m.setStatus(ctx, b.ID, StatusNew, StatusBuilding, ""); err != nil {
		return tasks.Result{}, err
	}
	start := m.now()
	log := m.log().With("backup", b.ID, "instance", b.InstanceID)
	log.Info("backup started", "parent", b.ParentID)
	done, err := m.stream(ctx, b)
	if err != nil {
		log.Warn("backup failed", "err", err)
		return tasks.Result{Done: true}, m.finishFailed(context.WithoutCancel(ctx), b, err.Error())
	}
	secs := m.now().Sub(start).Seconds()
	log.Info("backup completed", "raw_bytes", done.Result.RawBytes, "stored_bytes", done.Manifest.StoredBytes, "seconds", secs,
		"raw_mb_per_s", float64(done.Result.RawBytes)/1e6/max(secs, 1e-3))
	return tasks.Result{Done: true}, nil
}

// stream runs the backup operation and stores its stream; on success the
// backup is COMPLETED when it returns.
func (m *Manager) stream(ctx context.Context, b Backup) (Backup, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	m.mu.Lock()
	if m.running == nil {
		m.running = map[string]context.CancelCauseFunc{}
	}
	m.running[b.ID] = cancel
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.running, b.ID)
		m.mu.Unlock()
	}()
	// Another replica's delete is seen through the database.
	go m.watchDeleted(ctx, b.ID, cancel)

	args := wire.BackupArgs{BackupID: b.ID}
	if b.ParentID != "" {
		parent, err := getAny(ctx, m.DB, b.ParentID)
		if err != nil {
			return b, fmt.Errorf("parent backup %s: %w", b.ParentID, err)
		}
		if parent.Status != StatusCompleted || parent.Result == nil || !parent.DeletedAt.IsZero() {
			return b, fmt.Errorf("parent backup %s is no longer a completed backup", parent.ID)
		}
		args.Parent = &parent.Result.Position
	}
	opArgs, err := wire.MarshalArgs(args)
	if err != nil {
		return b, err
	}
	op := wire.Operation{ID: backupOpID(b.ID), Kind: wire.KindBackup, Args: opArgs}
	wait, err := m.Agents.ExpectStream(b.InstanceID, op.ID, 0)
	if err != nil {
		return b, err
	}
	defer wait.Close()
	if err := m.Agents.Queue(ctx, b.InstanceID, op, agentendpoint.QueueOptions{}); err != nil {
		return b, fmt.Errorf("queue the backup operation: %w", err)
	}
	st, err := m.awaitStream(ctx, b.InstanceID, op.ID, wait)
	if err != nil {
		return b, err
	}
	defer st.Close()

	w, err := format.NewWriter(ctx, m.Store, b.Location, m.KEK, m.WriterOptions)
	if err != nil {
		return b, fmt.Errorf("object store: %w", err)
	}
	abort := sync.OnceFunc(func() {
		st.Close() // the agent's backup stops at its next write
		if err := w.Abort(context.WithoutCancel(ctx)); err != nil {
			m.log().Warn("removing a failed backup's objects failed; the collector will", "backup", b.ID, "err", err)
		}
	})
	// A cancelled context (delete, shutdown) must also stop a copy that
	// waits on the network.
	stop := context.AfterFunc(ctx, abort)
	defer stop()
	received, copyErr := ReceiveStream(w, st)
	if copyErr == nil {
		copyErr = ctx.Err()
	}
	if copyErr != nil {
		abort()
		return b, m.cause(ctx, "storing the stream", copyErr)
	}
	res, err := m.awaitResult(ctx, b.InstanceID, op.ID)
	if err != nil {
		abort()
		return b, err
	}
	var br wire.BackupResult
	if err := res.Decode(&br); err != nil {
		abort()
		var oe *wire.OpError
		if errors.As(err, &oe) {
			return b, fmt.Errorf("the guest's backup failed: %s", oe.Message)
		}
		return b, fmt.Errorf("the guest's backup result: %w", err)
	}
	if !received.Equal(br.Stream) {
		abort()
		return b, fmt.Errorf("the stream arrived damaged or incomplete: received %d bytes (sha256 %s), the guest sent %d bytes (sha256 %s)",
			received.Bytes, received.SHA256, br.Stream.Bytes, br.Stream.SHA256)
	}
	if err := w.Close(); err != nil {
		abort()
		return b, fmt.Errorf("object store: %w", err)
	}
	stop()
	man := w.Manifest()
	if err := m.fillManifest(ctx, &man, b, br); err != nil {
		format.Delete(context.WithoutCancel(ctx), m.Store, b.Location)
		return b, err
	}
	if err := format.PutManifest(ctx, m.Store, b.Location, &man); err != nil {
		format.Delete(context.WithoutCancel(ctx), m.Store, b.Location)
		return b, fmt.Errorf("object store: manifest: %w", err)
	}
	resJSON, _ := json.Marshal(br)
	manJSON, _ := json.Marshal(man)
	now := m.now()
	err = m.DB.InTx(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE backups SET status = ?, stored_bytes = ?, raw_bytes = ?, result = ?, manifest = ?, updated_at = ?
			WHERE id = ? AND status = ? AND deleted_at IS NULL`, StatusCompleted, man.StoredBytes, br.RawBytes, string(resJSON), string(manJSON),
			store.Millis(now), b.ID, StatusBuilding)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errors.New("the backup was deleted while it finished")
		}
		return setInstanceTaskNone(ctx, tx, b.InstanceID, now)
	})
	if err != nil {
		format.Delete(context.WithoutCancel(ctx), m.Store, b.Location)
		return b, err
	}
	b.Status, b.Result, b.Manifest, b.StoredBytes, b.RawBytes = StatusCompleted, &br, &man, man.StoredBytes, br.RawBytes
	return b, nil
}

// cause says why a stream stopped: the cancellation's cause if there is
// one (deleted, shutting down), else the error.
func (m *Manager) cause(ctx context.Context, what string, err error) error {
	if c := context.Cause(ctx); c != nil {
		if errors.Is(c, context.Canceled) {
			return fmt.Errorf("%s: the controller is shutting down", what)
		}
		return fmt.Errorf("%s: %w", what, c)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (m *Manager) fillManifest(ctx context.Context, man *format.Manifest, b Backup, br wire.BackupResult) error {
	v, err := m.Registry.Version(ctx, b.DatastoreVersionID)
	if err != nil {
		return err
	}
	man.BackupID, man.ParentID, man.ChainPosition = b.ID, b.ParentID, b.ChainPosition
	man.Datastore, man.DatastoreVersion, man.Compression = v.DatastoreName, v.Name, br.Compression
	man.CreatedAt = b.CreatedAt.UTC()
	man.Positions = positions(br.Position)
	return nil
}

// positions renders a backup's position for the manifest (for people and
// for tools that read a store without the controller's database).
func positions(p wire.BackupPosition) map[string]string {
	out := map[string]string{}
	add := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	add("start_lsn", p.StartLSN)
	add("end_lsn", p.EndLSN)
	add("system_id", p.SystemID)
	add("gtid", p.GTID)
	if p.Timeline != 0 {
		out["timeline"] = fmt.Sprint(p.Timeline)
	}
	if p.WALSegmentBytes != 0 {
		out["wal_segment_bytes"] = fmt.Sprint(p.WALSegmentBytes)
	}
	return out
}

// awaitStream waits for the agent to open the operation's stream; the
// operation failing first (not supported, refused) ends the wait with
// the agent's reason.
func (m *Manager) awaitStream(ctx context.Context, instanceID, opID string, wait *agentendpoint.StreamWait) (agentendpoint.Stream, error) {
	timeout := m.StreamTimeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	st, err := wait.AwaitOrFail(ctx, timeout, 500*time.Millisecond, func(c context.Context) (wire.Result, bool, error) {
		return m.Agents.Result(c, instanceID, opID)
	})
	var opErr *wire.OpError
	switch {
	case err == nil:
		return st, nil
	case errors.As(err, &opErr):
		return nil, fmt.Errorf("the guest's backup failed: %s", opErr.Message)
	case errors.Is(err, agentendpoint.ErrNoStream):
		return nil, fmt.Errorf("the guest did not start streaming within %s (is its agent connected?)", timeout)
	default:
		return nil, m.cause(ctx, "waiting for the guest's stream", err)
	}
}

// awaitResult waits for the operation's result once its stream ended.
func (m *Manager) awaitResult(ctx context.Context, instanceID, opID string) (wire.Result, error) {
	timeout := m.ResultTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	for {
		res, done, err := m.Agents.Result(ctx, instanceID, opID)
		if err != nil {
			return res, err
		}
		if done {
			return res, nil
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("the guest sent the whole stream but no result within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return res, m.cause(ctx, "waiting for the guest's result", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// watchDeleted cancels a running backup deleted through another replica.
func (m *Manager) watchDeleted(ctx context.Context, id string, cancel context.CancelCauseFunc) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		var deleted *int64
		if err := m.DB.QueryRow(ctx, `SELECT deleted_at FROM backups WHERE id = ?`, id).Scan(&deleted); err == nil && deleted != nil {
			cancel(errors.New("the backup was deleted while it ran"))
			return
		}
	}
}

// finishFailed records a backup as FAILED with reason, removes what it
// stored, and gives the instance back.
func (m *Manager) finishFailed(ctx context.Context, b Backup, reason string) error {
	if err := format.Delete(ctx, m.Store, b.Location); err != nil {
		// The collector removes what is left: a FAILED backup is not live.
		m.log().Warn("removing a failed backup's objects failed; the collector will", "backup", b.ID, "err", err)
	}
	now := m.now()
	return m.DB.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE backups SET status = ?, fail_reason = ?, updated_at = ? WHERE id = ? AND status IN (?, ?)`,
			StatusFailed, truncReason(reason), store.Millis(now), b.ID, StatusNew, StatusBuilding); err != nil {
			return err
		}
		return setInstanceTaskNone(ctx, tx, b.InstanceID, now)
	})
}

func (m *Manager) setStatus(ctx context.Context, id, from, to, reason string) error {
	_, err := m.DB.Exec(ctx, `UPDATE backups SET status = ?, fail_reason = ?, updated_at = ? WHERE id = ? AND status = ?`,
		to, nullString(reason), store.Millis(m.now()), id, from)
	return err
}

func (m *Manager) clearInstanceTask(ctx context.Context, instanceID string) error {
	return setInstanceTaskNone(ctx, m.DB, instanceID, m.now())
}

// setInstanceTaskNone ends the instance's BACKUP task (and only that).
func setInstanceTaskNone(ctx context.Context, q store.Querier, instanceID string, now time.Time) error {
	_, err := q.Exec(ctx, `UPDATE instances SET task = ?, task_started_at = NULL, updated_at = ? WHERE id = ? AND task = ?`,
		string(instances.TaskNone), store.Millis(now), instanceID, string(instances.TaskBackingUp))
	return err
}

// runDelete removes the objects of deleted backups (children first); the
// rows were hidden when the delete was requested.
func (m *Manager) runDelete(ctx context.Context, t *tasks.Task) (tasks.Result, error) {
	var p taskPayload
	if err := t.Decode(&p); err != nil {
		return tasks.Result{}, tasks.Fail("", "backup delete task: bad payload %s", t.Payload)
	}
	for _, id := range p.BackupIDs {
		b, err := getAny(ctx, m.DB, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return tasks.Result{}, err
		}
		if b.Status == statusDeleted {
			continue
		}
		if err := format.Delete(ctx, m.Store, b.Location); err != nil {
			return tasks.Result{}, fmt.Errorf("backup %s: removing its objects: %w", id, err)
		}
		if _, err := m.DB.Exec(ctx, `UPDATE backups SET status = ?, updated_at = ? WHERE id = ?`, statusDeleted, store.Millis(m.now()), id); err != nil {
			return tasks.Result{}, err
		}
		m.log().Info("backup deleted", "backup", id)
	}
	return tasks.Result{Done: true}, nil
}

// deleteFailed shows the backups whose objects could not be removed again,
// as DELETE_FAILED with the reason; deleting them again retries.
func (m *Manager) deleteFailed(ctx context.Context, t *tasks.Task, f *tasks.Failure) error {
	var p taskPayload
	if err := t.Decode(&p); err != nil {
		return nil
	}
	now := m.now()
	return m.DB.InTx(ctx, func(tx *store.Tx) error {
		for _, id := range p.BackupIDs {
			if _, err := tx.Exec(ctx, `UPDATE backups SET status = ?, fail_reason = ?, deleted_at = NULL, updated_at = ? WHERE id = ? AND status <> ?`,
				StatusDeleteFailed, truncReason(f.Reason), store.Millis(now), id, statusDeleted); err != nil {
				return err
			}
		}
		return nil
	})
}

// ReceiveStream copies an agent's backup stream into w (the encrypted
// container's writer), reading the network ahead of encrypting and
// storing, and returns the digest of what arrived.
func ReceiveStream(w io.Writer, st io.Reader) (wire.StreamDigest, error) {
	got := &digester{h: sha256.New()}
	ra := newReadahead(st, 8, 1<<20)
	defer ra.stop()
	_, err := io.CopyBuffer(io.MultiWriter(w, got), ra, make([]byte, 1<<20))
	return got.digest(), err
}

type digester struct {
	h hash.Hash
	n int64
}

func (d *digester) Write(p []byte) (int, error) {
	d.h.Write(p)
	d.n += int64(len(p))
	return len(p), nil
}

func (d *digester) digest() wire.StreamDigest {
	return wire.StreamDigest{Bytes: d.n, SHA256: wire.SHA256Hex(d.h.Sum(nil))}
}

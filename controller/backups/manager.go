package backups

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/backups/format"
	"strata/controller/instances"
	"strata/controller/lifecycle"
	"strata/controller/objectstore"
	"strata/controller/quotas"
	"strata/controller/registry"
	"strata/controller/store"
	"strata/controller/tasks"
)

// Agents is what backups need of the agent endpoint.
type Agents interface {
	Queue(ctx context.Context, instanceID string, op wire.Operation, opts agentendpoint.QueueOptions) error
	Result(ctx context.Context, instanceID, opID string) (wire.Result, bool, error)
	ExpectStream(instanceID, opID string, index int) (*agentendpoint.StreamWait, error)
}

// ErrConflict: the request clashes with a backup in progress (409).
var ErrConflict = errors.New("conflict")

// Root is the object prefix every backup lives under
// (format.BackupPrefix(Root, id)).
const Root = "backups"

// Manager carries out backup requests and runs the backup tasks.
type Manager struct {
	DB        *store.DB
	Registry  *registry.Registry
	Lifecycle *lifecycle.Manager
	Agents    Agents
	// Store holds the backups; StoreName names its driver in records.
	Store     objectstore.Store
	StoreName string
	KEK       *format.KEK
	// Engine is kicked when a task is queued (optional).
	Engine *tasks.Engine
	// StreamTimeout bounds the wait for the agent to start streaming
	// after the operation was queued (it runs one operation at a time);
	// ResultTimeout the wait for its result after the stream ended.
	StreamTimeout time.Duration
	ResultTimeout time.Duration
	// Segment and chunk sizes of the container (nil: format's defaults).
	WriterOptions *format.WriterOptions
	// GCMinAge spares young objects from the collector (format's default
	// when zero).
	GCMinAge time.Duration
	Logger   *slog.Logger
	Now      func() time.Time

	mu      sync.Mutex
	running map[string]context.CancelCauseFunc
}

// quotas are the lifecycle's (one set of limits per controller).
func (m *Manager) quotas() *quotas.Quotas {
	if m.Lifecycle == nil {
		return nil
	}
	return m.Lifecycle.Quotas
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Manager) log() *slog.Logger {
	if m.Logger == nil {
		return slog.Default()
	}
	return m.Logger
}

func (m *Manager) kick() {
	if m.Engine != nil {
		m.Engine.Kick()
	}
}

func wrap(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))
}

// CreateRequest is a backup to take.
type CreateRequest struct {
	ProjectID   string
	InstanceID  string
	Name        string
	Description string
	// ParentID makes an incremental on that backup; Incremental without
	// ParentID makes one on the instance's latest completed backup (a
	// full backup if it has none, as Trove does).
	ParentID    string
	Incremental bool
}

// checkText validates a backup's name or description.
func checkText(what, s string, max int) error {
	if len(s) > max {
		return wrap(lifecycle.ErrBadRequest, "%s: at most %d bytes", what, max)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return wrap(lifecycle.ErrBadRequest, "%s: control characters are not allowed", what)
		}
	}
	return nil
}

// newestCompleted is an instance's newest COMPLETED backup (nil: none).
func newestCompleted(ctx context.Context, db *store.DB, project, instanceID string) (*Backup, error) {
	all, err := List(ctx, db, ListOptions{Project: project, InstanceID: instanceID})
	if err != nil {
		return nil, err
	}
	for _, b := range all { // newest first
		if b.Status == StatusCompleted {
			return &b, nil
		}
	}
	return nil, nil
}

// Create records a new backup (NEW), marks the instance as backing up and
// queues the backup task, all in one transaction.
func (m *Manager) Create(ctx context.Context, r CreateRequest) (Backup, error) {
	if strings.TrimSpace(r.Name) == "" {
		return Backup{}, wrap(lifecycle.ErrBadRequest, "backup name is required")
	}
	if err := checkText("name", r.Name, 255); err != nil {
		return Backup{}, err
	}
	if err := checkText("description", r.Description, 512); err != nil {
		return Backup{}, err
	}
	in, err := instances.Get(ctx, m.DB, r.ProjectID, r.InstanceID)
	if errors.Is(err, instances.ErrNotFound) {
		return Backup{}, wrap(lifecycle.ErrNotFound, "instance %q not found", trunc(r.InstanceID))
	}
	if err != nil {
		return Backup{}, err
	}
	if st, _ := m.Lifecycle.Status(in); st != instances.StatusActive && st != instances.StatusRestartRequired {
		return Backup{}, wrap(lifecycle.ErrUnprocessable, "instance %s is %s; a backup needs an ACTIVE instance", in.ID, st)
	}
	var parent *Backup
	switch {
	case r.ParentID != "":
		p, err := Get(ctx, m.DB, r.ProjectID, r.ParentID)
		if errors.Is(err, ErrNotFound) {
			return Backup{}, wrap(lifecycle.ErrNotFound, "parent backup %q not found", trunc(r.ParentID))
		}
		if err != nil {
			return Backup{}, err
		}
		parent = &p
	case r.Incremental:
		if parent, err = newestCompleted(ctx, m.DB, r.ProjectID, in.ID); err != nil {
			return Backup{}, err
		}
	}
	b := Backup{ID: store.NewID(), ProjectID: r.ProjectID, InstanceID: in.ID, Name: r.Name, Description: r.Description,
		DatastoreVersionID: in.DatastoreVersionID, Status: StatusNew, Store: m.StoreName, CreatedAt: m.now()}
	b.Location = format.BackupPrefix(Root, b.ID)
	if parent != nil {
		switch {
		case parent.InstanceID != in.ID:
			return Backup{}, wrap(lifecycle.ErrBadRequest, "parent backup %s is of instance %s, not %s", parent.ID, parent.InstanceID, in.ID)
		case parent.Status != StatusCompleted:
			return Backup{}, wrap(lifecycle.ErrUnprocessable, "parent backup %s is %s; an incremental needs a COMPLETED parent", parent.ID, parent.Status)
		case parent.ChainPosition+1 >= wire.MaxChainLength:
			return Backup{}, wrap(lifecycle.ErrUnprocessable, "parent backup %s ends a chain of %d backups, the most a restore takes; take a full backup", parent.ID, wire.MaxChainLength)
		}
		b.ParentID, b.ChainPosition = parent.ID, parent.ChainPosition+1
	}
	now := m.now()
	err = m.DB.InTx(ctx, func(tx *store.Tx) error {
		// The instance moves from no task to backing up atomically: of
		// two concurrent requests one wins, the other is refused.
		res, err := tx.Exec(ctx, `UPDATE instances SET task = ?, task_started_at = ?, updated_at = ? WHERE id = ? AND task = ? AND deleted_at IS NULL`,
			string(instances.TaskBackingUp), store.Millis(now), store.Millis(now), in.ID, string(instances.TaskNone))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return wrap(ErrConflict, "instance %s is busy (a backup or another task is running)", in.ID)
		}
		if q := m.quotas(); q != nil {
			if err := q.Check(ctx, tx, r.ProjectID, quotas.Limits{quotas.Backups: 1}); err != nil {
				return err
			}
		}
		if err := insert(ctx, tx, b); err != nil {
			return err
		}
		_, err = tasks.Enqueue(ctx, tx, tasks.New{InstanceID: in.ID, Kind: KindBackup, Step: "stream", Payload: taskPayload{BackupIDs: []string{b.ID}}}, now)
		return err
	})
	if err != nil {
		return Backup{}, err
	}
	m.kick()
	m.log().Info("backup queued", "backup", b.ID, "instance", in.ID, "project", r.ProjectID, "parent", b.ParentID)
	return Get(ctx, m.DB, "", b.ID)
}

// Delete deletes a backup and every backup that applies on it (its
// incrementals, theirs...), as Trove documents. A running one is
// cancelled: its stream is closed and what it uploaded removed. The rows
// disappear from the API at once; the objects are removed by a task, and
// a backup whose objects cannot be removed comes back as DELETE_FAILED.
// An empty project reaches any project's backup (admin).
func (m *Manager) Delete(ctx context.Context, project, id string) error {
	b, err := Get(ctx, m.DB, project, id)
	if errors.Is(err, ErrNotFound) {
		return wrap(lifecycle.ErrNotFound, "backup %q not found", trunc(id))
	}
	if err != nil {
		return err
	}
	// Children first, so that a crash part-way never leaves an
	// incremental without its parent's row.
	var order []string
	var walk func(Backup) error
	walk = func(b Backup) error {
		kids, err := children(ctx, m.DB, b.ID)
		if err != nil {
			return err
		}
		for _, k := range kids {
			if err := walk(k); err != nil {
				return err
			}
		}
		order = append(order, b.ID)
		return nil
	}
	if err := walk(b); err != nil {
		return err
	}
	now := m.now()
	err = m.DB.InTx(ctx, func(tx *store.Tx) error {
		for _, id := range order {
			if _, err := tx.Exec(ctx, `UPDATE backups SET deleted_at = ?, updated_at = ? WHERE id = ?`, store.Millis(now), store.Millis(now), id); err != nil {
				return err
			}
		}
		_, err := tasks.Enqueue(ctx, tx, tasks.New{InstanceID: b.InstanceID, Kind: KindDelete, Step: "objects", Payload: taskPayload{BackupIDs: order}}, now)
		return err
	})
	if err != nil {
		return err
	}
	for _, id := range order {
		m.cancel(id, errors.New("the backup was deleted while it ran"))
	}
	m.kick()
	m.log().Info("backup delete queued", "backup", b.ID, "with_children", len(order)-1)
	return nil
}

func (m *Manager) cancel(id string, cause error) {
	m.mu.Lock()
	c := m.running[id]
	m.mu.Unlock()
	if c != nil {
		c(cause)
	}
}

// Collect first fails the backups left NEW or BUILDING without a task to
// finish them (the instance's tasks were cancelled by reset-status), then
// removes the objects of every backup that is no longer live (failed,
// deleted, or unknown to the database) and reports what it did.
func (m *Manager) Collect(ctx context.Context) (format.Collected, error) {
	if err := m.failOrphans(ctx); err != nil {
		return format.Collected{}, err
	}
	live, err := liveIDs(ctx, m.DB)
	if err != nil {
		return format.Collected{}, err
	}
	got, err := format.Collect(ctx, m.Store, Root, live, format.CollectOptions{MinAge: m.GCMinAge, Now: m.now()})
	if err != nil {
		return got, fmt.Errorf("backup garbage collection: %w", err)
	}
	for id, names := range got.Removed {
		m.log().Info("removed the objects of a dead backup", "backup", id, "objects", len(names))
	}
	return got, nil
}

// failOrphans fails running backups that no queued task will finish.
func (m *Manager) failOrphans(ctx context.Context) error {
	running, err := store.All(ctx, m.DB, scan, `SELECT `+columns+` FROM backups b WHERE b.status IN (?, ?) AND b.updated_at < ?
		AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.kind = ? AND t.state = ? AND t.payload LIKE '%' || b.id || '%')`,
		StatusNew, StatusBuilding, store.Millis(m.now().Add(-time.Minute)), KindBackup, tasks.StateQueued)
	if err != nil {
		return err
	}
	for _, b := range running {
		m.mu.Lock()
		_, here := m.running[b.ID]
		m.mu.Unlock()
		if here {
			continue
		}
		m.log().Warn("failing a backup no task will finish", "backup", b.ID, "instance", b.InstanceID)
		if err := m.finishFailed(ctx, b, "the backup's task was cancelled (reset-status) before it finished"); err != nil {
			return err
		}
	}
	return nil
}

// RunCollector collects at start and then every interval until ctx ends.
func (m *Manager) RunCollector(ctx context.Context, interval time.Duration) {
	for {
		if _, err := m.Collect(ctx); err != nil && ctx.Err() == nil {
			m.log().Warn("backup garbage collection failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

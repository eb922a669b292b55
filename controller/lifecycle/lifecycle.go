// Package lifecycle is what Trove's taskmanager did: it turns requests on
// instances (create, delete, reset-status, restart, resize volume, attach
// or change a configuration, rebuild onto a new image) into desired-state changes plus durable tasks
// whose steps drive the compute driver and the guest agent, and records
// how they ended — including an instance that never reports, which ends in
// ERROR with the reason stored.
//
// Request checks that need the instance's state (busy, not ready) are
// here; the shape of HTTP requests is the API's. lifecycle never talks to
// a guest except through operations queued on the agent endpoint.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/compute"
	"strata/controller/imagestore"
	"strata/controller/instances"
	"strata/controller/quotas"
	"strata/controller/registry"
	"strata/controller/store"
	"strata/controller/tasks"
)

// Errors a request can end with; the API maps them to HTTP statuses.
var (
	// ErrNotFound: unknown instance, flavor, datastore, version or
	// configuration (404).
	ErrNotFound = errors.New("not found")
	// ErrBadRequest: the request itself is wrong (400).
	ErrBadRequest = errors.New("bad request")
	// ErrUnprocessable: the request is well formed but the instance is in
	// the wrong state for it (422, as Trove answers).
	ErrUnprocessable = errors.New("unprocessable")
	// ErrGuestTimeout: the agent did not answer in time; the operation
	// stays queued (504).
	ErrGuestTimeout = errors.New("the guest agent did not answer in time")
)

func wrap(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))
}

// Agents is what lifecycle needs of the agent endpoint.
type Agents interface {
	// Queue queues an operation (delivered whenever the agent connects,
	// re-run after an interruption if its kind is idempotent, given up at
	// opts.Expires).
	Queue(ctx context.Context, instanceID string, op wire.Operation, opts agentendpoint.QueueOptions) error
	// Result returns an operation's result once there is one.
	Result(ctx context.Context, instanceID, opID string) (wire.Result, bool, error)
	// Call queues and waits up to timeout for the result.
	Call(ctx context.Context, instanceID string, op wire.Operation, opts agentendpoint.QueueOptions, timeout time.Duration) (wire.Result, error)
	// Disconnect closes the instance's session.
	Disconnect(instanceID string)
	// ForgetPayload blanks a stored result's payload (secrets handed out
	// once), or the result's when it comes, if it has not yet.
	ForgetPayload(ctx context.Context, instanceID, opID string) error
}

// Restores is what create needs to make an instance from a backup.
type Restores interface {
	// CheckRestore refuses, with an error of this package's kinds saying
	// which check failed, a backup that cannot be restored into a new
	// instance of version v with a volume of volumeGB; else it returns
	// the backup's chain, full backup first.
	CheckRestore(ctx context.Context, project, backupID string, v registry.Version, volumeGB int) ([]string, error)
	// Restore runs the restore operation opID on the instance and serves
	// its data until the guest reports; a failed restore is a
	// *tasks.Failure with the reason.
	Restore(ctx context.Context, instanceID, opID string, chain []string, base wire.RestoreArgs, deadline time.Time) error
}

// Manager carries out instance requests and runs the instance tasks.
type Manager struct {
	DB       *store.DB
	Registry *registry.Registry
	Images   imagestore.Store
	Compute  compute.Driver
	Agents   Agents
	// DefaultDatastore (name or id) is what a create that names no
	// datastore gets (Trove's default_datastore), with DefaultVersion or,
	// when that is empty, the datastore's default version. Empty: such a
	// create works only while a single datastore is registered.
	DefaultDatastore, DefaultVersion string
	// Engine is kicked when a task is queued (optional).
	Engine *tasks.Engine
	// Controllers are the agent endpoint addresses as guests reach them,
	// written into each bootstrap; HostKey is the endpoint's host key line.
	Controllers []string
	HostKey     string
	// HeartbeatSeconds goes into the bootstrap (default 10).
	HeartbeatSeconds int
	// MaxVolumeGB bounds volume sizes (default 20).
	MaxVolumeGB int
	// RestartTimeout and ResizeTimeout bound those tasks (10 min).
	RestartTimeout time.Duration
	ResizeTimeout  time.Duration
	// GuestCallTimeout bounds synchronous guest calls (60s).
	GuestCallTimeout time.Duration
	// GuestOpTimeout is how long a guest call the API accepted (202) may
	// wait in the queue, or be re-run, before it fails visibly (10 min).
	GuestOpTimeout time.Duration
	// Restores restores new instances from backups (backups.Manager);
	// nil: create with a backup is refused.
	Restores Restores
	// Seeds takes the backups replicas are seeded from (backups.Manager);
	// nil: replica create is refused.
	Seeds Seeds
	// Quotas, if set, limits each project's instances and volume
	// gigabytes, checked in the transaction that records a create or a
	// resize; nil: no limits.
	Quotas *quotas.Quotas
	Logger *slog.Logger
	Now    func() time.Time

	// ConfigureWait bounds how long a configuration change waits for the
	// instances it touches to apply it before answering (30s).
	ConfigureWait time.Duration

	kickOnce sync.Once
	kickCh   chan struct{}
	// autoWarned: when an automatic failover that could not start was
	// last logged, per source.
	autoMu     sync.Mutex
	autoWarned map[string]time.Time
	// userSyncMu: one *sync.Mutex per source, held from a user export to
	// the queueing of its imports (usersync.go).
	userSyncMu sync.Map
	// drift: CheckUserDrift's observations, per replica; driftBusy the
	// sources whose drift sync runs (one at a time per group), driftWG
	// those syncs, waited for when RunRecovery ends.
	driftMu   sync.Mutex
	drift     map[string]driftSeen
	driftBusy sync.Map
	driftWG   sync.WaitGroup
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Clock returns the manager's current time.
func (m *Manager) Clock() time.Time { return m.now() }

func (m *Manager) log() *slog.Logger {
	if m.Logger == nil {
		return slog.Default()
	}
	return m.Logger
}

func (m *Manager) heartbeatSeconds() int {
	if m.HeartbeatSeconds <= 0 {
		return wire.DefaultHeartbeatSeconds
	}
	return m.HeartbeatSeconds
}

// Stale is how old a heartbeat may be before the agent counts as gone.
func (m *Manager) Stale() time.Duration {
	return max(time.Duration(m.heartbeatSeconds())*6*time.Second, 45*time.Second)
}

// MaxVolume is the largest volume size accepted, in GB.
func (m *Manager) MaxVolume() int {
	if m.MaxVolumeGB <= 0 {
		return 20
	}
	return m.MaxVolumeGB
}

func (m *Manager) kick() {
	if m.Engine != nil {
		m.Engine.Kick()
	}
}

// Status derives an instance's shown and operating status.
func (m *Manager) Status(in instances.Instance) (status, operating string) {
	return instances.Status(in.Desired, in.Reported, m.now(), m.Stale())
}

// Task kinds.
const (
	KindCreate    = "create"
	KindDelete    = "delete"
	KindRestart   = "restart"
	KindResize    = "resize_volume"
	KindConfigure = "configure"
	KindRecover   = "recover"
	KindRebuild   = "rebuild"
)

// Kinds returns the task kinds for the engine.
func (m *Manager) Kinds() map[string]tasks.Kind {
	return map[string]tasks.Kind{
		// A restore streams the whole chain in its "restore" step.
		KindCreate:    {Run: m.runCreate, OnFail: m.failCreate, StepTimeout: 12 * time.Hour},
		KindDelete:    {Run: m.runDelete, OnFail: m.failErrored},
		KindRestart:   {Run: m.runRestart, OnFail: m.failErrored},
		KindResize:    {Run: m.runResize, OnFail: m.failErrored},
		KindConfigure: {Run: m.runConfigure, OnFail: m.failFaultOnly},
		KindRecover:   {Run: m.runRecover, OnFail: m.failErrored},
		KindRebuild:   {Run: m.runRebuild, OnFail: m.failRebuild},
		KindAccess:    {Run: m.runAccess, OnFail: m.failFaultOnly},
		// A resize that cannot roll back leaves the instance in ERROR.
		KindResizeFlavor: {Run: m.runResizeFlavor, OnFail: m.failErrored},
		KindPromote:      {Run: m.runPromote, OnFail: m.failPromote},
		KindRejoin:       {Run: m.runRejoin, OnFail: m.failRejoin},
	}
}

// failErrored records the failure as the instance's fault, puts it in
// ERROR and clears its task — unless the failure is harmless (an
// operation cut short that could not run again) and the instance is
// healthy: then the fault is recorded and the instance stays as it is.
func (m *Manager) failErrored(ctx context.Context, t *tasks.Task, f *tasks.Failure) error {
	if f.Harmless {
		if in, err := m.load(ctx, t.InstanceID); err == nil && m.healthy(in) {
			return m.recordFailure(ctx, t, f, false, true)
		}
	}
	return m.recordFailure(ctx, t, f, true, true)
}

// runningSince: the agent reported the datastore running after since (a
// report of the machine's new boot, when since is when it started).
func runningSince(in instances.Instance, since time.Time) bool {
	r := in.Reported
	return r != nil && r.ReceivedAt.After(since) && (r.Status == wire.StatusRunning || r.Status == wire.StatusRestartRequired)
}

// healthy: the agent reports the datastore running, recently.
func (m *Manager) healthy(in instances.Instance) bool {
	r := in.Reported
	return r != nil && m.now().Sub(r.ReceivedAt) <= m.Stale() &&
		(r.Status == wire.StatusRunning || r.Status == wire.StatusRestartRequired)
}

// failFaultOnly records the fault but leaves the status alone (a
// configuration the database refused does not break the instance).
func (m *Manager) failFaultOnly(ctx context.Context, t *tasks.Task, f *tasks.Failure) error {
	return m.recordFailure(ctx, t, f, false, false)
}

// recordFailure records f as the instance's fault; errored puts it in
// ERROR; clearTask ends its task in progress.
func (m *Manager) recordFailure(ctx context.Context, t *tasks.Task, f *tasks.Failure, errored, clearTask bool) error {
	err := m.DB.InTx(ctx, func(tx *store.Tx) error {
		now := m.now()
		if err := instances.SetFault(ctx, tx, t.InstanceID, instances.Fault{Message: f.Reason, Details: f.Details}, errored, now); err != nil {
			return err
		}
		if clearTask {
			return instances.SetTask(ctx, tx, t.InstanceID, instances.TaskNone, now)
		}
		return nil
	})
	if errors.Is(err, instances.ErrNotFound) {
		return nil // deleted meanwhile
	}
	return err
}

// opDone reads an operation's result; a failed operation becomes a
// *tasks.Failure with the agent's code and message. One cut short and not
// run again (a kind that is not idempotent, or past its re-run bound or
// timeout) is a harmless failure: it says so, and does not by itself
// break a healthy instance.
func (m *Manager) opDone(ctx context.Context, instanceID, opID, what string) (wire.Result, bool, error) {
	res, done, err := m.Agents.Result(ctx, instanceID, opID)
	if err != nil || !done {
		return res, done, err
	}
	if res.Error != nil {
		f := &tasks.Failure{Reason: fmt.Sprintf("%s failed in the guest: %s: %s", what, res.Error.Code, res.Error.Message)}
		switch res.Error.Code {
		case wire.CodeInterrupted:
			f.Reason = fmt.Sprintf("%s was cut short and not run again (%d runs): %s", what, res.Attempt+1, res.Error.Message)
			f.Harmless = true
		case wire.CodeExpired:
			f.Reason = fmt.Sprintf("%s was not carried out: %s", what, res.Error.Message)
			f.Harmless = true
		}
		return res, true, f
	}
	return res, true, nil
}

// queue queues a task's operation, given up at the task's deadline: its
// arguments (passwords) are not kept longer than that.
func (m *Manager) queue(ctx context.Context, t *tasks.Task, instanceID string, op wire.Operation) error {
	return m.Agents.Queue(ctx, instanceID, op, agentendpoint.QueueOptions{Expires: t.Deadline})
}

// consoleTail is the end of the server's console for fault details.
func (m *Manager) consoleTail(ctx context.Context, in instances.Instance) string {
	srv, ok := serverOf(in)
	if !ok {
		return ""
	}
	s, err := m.Compute.Console(ctx, srv, 4096)
	if err != nil || strings.TrimSpace(s) == "" {
		return ""
	}
	return "last console output:\n" + s
}

// load returns a live instance for a task step.
func (m *Manager) load(ctx context.Context, id string) (instances.Instance, error) {
	return instances.Get(ctx, m.DB, "", id)
}

// loadFor loads an instance a task step needs besides its own (what
// names it): one that is gone fails the task for good; any other error
// (the store busy, the controller stopping) is returned, and the step
// runs again.
func (m *Manager) loadFor(ctx context.Context, id, what string) (instances.Instance, error) {
	in, err := m.load(ctx, id)
	if errors.Is(err, instances.ErrNotFound) {
		return in, tasks.Fail("", "%s %s: %v", what, id, err)
	}
	return in, err
}

// taskInstance loads the instance a task works on; one that is gone
// fails the task for good.
func (m *Manager) taskInstance(ctx context.Context, t *tasks.Task) (instances.Instance, error) {
	in, err := m.load(ctx, t.InstanceID)
	if errors.Is(err, instances.ErrNotFound) {
		return in, tasks.Fail("", "instance %s is gone", t.InstanceID)
	}
	return in, err
}

// serverTask is the start of every step of a task on an instance's
// server: the instance (gone fails the task), the task's payload and the
// server (none fails the task).
func serverTask[P any](ctx context.Context, m *Manager, t *tasks.Task) (instances.Instance, compute.Server, P, error) {
	var p P
	in, err := m.taskInstance(ctx, t)
	if err != nil {
		return in, compute.Server{}, p, err
	}
	if err := t.Decode(&p); err != nil {
		return in, compute.Server{}, p, tasks.Fail("", "%v", err)
	}
	srv, ok := serverOf(in)
	if !ok {
		return in, srv, p, tasks.Fail("", "instance %s has no server", in.ID)
	}
	return in, srv, p, nil
}

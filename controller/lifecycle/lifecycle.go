// Package lifecycle is what Trove's taskmanager did: it turns requests on
// instances (create, delete, reset-status, restart, resize volume, attach
// or change a configuration) into desired-state changes plus durable tasks
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
	"time"

	"strata/agent/wire"
	"strata/controller/compute"
	"strata/controller/imagestore"
	"strata/controller/instances"
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
	// Submit queues an operation (delivered whenever the agent connects).
	Submit(ctx context.Context, instanceID string, op wire.Operation) error
	// Result returns an operation's result once there is one.
	Result(ctx context.Context, instanceID, opID string) (wire.Result, bool, error)
	// Call submits and waits up to timeout for the result.
	Call(ctx context.Context, instanceID string, op wire.Operation, timeout time.Duration) (wire.Result, error)
	// Disconnect closes the instance's session.
	Disconnect(instanceID string)
	// ForgetPayload blanks a stored result's payload (secrets handed out
	// once).
	ForgetPayload(ctx context.Context, instanceID, opID string) error
}

// Manager carries out instance requests and runs the instance tasks.
type Manager struct {
	DB       *store.DB
	Registry *registry.Registry
	Images   imagestore.Store
	Compute  compute.Driver
	Agents   Agents
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
	Logger           *slog.Logger
	Now              func() time.Time
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
)

// Kinds returns the task kinds for the engine.
func (m *Manager) Kinds() map[string]tasks.Kind {
	return map[string]tasks.Kind{
		KindCreate:    {Run: m.runCreate, OnFail: m.failErrored},
		KindDelete:    {Run: m.runDelete, OnFail: m.failErrored},
		KindRestart:   {Run: m.runRestart, OnFail: m.failErrored},
		KindResize:    {Run: m.runResize, OnFail: m.failErrored},
		KindConfigure: {Run: m.runConfigure, OnFail: m.failFaultOnly},
		KindRecover:   {Run: m.runRecover, OnFail: m.failErrored},
	}
}

// failErrored records the failure as the instance's fault, puts it in
// ERROR and clears its task.
func (m *Manager) failErrored(ctx context.Context, t *tasks.Task, f *tasks.Failure) error {
	return m.recordFailure(ctx, t, f, true)
}

// failFaultOnly records the fault but leaves the status alone (a
// configuration the database refused does not break the instance).
func (m *Manager) failFaultOnly(ctx context.Context, t *tasks.Task, f *tasks.Failure) error {
	return m.recordFailure(ctx, t, f, false)
}

func (m *Manager) recordFailure(ctx context.Context, t *tasks.Task, f *tasks.Failure, errored bool) error {
	err := m.DB.InTx(ctx, func(tx *store.Tx) error {
		now := m.now()
		if err := instances.SetFault(ctx, tx, t.InstanceID, instances.Fault{Message: f.Reason, Details: f.Details}, errored, now); err != nil {
			return err
		}
		if errored {
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
// *tasks.Failure with the agent's code and message.
func (m *Manager) opDone(ctx context.Context, instanceID, opID, what string) (wire.Result, bool, error) {
	res, done, err := m.Agents.Result(ctx, instanceID, opID)
	if err != nil || !done {
		return res, done, err
	}
	if res.Error != nil {
		return res, true, tasks.Fail("", "%s failed in the guest: %s: %s", what, res.Error.Code, res.Error.Message)
	}
	return res, true, nil
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

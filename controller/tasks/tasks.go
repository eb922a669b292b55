// Package tasks is the controller's durable task engine, the part of
// Trove's taskmanager that must survive a restart. A task is a row: its
// kind, the step it is at, a JSON payload and when to run next. The engine
// leases due tasks (so several replicas on one PostgreSQL never run the
// same step at once), runs the kind's current step, and stores what the
// step returned: the next step, a wait, success, or a failure with its
// reason. A controller that dies mid-step loses its lease; another run (or
// the same controller after a restart) runs that step again, so steps must
// be idempotent. A lease names its owner's host, boot, process and start
// time: an engine on the same host takes the leases of a dead owner at
// once, and never those of a live one, even past their expiry (its step
// may still run); an owner it cannot check (another host) loses its leases
// when they expire.
//
// Tasks of one instance run one at a time, in the order they were queued.
// The engine knows nothing about instances beyond that id: what a step does
// and what a failure means is the kind's business (lifecycle/).
package tasks

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"strata/controller/store"
)

// Task states.
const (
	StateQueued    = "queued"
	StateDone      = "done"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
)

// Task is a task as a step sees it.
type Task struct {
	ID         string
	InstanceID string
	Kind       string
	Step       string
	Payload    json.RawMessage
	// Attempts counts transient failures of the current step.
	Attempts  int
	Deadline  time.Time
	CreatedAt time.Time
}

// Decode unmarshals the payload.
func (t *Task) Decode(v any) error {
	if err := json.Unmarshal(t.Payload, v); err != nil {
		return fmt.Errorf("task %s payload: %w", t.ID, err)
	}
	return nil
}

// Result is what a step returns.
type Result struct {
	// Next is the step to run next; empty repeats the current step (a
	// step that waits for something returns that with After).
	Next string
	// After delays the next run.
	After time.Duration
	// Done ends the task successfully.
	Done bool
	// Payload, if not nil, replaces the task's payload (a value is
	// marshalled to JSON).
	Payload any
}

// Failure ends a task for good. Any other error a step returns is
// transient: the step is retried with backoff, up to MaxAttempts.
type Failure struct {
	Reason  string
	Details string
	// Harmless: the failure leaves what the task worked on as it was (an
	// operation cut short that could not run again): the kind's OnFail
	// may record it without calling it broken.
	Harmless bool
}

func (f *Failure) Error() string { return f.Reason }

// Fail returns a *Failure.
func Fail(details string, format string, args ...any) error {
	return &Failure{Reason: fmt.Sprintf(format, args...), Details: details}
}

// Kind is one kind of task.
type Kind struct {
	// Run runs the task's current step.
	Run func(ctx context.Context, t *Task) (Result, error)
	// OnFail runs when the task fails (before the failure is recorded, so
	// it runs again if the controller dies in between: keep it
	// idempotent).
	OnFail func(ctx context.Context, t *Task, f *Failure) error
	// StepTimeout bounds one step (default 10 minutes).
	StepTimeout time.Duration
}

// New describes a task to queue.
type New struct {
	InstanceID string
	Kind       string
	Step       string
	Payload    any
	// Deadline is stored for the steps to check (zero: none).
	Deadline time.Time
	// RunAfter delays the first run.
	RunAfter time.Time
}

// Enqueue queues a task in q (a transaction of the caller's, typically
// the one that records the change the task carries out).
func Enqueue(ctx context.Context, q store.Querier, n New, now time.Time) (string, error) {
	payload, err := json.Marshal(n.Payload)
	if err != nil {
		return "", err
	}
	if n.Payload == nil {
		payload = []byte("{}")
	}
	id := store.NewID()
	runAfter := n.RunAfter
	if runAfter.IsZero() {
		runAfter = now
	}
	var deadline any
	if !n.Deadline.IsZero() {
		deadline = store.Millis(n.Deadline)
	}
	_, err = q.Exec(ctx, `INSERT INTO tasks (id, instance_id, kind, step, state, payload, run_after, deadline, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, id, n.InstanceID, n.Kind, n.Step, StateQueued, string(payload),
		store.Millis(runAfter), deadline, store.Millis(now), store.Millis(now))
	if err != nil {
		return "", fmt.Errorf("queue %s task for %s: %w", n.Kind, n.InstanceID, err)
	}
	return id, nil
}

// Release wakes a task queued with a RunAfter in the future, with a new
// payload, provided it has not run yet (still queued at step, unleased):
// its caller finished what the task was held for. ok is false when the
// task was not waiting there any more (its hold ended first).
func Release(ctx context.Context, q store.Querier, id, step string, payload any, now time.Time) (ok bool, err error) {
	data, err := json.Marshal(payload)
	if err != nil {
		return false, err
	}
	res, err := q.Exec(ctx, `UPDATE tasks SET payload = ?, run_after = ?, updated_at = ?
		WHERE id = ? AND state = ? AND step = ? AND lease_owner IS NULL`,
		string(data), store.Millis(now), store.Millis(now), id, StateQueued, step)
	if err != nil {
		return false, fmt.Errorf("release task %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// CancelInstance cancels the queued tasks of an instance (reset-status,
// force delete). A step already running finishes, but its result is
// dropped; tasks queued later for the instance wait for it.
func CancelInstance(ctx context.Context, q store.Querier, instanceID string, now time.Time) (int, error) {
	res, err := q.Exec(ctx, `UPDATE tasks SET state = ?, error = ?, payload = '{}', updated_at = ? WHERE instance_id = ? AND state = ?`,
		StateCancelled, "cancelled by reset-status", store.Millis(now), instanceID, StateQueued)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// CancelKinds cancels the queued tasks of an instance that are of one of
// kinds (a delete cancels a queued recover instead of waiting behind it).
// A step of one that runs finishes, its result dropped.
func CancelKinds(ctx context.Context, q store.Querier, instanceID string, kinds []string, reason string, now time.Time) (int, error) {
	total := 0
	for _, k := range kinds {
		res, err := q.Exec(ctx, `UPDATE tasks SET state = ?, error = ?, updated_at = ? WHERE instance_id = ? AND state = ? AND kind = ?`,
			StateCancelled, reason, store.Millis(now), instanceID, StateQueued, k)
		if err != nil {
			return total, err
		}
		n, _ := res.RowsAffected()
		total += int(n)
	}
	return total, nil
}

// Info is a task's stored state, for tests and diagnostics.
type Info struct {
	Task
	State string
	Error string
}

// Get returns a task's stored state.
func Get(ctx context.Context, q store.Querier, id string) (Info, error) {
	var in Info
	var payload string
	var deadline sql.NullInt64
	var created int64
	var errText sql.NullString
	err := q.QueryRow(ctx, `SELECT id, instance_id, kind, step, payload, attempts, deadline, created_at, state, error FROM tasks WHERE id = ?`, id).
		Scan(&in.ID, &in.InstanceID, &in.Kind, &in.Step, &payload, &in.Attempts, &deadline, &created, &in.State, &errText)
	in.Payload = json.RawMessage(payload)
	in.Deadline, in.CreatedAt, in.Error = store.NullMillis(deadline), store.FromMillis(created), errText.String
	return in, err
}

// Active lists an instance's queued tasks, oldest first.
func Active(ctx context.Context, q store.Querier, instanceID string) ([]Info, error) {
	ids, err := store.All(ctx, q, store.ScanString, `SELECT id FROM tasks WHERE instance_id = ? AND state = ? ORDER BY seq`, instanceID, StateQueued)
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, id := range ids {
		in, err := Get(ctx, q, id)
		if err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, nil
}

// Engine runs tasks.
type Engine struct {
	DB     *store.DB
	Kinds  map[string]Kind
	Logger *slog.Logger
	// Owner names this engine in leases (default: host, boot id, pid
	// namespace, pid, process start time and a random engine id, which
	// lets engines on this host tell a dead owner from a live one).
	Owner string
	// Poll is how often due tasks are looked for (default 1s).
	Poll time.Duration
	// Lease is how long a claimed task is held without renewal
	// (default 60s; renewed every Lease/3 while a step runs).
	Lease time.Duration
	// MaxAttempts bounds transient failures of one step (default 8).
	MaxAttempts int
	// Concurrency bounds steps running at once (default 8).
	Concurrency int
	// Backoff is the first retry delay after a transient failure; it
	// doubles with each attempt up to a minute (default 1s).
	Backoff time.Duration
	Now     func() time.Time
	// ReplaySteps (tests): each run of a step that succeeds and records
	// something (a next step, a payload, the end) is run once more, from
	// the task as it was, before its result is saved — once per task,
	// step and payload it started from. That is what a controller killed
	// after a step's work and before its record leaves behind, so a step
	// that cannot be run twice shows it. A run that only waits (no next
	// step, no payload, not done) records nothing and is not run again:
	// the run that moves the task on is.
	ReplaySteps atomic.Bool
	// BeforeReplay (tests), if set, is called with the task as it is
	// about to be run again by ReplaySteps: what changes the world in
	// between (a request that came while the controller was down) is
	// made there.
	BeforeReplay atomic.Pointer[func(Task)]

	once sync.Once
	kick chan struct{}

	mu sync.Mutex
	// replayed holds the task/step/payload runs ReplaySteps has run
	// again; replayedSteps the same as kind:step, in order.
	replayed      map[string]bool
	replayedSteps []string
	// running counts, per task id, the steps of it this engine has
	// claimed and not yet ended. A count, not a flag: a step's result
	// frees the lease before its goroutine ends, so the next step of the
	// same task can be claimed here first, and the first goroutine's end
	// must not mark the second step as not running (leaseHolders would
	// then free its lease under it, and another engine run it again).
	running map[string]int
}

func (e *Engine) init() {
	e.once.Do(func() {
		e.kick = make(chan struct{}, 1)
		e.running = map[string]int{}
		if e.Owner == "" {
			e.Owner = newOwner()
		}
		if e.Poll <= 0 {
			e.Poll = time.Second
		}
		if e.Lease <= 0 {
			e.Lease = time.Minute
		}
		if e.MaxAttempts <= 0 {
			e.MaxAttempts = 8
		}
		if e.Concurrency <= 0 {
			e.Concurrency = 8
		}
		if e.Backoff <= 0 {
			e.Backoff = time.Second
		}
		if e.Logger == nil {
			e.Logger = slog.Default()
		}
		e.Logger = e.Logger.With("component", "tasks")
	})
}

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// Kick makes the engine look for due tasks now.
func (e *Engine) Kick() {
	e.init()
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Run runs tasks until ctx ends, then waits for running steps to return
// (their context is cancelled; their tasks stay queued for the next run).
func (e *Engine) Run(ctx context.Context) error {
	e.init()
	engines.Store(e.Owner, e)
	defer engines.Delete(e.Owner)
	sem := make(chan struct{}, e.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(e.Poll)
	defer t.Stop()
	for {
		free := cap(sem) - len(sem)
		if free > 0 {
			claimed, err := e.claim(ctx, free)
			if err != nil && ctx.Err() == nil {
				e.Logger.Error("claiming tasks failed", "err", err)
			}
			for _, task := range claimed {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					e.execute(ctx, task)
					e.Kick() // the next task of the instance may be due now
				})
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-e.kick:
		}
	}
}

// leaseHolders frees the leases of dead owners on this host and of this
// engine's own tasks whose step no longer runs (a result it could not
// store), and returns the owners whose leases hold even past expiry: the
// live ones on this host, this engine included.
func (e *Engine) leaseHolders(ctx context.Context) ([]string, error) {
	owners, err := store.All(ctx, e.DB, store.ScanString, `SELECT DISTINCT lease_owner FROM tasks WHERE lease_owner IS NOT NULL`)
	if err != nil {
		return nil, err
	}
	held := []string{e.Owner}
	for _, o := range owners {
		if o == e.Owner {
			ids, err := store.All(ctx, e.DB, store.ScanString, `SELECT id FROM tasks WHERE lease_owner = ?`, o)
			if err != nil {
				return nil, err
			}
			for _, id := range ids {
				e.mu.Lock()
				busy := e.running[id] > 0
				e.mu.Unlock()
				if !busy {
					e.DB.Exec(ctx, `UPDATE tasks SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?`, id, o)
				}
			}
			continue
		}
		switch ownerLiveness(o) {
		case alive:
			held = append(held, o)
		case dead:
			res, err := e.DB.Exec(ctx, `UPDATE tasks SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?`, o)
			if err != nil {
				return nil, err
			}
			if n, _ := res.RowsAffected(); n > 0 {
				e.Logger.Info("took back the leases of a controller that is gone", "owner", o, "tasks", n)
			}
		}
	}
	return held, nil
}

// claim leases up to n due tasks.
func (e *Engine) claim(ctx context.Context, n int) ([]Task, error) {
	held, err := e.leaseHolders(ctx)
	if err != nil {
		return nil, err
	}
	now := store.Millis(e.now())
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(held)), ", ")
	args := []any{StateQueued, now, now, StateQueued, now}
	args = append(args, anys(held)...)
	args = append(args, n)
	// The rows are read completely (closed) before the updates: SQLite
	// holds its read while rows are open. A lease past its expiry still
	// holds when its owner is known to live (held).
	type candidate struct {
		id    string
		owner sql.NullString
	}
	cands, err := store.All(ctx, e.DB, func(s store.Scanner) (candidate, error) {
		var c candidate
		return c, s.Scan(&c.id, &c.owner)
	}, `SELECT t.id, t.lease_owner FROM tasks t
		WHERE t.state = ? AND t.run_after <= ? AND (t.lease_until IS NULL OR t.lease_until < ?)
		AND NOT EXISTS (SELECT 1 FROM tasks o WHERE o.instance_id = t.instance_id AND o.id <> t.id
			AND ((o.state = ? AND o.seq < t.seq) OR (o.lease_until IS NOT NULL AND (o.lease_until >= ? OR o.lease_owner IN (`+marks+`)))))
		ORDER BY t.seq LIMIT ?`, args...)
	if err != nil {
		return nil, err
	}
	var out []Task
	for _, c := range cands {
		// The lease changes hands only from the owner seen here (compare
		// and set), and only if that owner is not known to live: between
		// the read and the update another engine may have claimed the
		// task, and its lease must hold.
		var res sql.Result
		lease := store.Millis(e.now().Add(e.Lease))
		if !c.owner.Valid {
			res, err = e.DB.Exec(ctx, `UPDATE tasks SET lease_owner = ?, lease_until = ? WHERE id = ? AND state = ? AND lease_owner IS NULL`,
				e.Owner, lease, c.id, StateQueued)
		} else {
			if c.owner.String == e.Owner || ownerLiveness(c.owner.String) == alive {
				continue
			}
			res, err = e.DB.Exec(ctx, `UPDATE tasks SET lease_owner = ?, lease_until = ? WHERE id = ? AND state = ? AND lease_owner = ? AND lease_until < ?`,
				e.Owner, lease, c.id, StateQueued, c.owner.String, now)
		}
		if err != nil {
			return out, err
		}
		if k, _ := res.RowsAffected(); k != 1 {
			continue // another replica was faster
		}
		e.mu.Lock()
		e.running[c.id]++
		e.mu.Unlock()
		in, err := Get(ctx, e.DB, c.id)
		if err != nil {
			e.mu.Lock()
			e.unrun(c.id)
			e.mu.Unlock()
			return out, err
		}
		out = append(out, in.Task)
	}
	return out, nil
}

// unrun counts a claimed step as ended; the caller holds e.mu.
func (e *Engine) unrun(id string) {
	if e.running[id]--; e.running[id] <= 0 {
		delete(e.running, id)
	}
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (e *Engine) execute(ctx context.Context, t Task) {
	defer func() {
		e.mu.Lock()
		e.unrun(t.ID)
		e.mu.Unlock()
	}()
	log := e.Logger.With("task", t.ID, "kind", t.Kind, "step", t.Step, "instance", t.InstanceID)
	kind, ok := e.Kinds[t.Kind]
	if !ok {
		e.finish(ctx, t, StateFailed, "unknown task kind "+t.Kind, log)
		return
	}
	timeout := kind.StepTimeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Keep the lease while the step runs. Should it be lost all the same
	// (an engine on another host took it after it expired), the step is
	// cancelled: two runs of one step must not go on side by side.
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		tick := time.NewTicker(e.Lease / 3)
		defer tick.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
				res, err := e.DB.Exec(context.WithoutCancel(sctx), `UPDATE tasks SET lease_until = ? WHERE id = ? AND lease_owner = ?`,
					store.Millis(e.now().Add(e.Lease)), t.ID, e.Owner)
				if n, _ := rowsAffected(res, err); err == nil && n == 0 {
					log.Warn("the task's lease was taken by another controller; cancelling the step")
					cancel()
					return
				}
			}
		}
	}()
	started := time.Now()
	before := t
	res, err := runStep(sctx, kind, &t)
	if err == nil && e.ReplaySteps.Load() && records(res) && e.firstRun(t.ID, t.Kind, before.Step, before.Payload) {
		log.Info("task step run again, its result dropped (ReplaySteps)")
		t = before
		if hook := e.BeforeReplay.Load(); hook != nil {
			(*hook)(t)
		}
		res, err = runStep(sctx, kind, &t)
	}
	cancel()
	<-renewDone
	bg := context.WithoutCancel(ctx)

	var failure *Failure
	switch {
	case errors.As(err, &failure):
	case err != nil && ctx.Err() != nil:
		// Shutting down: give the task back untouched.
		e.release(bg, t)
		return
	case err != nil:
		t.Attempts++
		if t.Attempts >= e.MaxAttempts {
			failure = &Failure{Reason: fmt.Sprintf("%s step %s failed %d times: %v", t.Kind, t.Step, t.Attempts, err)}
			break
		}
		backoff := min(e.Backoff<<min(t.Attempts-1, 6), time.Minute)
		log.Warn("task step failed; will retry", "attempt", t.Attempts, "retry_in", backoff, "err", err)
		e.update(bg, t, t.Step, t.Payload, t.Attempts, e.now().Add(backoff), err.Error(), log)
		return
	}
	if failure != nil {
		log.Error("task failed", "reason", failure.Reason)
		if kind.OnFail != nil {
			if err := kind.OnFail(bg, &t, failure); err != nil {
				log.Error("recording the task's failure failed; will retry", "err", err)
				e.update(bg, t, t.Step, t.Payload, t.Attempts, e.now().Add(5*time.Second), err.Error(), log)
				return
			}
		}
		e.finish(bg, t, StateFailed, failure.Reason, log)
		return
	}
	payload := t.Payload
	if res.Payload != nil {
		data, err := json.Marshal(res.Payload)
		if err != nil {
			e.finish(bg, t, StateFailed, "encode payload: "+err.Error(), log)
			return
		}
		payload = data
	}
	if res.Done {
		log.Info("task done", "step_seconds", time.Since(started).Seconds())
		e.finishWith(bg, t, StateDone, "", payload, log)
		return
	}
	next, attempts := t.Step, t.Attempts
	if res.Next != "" && res.Next != t.Step {
		next, attempts = res.Next, 0
		log.Info("task step done", "next", next, "step_seconds", time.Since(started).Seconds())
	}
	e.update(bg, t, next, payload, attempts, e.now().Add(res.After), "", log)
	if res.After > 0 && res.After < e.Poll {
		// A step that waits less than the engine's poll (an operation's
		// result, every 200 ms) runs again when its time comes, not at
		// the next poll: a switchover's steps each lost up to a second.
		time.AfterFunc(res.After, e.Kick)
	}
}

// runStep runs a step, turning a panic into a transient error.
func runStep(ctx context.Context, k Kind, t *Task) (res Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("step panicked: %v", p)
		}
	}()
	return k.Run(ctx, t)
}

func (e *Engine) update(ctx context.Context, t Task, step string, payload json.RawMessage, attempts int, runAfter time.Time, errText string, log *slog.Logger) {
	res, err := e.DB.Exec(ctx, `UPDATE tasks SET step = ?, payload = ?, attempts = ?, run_after = ?, error = ?,
		lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ? AND lease_owner = ? AND state = ?`,
		step, string(payload), attempts, store.Millis(runAfter), nullText(errText), store.Millis(e.now()), t.ID, e.Owner, StateQueued)
	e.afterWrite(ctx, t, res, err, log)
}

func (e *Engine) finish(ctx context.Context, t Task, state, errText string, log *slog.Logger) {
	e.finishWith(ctx, t, state, errText, t.Payload, log)
}

// finishWith ends a task. Its payload is emptied: nothing reads an ended
// task's payload, and it may carry secrets (the create task's passwords
// until prepare is queued), which must not outlive the task.
func (e *Engine) finishWith(ctx context.Context, t Task, state, errText string, _ json.RawMessage, log *slog.Logger) {
	res, err := e.DB.Exec(ctx, `UPDATE tasks SET state = ?, error = ?, payload = '{}', lease_owner = NULL, lease_until = NULL, updated_at = ?
		WHERE id = ? AND lease_owner = ? AND state = ?`, state, nullText(errText), store.Millis(e.now()), t.ID, e.Owner, StateQueued)
	e.afterWrite(ctx, t, res, err, log)
}

// afterWrite handles a result write that matched nothing: the task was
// cancelled while its step ran. The lease is dropped so the instance's
// next task can start.
func (e *Engine) afterWrite(ctx context.Context, t Task, res sql.Result, err error, log *slog.Logger) {
	if err != nil {
		log.Error("storing the task's progress failed; the step will run again after the lease expires", "err", err)
		return
	}
	if n, _ := res.RowsAffected(); n == 0 {
		log.Info("task was cancelled while its step ran; result dropped")
		e.release(ctx, t)
	}
}

func (e *Engine) release(ctx context.Context, t Task) {
	e.DB.Exec(ctx, `UPDATE tasks SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?`, t.ID, e.Owner)
}

func rowsAffected(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func nullText(s string) any {
	if s == "" {
		return nil
	}
	if len(s) > 4000 {
		s = s[:4000]
	}
	return s
}

// records says whether a step's result records anything beyond when to
// run it again.
func records(res Result) bool {
	return res.Done || res.Payload != nil || res.Next != ""
}

// firstRun reports whether step of task id, from payload, has not been
// run again by ReplaySteps yet, and records that it now is.
func (e *Engine) firstRun(id, kind, step string, payload json.RawMessage) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := id + "/" + step + "/" + string(payload)
	if e.replayed[k] {
		return false
	}
	if e.replayed == nil {
		e.replayed = map[string]bool{}
	}
	e.replayed[k] = true
	e.replayedSteps = append(e.replayedSteps, kind+":"+step)
	return true
}

// ReplayedSteps lists, as kind:step, the steps ReplaySteps has run again.
func (e *Engine) ReplayedSteps() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.replayedSteps)
}

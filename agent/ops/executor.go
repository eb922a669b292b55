package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"strata/agent/wire"
)

// RunFunc executes one operation and returns its payload or error in a
// Result; the executor fills in the id and the timestamps.
type RunFunc func(ctx context.Context, op wire.Operation) wire.Result

// Executor runs operations one at a time, in the order they arrive, each at
// most once. It implements transport.OperationHandler.
type Executor struct {
	journal *Journal
	run     RunFunc
	log     *slog.Logger
	queue   chan *task

	mu       sync.Mutex
	inflight map[string]*task
}

type task struct {
	op     wire.Operation
	digest string
	done   chan struct{}
	res    wire.Result
}

// resultLimit leaves room for the reply envelope around a result.
const resultLimit = wire.MaxMessageSize - 4096

// NewExecutor returns an executor over j; call Run to start executing.
func NewExecutor(j *Journal, run RunFunc, log *slog.Logger) *Executor {
	if log == nil {
		log = slog.Default()
	}
	return &Executor{
		journal:  j,
		run:      run,
		log:      log.With("component", "ops"),
		queue:    make(chan *task, 256),
		inflight: map[string]*task{},
	}
}

// LastCompleted is the id of the operation that finished last.
func (e *Executor) LastCompleted() string { return e.journal.LastCompleted() }

// HandleOperation implements transport.OperationHandler: a new operation is
// acknowledged and queued; a resend of a running one waits for it; a
// resend of a finished one returns its stored result without running.
func (e *Executor) HandleOperation(ctx context.Context, op wire.Operation, ack func(wire.AckState) error) wire.Result {
	digest := op.Digest()
	e.mu.Lock()
	t, running := e.inflight[op.ID]
	var entry Entry
	var known bool
	if !running {
		entry, known = e.journal.Lookup(op.ID)
	}
	switch {
	case running && t.digest != digest, known && entry.Digest != digest:
		e.mu.Unlock()
		ack(wire.AckRefused)
		e.log.Warn("operation id reused with different content; refused", "op", op.ID, "kind", op.Kind)
		return wire.Result{OpID: op.ID, Error: wire.Errorf(wire.CodeInvalidArgument,
			"operation id %s was already used for a different operation", op.ID)}
	case running:
		e.mu.Unlock()
		ack(wire.AckRunning)
		e.log.Info("resent operation is still running; waiting for it", "op", op.ID, "kind", op.Kind)
		return e.wait(ctx, t)
	case known && entry.State == stateDone:
		e.mu.Unlock()
		ack(wire.AckDone)
		e.log.Info("resent operation already finished; returning its stored result", "op", op.ID, "kind", op.Kind)
		return *entry.Result
	case known:
		// Started but neither running nor finished: never run it again.
		e.mu.Unlock()
		ack(wire.AckDone)
		return wire.Result{OpID: op.ID, StartedAt: entry.StartedAt, Error: wire.Errorf(wire.CodeInterrupted,
			"%s started at %s and did not finish; it was not run again", op.Kind, entry.StartedAt.Format(time.RFC3339))}
	}
	t = &task{op: op, digest: digest, done: make(chan struct{})}
	e.inflight[op.ID] = t
	e.mu.Unlock()

	// Queued before the ack goes out: the controller sends the next
	// operation only after this ack, so queue order is send order. Even if
	// the ack cannot be delivered the operation runs: the controller
	// resends it and gets the result from the journal.
	e.queue <- t
	if err := ack(wire.AckAccepted); err != nil {
		e.log.Warn("could not acknowledge operation; running it anyway", "op", op.ID, "err", err)
	}
	return e.wait(ctx, t)
}

func (e *Executor) wait(ctx context.Context, t *task) wire.Result {
	select {
	case <-t.done:
		return t.res
	case <-ctx.Done():
		return wire.Result{OpID: t.op.ID, Error: wire.Errorf(wire.CodeUnavailable, "connection lost; the operation carries on")}
	}
}

// Run executes queued operations until ctx ends. An operation already
// running when ctx ends is allowed to finish (it is not cancelled), so a
// clean shutdown records its result; the caller bounds how long it waits.
func (e *Executor) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-e.queue:
			if ctx.Err() != nil {
				// Shutting down: not started, not journaled; the
				// controller resends it to the next agent process.
				return
			}
			e.execute(context.WithoutCancel(ctx), t)
		}
	}
}

func (e *Executor) execute(ctx context.Context, t *task) {
	op := t.op
	start := time.Now().UTC()
	log := e.log.With("op", op.ID, "kind", op.Kind)
	defer func() {
		e.mu.Lock()
		delete(e.inflight, op.ID)
		e.mu.Unlock()
		close(t.done)
	}()
	if err := e.journal.Begin(op, start); err != nil {
		// Nothing ran and nothing is recorded: a resend may try again.
		log.Error("cannot record operation start; not running it", "err", err)
		t.res = stamp(op, wire.Result{Error: wire.Errorf(wire.CodeInternal, "operation journal: %v", err)}, start)
		return
	}
	log.Info("operation started")
	t.res = stamp(op, e.safeRun(ctx, op), start)
	// The result is journaled before the task leaves inflight, so a resend
	// always finds it in one place or the other.
	if err := e.journal.Finish(op, start, t.res); err != nil {
		log.Error("cannot record operation result; a resend will report it interrupted", "err", err)
	}
	if t.res.Error != nil {
		log.Warn("operation failed", "code", t.res.Error.Code, "message", t.res.Error.Message, "took", t.res.FinishedAt.Sub(start).Round(time.Millisecond))
	} else {
		log.Info("operation done", "took", t.res.FinishedAt.Sub(start).Round(time.Millisecond))
	}
}

// stamp fills in the id and times and bounds the result's size.
func stamp(op wire.Operation, res wire.Result, start time.Time) wire.Result {
	res.OpID = op.ID
	res.StartedAt = start
	res.FinishedAt = time.Now().UTC()
	if b, err := json.Marshal(res); err != nil || len(b) > resultLimit {
		res.Payload = nil
		res.Error = wire.Errorf(wire.CodeInternal, "result of %s is too large to send (limit %d bytes)", op.Kind, resultLimit)
	}
	return res
}

func (e *Executor) safeRun(ctx context.Context, op wire.Operation) (res wire.Result) {
	defer func() {
		if p := recover(); p != nil {
			e.log.Error("operation panicked", "op", op.ID, "kind", op.Kind, "panic", p, "stack", string(debug.Stack()))
			res = wire.Result{Error: wire.Errorf(wire.CodeInternal, "agent bug: %s panicked: %v", op.Kind, fmt.Sprint(p))}
		}
	}()
	return e.run(ctx, op)
}

package agentendpoint_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"strata/agent/transport"
	"strata/agent/wire"
	"strata/agent/wire/wiretest"
	"strata/controller/agentendpoint"
	"strata/controller/agentendpoint/endpointtest"
)

// attemptsHandler answers each run of an op from fn, given the run's
// attempt, and records the attempts it saw.
type attemptsHandler struct {
	mu   sync.Mutex
	seen map[string][]int
	fn   func(op wire.Operation) wire.Result
}

func (h *attemptsHandler) HandleOperation(ctx context.Context, op wire.Operation, ack func(wire.AckState) error) wire.Result {
	ack(wire.AckAccepted)
	h.mu.Lock()
	if h.seen == nil {
		h.seen = map[string][]int{}
	}
	h.seen[op.ID] = append(h.seen[op.ID], op.Attempt)
	h.mu.Unlock()
	return h.fn(op)
}

func (h *attemptsHandler) attempts(id string) []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.seen[id]...)
}

func enrolledAgent(t *testing.T, rig *endpointtest.Rig, id string, h transport.OperationHandler, status *wire.DatastoreStatus) {
	t.Helper()
	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance(id, token)
	cfg := clientConfig(rig, id, wiretest.NewSigner(t), h)
	cfg.EnrollmentToken = token
	if status != nil {
		cfg.Heartbeats = heartbeatFunc(func() wire.DatastoreStatus { return *status })
	}
	c, err := transport.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	rig.WaitConnected(id, true, 5*time.Second)
}

type heartbeatFunc func() wire.DatastoreStatus

func (f heartbeatFunc) Heartbeat(context.Context) wire.Heartbeat { return wire.Heartbeat{Status: f()} }

func await(t *testing.T, rig *endpointtest.Rig, id, op string) wire.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := rig.Server.Await(ctx, id, op)
	if err != nil {
		t.Fatalf("await %s: %v", op, err)
	}
	return res
}

// TestAnInterruptedIdempotentOperationRunsAgain: the agent reports an op
// interrupted (it was cut short by a crash); the controller runs it again
// with a higher attempt, and the second run's result is the op's.
func TestAnInterruptedIdempotentOperationRunsAgain(t *testing.T) {
	rig := endpointtest.NewRig(t)
	h := &attemptsHandler{fn: func(op wire.Operation) wire.Result {
		if op.Attempt == 0 {
			return wire.Result{Error: wire.Errorf(wire.CodeInterrupted, "the agent stopped")}
		}
		return wire.Result{}
	}}
	enrolledAgent(t, rig, "inst-1", h, nil)
	if err := rig.Server.Submit(context.Background(), "inst-1", wire.Operation{ID: "restart-1", Kind: wire.KindRestart}); err != nil {
		t.Fatal(err)
	}
	if res := await(t, rig, "inst-1", "restart-1"); res.Error != nil || res.Attempt != 1 {
		t.Fatalf("result %+v, want success of attempt 1", res)
	}
	if got := h.attempts("restart-1"); len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Fatalf("attempts %v, want [0 1]", got)
	}
}

// TestReRunsAreBoundedAndAKindThatIsNotIdempotentIsNeverReRun: an op cut
// short on every run ends interrupted after wire.MaxAttempts runs; a kind
// that is not idempotent ends interrupted after its one run.
func TestReRunsAreBoundedAndAKindThatIsNotIdempotentIsNeverReRun(t *testing.T) {
	wire.Classes["restore_for_test"] = wire.Class{Mutates: true}
	defer delete(wire.Classes, "restore_for_test")
	rig := endpointtest.NewRig(t)
	h := &attemptsHandler{fn: func(op wire.Operation) wire.Result {
		return wire.Result{Error: wire.Errorf(wire.CodeInterrupted, "cut again")}
	}}
	enrolledAgent(t, rig, "inst-1", h, nil)
	ctx := context.Background()
	rig.Server.Submit(ctx, "inst-1", wire.Operation{ID: "grow", Kind: wire.KindResizeFilesystem})
	rig.Server.Submit(ctx, "inst-1", wire.Operation{ID: "restore", Kind: "restore_for_test"})
	if res := await(t, rig, "inst-1", "grow"); res.Error == nil || res.Error.Code != wire.CodeInterrupted {
		t.Fatalf("grow: %+v", res)
	}
	if got := h.attempts("grow"); len(got) != wire.MaxAttempts {
		t.Fatalf("grow ran %d times (%v), want %d", len(got), got, wire.MaxAttempts)
	}
	if res := await(t, rig, "inst-1", "restore"); res.Error == nil || res.Error.Code != wire.CodeInterrupted {
		t.Fatalf("restore: %+v", res)
	}
	if got := h.attempts("restore"); len(got) != 1 {
		t.Fatalf("a kind that is not idempotent ran %d times", len(got))
	}
}

// TestOperationsThatNeedTheDatastoreWaitUntilItRuns: while the agent
// reports the datastore starting, create_databases is held and restart
// (which works on a stopped server) goes; once a heartbeat says running,
// the held op is delivered — once.
func TestOperationsThatNeedTheDatastoreWaitUntilItRuns(t *testing.T) {
	rig := endpointtest.NewRig(t)
	var mu sync.Mutex
	status := wire.StatusShutdown
	h := &attemptsHandler{fn: func(op wire.Operation) wire.Result { return wire.Result{} }}
	get := func() wire.DatastoreStatus { mu.Lock(); defer mu.Unlock(); return status }
	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance("inst-1", token)
	cfg := clientConfig(rig, "inst-1", wiretest.NewSigner(t), h)
	cfg.EnrollmentToken = token
	cfg.Heartbeats = heartbeatFunc(get)
	c, _ := transport.NewClient(cfg)
	runClient(t, c)
	rig.WaitConnected("inst-1", true, 5*time.Second)

	ctx := context.Background()
	rig.Server.Submit(ctx, "inst-1", wire.Operation{ID: "db", Kind: wire.KindCreateDatabases, Args: []byte(`{"databases":[{"name":"a"}]}`)})
	rig.Server.Submit(ctx, "inst-1", wire.Operation{ID: "restart", Kind: wire.KindRestart})
	await(t, rig, "inst-1", "restart")
	time.Sleep(500 * time.Millisecond) // several heartbeats and polls
	if got := h.attempts("db"); len(got) != 0 {
		t.Fatalf("create_databases was delivered while the datastore was down: %v", got)
	}
	mu.Lock()
	status = wire.StatusRunning
	mu.Unlock()
	if res := await(t, rig, "inst-1", "db"); res.Error != nil {
		t.Fatal(res.Error)
	}
	if got := h.attempts("db"); len(got) != 1 {
		t.Fatalf("create_databases ran %v", got)
	}
}

// TestAnOperationNotDeliveredBeforeItsTimeoutFailsAndForgetsItsSecrets:
// no agent comes; at the op's expiry it ends expired, and its password
// is gone from the queue.
func TestAnOperationNotDeliveredBeforeItsTimeoutFailsAndForgetsItsSecrets(t *testing.T) {
	rig := endpointtest.NewRig(t)
	ctx := context.Background()
	op := wire.Operation{ID: "users", Kind: wire.KindCreateUsers, Args: []byte(`{"users":[{"name":"u","password":"secret-pw-1"}]}`)}
	if err := rig.Server.Queue(ctx, "nobody", op, agentendpoint.QueueOptions{Expires: time.Now().Add(300 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	res := await(t, rig, "nobody", "users")
	if res.Error == nil || res.Error.Code != wire.CodeExpired {
		t.Fatalf("result %+v, want expired", res)
	}
	rec, _ := rig.Store.Op("nobody", "users")
	if len(rec.Op.Args) != 0 {
		t.Fatalf("the expired op kept its arguments: %s", rec.Op.Args)
	}
}

package ops

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strata/agent/wire"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newExec(t *testing.T, path string, run RunFunc) (*Executor, *Journal, context.CancelFunc) {
	t.Helper()
	j, err := OpenJournal(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	e := NewExecutor(j, run, quietLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; j.Close() })
	return e, j, cancel
}

func op(id string, args string) wire.Operation {
	return wire.Operation{ID: id, Kind: "create_databases", Args: json.RawMessage(args)}
}

// handle calls HandleOperation and returns the ack states seen and the result.
func handle(e *Executor, o wire.Operation) ([]wire.AckState, wire.Result) {
	var acks []wire.AckState
	res := e.HandleOperation(context.Background(), o, func(s wire.AckState) error {
		acks = append(acks, s)
		return nil
	})
	return acks, res
}

func TestResendOfFinishedOpReturnsStoredResultWithoutRunning(t *testing.T) {
	var runs atomic.Int32
	e, _, _ := newExec(t, filepath.Join(t.TempDir(), "journal"), func(ctx context.Context, o wire.Operation) wire.Result {
		n := runs.Add(1)
		return wire.Result{Payload: json.RawMessage(`{"n":` + string(rune('0'+n)) + `}`)}
	})
	acks, first := handle(e, op("op-1", `{"a":1}`))
	if len(acks) != 1 || acks[0] != wire.AckAccepted {
		t.Fatalf("first delivery acks = %v, want [accepted]", acks)
	}
	acks, again := handle(e, op("op-1", `{ "a": 1 }`)) // same content, other spacing
	if len(acks) != 1 || acks[0] != wire.AckDone {
		t.Fatalf("resend acks = %v, want [done]", acks)
	}
	if runs.Load() != 1 {
		t.Fatalf("operation ran %d times, want 1", runs.Load())
	}
	if string(first.Payload) != `{"n":1}` || string(again.Payload) != string(first.Payload) {
		t.Fatalf("payloads: first %s, resend %s", first.Payload, again.Payload)
	}
	if first.OpID != "op-1" || first.StartedAt.IsZero() || first.FinishedAt.Before(first.StartedAt) {
		t.Fatalf("result not stamped: %+v", first)
	}
	if e.LastCompleted() != "op-1" {
		t.Fatalf("LastCompleted = %q", e.LastCompleted())
	}
}

func TestResendWhileRunningWaitsForTheSameExecution(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	var runs atomic.Int32
	e, _, _ := newExec(t, filepath.Join(t.TempDir(), "journal"), func(ctx context.Context, o wire.Operation) wire.Result {
		runs.Add(1)
		close(started)
		<-release
		return wire.Result{Payload: json.RawMessage(`"ok"`)}
	})
	// First delivery: the connection drops (ctx cancelled) while it runs.
	ctx, cancel := context.WithCancel(context.Background())
	firstDone := make(chan wire.Result)
	go func() {
		firstDone <- e.HandleOperation(ctx, op("op-2", `{}`), func(wire.AckState) error { return nil })
	}()
	<-started
	cancel()
	if r := <-firstDone; r.Error == nil || r.Error.Code != wire.CodeUnavailable {
		t.Fatalf("delivery on a dead connection returned %+v, want unavailable", r)
	}
	// Resend on the new connection while it still runs.
	var wg sync.WaitGroup
	var acks []wire.AckState
	var res wire.Result
	wg.Go(func() { acks, res = handle(e, op("op-2", `{}`)) })
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if len(acks) != 1 || acks[0] != wire.AckRunning {
		t.Fatalf("acks = %v, want [running]", acks)
	}
	if res.Error != nil || string(res.Payload) != `"ok"` {
		t.Fatalf("result = %+v", res)
	}
	if runs.Load() != 1 {
		t.Fatalf("ran %d times", runs.Load())
	}
}

func TestOpCutShortByCrashIsReportedInterruptedNotRerun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, err := OpenJournal(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	o := op("op-3", `{"x":true}`)
	if err := j.Begin(o, time.Now()); err != nil {
		t.Fatal(err)
	}
	j.Close() // the "crash": no Finish

	var runs atomic.Int32
	e, j2, _ := newExec(t, path, func(ctx context.Context, o wire.Operation) wire.Result {
		runs.Add(1)
		return wire.Result{}
	})
	if got := j2.Interrupted(); len(got) != 1 || got[0] != "op-3" {
		t.Fatalf("Interrupted() = %v", got)
	}
	acks, res := handle(e, o)
	if runs.Load() != 0 {
		t.Fatal("interrupted operation ran again")
	}
	if len(acks) != 1 || acks[0] != wire.AckDone || res.Error == nil || res.Error.Code != wire.CodeInterrupted {
		t.Fatalf("acks %v result %+v, want done + interrupted", acks, res)
	}
	// The verdict is durable: a third process still says interrupted.
	j2.Close()
	j3, err := OpenJournal(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j3.Close()
	if ent, ok := j3.Lookup("op-3"); !ok || ent.Result == nil || ent.Result.Error.Code != wire.CodeInterrupted {
		t.Fatalf("after reopen: %+v", ent)
	}
}

func TestReusedIDWithOtherContentIsRefused(t *testing.T) {
	var runs atomic.Int32
	e, _, _ := newExec(t, filepath.Join(t.TempDir(), "journal"), func(ctx context.Context, o wire.Operation) wire.Result {
		runs.Add(1)
		return wire.Result{}
	})
	handle(e, op("op-4", `{"name":"a"}`))
	acks, res := handle(e, op("op-4", `{"name":"b"}`))
	if runs.Load() != 1 {
		t.Fatalf("ran %d times", runs.Load())
	}
	if len(acks) != 1 || acks[0] != wire.AckRefused || res.Error == nil || res.Error.Code != wire.CodeInvalidArgument {
		t.Fatalf("acks %v result %+v", acks, res)
	}
}

func TestOpsRunOneAtATimeInArrivalOrder(t *testing.T) {
	var mu sync.Mutex
	var order []string
	active := atomic.Int32{}
	e, _, _ := newExec(t, filepath.Join(t.TempDir(), "journal"), func(ctx context.Context, o wire.Operation) wire.Result {
		if active.Add(1) != 1 {
			t.Error("two operations ran at once")
		}
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		order = append(order, o.ID)
		mu.Unlock()
		active.Add(-1)
		return wire.Result{}
	})
	var wg sync.WaitGroup
	for i := range 5 {
		id := "seq-" + string(rune('a'+i))
		ready := make(chan struct{})
		wg.Go(func() {
			e.HandleOperation(context.Background(), op(id, `{}`), func(wire.AckState) error { close(ready); return nil })
		})
		<-ready // the next op arrives after this one was acknowledged
	}
	wg.Wait()
	if got := strings.Join(order, ","); got != "seq-a,seq-b,seq-c,seq-d,seq-e" {
		t.Fatalf("order = %s", got)
	}
}

func TestPanicBecomesInternalErrorAndAgentCarriesOn(t *testing.T) {
	e, _, _ := newExec(t, filepath.Join(t.TempDir(), "journal"), func(ctx context.Context, o wire.Operation) wire.Result {
		if o.ID == "boom" {
			panic("kaboom")
		}
		return wire.Result{Payload: json.RawMessage(`1`)}
	})
	_, res := handle(e, op("boom", `{}`))
	if res.Error == nil || res.Error.Code != wire.CodeInternal || !strings.Contains(res.Error.Message, "kaboom") {
		t.Fatalf("result = %+v", res)
	}
	if _, res := handle(e, op("after", `{}`)); res.Error != nil {
		t.Fatalf("next op failed: %+v", res)
	}
}

func TestOversizedResultBecomesInternalError(t *testing.T) {
	e, _, _ := newExec(t, filepath.Join(t.TempDir(), "journal"), func(ctx context.Context, o wire.Operation) wire.Result {
		big, _ := json.Marshal(strings.Repeat("x", wire.MaxMessageSize))
		return wire.Result{Payload: big}
	})
	_, res := handle(e, op("big", `{}`))
	if res.Error == nil || res.Error.Code != wire.CodeInternal || res.Payload != nil {
		t.Fatalf("result error = %+v, payload %d bytes", res.Error, len(res.Payload))
	}
}

func TestJournalTornTailIsDroppedButCorruptionIsRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "journal")
	j, err := OpenJournal(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	o := op("done-1", `{}`)
	j.Begin(o, time.Now())
	j.Finish(o, time.Now(), wire.Result{OpID: "done-1"})
	j.Close()

	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"op":"torn-2","state":"sta`) // crash mid-write
	f.Close()
	j, err = OpenJournal(path, 0)
	if err != nil {
		t.Fatalf("torn tail: %v", err)
	}
	if _, ok := j.Lookup("torn-2"); ok {
		t.Fatal("torn record was counted")
	}
	if e, ok := j.Lookup("done-1"); !ok || e.State != stateDone {
		t.Fatalf("done-1 lost: %+v", e)
	}
	j.Close()

	data, _ := os.ReadFile(path)
	os.WriteFile(path, append([]byte("garbage\n"), data...), 0o600)
	if _, err := OpenJournal(path, 0); err == nil || !strings.Contains(err.Error(), "line 1 is corrupt") {
		t.Fatalf("corrupt journal opened: %v", err)
	}
}

func TestJournalKeepsTheMostRecentOps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, err := OpenJournal(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		o := op("k-"+strings.Repeat("x", i), `{}`)
		j.Begin(o, time.Now())
		j.Finish(o, time.Now(), wire.Result{})
	}
	j.Close()
	j, err = OpenJournal(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if _, ok := j.Lookup("k-"); ok {
		t.Fatal("oldest op not compacted away")
	}
	last := "k-" + strings.Repeat("x", 24)
	if _, ok := j.Lookup(last); !ok || j.LastCompleted() != last {
		t.Fatalf("newest op missing; last completed %q", j.LastCompleted())
	}
	data, _ := os.ReadFile(path)
	if n := strings.Count(string(data), "\n"); n != 10 {
		t.Fatalf("journal has %d lines after compaction, want 10", n)
	}
}

func quietLogger() *slog.Logger {
	var w io.Writer = io.Discard
	if testing.Verbose() {
		w = os.Stderr
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// TestTheControllerMayRunAnInterruptedOpAgain: a higher attempt of an op
// that was cut short runs it once more; that run's result then answers
// every resend, and a higher attempt never re-runs an op that succeeded
// or failed for another reason.
func TestTheControllerMayRunAnInterruptedOpAgain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, err := OpenJournal(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	o := op("op-r", `{"databases":[{"name":"a"}]}`)
	j.Begin(o, time.Now())
	j.Close() // the crash

	var runs atomic.Int32
	e, _, _ := newExec(t, path, func(ctx context.Context, o wire.Operation) wire.Result {
		runs.Add(1)
		if o.ID == "op-exists" {
			return wire.Result{Error: wire.Errorf(wire.CodeAlreadyExists, "there")}
		}
		return wire.Result{}
	})
	if _, res := handle(e, o); res.Error == nil || res.Error.Code != wire.CodeInterrupted || runs.Load() != 0 {
		t.Fatalf("attempt 0 after the crash: %+v, runs %d", res, runs.Load())
	}
	o.Attempt = 1
	acks, res := handle(e, o)
	if res.Error != nil || res.Attempt != 1 || runs.Load() != 1 || len(acks) != 1 || acks[0] != wire.AckAccepted {
		t.Fatalf("attempt 1: acks %v result %+v runs %d", acks, res, runs.Load())
	}
	for _, a := range []int{1, 2, 0} {
		o.Attempt = a
		if _, res := handle(e, o); res.Error != nil || runs.Load() != 1 {
			t.Fatalf("attempt %d of a finished op: %+v, runs %d", a, res, runs.Load())
		}
	}
	dup := op("op-exists", `{"databases":[{"name":"b"}]}`)
	handle(e, dup)
	dup.Attempt = 1
	if _, res := handle(e, dup); res.Error == nil || res.Error.Code != wire.CodeAlreadyExists || runs.Load() != 2 {
		t.Fatalf("a failure that is not an interruption was run again: %+v, runs %d", res, runs.Load())
	}
}

// A root password handed back by enable_root (or prepare) never reaches the
// journal file: a resend to the same process still gets it, a resend after
// a restart is told it was not kept, and the file — appended or rewritten —
// never holds it. A prepare without root is journaled as it is.
func TestCredentialsInAResultAreNeverWrittenToTheJournal(t *testing.T) {
	const password = "s3cr3t-root-pw-4f9a"
	path := filepath.Join(t.TempDir(), "journal")
	run := func(ctx context.Context, o wire.Operation) wire.Result {
		switch o.Kind {
		case wire.KindEnableRoot:
			return wire.Result{Payload: json.RawMessage(`{"name":"root","password":"` + password + `"}`)}
		case wire.KindPrepare:
			if strings.Contains(string(o.Args), "root") {
				return wire.Result{Payload: json.RawMessage(`{"root":{"name":"root","password":"` + password + `"},"formatted":true,"initialized":true}`)}
			}
			return wire.Result{Payload: json.RawMessage(`{"formatted":true,"initialized":true}`)}
		}
		return wire.Result{}
	}
	rootOp := wire.Operation{ID: "root-1", Kind: wire.KindEnableRoot}
	prepRoot := wire.Operation{ID: "prep-1", Kind: wire.KindPrepare, Args: json.RawMessage(`{"root":true}`)}
	prepPlain := wire.Operation{ID: "prep-2", Kind: wire.KindPrepare, Args: json.RawMessage(`{}`)}
	e, j, cancel := newExec(t, path, run)
	for _, o := range []wire.Operation{rootOp, prepRoot, prepPlain} {
		if _, res := handle(e, o); res.Error != nil {
			t.Fatalf("%s: %v", o.ID, res.Error)
		}
		if _, again := handle(e, o); o.ID != prepPlain.ID && !strings.Contains(string(again.Payload), password) {
			t.Fatalf("a resend of %s to the same process: %+v, want the stored password", o.ID, again)
		}
	}
	if b, _ := os.ReadFile(path); strings.Contains(string(b), password) {
		t.Fatalf("the journal file holds the root password:\n%s", b)
	}
	cancel()
	j.Close()

	e2, j2, _ := newExec(t, path, run) // a restart: the file is read and rewritten
	if b, _ := os.ReadFile(path); strings.Contains(string(b), password) {
		t.Fatalf("the rewritten journal holds the root password:\n%s", b)
	}
	for _, o := range []wire.Operation{rootOp, prepRoot} {
		acks, res := handle(e2, o)
		if len(acks) != 1 || acks[0] != wire.AckDone || res.Error == nil || res.Error.Code != wire.CodeInterrupted ||
			!strings.Contains(res.Error.Message, "credentials") || strings.Contains(string(res.Payload), password) {
			t.Fatalf("a resend of %s after a restart: acks %v, %+v; want done and an interrupted error saying the credentials were not kept", o.ID, acks, res)
		}
	}
	if _, res := handle(e2, prepPlain); res.Error != nil || string(res.Payload) != `{"formatted":true,"initialized":true}` {
		t.Fatalf("a prepare without root after a restart: %+v, want its stored result", res)
	}
	_ = j2
}

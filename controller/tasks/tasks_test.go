package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strata/agent/wire/wiretest"
	"strata/controller/store"
	"strata/controller/store/storetest"
	"strata/controller/tasks"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

func engine(db *store.DB, kinds map[string]tasks.Kind) *tasks.Engine {
	return &tasks.Engine{DB: db, Kinds: kinds, Poll: 20 * time.Millisecond, Lease: 600 * time.Millisecond,
		Backoff: 10 * time.Millisecond, MaxAttempts: 3, Logger: wiretest.QuietLogger()}
}

func start(t *testing.T, e *tasks.Engine) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func enqueue(t *testing.T, db *store.DB, n tasks.New) string {
	id, err := tasks.Enqueue(context.Background(), db, n, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func waitState(t *testing.T, db *store.DB, id, state string, within time.Duration) tasks.Info {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		in, err := tasks.Get(context.Background(), db, id)
		if err == nil && in.State == state {
			return in
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s: state %q (err %v, step %s, error %q), want %q", id, in.State, err, in.Step, in.Error, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type counter struct{ N int }

// threeSteps is a kind of steps a, b (which waits until its counter
// reaches 3) and c, whose result is last; each run is recorded in seen
// as step:counter.
func threeSteps(seen *[]string, mu *sync.Mutex, last func(counter) (tasks.Result, error)) tasks.Kind {
	return tasks.Kind{Run: func(ctx context.Context, task *tasks.Task) (tasks.Result, error) {
		var c counter
		task.Decode(&c)
		mu.Lock()
		*seen = append(*seen, fmt.Sprintf("%s:%d", task.Step, c.N))
		mu.Unlock()
		c.N++
		switch task.Step {
		case "a":
			return tasks.Result{Next: "b", Payload: c}, nil
		case "b":
			if c.N < 3 { // wait in b until the counter reaches 3
				return tasks.Result{Payload: c, After: 5 * time.Millisecond}, nil
			}
			return tasks.Result{Next: "c", Payload: c}, nil
		default:
			return last(c)
		}
	}}
}

func TestStepsAdvanceCarryTheirPayloadAndFinish(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		var seen []string
		var mu sync.Mutex
		kinds := map[string]tasks.Kind{"three": threeSteps(&seen, &mu, func(c counter) (tasks.Result, error) {
			return tasks.Result{Done: true, Payload: c}, nil
		})}
		start(t, engine(db, kinds))
		id := enqueue(t, db, tasks.New{InstanceID: "i", Kind: "three", Step: "a", Payload: counter{}})
		in := waitState(t, db, id, tasks.StateDone, 10*time.Second)
		mu.Lock()
		defer mu.Unlock()
		want := []string{"a:0", "b:1", "b:2", "c:3"}
		if fmt.Sprint(seen) != fmt.Sprint(want) || string(in.Payload) != `{}` {
			t.Fatalf("steps %v payload %s; want %v and the payload emptied at the end", seen, in.Payload, want)
		}
	})
}

// With ReplaySteps each run of a step that succeeds and records
// something runs a second time from the task as it was (the first run's
// payload dropped), once per step and payload — b waits with a new
// payload each time, so both its runs are run twice; a step that fails
// is not run again by it.
func TestReplayStepsRunsEachStepTwiceFromWhereItWas(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		var seen []string
		var mu sync.Mutex
		kinds := map[string]tasks.Kind{"three": threeSteps(&seen, &mu, func(counter) (tasks.Result, error) {
			return tasks.Result{}, tasks.Fail("", "c fails")
		})}
		e := engine(db, kinds)
		e.ReplaySteps.Store(true)
		start(t, e)
		id := enqueue(t, db, tasks.New{InstanceID: "i", Kind: "three", Step: "a", Payload: counter{}})
		waitState(t, db, id, tasks.StateFailed, 10*time.Second)
		mu.Lock()
		defer mu.Unlock()
		want := []string{"a:0", "a:0", "b:1", "b:1", "b:2", "b:2", "c:3"}
		if fmt.Sprint(seen) != fmt.Sprint(want) {
			t.Fatalf("steps %v; want %v", seen, want)
		}
	})
}

// A run that only waits (no next step, no payload) records nothing, so
// ReplaySteps does not run it again: the run that moves the task on is
// the one run twice, as a step that polls for a result and then acts on
// it must be.
func TestReplayStepsRunsTheRunThatMovesOnTwiceNotTheWaits(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		var seen []string
		var mu sync.Mutex
		n := 0
		kinds := map[string]tasks.Kind{"poll": {Run: func(ctx context.Context, task *tasks.Task) (tasks.Result, error) {
			mu.Lock()
			defer mu.Unlock()
			if task.Step == "x" {
				seen = append(seen, "x")
				return tasks.Result{Done: true}, nil
			}
			n++
			seen = append(seen, fmt.Sprintf("w:%d", n))
			if n < 3 {
				return tasks.Result{After: 5 * time.Millisecond}, nil
			}
			return tasks.Result{Next: "x"}, nil
		}}}
		e := engine(db, kinds)
		e.ReplaySteps.Store(true)
		start(t, e)
		id := enqueue(t, db, tasks.New{InstanceID: "i", Kind: "poll", Step: "w"})
		waitState(t, db, id, tasks.StateDone, 10*time.Second)
		mu.Lock()
		defer mu.Unlock()
		want := []string{"w:1", "w:2", "w:3", "w:4", "x", "x"}
		if fmt.Sprint(seen) != fmt.Sprint(want) {
			t.Fatalf("runs %v; want %v", seen, want)
		}
		if got := fmt.Sprint(e.ReplayedSteps()); got != "[poll:w poll:x]" {
			t.Fatalf("replayed %s; want [poll:w poll:x]", got)
		}
	})
}

// A step that asks to run again sooner than the engine polls runs again
// when it asked, not at the next poll (here an hour away).
func TestAStepThatWaitsLessThanThePollRunsAgainOnTime(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		kinds := map[string]tasks.Kind{"wait": {Run: func(ctx context.Context, task *tasks.Task) (tasks.Result, error) {
			var c counter
			task.Decode(&c)
			if c.N++; c.N < 4 {
				return tasks.Result{Payload: c, After: 50 * time.Millisecond}, nil
			}
			return tasks.Result{Done: true}, nil
		}}}
		e := engine(db, kinds)
		e.Poll = time.Hour
		start(t, e)
		id := enqueue(t, db, tasks.New{InstanceID: "i", Kind: "wait", Step: "a", Payload: counter{}})
		e.Kick()
		waitState(t, db, id, tasks.StateDone, 20*time.Second)
	})
}

func TestTaskContinuesAfterTheControllerStopsMidStep(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		var runsOfB atomic.Int32
		block := make(chan struct{})
		kinds := map[string]tasks.Kind{"k": {Run: func(ctx context.Context, task *tasks.Task) (tasks.Result, error) {
			if task.Step == "a" {
				return tasks.Result{Next: "b"}, nil
			}
			if runsOfB.Add(1) == 1 {
				close(block)
				<-ctx.Done() // the first controller stops while b runs
				return tasks.Result{}, ctx.Err()
			}
			return tasks.Result{Done: true}, nil
		}}}
		stop := start(t, engine(db, kinds))
		id := enqueue(t, db, tasks.New{InstanceID: "i", Kind: "k", Step: "a"})
		<-block
		stop()
		in, _ := tasks.Get(context.Background(), db, id)
		if in.State != tasks.StateQueued || in.Step != "b" {
			t.Fatalf("after the stop: state %s step %s, want queued at b", in.State, in.Step)
		}
		start(t, engine(db, kinds)) // the restarted controller
		waitState(t, db, id, tasks.StateDone, 10*time.Second)
		if runsOfB.Load() != 2 {
			t.Fatalf("step b ran %d times, want 2 (interrupted, then rerun)", runsOfB.Load())
		}
	})
}

func TestALeaseOfADeadControllerExpiresAndTheTaskRuns(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		kinds := map[string]tasks.Kind{"k": {Run: func(context.Context, *tasks.Task) (tasks.Result, error) {
			return tasks.Result{Done: true}, nil
		}}}
		id := enqueue(t, db, tasks.New{InstanceID: "i", Kind: "k", Step: "a"})
		until := time.Now().Add(400 * time.Millisecond)
		db.Exec(ctx, `UPDATE tasks SET lease_owner = 'crashed-replica', lease_until = ? WHERE id = ?`, store.Millis(until), id)
		start(t, engine(db, kinds))
		time.Sleep(200 * time.Millisecond)
		if in, _ := tasks.Get(ctx, db, id); in.State != tasks.StateQueued {
			t.Fatalf("task ran while another controller held its lease: %s", in.State)
		}
		waitState(t, db, id, tasks.StateDone, 5*time.Second)
	})
}

func TestTransientErrorsAreRetriedThenFailWithTheReason(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		var calls, failed atomic.Int32
		var reason atomic.Value
		kinds := map[string]tasks.Kind{
			"flaky": {Run: func(context.Context, *tasks.Task) (tasks.Result, error) {
				if calls.Add(1) < 3 {
					return tasks.Result{}, errors.New("compute busy")
				}
				return tasks.Result{Done: true}, nil
			}},
			"broken": {
				Run: func(context.Context, *tasks.Task) (tasks.Result, error) {
					return tasks.Result{}, errors.New("disk full")
				},
				OnFail: func(_ context.Context, _ *tasks.Task, f *tasks.Failure) error {
					failed.Add(1)
					reason.Store(f.Reason)
					return nil
				},
			},
			"refused": {
				Run: func(context.Context, *tasks.Task) (tasks.Result, error) {
					return tasks.Result{}, tasks.Fail("console tail", "guest never reported")
				},
				OnFail: func(context.Context, *tasks.Task, *tasks.Failure) error { failed.Add(1); return nil },
			},
		}
		start(t, engine(db, kinds))
		ok := enqueue(t, db, tasks.New{InstanceID: "a", Kind: "flaky", Step: "s"})
		bad := enqueue(t, db, tasks.New{InstanceID: "b", Kind: "broken", Step: "s"})
		ref := enqueue(t, db, tasks.New{InstanceID: "c", Kind: "refused", Step: "s"})
		waitState(t, db, ok, tasks.StateDone, 10*time.Second)
		in := waitState(t, db, bad, tasks.StateFailed, 10*time.Second)
		if r, _ := reason.Load().(string); r == "" || in.Error != r {
			t.Fatalf("failure reason %q, stored error %q", r, in.Error)
		}
		in = waitState(t, db, ref, tasks.StateFailed, 10*time.Second)
		if in.Error != "guest never reported" {
			t.Fatalf("stored error %q", in.Error)
		}
		time.Sleep(100 * time.Millisecond)
		if failed.Load() != 2 {
			t.Fatalf("OnFail ran %d times, want once per failed task", failed.Load())
		}
	})
}

func TestTasksOfOneInstanceRunInOrderOthersInParallel(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		var mu sync.Mutex
		running := map[string]int{}
		var order []string
		overlap := false
		kinds := map[string]tasks.Kind{"k": {Run: func(ctx context.Context, task *tasks.Task) (tasks.Result, error) {
			mu.Lock()
			running[task.InstanceID]++
			if running[task.InstanceID] > 1 {
				overlap = true
			}
			var name string
			task.Decode(&name)
			order = append(order, name)
			mu.Unlock()
			time.Sleep(30 * time.Millisecond)
			mu.Lock()
			running[task.InstanceID]--
			mu.Unlock()
			return tasks.Result{Done: true}, nil
		}}}
		var ids []string
		for i := range 4 {
			ids = append(ids, enqueue(t, db, tasks.New{InstanceID: "same", Kind: "k", Step: "s", Payload: fmt.Sprintf("same-%d", i)}))
			ids = append(ids, enqueue(t, db, tasks.New{InstanceID: fmt.Sprintf("other-%d", i), Kind: "k", Step: "s", Payload: fmt.Sprintf("other-%d", i)}))
		}
		start(t, engine(db, kinds))
		for _, id := range ids {
			waitState(t, db, id, tasks.StateDone, 10*time.Second)
		}
		mu.Lock()
		defer mu.Unlock()
		if overlap {
			t.Fatal("two tasks of one instance ran at once")
		}
		var same []string
		for _, o := range order {
			if o[:4] == "same" {
				same = append(same, o)
			}
		}
		if fmt.Sprint(same) != "[same-0 same-1 same-2 same-3]" {
			t.Fatalf("tasks of one instance ran as %v", same)
		}
	})
}

func TestCancelDropsTheRunningStepsResultAndTheNextTaskWaitsForIt(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		release := make(chan struct{})
		inStep := make(chan struct{})
		var deleteStartedWhileBusy atomic.Bool
		var busy atomic.Bool
		kinds := map[string]tasks.Kind{
			"create": {Run: func(ctx context.Context, task *tasks.Task) (tasks.Result, error) {
				busy.Store(true)
				close(inStep)
				<-release
				busy.Store(false)
				return tasks.Result{Next: "more"}, nil
			}},
			"delete": {Run: func(ctx context.Context, task *tasks.Task) (tasks.Result, error) {
				if busy.Load() {
					deleteStartedWhileBusy.Store(true)
				}
				return tasks.Result{Done: true}, nil
			}},
		}
		start(t, engine(db, kinds))
		create := enqueue(t, db, tasks.New{InstanceID: "i", Kind: "create", Step: "boot"})
		<-inStep
		if n, err := tasks.CancelInstance(ctx, db, "i", time.Now()); err != nil || n != 1 {
			t.Fatalf("cancel: %d, %v", n, err)
		}
		del := enqueue(t, db, tasks.New{InstanceID: "i", Kind: "delete", Step: "s"})
		time.Sleep(150 * time.Millisecond)
		close(release)
		waitState(t, db, del, tasks.StateDone, 10*time.Second)
		if deleteStartedWhileBusy.Load() {
			t.Fatal("delete ran while the cancelled task's step was still running")
		}
		if in, _ := tasks.Get(ctx, db, create); in.State != tasks.StateCancelled || in.Step != "boot" {
			t.Fatalf("cancelled task: state %s step %s (its late result must be dropped)", in.State, in.Step)
		}
	})
}

func TestTwoEnginesOnOnePostgresRunEachStepOnce(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	ctx := context.Background()
	var runs sync.Map
	var dup atomic.Bool
	kinds := map[string]tasks.Kind{"k": {Run: func(ctx context.Context, task *tasks.Task) (tasks.Result, error) {
		if _, loaded := runs.LoadOrStore(task.ID+task.Step, true); loaded {
			dup.Store(true)
		}
		time.Sleep(5 * time.Millisecond)
		if task.Step == "a" {
			return tasks.Result{Next: "b"}, nil
		}
		return tasks.Result{Done: true}, nil
	}}}
	var ids []string
	for r := range 2 {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if r == 0 {
			for i := range 30 {
				ids = append(ids, enqueue(t, db, tasks.New{InstanceID: fmt.Sprint(i), Kind: "k", Step: "a"}))
			}
		}
		start(t, engine(db, kinds))
	}
	check, _ := store.Open(ctx, dsn)
	defer check.Close()
	for _, id := range ids {
		waitState(t, check, id, tasks.StateDone, 20*time.Second)
	}
	if dup.Load() {
		t.Fatal("a step ran twice across the two engines")
	}
}

// TestALeaseOfADeadControllerOnThisHostIsTakenAtOnce: a controller killed
// mid-step leaves its lease; an engine on the same host sees that its
// process is gone and runs the task at once, not after the lease expires.
func TestALeaseOfADeadControllerOnThisHostIsTakenAtOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		kinds := map[string]tasks.Kind{"k": {Run: func(context.Context, *tasks.Task) (tasks.Result, error) {
			return tasks.Result{Done: true}, nil
		}}}
		gone := exec.Command("sleep", "30")
		if err := gone.Start(); err != nil {
			t.Fatal(err)
		}
		owner := tasks.OwnerOf(gone.Process.Pid)
		gone.Process.Kill()
		gone.Wait()
		id := enqueue(t, db, tasks.New{InstanceID: "i", Kind: "k", Step: "a"})
		db.Exec(ctx, `UPDATE tasks SET lease_owner = ?, lease_until = ? WHERE id = ?`, owner, store.Millis(time.Now().Add(time.Hour)), id)
		start(t, engine(db, kinds))
		waitState(t, db, id, tasks.StateDone, 5*time.Second)
	})
}

// TestALiveControllersLeaseHoldsPastItsExpiry: a lease whose owner on this
// host still runs is not taken when it expires (its renewal may just be
// late under load, and its step may still run); once the owner is gone
// the task runs.
func TestALiveControllersLeaseHoldsPastItsExpiry(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		kinds := map[string]tasks.Kind{"k": {Run: func(context.Context, *tasks.Task) (tasks.Result, error) {
			return tasks.Result{Done: true}, nil
		}}}
		owner := exec.Command("sleep", "30")
		if err := owner.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { owner.Process.Kill(); owner.Wait() }()
		id := enqueue(t, db, tasks.New{InstanceID: "i", Kind: "k", Step: "a"})
		db.Exec(ctx, `UPDATE tasks SET lease_owner = ?, lease_until = ? WHERE id = ?`,
			tasks.OwnerOf(owner.Process.Pid), store.Millis(time.Now().Add(-time.Minute)), id)
		start(t, engine(db, kinds))
		time.Sleep(500 * time.Millisecond)
		if in, _ := tasks.Get(ctx, db, id); in.State != tasks.StateQueued {
			t.Fatalf("the expired lease of a live controller was taken: task %s", in.State)
		}
		owner.Process.Kill()
		owner.Wait()
		waitState(t, db, id, tasks.StateDone, 5*time.Second)
	})
}

// TestAStepWhoseLeaseRenewalIsLateRunsOnce is the double run seen under
// heavy load: a step outlived its lease because the renewal came late,
// and a second engine ran the same step. Here the step's lease is made to
// expire while it runs; the other engine, on the same host, sees that the
// owner lives and leaves the task alone.
func TestAStepWhoseLeaseRenewalIsLateRunsOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		var runs atomic.Int32
		kinds := map[string]tasks.Kind{"k": {Run: func(ctx context.Context, task *tasks.Task) (tasks.Result, error) {
			if runs.Add(1) == 1 {
				// The renewal is late: the lease has run out.
				db.Exec(ctx, `UPDATE tasks SET lease_until = ? WHERE id = ?`, store.Millis(time.Now().Add(-time.Second)), task.ID)
				time.Sleep(400 * time.Millisecond)
			}
			return tasks.Result{Done: true}, nil
		}}}
		a, b := engine(db, kinds), engine(db, kinds)
		a.Lease, b.Lease = time.Hour, time.Hour // no renewal comes to the rescue
		start(t, a)
		start(t, b)
		id := enqueue(t, db, tasks.New{InstanceID: "i", Kind: "k", Step: "s"})
		waitState(t, db, id, tasks.StateDone, 5*time.Second)
		if n := runs.Load(); n != 1 {
			t.Fatalf("the step ran %d times", n)
		}
	})
}

// A payload may carry secrets (the create task's users carry passwords
// until prepare is queued): it is emptied when its task ends — done,
// failed or cancelled — since nothing reads it after.
func TestAnEndedTasksPayloadIsEmptied(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		secret := map[string]string{"password": "s3cret-in-the-payload"}
		release := make(chan struct{})
		kinds := map[string]tasks.Kind{
			"ok":   {Run: func(context.Context, *tasks.Task) (tasks.Result, error) { return tasks.Result{Done: true}, nil }},
			"fail": {Run: func(context.Context, *tasks.Task) (tasks.Result, error) { return tasks.Result{}, tasks.Fail("", "no") }},
			"wait": {Run: func(ctx context.Context, _ *tasks.Task) (tasks.Result, error) {
				<-release
				return tasks.Result{Done: true}, nil
			}},
		}
		start(t, engine(db, kinds))
		done := enqueue(t, db, tasks.New{InstanceID: "a", Kind: "ok", Step: "s", Payload: secret})
		failed := enqueue(t, db, tasks.New{InstanceID: "b", Kind: "fail", Step: "s", Payload: secret})
		enqueue(t, db, tasks.New{InstanceID: "c", Kind: "wait", Step: "s"})
		cancelled := enqueue(t, db, tasks.New{InstanceID: "c", Kind: "ok", Step: "s", Payload: secret})
		if _, err := tasks.CancelInstance(context.Background(), db, "c", time.Now()); err != nil {
			t.Fatal(err)
		}
		close(release)
		for id, state := range map[string]string{done: tasks.StateDone, failed: tasks.StateFailed, cancelled: tasks.StateCancelled} {
			in := waitState(t, db, id, state, 10*time.Second)
			if strings.Contains(string(in.Payload), "s3cret") {
				t.Errorf("a %s task keeps its payload: %s", state, in.Payload)
			}
		}
	})
}

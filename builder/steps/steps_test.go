package steps

import (
	"context"
	"errors"
	"strings"
	"testing"
)

type recorder struct{ events []string }

func (r *recorder) step(name string, fail bool) Step {
	return Func{
		StepName: name,
		RunFunc: func(ctx context.Context) error {
			r.events = append(r.events, "run "+name)
			if fail {
				return errors.New("boom")
			}
			return nil
		},
		CleanFunc: func(ctx context.Context) error {
			if ctx.Err() != nil {
				return errors.New("cleanup got a dead context")
			}
			r.events = append(r.events, "clean "+name)
			return nil
		},
	}
}

func TestCleanupInReverseOnSuccess(t *testing.T) {
	var r recorder
	err := (&Runner{}).Run(context.Background(), []Step{r.step("a", false), r.step("b", false)})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.events, ","); got != "run a,run b,clean b,clean a" {
		t.Fatalf("events = %s", got)
	}
}

func TestFailureStopsAndCleansStartedStepsOnly(t *testing.T) {
	var r recorder
	err := (&Runner{}).Run(context.Background(), []Step{r.step("a", false), r.step("b", true), r.step("c", false)})
	if err == nil || !strings.Contains(err.Error(), "b: boom") {
		t.Fatalf("err = %v, want it to name step b", err)
	}
	if got := strings.Join(r.events, ","); got != "run a,run b,clean b,clean a" {
		t.Fatalf("events = %s (c must not run or be cleaned)", got)
	}
}

func TestCancelledContextStillCleansUp(t *testing.T) {
	var r recorder
	ctx, cancel := context.WithCancel(context.Background())
	steps := []Step{
		r.step("a", false),
		Func{StepName: "interrupt", RunFunc: func(context.Context) error { cancel(); return nil }},
		r.step("never", false),
	}
	err := (&Runner{}).Run(ctx, steps)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if got := strings.Join(r.events, ","); got != "run a,clean a" {
		t.Fatalf("events = %s", got)
	}
}

func TestCleanupErrorsAreReported(t *testing.T) {
	s := Func{StepName: "leaky", CleanFunc: func(context.Context) error { return errors.New("still mounted") }}
	err := (&Runner{}).Run(context.Background(), []Step{s})
	if err == nil || !strings.Contains(err.Error(), "cleanup of leaky: still mounted") {
		t.Fatalf("err = %v", err)
	}
}

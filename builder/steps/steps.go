// Package steps runs a build as a list of steps that always clean up after
// themselves, in the manner of Packer's multistep: each Step has a Run that
// does its work and a Cleanup that undoes whatever Run left behind, and the
// Runner, not the step, is responsible for calling every started step's
// Cleanup, in reverse order, whether the build succeeded, failed or was
// interrupted.
//
// The package knows nothing about images; it sequences and unwinds.
package steps

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Step is one action of a build.
type Step interface {
	Name() string
	// Run does the step's work. It must return promptly with ctx's error
	// when ctx is cancelled.
	Run(ctx context.Context) error
	// Cleanup undoes what Run left behind that must not outlive the build
	// (temporary directories, partial outputs...). It is called once for
	// every step whose Run was called, even if Run failed half-way, so it
	// must cope with partial work. It gets a fresh context: cleanup must
	// happen even when the build was cancelled.
	Cleanup(ctx context.Context) error
}

// Func adapts functions to a Step. Either function may be nil.
type Func struct {
	StepName  string
	RunFunc   func(ctx context.Context) error
	CleanFunc func(ctx context.Context) error
}

func (f Func) Name() string { return f.StepName }

func (f Func) Run(ctx context.Context) error {
	if f.RunFunc == nil {
		return nil
	}
	return f.RunFunc(ctx)
}

func (f Func) Cleanup(ctx context.Context) error {
	if f.CleanFunc == nil {
		return nil
	}
	return f.CleanFunc(ctx)
}

// Runner runs steps in order.
type Runner struct {
	Log *slog.Logger
	// CleanupTimeout bounds all cleanups together (default 2 minutes).
	CleanupTimeout time.Duration
}

// Run runs the steps in order until one fails or ctx is cancelled, then
// cleans up every started step in reverse order. The error names the step
// that failed; cleanup failures are joined to it.
func (r *Runner) Run(ctx context.Context, steps []Step) error {
	log := r.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var started []Step
	var runErr error
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			runErr = fmt.Errorf("interrupted before %s: %w", s.Name(), err)
			break
		}
		started = append(started, s)
		if err := s.Run(ctx); err != nil {
			runErr = fmt.Errorf("%s: %w", s.Name(), err)
			break
		}
	}
	timeout := r.CleanupTimeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	var cleanErrs []error
	for i := len(started) - 1; i >= 0; i-- {
		if err := started[i].Cleanup(cctx); err != nil {
			log.Error("cleanup failed", "step", started[i].Name(), "err", err)
			cleanErrs = append(cleanErrs, fmt.Errorf("cleanup of %s: %w", started[i].Name(), err))
		}
	}
	return errors.Join(append([]error{runErr}, cleanErrs...)...)
}

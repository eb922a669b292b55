// Package chaos is the controller's end of the chaos tests' named kill
// points (the plan format is in wire: wire.ParseChaos). A plan comes in the
// environment (STRATA_CHAOS) of `strata controller serve`. At a point an
// entry names, the controller records that the entry fired (in its state
// directory, so a restarted controller does not fire it again) and then,
// for target controller, kills itself with SIGKILL; for target qemu it
// kills the instance's VM. The entries for points the agent reaches are
// written to each new instance's config drive (GuestPlan).
//
// Without a plan every Reach is a no-op. It must never be the way anything
// but a test stops a process.
package chaos

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"strata/agent/wire"
)

// Env names the plan's environment variable.
const Env = "STRATA_CHAOS"

// FiredFile records, in the state directory, the entries that fired.
const FiredFile = "chaos-fired"

var state struct {
	mu      sync.Mutex
	entries []wire.ChaosEntry
	tracker *wire.ChaosTracker
	killVM  func(instanceID string) error
	log     *slog.Logger
}

// Init reads the plan from the environment and what fired before from
// stateDir; killVM kills an instance's VM (target qemu).
func Init(stateDir string, killVM func(instanceID string) error, log *slog.Logger) error {
	plan := os.Getenv(Env)
	state.mu.Lock()
	defer state.mu.Unlock()
	state.entries, state.tracker = nil, nil
	if plan == "" {
		return nil
	}
	entries, err := wire.ParseChaos(plan)
	if err != nil {
		return fmt.Errorf("%s: %w", Env, err)
	}
	state.entries, state.killVM, state.log = entries, killVM, log
	state.tracker = wire.NewChaosTracker(entries, filepath.Join(stateDir, FiredFile))
	log.Warn("chaos plan loaded: the controller kills itself or VMs at named points (tests only)", "plan", plan)
	return nil
}

// GuestPlan is the agent's part of the plan, for config drives ("" none).
func GuestPlan() string {
	state.mu.Lock()
	defer state.mu.Unlock()
	var g []wire.ChaosEntry
	for _, e := range state.entries {
		if e.Guest() {
			g = append(g, e)
		}
	}
	return wire.FormatChaos(g)
}

// Reach is called at point, about instanceID: an entry for it may fire.
func Reach(point, instanceID string) {
	state.mu.Lock()
	tracker, log, killVM := state.tracker, state.log, state.killVM
	state.mu.Unlock()
	e, ok := tracker.Reach(point)
	if !ok {
		return
	}
	fire := &e
	log.Warn("chaos: kill point reached", "entry", fire.String(), "instance", instanceID)
	switch fire.Target {
	case wire.ChaosController:
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never returns
	case wire.ChaosQemu:
		if killVM == nil {
			log.Error("chaos: no way to kill a VM with this compute driver", "entry", fire.String())
			return
		}
		if err := killVM(instanceID); err != nil {
			log.Error("chaos: killing the VM failed", "instance", instanceID, "err", err)
		}
	}
}

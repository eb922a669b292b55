// Package chaos is the agent's end of the chaos tests' named kill points
// (the plan format is in wire: wire.ParseChaos). The agent's part of a plan
// comes on the config drive (wire.ChaosFile), written there only when the
// controller was started with one. At a point that an entry names, the
// agent records that the entry fired (in its state directory, so a
// restarted agent does not fire it again) and then, for target agent,
// kills itself with SIGKILL; for target qemu it writes wire.ChaosMarker and
// the point to the serial console and waits for the test to kill the VM.
//
// Without a plan every Point is a no-op. It must never act on anything but
// the agent process itself and its console.
package chaos

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"strata/agent/wire"
)

// FiredFile records, in the agent's state directory, the entries that
// fired.
const FiredFile = "chaos-fired"

// Console is where a qemu kill is asked for.
var Console = "/dev/ttyS0"

// waitForKill is how long the agent waits at a point for its VM to be
// killed before it gives up and carries on.
var waitForKill = 3 * time.Minute

var state struct {
	mu      sync.Mutex
	tracker *wire.ChaosTracker
	log     *slog.Logger
}

// Load reads the plan at planFile (missing: no plan) and the entries that
// fired before from stateDir.
func Load(planFile, stateDir string, log *slog.Logger) error {
	data, err := os.ReadFile(planFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("chaos plan: %w", err)
	}
	entries, err := wire.ParseChaos(string(data))
	if err != nil {
		return err
	}
	state.mu.Lock()
	defer state.mu.Unlock()
	state.tracker, state.log = wire.NewChaosTracker(entries, filepath.Join(stateDir, FiredFile)), log
	log.Warn("chaos plan loaded: this agent kills itself or asks for its VM to be killed at named points (tests only)", "plan", wire.FormatChaos(entries))
	return nil
}

// Point is reached: an entry of the plan for it may fire.
func Point(name string) {
	state.mu.Lock()
	tracker, log := state.tracker, state.log
	state.mu.Unlock()
	e, ok := tracker.Reach(name)
	if !ok {
		return
	}
	fire := &e
	log.Warn("chaos: kill point reached", "entry", fire.String())
	switch fire.Target {
	case wire.ChaosAgent:
		console(wire.ChaosAgentMarker + name)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never returns
	case wire.ChaosQemu:
		if err := console(wire.ChaosMarker + name); err != nil {
			log.Error("chaos: cannot ask for the VM's kill on the console", "err", err)
			return
		}
		time.Sleep(waitForKill)
		log.Error("chaos: the VM was not killed; carrying on", "entry", fire.String())
	}
}

// console writes a line to the serial console.
func console(line string) error {
	c, err := os.OpenFile(Console, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = fmt.Fprintf(c, "\r\n%s\r\n", line)
	return err
}

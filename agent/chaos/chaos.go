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
	"strings"
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
	entries []wire.ChaosEntry
	counts  map[string]int
	fired   map[string]bool
	path    string
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
	state.entries, state.counts, state.fired = entries, map[string]int{}, map[string]bool{}
	state.path, state.log = filepath.Join(stateDir, FiredFile), log
	if old, err := os.ReadFile(state.path); err == nil {
		for _, l := range strings.Split(string(old), "\n") {
			state.fired[strings.TrimSpace(l)] = true
		}
	}
	log.Warn("chaos plan loaded: this agent kills itself or asks for its VM to be killed at named points (tests only)", "plan", wire.FormatChaos(entries))
	return nil
}

// Point is reached: an entry of the plan for it may fire.
func Point(name string) {
	state.mu.Lock()
	if len(state.entries) == 0 {
		state.mu.Unlock()
		return
	}
	state.counts[name]++
	var fire *wire.ChaosEntry
	for i, e := range state.entries {
		if e.Point == name && e.Nth == state.counts[name] && !state.fired[e.String()] {
			fire = &state.entries[i]
			break
		}
	}
	if fire == nil {
		state.mu.Unlock()
		return
	}
	state.fired[fire.String()] = true
	f, err := os.OpenFile(state.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err == nil {
		fmt.Fprintln(f, fire.String())
		f.Sync()
		f.Close()
	}
	log := state.log
	state.mu.Unlock()
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

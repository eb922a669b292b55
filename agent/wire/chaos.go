package wire

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Chaos testing: named kill points, reached by the product's own code, at
// which a test makes the controller, an instance's qemu or its agent die
// (the chaos tests in ci/e2e). A plan is a comma-separated list of
// target@point or target@point#n (the n-th time the point is reached; the
// first by default), given to the controller in STRATA_CHAOS. Each entry
// fires once: the process that fires it records that in its state
// directory first, so a restarted process does not fire it again.
//
// Points whose name starts with GuestPointPrefix are reached by the
// agent: the controller writes those entries to each new instance's
// config drive (ChaosFile). At a point, the process that reaches it kills
// itself when it is the target; the controller kills the instance's qemu
// for target qemu; the agent, for target qemu, writes ChaosMarker and the
// point to the console (/dev/ttyS0) and waits to be killed, which the
// test, watching the console, does.
//
// Without a plan nothing happens: every hook is a no-op.

// Chaos targets.
const (
	ChaosController = "controller"
	ChaosQemu       = "qemu"
	ChaosAgent      = "agent"
)

// GuestPointPrefix marks the points the agent reaches.
const GuestPointPrefix = "guest."

// ChaosFile is the config-drive file carrying the agent's part of a plan
// (a plan string, as in STRATA_CHAOS).
const ChaosFile = "strata/chaos"

// ChaosMarker starts the console line an agent writes at a point whose
// target is qemu: "STRATA-CHAOS kill qemu at <point>".
const ChaosMarker = "STRATA-CHAOS kill qemu at "

// ChaosAgentMarker starts the console line an agent writes before it kills
// itself at a point (for the test's counts).
const ChaosAgentMarker = "STRATA-CHAOS agent kills itself at "

// ChaosEntry is one kill of a plan.
type ChaosEntry struct {
	Target string
	Point  string
	// Nth: fire the n-th time the point is reached (1: the first).
	Nth int
}

func (e ChaosEntry) String() string {
	s := e.Target + "@" + e.Point
	if e.Nth > 1 {
		s += "#" + strconv.Itoa(e.Nth)
	}
	return s
}

// Guest reports whether the agent reaches the entry's point.
func (e ChaosEntry) Guest() bool { return strings.HasPrefix(e.Point, GuestPointPrefix) }

// ControllerPoints are the points the controller reaches (chaos.Reach
// in controller/; a test there keeps this list and the calls equal). A
// plan naming another point for the controller or qemu is refused: a
// misspelt point would never fire, and the kill it names would test
// nothing.
var ControllerPoints = []string{
	"api.accepted",         // a guest call answered 202, not yet delivered
	"create.booted",        // the VM booted, its agent not yet enrolled
	"delete.start",         // a delete begun
	"delete.server-gone",   // the server deleted, the volume still there
	"restart.queued",       // a restart operation queued
	"resize.extended",      // the disk grew, the filesystem not yet
	"rebuild.keys-revoked", // a rebuild: the old agent's keys revoked
	"rebuild.booted",       // a rebuild: the old disk aside, the new agent not yet enrolled
	"promote.fenced",       // a switchover or failover: the source fenced, the replica's promotion queued
	"promote.promoted",     // a switchover or failover: the replica writable, the followers not yet repointed
}

var chaosPoint = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,80}$`)

// ParseChaos reads a plan. A guest point cannot target the controller
// (the agent cannot reach it), a controller point cannot target the agent.
func ParseChaos(plan string) ([]ChaosEntry, error) {
	var out []ChaosEntry
	for _, f := range strings.Split(plan, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		target, point, ok := strings.Cut(f, "@")
		if !ok {
			return nil, fmt.Errorf("chaos plan: %q: want target@point", f)
		}
		e := ChaosEntry{Target: target, Point: point, Nth: 1}
		if p, n, ok := strings.Cut(point, "#"); ok {
			k, err := strconv.Atoi(n)
			if err != nil || k < 1 {
				return nil, fmt.Errorf("chaos plan: %q: #n must be a count from 1", f)
			}
			e.Point, e.Nth = p, k
		}
		if !chaosPoint.MatchString(e.Point) {
			return nil, fmt.Errorf("chaos plan: %q: bad point name", f)
		}
		switch {
		case target != ChaosController && target != ChaosQemu && target != ChaosAgent:
			return nil, fmt.Errorf("chaos plan: %q: target must be controller, qemu or agent", f)
		case e.Guest() && target == ChaosController:
			return nil, fmt.Errorf("chaos plan: %q: the agent cannot kill the controller", f)
		case !e.Guest() && target == ChaosAgent:
			return nil, fmt.Errorf("chaos plan: %q: the controller cannot kill the agent (use a %s point)", f, GuestPointPrefix)
		case !e.Guest() && !slices.Contains(ControllerPoints, e.Point):
			return nil, fmt.Errorf("chaos plan: %q: the controller reaches no point %q (its points: %s)", f, e.Point, strings.Join(ControllerPoints, ", "))
		}
		out = append(out, e)
	}
	return out, nil
}

// FormatChaos writes a plan.
func FormatChaos(entries []ChaosEntry) string {
	var parts []string
	for _, e := range entries {
		parts = append(parts, e.String())
	}
	return strings.Join(parts, ",")
}

// ChaosTracker applies a plan's firing rule in one process: it counts the
// reaches of each point and fires an entry at its n-th reach, once,
// recording it in FiredFile (appended and synced before the entry is
// returned) so that the process started after the kill skips it.
type ChaosTracker struct {
	mu        sync.Mutex
	entries   []ChaosEntry
	counts    map[string]int
	fired     map[string]bool
	FiredFile string
}

// NewChaosTracker tracks entries; firedFile holds the entries that fired
// before (one a line; missing: none).
func NewChaosTracker(entries []ChaosEntry, firedFile string) *ChaosTracker {
	t := &ChaosTracker{entries: entries, counts: map[string]int{}, fired: map[string]bool{}, FiredFile: firedFile}
	if old, err := os.ReadFile(firedFile); err == nil {
		for _, l := range strings.Split(string(old), "\n") {
			t.fired[strings.TrimSpace(l)] = true
		}
	}
	return t
}

// Reach counts a reach of point and returns the entry that fires there,
// if any (a nil tracker has no plan).
func (t *ChaosTracker) Reach(point string) (ChaosEntry, bool) {
	if t == nil {
		return ChaosEntry{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.entries) == 0 {
		return ChaosEntry{}, false
	}
	t.counts[point]++
	for _, e := range t.entries {
		if e.Point == point && e.Nth == t.counts[point] && !t.fired[e.String()] {
			t.fired[e.String()] = true
			if f, err := os.OpenFile(t.FiredFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
				fmt.Fprintln(f, e.String())
				f.Sync()
				f.Close()
			}
			return e, true
		}
	}
	return ChaosEntry{}, false
}

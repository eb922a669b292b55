package chaos

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/agent/wire/wiretest"
)

// TestAQemuKillIsAskedForOnTheConsoleOnce: at a point whose target is the
// VM, the agent writes the marker to its console and waits; the entry
// fires once, also across agent restarts.
func TestAQemuKillIsAskedForOnTheConsoleOnce(t *testing.T) {
	dir := t.TempDir()
	Console = filepath.Join(dir, "ttyS0")
	os.WriteFile(Console, nil, 0o600)
	waitForKill = 10 * time.Millisecond
	plan := filepath.Join(dir, "chaos")
	os.WriteFile(plan, []byte("qemu@guest.prepare.users"), 0o600)
	if err := Load(plan, dir, wiretest.QuietLogger()); err != nil {
		t.Fatal(err)
	}
	Point("guest.prepare.volume")
	Point("guest.prepare.users")
	Point("guest.prepare.users")
	if err := Load(plan, dir, wiretest.QuietLogger()); err != nil {
		t.Fatal(err)
	}
	Point("guest.prepare.users")
	out, _ := os.ReadFile(Console)
	if n := strings.Count(string(out), "STRATA-CHAOS kill qemu at guest.prepare.users"); n != 1 {
		t.Fatalf("console %q: the marker %d times, want once", out, n)
	}
	// No plan file: nothing at all.
	os.Remove(plan)
	state.tracker = nil
	if err := Load(plan, dir, wiretest.QuietLogger()); err != nil {
		t.Fatal(err)
	}
	Point("guest.prepare.users")
}

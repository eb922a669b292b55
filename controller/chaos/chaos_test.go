package chaos

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"strata/agent/wire"
	"strata/agent/wire/wiretest"
)

// TestAnEntryFiresOnceAtItsNthReachEvenAcrossRestarts, with a VM kill as
// the harmless target.
func TestAnEntryFiresOnceAtItsNthReachEvenAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(Env, "qemu@resize.extended#2,agent@guest.op.restart,qemu@guest.prepare.users")
	var killed []string
	kill := func(id string) error { killed = append(killed, id); return nil }
	if err := Init(dir, kill, wiretest.QuietLogger()); err != nil {
		t.Fatal(err)
	}
	if g := GuestPlan(); g != "agent@guest.op.restart,qemu@guest.prepare.users" {
		t.Fatalf("guest plan %q", g)
	}
	Reach("resize.extended", "i1")
	if len(killed) != 0 {
		t.Fatal("fired at the first reach of a #2 entry")
	}
	Reach("resize.extended", "i1")
	Reach("resize.extended", "i1")
	if len(killed) != 1 || killed[0] != "i1" {
		t.Fatalf("killed %v", killed)
	}
	fired, _ := os.ReadFile(filepath.Join(dir, FiredFile))
	if strings.TrimSpace(string(fired)) != "qemu@resize.extended#2" {
		t.Fatalf("fired file %q", fired)
	}
	// A restarted controller with the same plan does not fire it again.
	if err := Init(dir, kill, wiretest.QuietLogger()); err != nil {
		t.Fatal(err)
	}
	Reach("resize.extended", "i1")
	Reach("resize.extended", "i1")
	if len(killed) != 1 {
		t.Fatalf("fired again after a restart: %v", killed)
	}
	t.Setenv(Env, "")
	Init(dir, kill, wiretest.QuietLogger())
	if GuestPlan() != "" {
		t.Fatal("a plan without the variable")
	}
}

// TestTheKnownPointsAreTheOnesTheControllerReaches: every chaos.Reach in
// controller/ names a point of wire.ControllerPoints (else a plan naming
// it is refused), and every listed point is reached somewhere (else a
// plan naming it never fires).
func TestTheKnownPointsAreTheOnesTheControllerReaches(t *testing.T) {
	reach := regexp.MustCompile(`chaos\.Reach\("([^"]+)"`)
	reached := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range reach.FindAllStringSubmatch(string(data), -1) {
			reached[m[1]] = true
			if !slices.Contains(wire.ControllerPoints, m[1]) {
				t.Errorf("%s reaches %q, which wire.ControllerPoints does not list", path, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range wire.ControllerPoints {
		if !reached[p] {
			t.Errorf("wire.ControllerPoints lists %q, which no chaos.Reach in controller/ reaches", p)
		}
	}
	if !reached["promote.fenced"] || !reached["promote.promoted"] {
		t.Errorf("the switchover's points are not reached: %v", reached)
	}
}

package chaos

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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

package qemu_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"strata/controller/compute"
	"strata/controller/compute/qemu"
)

// qemuArgs is the running VM's command line.
func qemuArgs(t *testing.T, instanceID string) (pid string, args []string) {
	t.Helper()
	out, err := exec.Command("pgrep", "-f", "strata-"+instanceID).Output()
	if err != nil {
		t.Fatalf("no qemu for %s: %v", instanceID, err)
	}
	pid = strings.Fields(string(out))[0]
	cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	return pid, strings.Split(string(cmdline), "\x00")
}

func argAfter(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// A flavor resize restarts the VM with the new memory and CPUs and a grown
// root disk; asked again it leaves the running VM alone; a smaller root
// disk or a nonsense flavor is refused before the VM stops.
func TestResizeServerRestartsTheVMWithTheNewFlavor(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	t.Cleanup(func() { qemu.KillUnder(dir) })
	d := driverOn(t, dir, qemu.Config{})
	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: id, Name: "db", SizeGB: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := d.CreateServer(ctx, compute.ServerSpec{InstanceID: id, Name: "db", Image: blankImage(t), RAMMB: 256, VCPUs: 1, RootDiskGB: 1, Volume: vol,
		ConfigDrive: map[string][]byte{"strata/bootstrap.json": []byte(`{"format":1}`)}, Ports: []int{3306}})
	if err != nil {
		t.Fatal(err)
	}
	pid, args := qemuArgs(t, id)
	if argAfter(args, "-m") != "256" || argAfter(args, "-smp") != "1" {
		t.Fatalf("before: -m %s -smp %s", argAfter(args, "-m"), argAfter(args, "-smp"))
	}
	for name, f := range map[string]compute.Flavor{
		"no memory": {RAMMB: 0, VCPUs: 2},
		"no CPU":    {RAMMB: 512, VCPUs: 0},
	} {
		if err := d.ResizeServer(ctx, srv, f); !errors.Is(err, compute.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if p, _ := qemuArgs(t, id); p != pid {
		t.Fatal("a refused resize restarted the VM")
	}

	if err := d.ResizeServer(ctx, srv, compute.Flavor{RAMMB: 512, VCPUs: 2, RootDiskGB: 2}); err != nil {
		t.Fatal(err)
	}
	pid2, args := qemuArgs(t, id)
	if pid2 == pid || argAfter(args, "-m") != "512" || argAfter(args, "-smp") != "2" {
		t.Fatalf("after: pid %s (was %s), -m %s -smp %s", pid2, pid, argAfter(args, "-m"), argAfter(args, "-smp"))
	}
	out, err := exec.Command("qemu-img", "info", "-U", "--output=json", filepath.Join(dir, id, "root.qcow2")).Output()
	if err != nil || !strings.Contains(string(out), `"virtual-size": 2147483648`) {
		t.Fatalf("root disk after the resize: %s %v", out, err)
	}
	if reason, err := d.LaunchOutdated(ctx, srv); reason != "" || err != nil {
		t.Fatalf("the resized VM's launch is outdated: %q %v", reason, err)
	}
	// Again, as a task re-run after a crash: nothing happens.
	if err := d.ResizeServer(ctx, srv, compute.Flavor{RAMMB: 512, VCPUs: 2, RootDiskGB: 2}); err != nil {
		t.Fatal(err)
	}
	if p, _ := qemuArgs(t, id); p != pid2 {
		t.Fatal("a resize to the flavor the VM runs with restarted it")
	}
	// Back to a 1 GB root disk: refused, the VM untouched.
	if err := d.ResizeServer(ctx, srv, compute.Flavor{RAMMB: 256, VCPUs: 1, RootDiskGB: 1}); !errors.Is(err, compute.ErrInvalid) || !strings.Contains(err.Error(), "smaller") {
		t.Fatalf("a smaller root disk: %v", err)
	}
	if p, _ := qemuArgs(t, id); p != pid2 {
		t.Fatal("a refused resize restarted the VM")
	}
}

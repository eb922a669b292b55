package qemu_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"strata/agent/wire/wiretest"
	"strata/controller/compute"
	"strata/controller/compute/qemu"
)

// blankImage is a 64 MiB qcow2 with nothing on it: SeaBIOS finds nothing
// to boot and the VM idles, which is all these tests need from a guest
// (the end-to-end test boots a real one).
func blankImage(t *testing.T) compute.ImageRef {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-system-x86_64", "mkfs.vfat", "mcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install qemu-utils, qemu-system-x86, dosfstools and mtools with `ci/deps.sh build boot` (or `make test`)", tool)
		}
	}
	p := filepath.Join(t.TempDir(), "blank.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, "64M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return compute.ImageRef{ID: "img", Location: p, Format: "qcow2"}
}

// newDriver makes a driver whose VMs die with the test process, and a
// cleanup that kills any qemu left under its directory.
func newDriver(t *testing.T) (*qemu.Driver, string) {
	dir := t.TempDir()
	t.Cleanup(func() {
		if pids := qemu.KillUnder(dir); len(pids) > 0 {
			t.Logf("killed qemu %v left under %s", pids, dir)
		}
	})
	return driverOn(t, dir, qemu.Config{}), dir
}

// driverOn makes another driver on dir: a controller process that starts
// again on the same state.
func driverOn(t *testing.T, dir string, cfg qemu.Config) *qemu.Driver {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg.Dir, cfg.Logger, cfg.StopTimeout, cfg.DieWithController = dir, wiretest.QuietLogger(), time.Second, true
	// The blank image's VM ignores the power button.
	cfg.RebuildStopTimeout = time.Second
	d, err := qemu.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

const id = "0b6f3c8e-1f2a-4c3d-9e8f-0123456789ab"

func qemuRunning(t *testing.T, instanceID string) bool {
	out, _ := exec.Command("pgrep", "-f", "strata-"+instanceID).Output()
	return strings.TrimSpace(string(out)) != ""
}

func TestQemuDriverCreatesRunsExtendsAndDeletesAVM(t *testing.T) {
	ctx := context.Background()
	d, dir := newDriver(t)
	img := blankImage(t)
	imgBefore, _ := os.ReadFile(img.Location)

	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: id, Name: "db", SizeGB: 1})
	if err != nil {
		t.Fatal(err)
	}
	if vol.GuestDevice != "/dev/disk/by-id/virtio-strata-data" {
		t.Fatalf("guest device %q", vol.GuestDevice)
	}
	again, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: id, Name: "db", SizeGB: 1})
	if err != nil || again != vol {
		t.Fatalf("second CreateVolume = %+v, %v", again, err)
	}
	spec := compute.ServerSpec{InstanceID: id, Name: "db", Image: img, RAMMB: 256, VCPUs: 1, RootDiskGB: 1, Volume: vol,
		ConfigDrive: map[string][]byte{"strata/bootstrap.json": []byte(`{"format":1}`)}, Ports: []int{3306}}
	srv, err := d.CreateServer(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	ep, ok := srv.Endpoint(3306)
	if !ok || !qemu.DefaultNetwork.CIDR.Contains(netip.MustParseAddr(ep.Host)) || ep.Port != 3306 {
		t.Fatalf("endpoints = %+v, want the standard port on an address of the default network", srv.Endpoints)
	}
	// qemu listens on the forwarded port, on loopback only.
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(ep.Host, strconv.Itoa(ep.Port)), 2*time.Second)
	if err != nil {
		t.Fatalf("forwarded port: %v", err)
	}
	conn.Close()
	if st, _ := d.ServerState(ctx, srv); st != compute.StateRunning || !qemuRunning(t, id) {
		t.Fatalf("state %s, qemu running %v", st, qemuRunning(t, id))
	}
	// The flavor's root disk sizes the overlay when it is larger than the
	// image; a smaller one is refused, as Nova refuses it.
	if out, err := exec.Command("qemu-img", "info", "-U", filepath.Join(dir, id, "root.qcow2")).Output(); err != nil || !strings.Contains(string(out), "virtual size: 1 GiB") {
		t.Fatalf("root disk of a 1 GB flavor on a 64 MiB image: %v\n%s", err, out)
	}
	tooSmall := compute.ImageRef{ID: "big", Location: filepath.Join(t.TempDir(), "big.qcow2"), Format: "qcow2"}
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", tooSmall.Location, "2G").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	small := spec
	small.InstanceID, small.Image = "2f2e3d4c-0000-4000-8000-000000000000", tooSmall
	if _, err := d.CreateServer(ctx, small); !errors.Is(err, compute.ErrInvalid) || !strings.Contains(err.Error(), "smaller than the image") {
		t.Fatalf("a 1 GB root disk for a 2 GiB image: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, small.InstanceID, "root.qcow2")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused server left its root disk: %v", err)
	}

	// A repeated CreateServer (an interrupted step run again) keeps the VM.
	srv2, err := d.CreateServer(ctx, spec)
	if err != nil || srv2.Endpoints[0] != ep {
		t.Fatalf("second CreateServer = %+v, %v", srv2, err)
	}
	inst := filepath.Join(dir, id)
	for _, f := range []string{"root.qcow2", "data.raw", "config-drive.img", "server.json"} {
		if _, err := os.Stat(filepath.Join(inst, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	out, _ := exec.Command("qemu-img", "info", "-U", filepath.Join(inst, "root.qcow2")).Output()
	if !strings.Contains(string(out), img.Location) {
		t.Fatalf("the root disk is not an overlay on the image:\n%s", out)
	}

	// Live extension through QMP.
	vol, err = d.ExtendVolume(ctx, srv, vol, 2)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(inst, "data.raw")); st.Size() != 2<<30 || vol.SizeGB != 2 {
		t.Fatalf("data.raw is %d bytes after extending to 2 GB", st.Size())
	}
	if _, err := d.ExtendVolume(ctx, srv, vol, 1); err == nil {
		t.Fatal("shrinking a volume was accepted")
	}

	// The VMs are stopped explicitly (not by the controller going away):
	// StartServer brings the VM back on the same port.
	if n, err := d.StopAll(ctx, 0); err != nil || n != 1 {
		t.Fatalf("StopAll = %d, %v", n, err)
	}
	if st, _ := d.ServerState(ctx, srv); st != compute.StateStopped || qemuRunning(t, id) {
		t.Fatalf("state after StopAll %s, qemu running %v", st, qemuRunning(t, id))
	}
	if err := d.StartServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	conn, err = net.DialTimeout("tcp", net.JoinHostPort(ep.Host, strconv.Itoa(ep.Port)), 2*time.Second)
	if err != nil {
		t.Fatalf("forwarded port after restart: %v", err)
	}
	conn.Close()

	if err := d.DeleteVolume(ctx, vol); err == nil {
		t.Fatal("deleting the volume of a running VM was accepted")
	}
	if err := d.DeleteServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteVolume(ctx, vol); err != nil {
		t.Fatal(err)
	}
	// And again: deleting what is gone is not an error.
	if err := d.DeleteServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteVolume(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(inst); !os.IsNotExist(err) {
		entries, _ := os.ReadDir(inst)
		t.Fatalf("instance dir left behind: %v", entries)
	}
	if qemuRunning(t, id) {
		t.Fatal("qemu still running after DeleteServer")
	}
	if st, _ := d.ServerState(ctx, srv); st != compute.StateGone {
		t.Fatalf("state after delete %s", st)
	}
	if imgAfter, _ := os.ReadFile(img.Location); string(imgAfter) != string(imgBefore) {
		t.Fatal("the image was modified")
	}
}

func pidOf(t *testing.T, dir, instanceID string) int {
	t.Helper()
	var st struct {
		PID int `json:"pid"`
	}
	data, err := os.ReadFile(filepath.Join(dir, instanceID, "server.json"))
	if err != nil || json.Unmarshal(data, &st) != nil || st.PID == 0 {
		t.Fatalf("server.json: %v %s", err, data)
	}
	return st.PID
}

// TestAVMOutlivesItsControllerAndIsAdopted: a controller process that
// starts again on the same state finds the VM its predecessor started
// still running (same pid, nothing booted), drives it (live volume
// extension through its QMP socket), reports it current, and, once the
// driver's launch settings change, reports it as needing a restart until
// RestartServer starts it with the current ones. A VM that exits unwatched
// is found stopped and started again.
func TestAVMOutlivesItsControllerAndIsAdopted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	t.Cleanup(func() { qemu.KillUnder(dir) })
	img := blankImage(t)
	first := driverOn(t, dir, qemu.Config{})
	vol, err := first.CreateVolume(ctx, compute.VolumeSpec{InstanceID: id, SizeGB: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := first.CreateServer(ctx, compute.ServerSpec{InstanceID: id, Name: "db", Image: img, RAMMB: 256, VCPUs: 1, Volume: vol,
		ConfigDrive: map[string][]byte{"strata/bootstrap.json": []byte(`{}`)}, Ports: []int{3306}})
	if err != nil {
		t.Fatal(err)
	}
	pid := pidOf(t, dir, id)
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Fatalf("qemu runs in session %d, not its own", sid)
	}

	// The next controller process: same state, new driver.
	second := driverOn(t, dir, qemu.Config{})
	if st, err := second.ServerState(ctx, srv); err != nil || st != compute.StateRunning {
		t.Fatalf("adopted VM: state %s, %v", st, err)
	}
	if err := second.StartServer(ctx, srv); err != nil || pidOf(t, dir, id) != pid {
		t.Fatalf("StartServer on a running VM: %v, pid %d → %d", err, pid, pidOf(t, dir, id))
	}
	if reason, err := second.LaunchOutdated(ctx, srv); err != nil || reason != "" {
		t.Fatalf("a VM started with the current settings is reported outdated: %q %v", reason, err)
	}
	if vol, err = second.ExtendVolume(ctx, srv, vol, 2); err != nil || vol.SizeGB != 2 {
		t.Fatalf("live extension of an adopted VM: %v", err)
	}

	// A controller with other launch settings reports the VM, and
	// restarting it applies them.
	third := driverOn(t, dir, qemu.Config{Firmware: "uefi"})
	reason, err := third.LaunchOutdated(ctx, srv)
	if err != nil || !strings.Contains(reason, "restart the instance") {
		t.Fatalf("launch settings changed: %q %v", reason, err)
	}
	if err := third.RestartServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if newPID := pidOf(t, dir, id); newPID == pid || !qemuRunning(t, id) {
		t.Fatalf("after RestartServer: pid %d (was %d), running %v", newPID, pid, qemuRunning(t, id))
	}
	if reason, _ := third.LaunchOutdated(ctx, srv); reason != "" {
		t.Fatalf("still outdated after the restart: %s", reason)
	}

	// The VM dies while no controller watches it (the kill of a qemu, a
	// crash): found stopped, started again.
	exited := make(chan string, 1)
	fourth := driverOn(t, dir, qemu.Config{Firmware: "uefi", OnExit: func(id string) { exited <- id }})
	if st, _ := fourth.ServerState(ctx, srv); st != compute.StateRunning {
		t.Fatalf("state %s", st)
	}
	syscall.Kill(pidOf(t, dir, id), syscall.SIGKILL)
	select {
	case got := <-exited:
		if got != id {
			t.Fatalf("OnExit(%s)", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the adopted VM's exit was not noticed")
	}
	if st, _ := fourth.ServerState(ctx, srv); st != compute.StateStopped {
		t.Fatalf("state after the kill %s", st)
	}
	if err := fourth.StartServer(ctx, srv); err != nil || !qemuRunning(t, id) {
		t.Fatalf("start after the kill: %v", err)
	}
	// Delete kills an adopted VM too and leaves nothing.
	if err := driverOn(t, dir, qemu.Config{}).DeleteServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if qemuRunning(t, id) {
		t.Fatal("qemu survived DeleteServer")
	}
}

func TestQemuDriverRejectsIDsThatCouldEscapeItsDirectory(t *testing.T) {
	d, _ := newDriver(t)
	for _, bad := range []string{"../../etc", "a/b/c/d/e/f", "", "UPPER-CASE-ID"} {
		if _, err := d.CreateVolume(context.Background(), compute.VolumeSpec{InstanceID: bad, SizeGB: 1}); err == nil {
			t.Errorf("instance id %q accepted", bad)
		}
	}
}

// The cached image is checked again when the driver opens it for an
// overlay: one whose data is a file of this host (CVE-2024-32498 class)
// or that has a backing file is refused, and nothing is made or started.
func TestQemuDriverRefusesAHostileCachedImage(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A qemu that must never run.
	marker := filepath.Join(dir, "qemu-ran")
	fake := filepath.Join(dir, "qemu-system")
	os.WriteFile(fake, []byte("#!/bin/sh\ntouch "+marker+"\nexit 1\n"), 0o755)
	d, err := qemu.New(ctx, qemu.Config{Dir: filepath.Join(dir, "vms"), Binary: fake, Logger: wiretest.QuietLogger(), StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(dir, "victim")
	// Both cases name it; either may run first (map order).
	if err := os.WriteFile(victim, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string][]string{
		"external data file": {"-o", "data_file=" + victim + ",data_file_raw=on"},
		"backing file":       {"-F", "raw", "-b", victim},
	} {
		t.Run(name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "cached.qcow2")
			args := append(append([]string{"create", "-q", "-f", "qcow2"}, opts...), img, "64M")
			if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img: %v: %s", err, out)
			}
			_, err := d.CreateServer(ctx, compute.ServerSpec{InstanceID: id, Name: "x", Image: compute.ImageRef{ID: "img", Location: img, Format: "qcow2"},
				RAMMB: 256, VCPUs: 1, RootDiskGB: 1})
			if !errors.Is(err, compute.ErrInvalid) || !strings.Contains(err.Error(), name) {
				t.Fatalf("CreateServer: %v, want compute.ErrInvalid naming the %s", err, name)
			}
			if m, _ := filepath.Glob(filepath.Join(dir, "vms", id, "root*")); len(m) != 0 {
				t.Errorf("an overlay was made on the hostile image: %v", m)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("qemu was started")
			}
		})
	}
}

// Every VM is started fenced in, with its one way out to the agent
// endpoint: qemu accepts the command line (the VM runs) and it says so.
// (What a guest can and cannot reach from inside is the end-to-end test's:
// ci/e2e, TestControllerRunsAMariaDBInstanceFromABuiltImageUnderQemu.)
func TestVMsAreFencedWithOneWayOutToTheEndpoint(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	t.Cleanup(func() { qemu.KillUnder(dir) })
	d := driverOn(t, dir, qemu.Config{AgentEndpoint: "0.0.0.0:42222"})
	if got := d.GuestEndpoint(); got != "10.0.2.100:42222" {
		t.Fatalf("GuestEndpoint = %q", got)
	}
	const fid = "5c1d0e2f-7a8b-4c9d-8e0f-123456789abc"
	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: fid, Name: "db", SizeGB: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateServer(ctx, compute.ServerSpec{InstanceID: fid, Name: "db", Image: blankImage(t), RAMMB: 256, VCPUs: 1, RootDiskGB: 1, Volume: vol,
		ConfigDrive: map[string][]byte{"strata/bootstrap.json": []byte(`{"format":1}`)}, Ports: []int{3306}}); err != nil {
		t.Fatal(err)
	}
	netdev := netdevOf(t, fid)
	socat, _ := exec.LookPath("socat")
	want := ",restrict=on,"
	way := ",guestfwd=tcp:10.0.2.100:42222-cmd:" + socat + " - TCP:127.0.0.1:42222"
	if !strings.Contains(netdev, want) || !strings.HasSuffix(netdev, way) || strings.Count(netdev, "guestfwd=") != 1 {
		t.Fatalf("-netdev %q: want restrict=on and the one way out %q", netdev, way)
	}
}

// netdevOf is the -netdev option of the running VM of an instance.
func netdevOf(t *testing.T, instanceID string) string {
	t.Helper()
	out, err := exec.Command("pgrep", "-f", "strata-"+instanceID).Output()
	if err != nil {
		t.Fatalf("no qemu for %s: %v", instanceID, err)
	}
	cmdline, err := os.ReadFile("/proc/" + strings.Fields(string(out))[0] + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(string(cmdline), "\x00")
	for i, a := range args {
		if a == "-netdev" && i+1 < len(args) {
			return args[i+1]
		}
	}
	t.Fatalf("qemu of %s has no -netdev", instanceID)
	return ""
}

func TestAFenceWithoutItsRelayIsRefused(t *testing.T) {
	_, err := qemu.New(context.Background(), qemu.Config{Dir: t.TempDir(), AgentEndpoint: "127.0.0.1:2222", Relay: "no-such-relay-program"})
	if err == nil || !strings.Contains(err.Error(), "no-such-relay-program") || !strings.Contains(err.Error(), "ci/deps.sh boot") {
		t.Fatalf("New with a missing relay: %v", err)
	}
	for _, bad := range []string{"localhost:2222", "[::1]:2222", "127.0.0.1"} {
		if _, err := qemu.New(context.Background(), qemu.Config{Dir: t.TempDir(), AgentEndpoint: bad}); err == nil {
			t.Errorf("agent endpoint %q accepted", bad)
		}
	}
}

// A fenced server is killed at once and stays off: its state says so,
// and neither StartServer nor a driver started again on the same
// directory (a controller restart) brings it back. Once its fence is
// lifted (a rejoin), it is off and starts again; it can be deleted.
func TestAFencedServerIsKilledAndStaysOffUntilItsFenceIsLifted(t *testing.T) {
	ctx := context.Background()
	d, dir := newDriver(t)
	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: id, Name: "db", SizeGB: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := d.CreateServer(ctx, compute.ServerSpec{InstanceID: id, Name: "db", Image: blankImage(t), RAMMB: 256, VCPUs: 1, Volume: vol,
		ConfigDrive: map[string][]byte{"strata/bootstrap.json": []byte(`{}`)}, Ports: []int{3306}})
	if err != nil {
		t.Fatal(err)
	}
	if !qemuRunning(t, id) {
		t.Fatal("the VM does not run")
	}
	if err := d.FenceServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if qemuRunning(t, id) {
		t.Fatal("the fenced VM still runs")
	}
	for _, drv := range []*qemu.Driver{d, driverOn(t, dir, qemu.Config{})} {
		if st, err := drv.ServerState(ctx, srv); err != nil || st != compute.StateFenced {
			t.Fatalf("state of the fenced server: %s, %v", st, err)
		}
		if err := drv.StartServer(ctx, srv); !errors.Is(err, compute.ErrFenced) {
			t.Fatalf("starting the fenced server: %v", err)
		}
	}
	if qemuRunning(t, id) {
		t.Fatal("the fenced VM was started again")
	}
	if err := d.FenceServer(ctx, srv); err != nil {
		t.Fatalf("fencing again: %v", err)
	}
	if err := d.UnfenceServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if st, err := driverOn(t, dir, qemu.Config{}).ServerState(ctx, srv); err != nil || st != compute.StateStopped {
		t.Fatalf("state once the fence is lifted: %s, %v (want stopped)", st, err)
	}
	if err := d.StartServer(ctx, srv); err != nil {
		t.Fatalf("starting the server once its fence is lifted: %v", err)
	}
	if !qemuRunning(t, id) {
		t.Fatal("the VM does not run once its fence is lifted and it is started")
	}
	if err := d.UnfenceServer(ctx, srv); err != nil {
		t.Fatalf("lifting a fence that is not there: %v", err)
	}
	if !qemuRunning(t, id) {
		t.Fatal("lifting a fence that is not there stopped the VM")
	}
	if err := d.DeleteServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.ServerState(ctx, srv); st != compute.StateGone {
		t.Fatalf("state after delete: %s", st)
	}
}

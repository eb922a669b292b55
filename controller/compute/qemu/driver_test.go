package qemu_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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

func newDriver(t *testing.T) (*qemu.Driver, string) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	d, err := qemu.New(ctx, qemu.Config{Dir: dir, Logger: wiretest.QuietLogger(), StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Shutdown(); cancel() })
	return d, dir
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
	if !ok || ep.Host != "127.0.0.1" || ep.Port == 0 {
		t.Fatalf("endpoints = %+v", srv.Endpoints)
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

	// The controller goes away: its VMs stop; StartServer brings the VM
	// back on the same port.
	d.Shutdown()
	if st, _ := d.ServerState(ctx, srv); st != compute.StateStopped {
		t.Fatalf("state after shutdown %s", st)
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
	defer d.Shutdown()
	victim := filepath.Join(dir, "victim")
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

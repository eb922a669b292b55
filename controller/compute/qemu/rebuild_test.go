package qemu_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"strata/controller/compute"
	"strata/controller/compute/qemu"
)

// backingOf is the image a qcow2 overlay is made on.
func backingOf(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-U", "--output=json", path).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	var info struct {
		Backing string `json:"backing-filename"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	return info.Backing
}

// bootstrapOf is the bootstrap file on a config drive image.
func bootstrapOf(t *testing.T, drive string) string {
	t.Helper()
	out, err := exec.Command("mcopy", "-n", "-i", drive, "::strata/bootstrap.json", "-").Output()
	if err != nil {
		t.Fatalf("reading the config drive %s: %v", drive, err)
	}
	return string(out)
}

func TestRebuildReplacesTheRootDiskKeepsTheDataAndRevertsOrDropsTheOld(t *testing.T) {
	ctx := context.Background()
	d, dir := newDriver(t)
	oldImg, newImg := blankImage(t), blankImage(t)
	newImg.ID = "img-new"
	inst := filepath.Join(dir, id)
	root, oldRoot := filepath.Join(inst, "root.qcow2"), filepath.Join(inst, "root.qcow2.old")
	drive, oldDrive := filepath.Join(inst, "config-drive.img"), filepath.Join(inst, "config-drive.img.old")

	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: id, Name: "db", SizeGB: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Data the guest wrote on its volume: no step of a rebuild may touch it.
	data := filepath.Join(inst, "data.raw")
	f, err := os.OpenFile(data, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("the instance's data"), 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	spec := compute.ServerSpec{InstanceID: id, Name: "db", Image: oldImg, RAMMB: 256, VCPUs: 1, Volume: vol,
		ConfigDrive: map[string][]byte{"strata/bootstrap.json": []byte(`{"token":"old"}`)}, Ports: []int{3306}}
	srv, err := d.CreateServer(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}

	// A bad request is refused before the VM is touched.
	bad := spec
	bad.Image.Format = "vmdk"
	if _, err := d.RebuildServer(ctx, srv, bad); !errors.Is(err, compute.ErrInvalid) {
		t.Fatalf("a rebuild onto a vmdk image: %v", err)
	}
	if _, err := os.Stat(oldRoot); !errors.Is(err, os.ErrNotExist) || !qemuRunning(t, id) {
		t.Fatalf("a refused rebuild set the root disk aside (%v) or stopped the VM (running %v)", err, qemuRunning(t, id))
	}

	rebuild := spec
	rebuild.Image = newImg
	rebuild.ConfigDrive = map[string][]byte{"strata/bootstrap.json": []byte(`{"token":"new"}`)}
	srv2, err := d.RebuildServer(ctx, srv, rebuild)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := d.ServerState(ctx, srv2); st != compute.StateRunning || !qemuRunning(t, id) {
		t.Fatalf("after the rebuild: state %s, qemu running %v", st, qemuRunning(t, id))
	}
	if len(srv2.Endpoints) != 1 || srv2.Endpoints[0] != srv.Endpoints[0] {
		t.Fatalf("endpoints changed by the rebuild: %+v → %+v", srv.Endpoints, srv2.Endpoints)
	}
	if got := backingOf(t, root); got != newImg.Location {
		t.Fatalf("new root disk on %s, want %s", got, newImg.Location)
	}
	if got := backingOf(t, oldRoot); got != oldImg.Location {
		t.Fatalf("the root disk set aside is on %s, want %s", got, oldImg.Location)
	}
	if got := bootstrapOf(t, drive); got != `{"token":"new"}` {
		t.Fatalf("config drive after the rebuild: %s", got)
	}
	if got := bootstrapOf(t, oldDrive); got != `{"token":"old"}` {
		t.Fatalf("config drive set aside: %s", got)
	}
	// The step run again (a controller killed after it booted) keeps the
	// first old disk, not the new one.
	if _, err := d.RebuildServer(ctx, srv, rebuild); err != nil {
		t.Fatal(err)
	}
	if got := backingOf(t, oldRoot); got != oldImg.Location {
		t.Fatalf("a repeated rebuild set the new disk aside: the old one is on %s", got)
	}

	// Rollback: the old disk and drive are back and booted.
	if err := d.RevertServer(ctx, srv, nil); err != nil {
		t.Fatal(err)
	}
	if got := backingOf(t, root); got != oldImg.Location {
		t.Fatalf("after the revert the root disk is on %s, want %s", got, oldImg.Location)
	}
	if got := bootstrapOf(t, drive); got != `{"token":"old"}` {
		t.Fatalf("config drive after the revert: %s", got)
	}
	for _, f := range []string{oldRoot, oldDrive} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s after the revert: %v", f, err)
		}
	}
	if !qemuRunning(t, id) {
		t.Fatal("the VM does not run after the revert")
	}
	// Reverting again (a repeated step) only makes sure it runs.
	if err := d.RevertServer(ctx, srv, nil); err != nil || backingOf(t, root) != oldImg.Location {
		t.Fatalf("a second revert: %v", err)
	}

	// A rebuild that succeeds: the old disk is dropped; a driver started
	// again on the same directory (a controller restart) sees the new image.
	if _, err := d.RebuildServer(ctx, srv, rebuild); err != nil {
		t.Fatal(err)
	}
	d2 := driverOn(t, dir, qemu.Config{})
	if err := d2.DropOldServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if err := d2.DropOldServer(ctx, srv); err != nil {
		t.Fatalf("dropping again: %v", err)
	}
	for _, f := range []string{oldRoot, oldDrive} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s after dropping: %v", f, err)
		}
	}
	if got := backingOf(t, root); got != newImg.Location || !qemuRunning(t, id) {
		t.Fatalf("after dropping: root on %s, running %v", got, qemuRunning(t, id))
	}
	// Nothing to roll back to any more: a revert keeps the new disk.
	if err := d2.RevertServer(ctx, srv, nil); err != nil || backingOf(t, root) != newImg.Location {
		t.Fatalf("revert with nothing set aside: %v, root on %s", err, backingOf(t, root))
	}

	if err := d2.DeleteServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 19)
	f, err = os.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	f.ReadAt(got, 4096)
	f.Close()
	if string(got) != "the instance's data" {
		t.Fatalf("the data volume changed: %q", got)
	}
}

// TestRebuildAndRevertResumeWhereAControllerDied: the file moves are
// ordered so that a call repeated after a crash between two of them
// converges — root.qcow2.old is the marker: the root disk is set aside
// after the config drive, and put back after it.
func TestRebuildAndRevertResumeWhereAControllerDied(t *testing.T) {
	ctx := context.Background()
	d, dir := newDriver(t)
	oldImg, newImg := blankImage(t), blankImage(t)
	inst := filepath.Join(dir, id)
	root, oldRoot := filepath.Join(inst, "root.qcow2"), filepath.Join(inst, "root.qcow2.old")
	drive, oldDrive := filepath.Join(inst, "config-drive.img"), filepath.Join(inst, "config-drive.img.old")
	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: id, Name: "db", SizeGB: 1})
	if err != nil {
		t.Fatal(err)
	}
	spec := compute.ServerSpec{InstanceID: id, Name: "db", Image: oldImg, RAMMB: 256, VCPUs: 1, Volume: vol,
		ConfigDrive: map[string][]byte{"strata/bootstrap.json": []byte(`{"token":"old"}`)}, Ports: []int{3306}}
	srv, err := d.CreateServer(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	rebuild := spec
	rebuild.Image = newImg
	rebuild.ConfigDrive = map[string][]byte{"strata/bootstrap.json": []byte(`{"token":"new"}`)}

	// Died after the config drive was set aside, before the root disk.
	if n, err := d.StopAll(ctx, 0); err != nil || n != 1 {
		t.Fatalf("StopAll = %d, %v", n, err)
	}
	if err := os.Rename(drive, oldDrive); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RebuildServer(ctx, srv, rebuild); err != nil {
		t.Fatal(err)
	}
	if backingOf(t, oldRoot) != oldImg.Location || backingOf(t, root) != newImg.Location ||
		bootstrapOf(t, oldDrive) != `{"token":"old"}` || bootstrapOf(t, drive) != `{"token":"new"}` {
		t.Fatal("a rebuild resumed after the config drive was set aside did not keep the old disks aside")
	}

	// Died in a revert after the config drive was put back, before the
	// root disk.
	if err := os.Rename(oldDrive, drive); err != nil {
		t.Fatal(err)
	}
	if err := d.RevertServer(ctx, srv, nil); err != nil {
		t.Fatal(err)
	}
	if backingOf(t, root) != oldImg.Location || bootstrapOf(t, drive) != `{"token":"old"}` || !qemuRunning(t, id) {
		t.Fatal("a revert resumed after the config drive was put back did not restore the old root disk")
	}
	if _, err := os.Stat(oldRoot); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("root.qcow2.old after the resumed revert: %v", err)
	}
}

// A rebuild with KeepVolume (a datastore version upgrade): the data
// volume is copied while the VM is off; what the new guest writes is
// undone by a revert, and kept (the copy removed) once the old server is
// dropped.
func TestRebuildKeepingTheVolumeRevertsTheNewGuestsWrites(t *testing.T) {
	ctx := context.Background()
	d, dir := newDriver(t)
	oldImg, newImg := blankImage(t), blankImage(t)
	newImg.ID = "img-new"
	inst := filepath.Join(dir, id)
	data, oldData := filepath.Join(inst, "data.raw"), filepath.Join(inst, "data.raw.old")
	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: id, Name: "db", SizeGB: 1})
	if err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		t.Helper()
		f, err := os.OpenFile(data, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte(s), 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	read := func() string {
		t.Helper()
		f, err := os.Open(data)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 8)
		f.ReadAt(b, 1<<20)
		return string(b)
	}
	write("10.11-ok")
	spec := compute.ServerSpec{InstanceID: id, Name: "db", Image: oldImg, RAMMB: 256, VCPUs: 1, Volume: vol,
		ConfigDrive: map[string][]byte{"strata/bootstrap.json": []byte(`{"token":"old"}`)}, Ports: []int{3306}}
	srv, err := d.CreateServer(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	upgrade := spec
	upgrade.Image, upgrade.KeepVolume = newImg, true
	if _, err := d.RebuildServer(ctx, srv, upgrade); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(oldData)
	if err != nil || st.Size() != 1<<30 {
		t.Fatalf("the data volume's copy: %v, %v", st, err)
	}
	write("11.8-bad") // the new guest's upgrade step, half done
	// The step repeated (a controller killed after it booted) keeps the
	// first copy, the data as the old guest left it.
	if _, err := d.RebuildServer(ctx, srv, upgrade); err != nil {
		t.Fatal(err)
	}
	if err := d.RevertServer(ctx, srv, nil); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "10.11-ok" {
		t.Fatalf("the data volume after the revert holds %q, want the old guest's", got)
	}
	if _, err := os.Stat(oldData); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the copy after the revert: %v", err)
	}
	if got := backingOf(t, filepath.Join(inst, "root.qcow2")); got != oldImg.Location || !qemuRunning(t, id) {
		t.Fatalf("after the revert: root on %s, running %v", got, qemuRunning(t, id))
	}

	// An upgrade that works: the new data stays, the copy goes.
	if _, err := d.RebuildServer(ctx, srv, upgrade); err != nil {
		t.Fatal(err)
	}
	write("11.8-ok!")
	if err := d.DropOldServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(oldData); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the copy after dropping the old server: %v", err)
	}
	if got := read(); got != "11.8-ok!" {
		t.Fatalf("the data volume after dropping the old server holds %q", got)
	}
	if err := d.DeleteServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
}

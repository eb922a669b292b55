package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"

	"strata/controller/compute"
)

var _ compute.FlavorResizer = (*Driver)(nil)

// ResizeServer gives the instance's VM another flavor: it powers the VM
// off (ACPI, then kill after StopTimeout), records the new memory and
// CPUs in server.json, grows the root disk when the flavor's is larger
// (the growroot element grows / into it at boot; a smaller one is
// refused before anything stops), and starts the VM again. While it runs,
// recovery leaves the VM to it. Called again after a crash it converges:
// a VM already running with the flavor is left alone, a stopped one is
// started.
func (d *Driver) ResizeServer(ctx context.Context, srv compute.Server, f compute.Flavor) error {
	if err := checkID(srv.ID); err != nil {
		return err
	}
	if f.RAMMB < 64 || f.VCPUs < 1 || f.RootDiskGB < 0 {
		return fmt.Errorf("%w: flavor with %d MB of RAM, %d CPUs and a %d GB root disk", compute.ErrInvalid, f.RAMMB, f.VCPUs, f.RootDiskGB)
	}
	p := d.paths(srv.ID)
	st, err := d.loadState(p)
	if err != nil {
		return fmt.Errorf("server %s: %w", srv.ID, err)
	}
	size, err := d.virtualSize(ctx, p.root)
	if err != nil {
		return fmt.Errorf("root disk of %s: %w", srv.ID, err)
	}
	want := int64(f.RootDiskGB) * gib
	if f.RootDiskGB > 0 && want < size {
		return fmt.Errorf("%w: the flavor's root disk (%d GB) is smaller than the instance's (%.1f GB)", compute.ErrInvalid, f.RootDiskGB, float64(size)/float64(gib))
	}
	_, running := d.pidOf(srv.ID)
	if running && st.RAMMB == f.RAMMB && st.VCPUs == f.VCPUs && (f.RootDiskGB == 0 || want == size) {
		return nil // resized by an earlier run
	}
	done, err := d.swap(srv.ID)
	if err != nil {
		return err
	}
	defer done()
	if err := d.stop(srv.ID, d.cfg.StopTimeout); err != nil {
		d.log.Warn("VM did not power off cleanly before its resize", "instance", srv.ID, "err", err)
	}
	if f.RootDiskGB > 0 && want > size {
		out, err := exec.CommandContext(ctx, d.cfg.QemuImg, "resize", "-q", "-f", "qcow2", p.root, strconv.FormatInt(want, 10)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("growing the root disk of %s: %v: %s", srv.ID, err, bytes.TrimSpace(out))
		}
	}
	old := fmt.Sprintf("%d MB, %d CPUs", st.RAMMB, st.VCPUs)
	st.RAMMB, st.VCPUs = f.RAMMB, f.VCPUs
	if err := d.saveState(p, st); err != nil {
		return err
	}
	d.log.Info("VM resized", "instance", srv.ID, "from", old, "ram_mb", f.RAMMB, "vcpus", f.VCPUs, "root_gb", f.RootDiskGB)
	return d.start(srv.ID, p, st)
}

// virtualSize is the size of a qcow2 disk as its guest sees it (the
// instance's overlay: read without its lock, the VM may hold it).
func (d *Driver) virtualSize(ctx context.Context, path string) (int64, error) {
	out, err := exec.CommandContext(ctx, d.cfg.QemuImg, "info", "-U", "--output=json", path).Output()
	if err != nil {
		return 0, fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil || info.VirtualSize <= 0 {
		return 0, fmt.Errorf("qemu-img info %s: no virtual size (%v)", path, err)
	}
	return info.VirtualSize, nil
}

package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"

	"strata/builder/disk"
	"strata/controller/compute"
)

var _ compute.VolumeKeeper = (*Driver)(nil)

// KeepsVolume: RebuildServer copies data.raw aside with KeepVolume.
func (d *Driver) KeepsVolume() bool { return true }

// swap marks id's disks as being swapped until the returned func is
// called; a second swap of the same instance at once is refused.
func (d *Driver) swap(id string) (func(), error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.swapping[id] {
		return nil, fmt.Errorf("the root disk of %s is being swapped already", id)
	}
	d.swapping[id] = true
	return func() {
		d.mu.Lock()
		delete(d.swapping, id)
		d.mu.Unlock()
	}, nil
}

// The disks a rebuild sets aside until the new guest is known healthy.
// root.qcow2.old is the marker: while it exists the instance can roll back.
func (p paths) oldRoot() string        { return p.root + ".old" }
func (p paths) oldConfigDrive() string { return p.configDrive + ".old" }
func (p paths) oldData() string        { return p.data + ".old" }

// RebuildServer powers the VM off (ACPI, then kill after
// RebuildStopTimeout), copies data.raw to data.raw.old when spec.KeepVolume,
// sets root.qcow2 and config-drive.img aside as *.old — unless a rebuild
// set them aside already, whose new disk it then makes again — makes a
// new overlay on spec.Image and a new config drive, and boots. The data
// disk, address and ports stay.
func (d *Driver) RebuildServer(ctx context.Context, srv compute.Server, spec compute.ServerSpec) (compute.Server, error) {
	id := srv.ID
	if err := checkID(id); err != nil {
		return compute.Server{}, err
	}
	if spec.Image.Format != "qcow2" && spec.Image.Format != "raw" {
		return compute.Server{}, fmt.Errorf("%w: image format %q", compute.ErrInvalid, spec.Image.Format)
	}
	done, err := d.swap(id)
	if err != nil {
		return compute.Server{}, err
	}
	defer done()
	p := d.paths(id)
	st, err := d.loadState(p)
	if err != nil {
		return compute.Server{}, fmt.Errorf("rebuild server %s: %w", id, err)
	}
	if err := d.stop(id, d.cfg.RebuildStopTimeout); err != nil {
		d.log.Warn("VM did not power off cleanly before its rebuild", "instance", id, "err", err)
	}
	if _, err := os.Stat(p.oldRoot()); errors.Is(err, os.ErrNotExist) {
		if spec.KeepVolume {
			// The data volume's copy first, complete before it has its
			// name: root.qcow2.old says everything is aside.
			tmp := p.oldData() + ".tmp"
			os.Remove(tmp)
			if err := disk.CopySparse(ctx, p.data, tmp); err != nil {
				os.Remove(tmp)
				return compute.Server{}, fmt.Errorf("rebuild server %s: keeping a copy of the data volume: %w", id, err)
			}
			if err := os.Rename(tmp, p.oldData()); err != nil {
				return compute.Server{}, fmt.Errorf("rebuild server %s: keeping a copy of the data volume: %w", id, err)
			}
		}
		// Config drive first: root.qcow2.old says both are aside.
		if err := os.Rename(p.configDrive, p.oldConfigDrive()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return compute.Server{}, fmt.Errorf("rebuild server %s: keeping the old config drive: %w", id, err)
		}
		if err := os.Rename(p.root, p.oldRoot()); err != nil {
			return compute.Server{}, fmt.Errorf("rebuild server %s: keeping the old root disk: %w", id, err)
		}
		st.OldImage = st.Image
		if err := d.saveState(p, st); err != nil {
			return compute.Server{}, err
		}
		d.log.Info("old root disk set aside for the rebuild", "instance", id, "old_image", st.OldImage)
	} else if err != nil {
		return compute.Server{}, err
	} else if err := os.Remove(p.root); err != nil && !errors.Is(err, os.ErrNotExist) {
		// An earlier run's new disk: made again from the image asked for.
		return compute.Server{}, err
	}
	if err := d.makeRoot(ctx, p, spec); err != nil {
		return compute.Server{}, fmt.Errorf("rebuild server %s: %w", id, err)
	}
	if err := disk.WriteConfigDrive(ctx, p.configDrive, disk.LabelConfigDrive, spec.ConfigDrive); err != nil {
		return compute.Server{}, fmt.Errorf("config drive of %s: %w", id, err)
	}
	st.Image = spec.Image.Location
	if spec.RAMMB > 0 {
		st.RAMMB, st.VCPUs = spec.RAMMB, spec.VCPUs
	}
	if err := d.saveState(p, st); err != nil {
		return compute.Server{}, err
	}
	if err := d.start(id, p, st); err != nil {
		return compute.Server{}, err
	}
	return server(id, st), nil
}

// RevertServer stops the rebuilt VM, puts data.raw.old (if kept),
// config-drive.img.old and root.qcow2.old back and boots them. The old
// config drive was kept: configDrive is not needed.
func (d *Driver) RevertServer(ctx context.Context, srv compute.Server, _ map[string][]byte) error {
	id := srv.ID
	if err := checkID(id); err != nil {
		return err
	}
	done, err := d.swap(id)
	if err != nil {
		return err
	}
	defer done()
	p := d.paths(id)
	st, err := d.loadState(p)
	if err != nil {
		return fmt.Errorf("revert server %s: %w", id, err)
	}
	if _, err := os.Stat(p.oldRoot()); err == nil {
		// The new guest failed: no grace needed, its root disk goes.
		d.stop(id, 0)
		// Data and config drive first: root.qcow2.old stays the marker
		// until last.
		if err := os.Rename(p.oldData(), p.data); err == nil {
			d.log.Info("data volume put back as it was before the rebuild", "instance", id)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("revert server %s: restoring the data volume's copy: %w", id, err)
		}
		if err := os.Rename(p.oldConfigDrive(), p.configDrive); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("revert server %s: restoring the old config drive: %w", id, err)
		}
		if err := os.Rename(p.oldRoot(), p.root); err != nil {
			return fmt.Errorf("revert server %s: restoring the old root disk: %w", id, err)
		}
		if st.OldImage != "" {
			st.Image = st.OldImage
		}
		st.OldImage = ""
		if err := d.saveState(p, st); err != nil {
			return err
		}
		d.log.Info("rebuild reverted to the old root disk", "instance", id, "image", st.Image)
	} else if errors.Is(err, os.ErrNotExist) {
		// Nothing was set aside but, perhaps, the data volume's copy: the
		// new guest never ran, the data is as it was.
		if err := os.Remove(p.oldData()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	} else {
		return err
	}
	return d.start(id, p, st)
}

// DropOldServer removes the disks a rebuild set aside.
func (d *Driver) DropOldServer(ctx context.Context, srv compute.Server) error {
	id := srv.ID
	if err := checkID(id); err != nil {
		return err
	}
	p := d.paths(id)
	// Root last: while it exists a rollback is possible.
	for _, f := range []string{p.oldData(), p.oldData() + ".tmp", p.oldConfigDrive(), p.oldRoot()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("drop old disks of %s: %w", id, err)
		}
	}
	st, err := d.loadState(p)
	if err != nil {
		return fmt.Errorf("drop old disks of %s: %w", id, err)
	}
	if st.OldImage == "" {
		return nil
	}
	st.OldImage = ""
	return d.saveState(p, st)
}

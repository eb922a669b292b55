package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"

	bq "strata/builder/qemu"
	"strata/controller/compute"
)

// dataSerial is the data disk's virtio serial: the guest finds the volume
// at /dev/disk/by-id/virtio-strata-data whatever its bus order.
const dataSerial = "strata-data"

// dataDriveID is the qemu drive id of the data disk: the builder launcher
// names drives disk0 (boot), disk1, ... in order, and the data disk is
// always the first extra drive.
const dataDriveID = "disk1"

const gib = int64(1) << 30

// CreateVolume makes data.raw, a sparse file of the requested size.
func (d *Driver) CreateVolume(ctx context.Context, spec compute.VolumeSpec) (compute.Volume, error) {
	if err := checkID(spec.InstanceID); err != nil {
		return compute.Volume{}, err
	}
	if spec.SizeGB < 1 {
		return compute.Volume{}, fmt.Errorf("%w: volume size %d GB", compute.ErrInvalid, spec.SizeGB)
	}
	p := d.paths(spec.InstanceID)
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return compute.Volume{}, err
	}
	vol := compute.Volume{ID: spec.InstanceID, SizeGB: spec.SizeGB, GuestDevice: "/dev/disk/by-id/virtio-" + dataSerial}
	st, err := os.Stat(p.data)
	switch {
	case err == nil:
		// Made by an earlier, interrupted run of this step: keep it.
		vol.SizeGB = int(st.Size() / gib)
		return vol, nil
	case !errors.Is(err, os.ErrNotExist):
		return compute.Volume{}, err
	}
	tmp := p.data + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return compute.Volume{}, err
	}
	err = f.Truncate(int64(spec.SizeGB) * gib)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p.data)
	}
	if err != nil {
		os.Remove(tmp)
		return compute.Volume{}, fmt.Errorf("data volume of %s: %w", spec.InstanceID, err)
	}
	d.log.Info("data volume created", "instance", spec.InstanceID, "path", p.data, "size_gb", spec.SizeGB)
	return vol, nil
}

// ExtendVolume grows data.raw: through QMP block_resize while the VM runs
// (the guest sees the new capacity at once), by truncation otherwise.
func (d *Driver) ExtendVolume(ctx context.Context, srv compute.Server, vol compute.Volume, sizeGB int) (compute.Volume, error) {
	if err := checkID(vol.ID); err != nil {
		return vol, err
	}
	p := d.paths(vol.ID)
	st, err := os.Stat(p.data)
	if err != nil {
		return vol, fmt.Errorf("data volume of %s: %w", vol.ID, err)
	}
	want := int64(sizeGB) * gib
	switch {
	case st.Size() == want:
		vol.SizeGB = sizeGB
		return vol, nil // done by an earlier run of this step
	case st.Size() > want:
		return vol, fmt.Errorf("%w: volume of %s is %d GB; it can only grow", compute.ErrInvalid, vol.ID, st.Size()/gib)
	}
	pid, running := d.pidOf(vol.ID)
	if running {
		q, err := bq.DialQMP(bq.SocketPath(pid, ctlSocket))
		if err != nil {
			return vol, fmt.Errorf("resize volume of %s: %w", vol.ID, err)
		}
		defer q.Close()
		if _, err := q.Execute("block_resize", map[string]any{"device": dataDriveID, "size": want}); err != nil {
			return vol, fmt.Errorf("resize volume of %s: %w", vol.ID, err)
		}
	} else if err := os.Truncate(p.data, want); err != nil {
		return vol, fmt.Errorf("resize volume of %s: %w", vol.ID, err)
	}
	d.log.Info("data volume extended", "instance", vol.ID, "size_gb", sizeGB, "live", running)
	vol.SizeGB = sizeGB
	return vol, nil
}

// DeleteVolume removes data.raw (and the instance directory once empty).
func (d *Driver) DeleteVolume(ctx context.Context, vol compute.Volume) error {
	if err := checkID(vol.ID); err != nil {
		return err
	}
	if _, running := d.pidOf(vol.ID); running {
		return fmt.Errorf("volume of %s is attached to a running VM; delete the server first", vol.ID)
	}
	p := d.paths(vol.ID)
	for _, f := range []string{p.data, p.data + ".tmp"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.Remove(p.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		if entries, _ := os.ReadDir(p.dir); len(entries) > 0 {
			return nil // the server's files are still there; DeleteServer removes the dir
		}
		return err
	}
	return nil
}

// VolumeSize is data.raw's size in whole GB.
func (d *Driver) VolumeSize(ctx context.Context, vol compute.Volume) (int, error) {
	if err := checkID(vol.ID); err != nil {
		return 0, err
	}
	st, err := os.Stat(d.paths(vol.ID).data)
	if err != nil {
		return 0, fmt.Errorf("data volume of %s: %w", vol.ID, err)
	}
	return int(st.Size() / gib), nil
}

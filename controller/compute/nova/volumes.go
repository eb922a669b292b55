package nova

import (
	"context"
	"fmt"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"

	"strata/controller/compute"
)

// guestDevice is where a Cinder volume appears in a KVM guest: Nova sets
// the virtio serial to the volume id, which virtio-blk cuts at 20 bytes.
func guestDevice(volumeID string) string {
	serial := volumeID
	if len(serial) > 20 {
		serial = serial[:20]
	}
	return "/dev/disk/by-id/virtio-" + serial
}

func toVolume(v volumes.Volume) compute.Volume {
	return compute.Volume{ID: v.ID, SizeGB: v.Size, GuestDevice: guestDevice(v.ID)}
}

// findVolume returns the instance's volume, if there is one.
func (d *Driver) findVolume(ctx context.Context, instanceID string) (*volumes.Volume, error) {
	pages, err := volumes.List(d.volume, volumes.ListOpts{Name: name(instanceID)}).AllPages(ctx)
	if err != nil {
		return nil, serviceErr("cinder", "listing volumes", err)
	}
	all, err := volumes.ExtractVolumes(pages)
	if err != nil {
		return nil, serviceErr("cinder", "listing volumes", err)
	}
	for i := range all {
		if all[i].Name == name(instanceID) && all[i].Status != "deleting" {
			return &all[i], nil
		}
	}
	return nil, nil
}

// CreateVolume makes the data volume and waits until it is available. A
// volume that ends in error is deleted again, so a retry starts clean.
func (d *Driver) CreateVolume(ctx context.Context, spec compute.VolumeSpec) (compute.Volume, error) {
	if err := checkID(spec.InstanceID); err != nil {
		return compute.Volume{}, err
	}
	if spec.SizeGB < 1 {
		return compute.Volume{}, fmt.Errorf("%w: volume size %d GB", compute.ErrInvalid, spec.SizeGB)
	}
	v, err := d.findVolume(ctx, spec.InstanceID)
	if err != nil {
		return compute.Volume{}, err
	}
	if v == nil {
		v, err = volumes.Create(ctx, d.volume, volumes.CreateOpts{Name: name(spec.InstanceID), Size: spec.SizeGB,
			VolumeType: d.cfg.VolumeType, AvailabilityZone: zoneOr(spec.AvailabilityZone, d.cfg.AvailabilityZone),
			Description: "strata data volume of instance " + spec.InstanceID,
			Metadata:    map[string]string{"strata_instance": spec.InstanceID}}, nil).Extract()
		if err != nil {
			return compute.Volume{}, serviceErr("cinder", "creating the data volume", err)
		}
		d.log.Info("volume created", "instance", spec.InstanceID, "volume", v.ID, "gb", spec.SizeGB)
	}
	id := v.ID
	err = d.wait(ctx, "cinder volume "+id, func() (bool, error) {
		cur, err := volumes.Get(ctx, d.volume, id).Extract()
		if err != nil {
			return false, serviceErr("cinder", "reading volume "+id, err)
		}
		v = cur
		switch cur.Status {
		case "available", "in-use":
			return true, nil
		case "error", "error_extending":
			return false, fmt.Errorf("cinder: volume %s went to status %q", id, cur.Status)
		}
		return false, nil
	})
	if err != nil {
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		if derr := d.deleteVolume(cctx, id); derr != nil {
			return compute.Volume{}, fmt.Errorf("%w; deleting it failed too: %v", err, derr)
		}
		d.log.Warn("volume failed and was deleted", "instance", spec.InstanceID, "volume", id, "err", err)
		return compute.Volume{}, fmt.Errorf("%w (the volume was deleted)", err)
	}
	return toVolume(*v), nil
}

// ExtendVolume grows an attached volume (Cinder 3.42: online extend).
func (d *Driver) ExtendVolume(ctx context.Context, srv compute.Server, vol compute.Volume, sizeGB int) (compute.Volume, error) {
	cur, err := volumes.Get(ctx, d.volume, vol.ID).Extract()
	if err != nil {
		return compute.Volume{}, serviceErr("cinder", "reading volume "+vol.ID, err)
	}
	if sizeGB < cur.Size {
		return compute.Volume{}, fmt.Errorf("%w: volume %s is %d GB; it cannot shrink to %d GB", compute.ErrInvalid, vol.ID, cur.Size, sizeGB)
	}
	if sizeGB > cur.Size {
		c := *d.volume
		c.Microversion = "3.42"
		if c.Type == "" {
			c.Type = "block-storage"
		}
		if err := volumes.ExtendSize(ctx, &c, vol.ID, volumes.ExtendSizeOpts{NewSize: sizeGB}).ExtractErr(); err != nil {
			return compute.Volume{}, serviceErr("cinder", fmt.Sprintf("extending volume %s to %d GB", vol.ID, sizeGB), err)
		}
	}
	err = d.wait(ctx, "extending cinder volume "+vol.ID, func() (bool, error) {
		cur, err = volumes.Get(ctx, d.volume, vol.ID).Extract()
		if err != nil {
			return false, serviceErr("cinder", "reading volume "+vol.ID, err)
		}
		if cur.Status == "error_extending" {
			return false, fmt.Errorf("cinder: extending volume %s failed (status error_extending)", vol.ID)
		}
		return cur.Size >= sizeGB && (cur.Status == "in-use" || cur.Status == "available"), nil
	})
	if err != nil {
		return compute.Volume{}, err
	}
	return toVolume(*cur), nil
}

// DeleteVolume deletes the volume once Nova has let go of it.
func (d *Driver) DeleteVolume(ctx context.Context, vol compute.Volume) error {
	return d.deleteVolume(ctx, vol.ID)
}

func (d *Driver) deleteVolume(ctx context.Context, id string) error {
	return d.wait(ctx, "deleting cinder volume "+id, func() (bool, error) {
		cur, err := volumes.Get(ctx, d.volume, id).Extract()
		if gophercloud.ResponseCodeIs(err, 404) {
			return true, nil
		}
		if err != nil {
			return false, serviceErr("cinder", "reading volume "+id, err)
		}
		switch cur.Status {
		case "deleting":
			return false, nil
		case "in-use", "attaching", "detaching", "creating", "extending", "reserved":
			return false, nil // wait for Nova or Cinder to finish with it
		}
		err = volumes.Delete(ctx, d.volume, id, volumes.DeleteOpts{}).ExtractErr()
		if err != nil && !gophercloud.ResponseCodeIs(err, 404) {
			return false, serviceErr("cinder", "deleting volume "+id, err)
		}
		return false, nil // gone on the next look
	})
}

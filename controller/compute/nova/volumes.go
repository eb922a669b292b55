package nova

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/instanceactions"

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
			return false, fmt.Errorf("cinder: volume %s went to status %q%s", id, cur.Status, d.volumeReason(ctx, id))
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
	// Cinder's extend of an attached volume ends with its volume-extended
	// event to Nova, which resizes the guest's disk after Cinder already
	// says the new size: the guest sees it only once Nova's extend_volume
	// action has finished. The actions before the request are not ours.
	attached := cur.Status == "in-use" && srv.ID != ""
	var before map[string]bool
	if attached && sizeGB > cur.Size {
		if before, err = d.extendActions(ctx, srv.ID); err != nil {
			return compute.Volume{}, err
		}
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
			return false, fmt.Errorf("cinder: extending volume %s failed (status error_extending)%s", vol.ID, d.volumeReason(ctx, vol.ID))
		}
		return cur.Size >= sizeGB && (cur.Status == "in-use" || cur.Status == "available"), nil
	})
	if err != nil {
		return compute.Volume{}, err
	}
	if attached {
		if err := d.awaitNovaExtend(ctx, srv.ID, vol.ID, sizeGB, before); err != nil {
			return compute.Volume{}, err
		}
	}
	return toVolume(*cur), nil
}

// extendActions are the request ids of the server's extend_volume
// instance actions.
func (d *Driver) extendActions(ctx context.Context, serverID string) (map[string]bool, error) {
	pages, err := instanceactions.List(d.compute, serverID, nil).AllPages(ctx)
	if err != nil {
		return nil, serviceErr("nova", "listing the actions of server "+serverID, err)
	}
	all, err := instanceactions.ExtractInstanceActions(pages)
	if err != nil {
		return nil, serviceErr("nova", "listing the actions of server "+serverID, err)
	}
	out := map[string]bool{}
	for _, a := range all {
		if a.Action == "extend_volume" {
			out[a.RequestID] = true
		}
	}
	return out, nil
}

// awaitNovaExtend waits until Nova has resized the server's disk: an
// extend_volume action not in before (nil: any, the request was made by
// an earlier call) whose compute_extend_volume event has finished.
func (d *Driver) awaitNovaExtend(ctx context.Context, serverID, volumeID string, sizeGB int, before map[string]bool) error {
	what := fmt.Sprintf("nova resizing the disk of server %s to volume %s's %d GB (Cinder's volume-extended event starts it)", serverID, volumeID, sizeGB)
	return d.wait(ctx, what, func() (bool, error) {
		now, err := d.extendActions(ctx, serverID)
		if err != nil {
			return false, err
		}
		pending := false
		for id := range now {
			if before != nil && before[id] {
				continue
			}
			a, err := instanceactions.Get(ctx, d.compute, serverID, id).Extract()
			if err != nil {
				return false, serviceErr("nova", "reading action "+id+" of server "+serverID, err)
			}
			if a.Events == nil || len(*a.Events) == 0 {
				pending = true
				continue
			}
			for _, e := range *a.Events {
				switch {
				case e.FinishTime.IsZero():
					pending = true
				case e.Result == "Error":
					return false, fmt.Errorf("nova: resizing the disk of server %s after the extend of volume %s failed (action %s, event %s); see nova-compute's log", serverID, volumeID, id, e.Event)
				}
			}
		}
		if before == nil {
			return !pending, nil // nothing ours to wait for but what runs
		}
		return len(now) > len(before) && !pending, nil
	})
}

// volumeReason is what Cinder told the user about the volume (its user
// messages, API 3.5: a volume in error carries no fault of its own), as
// ": ..." to append to an error, or "" when it said nothing or the lookup
// failed (that failure is logged, not returned: the error is the volume's).
func (d *Driver) volumeReason(ctx context.Context, id string) string {
	c := *d.volume
	c.Microversion = "3.5"
	if c.Type == "" {
		c.Type = "block-storage"
	}
	var body struct {
		Messages []struct {
			ResourceUUID string `json:"resource_uuid"`
			Level        string `json:"message_level"`
			Text         string `json:"user_message"`
			Created      string `json:"created_at"`
		} `json:"messages"`
	}
	u := c.ServiceURL("messages") + "?resource_uuid=" + url.QueryEscape(id) + "&sort=created_at:asc"
	if _, err := c.Get(ctx, u, &body, nil); err != nil {
		d.log.Warn("cinder: reading the messages of a failed volume", "volume", id, "err", err)
		return ""
	}
	var texts []string
	for _, m := range body.Messages {
		if m.ResourceUUID == id && m.Text != "" && !slices.Contains(texts, m.Text) {
			texts = append(texts, m.Text)
		}
	}
	if len(texts) == 0 {
		return ""
	}
	return ": " + strings.Join(texts, "; ")
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

package nova

import (
	"context"
	"fmt"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"strata/controller/compute"
)

// Rebuild on Nova: Nova's own rebuild replaces the server's root disk by a
// fresh one from the new image and keeps its id, ports and attached
// volumes (the data volume). It keeps nothing of the old root disk, where
// the old agent's key lives; so before the first rebuild the server is
// stopped (the guest's services stop and flush) and its root disk is saved
// as a private Glance snapshot, strata-<instance id>-rollback. A rollback
// rebuilds the server onto that snapshot, with the old guest's bootstrap
// on the config drive; the finished rebuild deletes it.
//
// The snapshot is the marker, as root.qcow2.old is on the local driver:
// while it exists the instance can roll back. Nova is asked to rebuild
// only once the snapshot is active, so a snapshot that failed (killed)
// means the root disk was never replaced.
//
// Not done: a copy of the data volume (ServerSpec.KeepVolume), which a
// datastore upgrade needs: the driver is not a compute.VolumeKeeper.

var _ compute.Rebuilder = (*Driver)(nil)

// rollbackName is the Glance name of the instance's old root disk.
func rollbackName(instanceID string) string { return name(instanceID) + "-rollback" }

// given up is a snapshot Glance will never make active.
func givenUp(st images.ImageStatus) bool {
	return st == images.ImageStatusKilled || st == images.ImageStatusDeleted || st == images.ImageStatusPendingDelete
}

// rollbackImage finds the snapshot a rebuild of the instance keeps, nil if
// there is none. One that Glance gave up (killed, deleted) is deleted and
// not returned.
func (d *Driver) rollbackImage(ctx context.Context, instanceID string) (*images.Image, error) {
	pages, err := images.List(d.image, images.ListOpts{Name: rollbackName(instanceID)}).AllPages(ctx)
	if err != nil {
		return nil, serviceErr("glance", "listing images", err)
	}
	all, err := images.ExtractImages(pages)
	if err != nil {
		return nil, serviceErr("glance", "listing images", err)
	}
	var out *images.Image
	for i := range all {
		img := &all[i]
		if img.Name != rollbackName(instanceID) {
			continue
		}
		if givenUp(img.Status) {
			d.log.Warn("glance: a rebuild's snapshot of the old root disk failed; deleting it", "instance", instanceID, "image", img.ID, "status", img.Status)
			if err := d.deleteImage(ctx, img.ID); err != nil {
				return nil, err
			}
			continue
		}
		if out != nil {
			return nil, fmt.Errorf("glance: two images named %s (%s, %s): delete the one that is not the old root disk of instance %s", rollbackName(instanceID), out.ID, img.ID, instanceID)
		}
		out = img
	}
	return out, nil
}

// awaitImage waits until the snapshot is active; one Glance gives up is
// deleted and the wait fails.
func (d *Driver) awaitImage(ctx context.Context, id string) error {
	return d.wait(ctx, "glance image "+id, func() (bool, error) {
		img, err := images.Get(ctx, d.image, id).Extract()
		if err != nil {
			return false, serviceErr("glance", "reading image "+id, err)
		}
		if givenUp(img.Status) {
			if err := d.deleteImage(ctx, id); err != nil {
				return false, err
			}
			return false, fmt.Errorf("glance: the snapshot %s of the old root disk ended %s (it was deleted; the root disk was not touched)", id, img.Status)
		}
		return img.Status == images.ImageStatusActive, nil
	})
}

func (d *Driver) deleteImage(ctx context.Context, id string) error {
	err := images.Delete(ctx, d.image, id).ExtractErr()
	if err != nil && !gophercloud.ResponseCodeIs(err, 404) {
		return serviceErr("glance", "deleting image "+id, err)
	}
	return nil
}

// stopServer stops the server (Nova shuts the guest down through ACPI,
// forcing it off after its shutdown timeout) and waits until it is
// SHUTOFF.
func (d *Driver) stopServer(ctx context.Context, id string) error {
	err := servers.Stop(ctx, d.compute, id).ExtractErr()
	if err != nil && !gophercloud.ResponseCodeIs(err, 409) { // 409: stopped, or stopping
		return serviceErr("nova", "stopping server "+id, err)
	}
	return d.wait(ctx, "nova server "+id+" stopping", func() (bool, error) {
		cur, err := servers.Get(ctx, d.compute, id).Extract()
		if err != nil {
			return false, serviceErr("nova", "reading server "+id, err)
		}
		if cur.Status == "ERROR" {
			return false, fmt.Errorf("nova: server %s went to ERROR stopping: %s", id, faultText(d.faultOf(ctx, cur)))
		}
		if cur.Status == "ACTIVE" && cur.TaskState == "" {
			// A stop Nova answered 409 to while another task ran.
			if err := servers.Stop(ctx, d.compute, id).ExtractErr(); err != nil && !gophercloud.ResponseCodeIs(err, 409) {
				return false, serviceErr("nova", "stopping server "+id, err)
			}
		}
		return cur.Status == "SHUTOFF" && cur.TaskState == "", nil
	})
}

// rebuildOnto asks Nova to rebuild the server onto imageID with the
// config drive's files, waits until it has, and starts it (Nova leaves a
// server that was stopped stopped). Nova's refusal (400: an image the
// flavor's disk cannot hold, one that is gone) wraps ErrInvalid.
func (d *Driver) rebuildOnto(ctx context.Context, srv compute.Server, imageID string, drive map[string][]byte, ports []int) (compute.Server, error) {
	id := srv.ID
	err := d.wait(ctx, "nova server "+id+" rebuild accepted", func() (bool, error) {
		err := servers.Rebuild(ctx, d.compute, id, servers.RebuildOpts{ImageRef: imageID, Personality: personality(drive)}).Err
		switch {
		case err == nil:
			return true, nil
		case gophercloud.ResponseCodeIs(err, 409):
			return false, nil // a task (the stop) still runs
		case gophercloud.ResponseCodeIs(err, 400), gophercloud.ResponseCodeIs(err, 403):
			return false, fmt.Errorf("%w: %w", compute.ErrInvalid, serviceErr("nova", fmt.Sprintf("rebuilding server %s onto image %s", id, imageID), err))
		}
		return false, serviceErr("nova", fmt.Sprintf("rebuilding server %s onto image %s", id, imageID), err)
	})
	if err != nil {
		return compute.Server{}, err
	}
	d.log.Info("server rebuild asked", "server", id, "image", imageID)
	err = d.wait(ctx, "nova server "+id+" rebuilding onto "+imageID, func() (bool, error) {
		cur, err := servers.Get(ctx, d.compute, id).Extract()
		if err != nil {
			return false, serviceErr("nova", "reading server "+id, err)
		}
		switch {
		case cur.Status == "ERROR":
			return false, fmt.Errorf("nova: server %s went to ERROR rebuilding onto image %s: %s", id, imageID, faultText(d.faultOf(ctx, cur)))
		case cur.TaskState != "" || cur.Status == "REBUILD":
			return false, nil
		case cur.Image["id"] != imageID:
			// Not started yet (the API answers before the task state is set).
			return false, nil
		case cur.Status == "SHUTOFF":
			return false, d.start(ctx, id)
		}
		return cur.Status == "ACTIVE", nil
	})
	if err != nil {
		return compute.Server{}, err
	}
	out, err := d.awaitActive(ctx, id, ports, srv.Refs[refSecurityGroup])
	if err != nil {
		return compute.Server{}, err
	}
	for k, v := range srv.Refs {
		out.Refs[k] = v
	}
	return out, nil
}

// RebuildServer stops the server and snapshots its root disk — on the
// first call only: a repeated call finds the snapshot (waiting for it if
// Glance is still saving it) — then has Nova rebuild it onto spec.Image
// with spec.ConfigDrive's files, and starts it. The data volume stays
// attached; the server's id and addresses stay.
func (d *Driver) RebuildServer(ctx context.Context, srv compute.Server, spec compute.ServerSpec) (compute.Server, error) {
	if err := checkID(spec.InstanceID); err != nil {
		return compute.Server{}, err
	}
	if srv.ID == "" || spec.Image.Location == "" {
		return compute.Server{}, fmt.Errorf("%w: a rebuild needs the server and a Glance image id", compute.ErrInvalid)
	}
	if spec.KeepVolume {
		return compute.Server{}, fmt.Errorf("%w: the nova driver cannot keep a copy of the data volume through a rebuild", compute.ErrInvalid)
	}
	if d.image == nil {
		return compute.Server{}, fmt.Errorf("%w: a rebuild on nova keeps the old root disk as a Glance snapshot, and the catalog has no image service", compute.ErrInvalid)
	}
	snap, err := d.rollbackImage(ctx, spec.InstanceID)
	if err != nil {
		return compute.Server{}, err
	}
	snapID := ""
	if snap != nil {
		snapID = snap.ID
		d.log.Info("old root disk already kept for the rebuild", "instance", spec.InstanceID, "snapshot", snapID, "status", snap.Status)
	} else {
		cur, err := servers.Get(ctx, d.compute, srv.ID).Extract()
		if err != nil {
			return compute.Server{}, serviceErr("nova", "reading server "+srv.ID, err)
		}
		oldImage, _ := cur.Image["id"].(string)
		if err := d.stopServer(ctx, srv.ID); err != nil {
			return compute.Server{}, err
		}
		snapID, err = servers.CreateImage(ctx, d.compute, srv.ID, servers.CreateImageOpts{Name: rollbackName(spec.InstanceID),
			Metadata: map[string]string{"strata_rollback_of": spec.InstanceID, "strata_old_image": oldImage}}).ExtractImageID()
		if err != nil {
			return compute.Server{}, serviceErr("nova", "snapshotting the root disk of server "+srv.ID, err)
		}
		d.log.Info("old root disk being kept as a snapshot for the rebuild", "instance", spec.InstanceID, "snapshot", snapID, "old_image", oldImage)
	}
	if err := d.awaitImage(ctx, snapID); err != nil {
		return compute.Server{}, err
	}
	return d.rebuildOnto(ctx, srv, spec.Image.Location, spec.ConfigDrive, spec.Ports)
}

// RevertServer rebuilds the server onto the snapshot of its old root
// disk, with configDrive (the old guest's bootstrap: Nova writes the
// drive anew), starts it, and deletes the snapshot. With no snapshot
// (reverted already, or never taken) it only makes sure the server runs;
// with one Glance gave up, the root disk was never replaced.
func (d *Driver) RevertServer(ctx context.Context, srv compute.Server, configDrive map[string][]byte) error {
	if srv.ID == "" {
		return fmt.Errorf("%w: no server to revert", compute.ErrInvalid)
	}
	instanceID, err := d.instanceOf(ctx, srv.ID)
	if err != nil {
		return err
	}
	var snap *images.Image
	if d.image != nil {
		if snap, err = d.rollbackImage(ctx, instanceID); err != nil {
			return err
		}
	}
	if snap != nil {
		err := d.awaitImage(ctx, snap.ID)
		if err == nil {
			// A revert cut short after Nova rebuilt the server onto the
			// snapshot only has the snapshot to delete.
			cur, err := servers.Get(ctx, d.compute, srv.ID).Extract()
			if err != nil {
				return serviceErr("nova", "reading server "+srv.ID, err)
			}
			if cur.Image["id"] == snap.ID && cur.TaskState == "" && (cur.Status == "ACTIVE" || cur.Status == "SHUTOFF") {
				d.log.Info("the server is on the snapshot of its old root disk already", "instance", instanceID, "snapshot", snap.ID)
				if err := d.ensureRunning(ctx, srv); err != nil {
					return err
				}
				return d.deleteImage(ctx, snap.ID)
			}
			if _, err := d.rebuildOnto(ctx, srv, snap.ID, configDrive, nil); err != nil {
				return fmt.Errorf("revert server %s onto the snapshot of its old root disk: %w", srv.ID, err)
			}
			d.log.Info("rebuild reverted to the old root disk", "instance", instanceID, "snapshot", snap.ID)
			return d.deleteImage(ctx, snap.ID)
		}
		d.log.Warn("nothing to revert to: the snapshot failed before the root disk was replaced", "instance", instanceID, "err", err)
	}
	return d.ensureRunning(ctx, srv)
}

// ensureRunning starts a stopped server and waits until it is ACTIVE.
func (d *Driver) ensureRunning(ctx context.Context, srv compute.Server) error {
	if err := d.StartServer(ctx, srv); err != nil {
		return err
	}
	_, err := d.awaitActive(ctx, srv.ID, nil, "")
	return err
}

// DropOldServer deletes the snapshot of the old root disk.
func (d *Driver) DropOldServer(ctx context.Context, srv compute.Server) error {
	if d.image == nil {
		return nil
	}
	instanceID, err := d.instanceOf(ctx, srv.ID)
	if err != nil {
		return err
	}
	return d.dropRollbackImage(ctx, instanceID)
}

func (d *Driver) dropRollbackImage(ctx context.Context, instanceID string) error {
	snap, err := d.rollbackImage(ctx, instanceID)
	if err != nil || snap == nil {
		return err
	}
	d.log.Info("snapshot of the old root disk deleted", "instance", instanceID, "snapshot", snap.ID)
	return d.deleteImage(ctx, snap.ID)
}

// instanceOf is the strata instance a server was made for (its
// strata_instance metadata).
func (d *Driver) instanceOf(ctx context.Context, serverID string) (string, error) {
	cur, err := servers.Get(ctx, d.compute, serverID).Extract()
	if err != nil {
		return "", serviceErr("nova", "reading server "+serverID, err)
	}
	return instanceOfServer(cur)
}

// instanceOfServer is the instance a server's strata_instance metadata
// names.
func instanceOfServer(cur *servers.Server) (string, error) {
	id := cur.Metadata["strata_instance"]
	if checkID(id) != nil {
		return "", fmt.Errorf("nova: server %s has no strata_instance metadata naming its instance (it has %q)", cur.ID, id)
	}
	return id, nil
}

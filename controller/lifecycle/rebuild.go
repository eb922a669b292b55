package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/chaos"
	"strata/controller/compute"
	"strata/controller/imagestore"
	"strata/controller/instances"
	"strata/controller/registry"
	"strata/controller/store"
	"strata/controller/tasks"
)

// The rebuild task moves an instance to a new image keeping its data
// volume; docs/controller.md ("Tasks", rebuild) has its steps and what
// each persists. In short: keys → server → prepare → wait → finish, or
// from wait (and from server, when the image went bad meanwhile) to
// rollback → rollback-wait. A datastore version upgrade is this task with
// a target version: server also switches the instance to the target
// version and keeps a copy of the data volume, and wait is followed by
// upgrade → upgrade-wait (the datastore's upgrade step in the new guest);
// a rollback puts the old version, root disk and data back.

// rebuildPayload is the rebuild task's state between steps.
type rebuildPayload struct {
	ImageID string `json:"image_id"`
	// OldKeys are the agent keys enrolled before the rebuild (public
	// keys), revoked in step server and restored by a rollback.
	OldKeys   []agentendpoint.EnrolledKey `json:"old_keys,omitempty"`
	KeysSaved bool                        `json:"keys_saved,omitempty"`
	// Since is when the new server was booted: its agent's reports and
	// the boot timeout count from then.
	Since        time.Time `json:"since,omitzero"`
	ConfigDigest string    `json:"config_digest,omitempty"`
	// PrepareArgs are the new guest's prepare arguments (no secrets: the
	// flavor's memory, the auth plugin, the group's values), stored
	// before they are queued.
	PrepareArgs json.RawMessage `json:"prepare_args,omitempty"`
	// Reason and Details say why the rebuild rolls back; RollbackSince is
	// when the old disk was booted again.
	Reason        string    `json:"reason,omitempty"`
	Details       string    `json:"details,omitempty"`
	RollbackSince time.Time `json:"rollback_since,omitzero"`
	// TargetVersionID, for an upgrade, is the version the instance moves
	// to from OldVersionID; Upgraded is what the upgrade step reported.
	TargetVersionID string              `json:"target_version_id,omitempty"`
	OldVersionID    string              `json:"old_version_id,omitempty"`
	Upgraded        *wire.UpgradeResult `json:"upgraded,omitempty"`
	// RelinkPassword is a rebuilt replica's new replication password,
	// from "relink" until "relinked" queued the start that carries it;
	// RelinkDeadline bounds waiting for the restored link to run.
	RelinkPassword string    `json:"relink_password,omitempty"`
	RelinkDeadline time.Time `json:"relink_deadline,omitzero"`
}

func rebuildPrepareOpID(taskID string) string { return "rebuild-prepare-" + taskID }
func relinkOpID(taskID, what string) string   { return "rebuild-relink-" + what + "-" + taskID }
func upgradeOpID(taskID string) string        { return "upgrade-datastore-" + taskID }

// Rebuild moves the instance onto imageID, keeping its data volume
// (Trove's management rebuild): a new root disk from the image, a new
// agent enrolled with a new one-time token that adopts the data volume,
// the old root disk kept until the new agent has prepared, and rolled
// back to if it does not. Everything that can be checked is checked
// before anything is touched: no task in progress, ACTIVE or
// RESTART_REQUIRED, a driver that can rebuild, the image stored, intact
// (its checksum verified) and one of the instance's datastore.
//
// Without a compute driver (the controller host's CLI queues the task for
// the running controller) the driver's capability is checked by the task.
func (m *Manager) Rebuild(ctx context.Context, id, imageID string) error {
	if _, ok := m.Compute.(compute.Rebuilder); !ok && m.Compute != nil {
		return wrap(ErrUnprocessable, "the compute driver cannot rebuild servers")
	}
	if imageID == "" {
		return wrap(ErrBadRequest, "rebuild.image_id is required")
	}
	in, err := m.get(ctx, m.DB, "", id)
	if err != nil {
		return err
	}
	v, err := m.Registry.Version(ctx, in.DatastoreVersionID)
	if err != nil {
		return err
	}
	img, err := m.checkRebuildImage(ctx, v, imageID)
	if err != nil {
		return err
	}
	// The task's own deadline bounds its queued operation's arguments;
	// the steps count their timeouts from their own start.
	deadline := m.now().Add(3*v.BootTimeout + 10*time.Minute)
	err = m.startTask(ctx, "", id, instances.TaskRebuilding,
		tasks.New{Kind: KindRebuild, Step: "keys", Payload: rebuildPayload{ImageID: img.ID}, Deadline: deadline},
		func(in instances.Instance, status string) error {
			if in.Task != instances.TaskNone {
				return wrap(ErrUnprocessable, "cannot rebuild instance %s: task %s is in progress", in.ID, in.Task)
			}
			if err := requireStatus(in, status, "rebuild", instances.StatusActive, instances.StatusRestartRequired); err != nil {
				return err
			}
			_, okS := serverOf(in)
			_, okV := volumeOf(in)
			if !okS || !okV {
				return wrap(ErrUnprocessable, "cannot rebuild instance %s: it has no server or data volume", in.ID)
			}
			return nil
		})
	if err == nil {
		m.log().Info("instance rebuild queued", "instance", id, "image", img.ID, "datastore", v.DatastoreName, "version", v.Name)
	}
	return err
}

// Upgrade moves the instance to another version of its datastore
// (Trove's instance upgrade, PATCH datastore_version): a rebuild onto the
// target version's image, keeping a copy of the data volume, then the
// datastore's upgrade step run by the new agent (MariaDB:
// mariadb-upgrade). A failure at any step rolls the instance back to its
// old version, root disk and data. Only along an upgrade path the version
// registry declares, or to the instance's own version (onto its current
// image); refused, before anything is touched, for an instance moving to
// another version with a configuration group (its values were checked
// against the old version's rules), in a replication group, not ACTIVE,
// or busy.
func (m *Manager) Upgrade(ctx context.Context, project, id, target string) error {
	if _, ok := m.Compute.(compute.Rebuilder); !ok && m.Compute != nil {
		return wrap(ErrUnprocessable, "the compute driver cannot rebuild servers, which an upgrade needs")
	}
	if _, ok := m.Compute.(compute.VolumeKeeper); !ok && m.Compute != nil {
		return wrap(ErrUnprocessable, "the compute driver cannot keep a copy of the data volume through a rebuild, which an upgrade needs to roll back: create an instance of the target version from a backup of this one instead")
	}
	if target == "" {
		return wrap(ErrBadRequest, "instance.datastore_version: name the version to upgrade to")
	}
	in, err := m.get(ctx, m.DB, project, id)
	if err != nil {
		return err
	}
	from, err := m.Registry.Version(ctx, in.DatastoreVersionID)
	if err != nil {
		return err
	}
	// The instance's own version: a move onto the version's current image
	// (as Trove does; how a user takes a new guest image), no path needed.
	to := from
	if target != from.ID && target != from.Name {
		if to, err = m.Registry.UpgradeTarget(ctx, from.ID, target); err != nil {
			return err
		}
	}
	if !to.Active {
		return wrap(ErrBadRequest, "%s %s is not active: it takes no instances", to.DatastoreName, to.Name)
	}
	if to.ImageID == "" {
		return wrap(ErrUnprocessable, "%s %s has no image to upgrade onto", to.DatastoreName, to.Name)
	}
	img, err := m.checkRebuildImage(ctx, to, to.ImageID)
	if err != nil {
		return err
	}
	deadline := m.now().Add(3*to.BootTimeout + 10*time.Minute)
	err = m.startTask(ctx, project, id, instances.TaskUpgrading,
		tasks.New{Kind: KindRebuild, Step: "keys", Deadline: deadline,
			Payload: rebuildPayload{ImageID: img.ID, TargetVersionID: to.ID, OldVersionID: from.ID}},
		func(in instances.Instance, status string) error {
			if in.Task != instances.TaskNone {
				return wrap(ErrUnprocessable, "cannot upgrade instance %s: task %s is in progress", in.ID, in.Task)
			}
			if in.DatastoreVersionID != from.ID {
				return wrap(ErrUnprocessable, "cannot upgrade instance %s: its version changed meanwhile", in.ID)
			}
			if err := requireStatus(in, status, "upgrade", instances.StatusActive, instances.StatusRestartRequired); err != nil {
				return err
			}
			if in.ConfigurationID != "" && to.ID != from.ID {
				return wrap(ErrUnprocessable, "cannot upgrade instance %s: configuration group %s (of %s %s) is attached; detach it, upgrade, then attach a group of %s %s",
					in.ID, in.ConfigurationID, from.DatastoreName, from.Name, to.DatastoreName, to.Name)
			}
			_, okS := serverOf(in)
			_, okV := volumeOf(in)
			if !okS || !okV {
				return wrap(ErrUnprocessable, "cannot upgrade instance %s: it has no server or data volume", in.ID)
			}
			return nil
		},
		func(tx *store.Tx, in instances.Instance) error {
			if l, ok, err := instances.LinkOf(ctx, tx, in.ID); err != nil {
				return err
			} else if ok {
				return wrap(ErrUnprocessable, "cannot upgrade instance %s: it is a replica of %s; detach it first", in.ID, l.SourceID)
			}
			if rs, err := instances.ReplicasOf(ctx, tx, in.ID); err != nil {
				return err
			} else if len(rs) > 0 {
				return wrap(ErrUnprocessable, "cannot upgrade instance %s: it has %d replica(s); detach them first", in.ID, len(rs))
			}
			return nil
		})
	if err == nil {
		m.log().Info("instance upgrade queued", "instance", id, "datastore", from.DatastoreName, "from", from.Name, "to", to.Name, "image", img.ID)
	}
	return err
}

// checkRebuildImage refuses an image the instance cannot be rebuilt on:
// unknown, corrupt (checksum) or of another format, or not one of the
// instance's datastore and version — the image of a version of that
// datastore, or an image whose build properties name the version's
// manager and version.
func (m *Manager) checkRebuildImage(ctx context.Context, v registry.Version, imageID string) (imagestore.Image, error) {
	img, err := m.Images.Get(ctx, imageID)
	if errors.Is(err, imagestore.ErrNotFound) {
		return img, wrap(ErrNotFound, "image %q not found", show(imageID))
	}
	if err != nil {
		return img, err
	}
	if img.DiskFormat != "qcow2" && img.DiskFormat != "raw" {
		return img, wrap(ErrUnprocessable, "image %s has disk format %q; an instance boots qcow2 or raw", img.ID, img.DiskFormat)
	}
	users, err := m.Registry.VersionsUsingImage(ctx, img.ID)
	if err != nil {
		return img, err
	}
	ok := false
	for _, u := range users {
		if u.DatastoreID != v.DatastoreID {
			return img, wrap(ErrBadRequest, "image %s is the image of datastore %s %s, not of the instance's %s", img.ID, u.DatastoreName, u.Name, v.DatastoreName)
		}
		ok = ok || u.ID == v.ID
	}
	if mgr := img.Properties["strata_manager"]; mgr != "" {
		if mgr != v.Manager {
			return img, wrap(ErrBadRequest, "image %s was built for the %s manager, not the instance's %s", img.ID, mgr, v.Manager)
		}
		if ver := img.Properties["strata_datastore_version"]; ver != "" && ver != v.Name {
			return img, wrap(ErrBadRequest, "image %s was built for %s %s, the instance runs %s: a rebuild keeps the version; an upgrade (PATCH the instance's datastore_version) moves it along a declared upgrade path", img.ID, v.DatastoreName, ver, v.Name)
		}
		ok = true
	}
	if !ok {
		return img, wrap(ErrBadRequest, "image %s is not known to be of %s %s: register it as that version's image, or publish it from a strata build (its properties name the datastore)", img.ID, v.DatastoreName, v.Name)
	}
	if err := m.Images.Verify(ctx, img.ID); errors.Is(err, imagestore.ErrChecksumMismatch) || errors.Is(err, imagestore.ErrInvalid) {
		return img, wrap(ErrUnprocessable, "refusing to rebuild onto image %s: %v", img.ID, err)
	} else if err != nil {
		return img, fmt.Errorf("verifying image %s: %w", img.ID, err)
	}
	return img, nil
}

func (m *Manager) runRebuild(ctx context.Context, t *tasks.Task) (tasks.Result, error) {
	in, err := m.taskInstance(ctx, t)
	if err != nil {
		return tasks.Result{}, err
	}
	var p rebuildPayload
	if err := t.Decode(&p); err != nil {
		return tasks.Result{}, tasks.Fail("", "%v", err)
	}
	rb, ok := m.Compute.(compute.Rebuilder)
	if !ok {
		// Queued by the CLI for a driver that cannot: nothing was done.
		err := m.DB.InTx(ctx, func(tx *store.Tx) error {
			if err := instances.SetFault(ctx, tx, in.ID, instances.Fault{Message: "rebuild refused: the compute driver cannot rebuild servers"}, in.Errored, m.now()); err != nil {
				return err
			}
			return instances.SetTask(ctx, tx, in.ID, instances.TaskNone, m.now())
		})
		if err != nil {
			return tasks.Result{}, err
		}
		return tasks.Result{Done: true}, nil
	}
	srv, ok := serverOf(in)
	if !ok {
		return tasks.Result{}, tasks.Fail("", "instance %s has no server to rebuild", in.ID)
	}
	v, err := m.Registry.Version(ctx, in.DatastoreVersionID)
	if err != nil {
		return tasks.Result{}, err
	}
	switch t.Step {
	case "keys":
		if !p.KeysSaved {
			keys, err := agentendpoint.Keys(ctx, m.DB, in.ID)
			if err != nil {
				return tasks.Result{}, err
			}
			p.OldKeys, p.KeysSaved = keys, true
		}
		return tasks.Result{Next: "server", Payload: p}, nil
	case "server":
		if p.TargetVersionID != "" {
			if v, err = m.Registry.Version(ctx, p.TargetVersionID); err != nil {
				return rollback(p, fmt.Sprintf("the target version: %v", err), "")
			}
		}
		return m.rebuildServer(ctx, t, in, v, srv, rb, p)
	case "prepare":
		return m.rebuildPrepare(ctx, t, in, v, p)
	case "wait":
		return m.rebuildWait(ctx, t, in, v, srv, p)
	case "upgrade":
		op := wire.Operation{ID: upgradeOpID(t.ID), Kind: wire.KindUpgradeDatastore}
		if err := m.Agents.Queue(ctx, in.ID, op, agentendpoint.QueueOptions{Expires: m.now().Add(v.BootTimeout)}); err != nil {
			return tasks.Result{}, fmt.Errorf("queue the upgrade step: %w", err)
		}
		return tasks.Result{Next: "upgrade-wait", Payload: p, After: time.Second}, nil
	case "upgrade-wait":
		return m.upgradeWait(ctx, t, in, v, p)
	case "relink", "relinked", "relink-wait":
		return m.rebuildRelink(ctx, t, in, v, p)
	case "finish":
		if err := rb.DropOldServer(ctx, srv); err != nil {
			return tasks.Result{}, err
		}
		if err := instances.Update(ctx, m.DB, in.ID, m.now(), `task = ?, task_started_at = NULL, configuration_applied = ?, server_restart_reason = NULL, restart_required = 0`,
			string(instances.TaskNone), nullIfEmpty(p.ConfigDigest)); err != nil {
			return tasks.Result{}, err
		}
		if p.TargetVersionID != "" {
			m.log().Info("instance upgraded", "instance", in.ID, "datastore", v.DatastoreName, "version", v.Name, "image", p.ImageID,
				"server_version", p.Upgraded.ServerVersion, "data_version_before", p.Upgraded.DataVersion, "data_upgraded", p.Upgraded.Upgraded,
				"seconds", m.now().Sub(t.CreatedAt).Seconds())
			return tasks.Result{Done: true}, nil
		}
		m.log().Info("instance rebuilt", "instance", in.ID, "image", p.ImageID, "seconds", m.now().Sub(t.CreatedAt).Seconds())
		return tasks.Result{Done: true}, nil
	case "rollback":
		return m.rebuildRollback(ctx, t, in, srv, rb, p)
	case "rollback-wait":
		if runningSince(in, p.RollbackSince) {
			if err := instances.SetTask(ctx, m.DB, in.ID, instances.TaskNone, m.now()); err != nil {
				return tasks.Result{}, err
			}
			m.log().Warn("instance rebuild rolled back; it runs on its old root disk", "instance", in.ID, "reason", p.Reason, "upgrade", p.TargetVersionID != "")
			return tasks.Result{Done: true}, nil
		}
		if m.now().After(p.RollbackSince.Add(v.BootTimeout)) {
			return tasks.Result{}, tasks.Fail(m.consoleTail(ctx, in), "the rebuild failed (%s) and the old root disk did not come back within %s: %s",
				p.Reason, v.BootTimeout, m.silentGuestReason(in, v.BootTimeout))
		}
		return tasks.Result{After: time.Second}, nil
	}
	return tasks.Result{}, tasks.Fail("", "rebuild task at unknown step %q", t.Step)
}

// rollback moves the task to its rollback with reason.
func rollback(p rebuildPayload, reason, details string) (tasks.Result, error) {
	p.Reason, p.Details = reason, details
	return tasks.Result{Next: "rollback", Payload: p}, nil
}

func (m *Manager) rebuildServer(ctx context.Context, t *tasks.Task, in instances.Instance, v registry.Version, srv compute.Server, rb compute.Rebuilder, p rebuildPayload) (tasks.Result, error) {
	f, err := m.Registry.Flavor(ctx, in.FlavorID)
	if err != nil {
		return tasks.Result{}, err
	}
	vol, ok := volumeOf(in)
	if !ok {
		return rollback(p, fmt.Sprintf("instance %s has no data volume", in.ID), "")
	}
	// Checked again: the image may have changed since the request.
	img, err := m.Images.Get(ctx, p.ImageID)
	if err == nil {
		err = m.Images.Verify(ctx, img.ID)
	}
	if errors.Is(err, imagestore.ErrNotFound) || errors.Is(err, imagestore.ErrChecksumMismatch) || errors.Is(err, imagestore.ErrInvalid) {
		return rollback(p, fmt.Sprintf("image %s: %v", p.ImageID, err), "")
	} else if err != nil {
		return tasks.Result{}, err
	}
	drive, token, err := m.configDrive(in, v, vol)
	if err != nil {
		return tasks.Result{}, err
	}
	// The old agent's key goes (kept in the payload for a rollback) and
	// the new guest's token comes, together: from here only the new guest
	// can enrol. A repeated step revokes what an earlier run wrote.
	// An upgrade's instance is of the target version from here: its new
	// guest prepares as one (a rollback puts the old version back).
	err = m.DB.InTx(ctx, func(tx *store.Tx) error {
		if err := agentendpoint.ReplaceKeys(ctx, tx, in.ID, nil); err != nil {
			return err
		}
		if p.TargetVersionID != "" {
			if err := instances.Update(ctx, tx, in.ID, m.now(), `datastore_version_id = ?`, p.TargetVersionID); err != nil {
				return err
			}
		}
		return agentendpoint.AddEnrollment(ctx, tx, in.ID, token, m.now(), m.now().Add(v.BootTimeout))
	})
	if err != nil {
		return tasks.Result{}, err
	}
	m.Agents.Disconnect(in.ID)
	chaos.Reach("rebuild.keys-revoked", in.ID)
	spec := serverSpec(in, v, f, img, vol, drive)
	spec.KeepVolume = p.TargetVersionID != ""
	srv2, err := rb.RebuildServer(ctx, srv, spec)
	if errors.Is(err, compute.ErrInvalid) {
		return rollback(p, fmt.Sprintf("rebuilding the server: %v", err), "")
	}
	if err != nil {
		return tasks.Result{}, fmt.Errorf("rebuild server: %w", err)
	}
	// From here on the old guest is off: the reports after this are the
	// new guest's (heartbeats are periodic: an early one is followed by
	// another).
	p.Since = m.now()
	data, _ := json.Marshal(srv2)
	if err := instances.Update(ctx, m.DB, in.ID, m.now(), `server = ?`, string(data)); err != nil {
		return tasks.Result{}, err
	}
	chaos.Reach("rebuild.booted", in.ID) // the old disk aside, the new agent not yet enrolled
	return tasks.Result{Next: "prepare", Payload: p}, nil
}

func (m *Manager) rebuildPrepare(ctx context.Context, t *tasks.Task, in instances.Instance, v registry.Version, p rebuildPayload) (tasks.Result, error) {
	// No databases, users or root: the new agent adopts what the data
	// volume holds. The configuration group's file lived on the old root
	// disk: it is applied again. The arguments are stored before they are
	// queued: a run again after the queue (a controller killed before its
	// record) queues the same operation even if the group changed in
	// between (the reconcile applies the change after).
	if len(p.PrepareArgs) == 0 {
		data, digest, err := m.prepareArgs(ctx, in, wire.PrepareArgs{})
		if err != nil {
			return tasks.Result{}, err
		}
		p.PrepareArgs, p.ConfigDigest = data, digest
		return tasks.Result{Next: "prepare", Payload: p}, nil
	}
	op := wire.Operation{ID: rebuildPrepareOpID(t.ID), Kind: wire.KindPrepare, Args: p.PrepareArgs}
	if err := m.Agents.Queue(ctx, in.ID, op, agentendpoint.QueueOptions{Expires: p.Since.Add(v.BootTimeout)}); err != nil {
		return tasks.Result{}, fmt.Errorf("queue prepare: %w", err)
	}
	return tasks.Result{Next: "wait", Payload: p, After: time.Second}, nil
}

func (m *Manager) rebuildWait(ctx context.Context, t *tasks.Task, in instances.Instance, v registry.Version, srv compute.Server, p rebuildPayload) (tasks.Result, error) {
	res, done, err := m.opDone(ctx, in.ID, rebuildPrepareOpID(t.ID), "prepare on the new image")
	var fail *tasks.Failure
	if errors.As(err, &fail) {
		reason := fail.Reason
		if res.Error != nil && res.Error.Code == wire.CodeExpired {
			reason = m.silentRebuiltReason(in, p.Since, v.BootTimeout)
		}
		return rollback(p, reason, m.consoleTail(ctx, in))
	}
	if err != nil {
		return tasks.Result{}, err
	}
	if done {
		var pr wire.PrepareResult
		if len(res.Payload) > 0 && json.Unmarshal(res.Payload, &pr) == nil && (pr.Formatted || pr.Initialized) {
			// The data volume was blank or held no database: nothing was
			// lost by the rebuild, but say so.
			m.log().Warn("the rebuilt guest found no database on the data volume and initialised one", "instance", in.ID,
				"formatted", pr.Formatted, "initialized", pr.Initialized)
		}
		// The certificate lives on the data volume: the same fingerprint
		// unless the volume was blank (or the new image serves no TLS).
		if err := instances.Update(ctx, m.DB, in.ID, m.now(), `tls_fingerprint = ?`, m.reportedFingerprint(in.ID, res.Payload)); err != nil {
			return tasks.Result{}, err
		}
		if p.TargetVersionID != "" {
			return tasks.Result{Next: "upgrade", Payload: p}, nil
		}
		return tasks.Result{Next: "relink", Payload: p}, nil
	}
	if r := in.Reported; r != nil && r.ReceivedAt.After(p.Since) && r.Status == wire.StatusFailed {
		return rollback(p, "the rebuilt guest reports that its database failed: "+r.StatusDetail, m.consoleTail(ctx, in))
	}
	// Keep the VM up while waiting (a host restart stops it).
	if st, err := m.Compute.ServerState(ctx, srv); err == nil && st == compute.StateStopped {
		if err := m.Compute.StartServer(ctx, srv); err != nil {
			return tasks.Result{}, err
		}
	}
	if m.now().After(p.Since.Add(v.BootTimeout)) {
		return rollback(p, m.silentRebuiltReason(in, p.Since, v.BootTimeout), m.consoleTail(ctx, in))
	}
	return tasks.Result{After: time.Second}, nil
}

// silentRebuiltReason says what is known about a rebuilt guest that did
// not prepare in time: the reports from before since are the old guest's.
func (m *Manager) silentRebuiltReason(in instances.Instance, since time.Time, timeout time.Duration) string {
	if r := in.Reported; r == nil || !r.ReceivedAt.After(since) {
		return fmt.Sprintf("the rebuilt guest's agent never reported within the boot timeout of %s (it did not enroll or send a heartbeat)", timeout.Round(time.Second))
	}
	return "the rebuilt guest " + strings.TrimPrefix(m.silentGuestReason(in, timeout), "the guest ")
}

func (m *Manager) rebuildRollback(ctx context.Context, t *tasks.Task, in instances.Instance, srv compute.Server, rb compute.Rebuilder, p rebuildPayload) (tasks.Result, error) {
	// The old agent may connect as soon as its disk boots: its key back,
	// the new guest's key and tokens revoked, the new guest's prepare
	// never delivered to it.
	msg := fmt.Sprintf("rebuild onto image %s failed and was rolled back to the old root disk: %s", p.ImageID, p.Reason)
	if p.TargetVersionID != "" {
		msg = fmt.Sprintf("upgrade to datastore version %s failed and was rolled back to the old version, root disk and data: %s", m.versionName(ctx, p.TargetVersionID), p.Reason)
	}
	err := m.DB.InTx(ctx, func(tx *store.Tx) error {
		if err := agentendpoint.ReplaceKeys(ctx, tx, in.ID, p.OldKeys); err != nil {
			return err
		}
		if err := restoreOldVersion(ctx, tx, in.ID, p, m.now()); err != nil {
			return err
		}
		for _, op := range []string{rebuildPrepareOpID(t.ID), upgradeOpID(t.ID)} {
			if err := agentendpoint.CancelOp(ctx, tx, in.ID, op, "the rebuild was rolled back", m.now()); err != nil {
				return err
			}
		}
		return instances.SetFault(ctx, tx, in.ID, instances.Fault{Message: msg, Details: p.Details}, false, m.now())
	})
	if err != nil {
		return tasks.Result{}, err
	}
	m.Agents.Disconnect(in.ID)
	drive, err := m.oldConfigDrive(ctx, in, p)
	if err != nil {
		return tasks.Result{}, err
	}
	if err := rb.RevertServer(ctx, srv, drive); err != nil {
		return tasks.Result{}, fmt.Errorf("revert server: %w", err)
	}
	// The new guest is off: reports after this are the old guest's.
	p.RollbackSince = m.now()
	m.log().Warn("instance rebuild failed; rolling back to the old root disk", "instance", in.ID, "image", p.ImageID, "reason", p.Reason)
	return tasks.Result{Next: "rollback-wait", Payload: p, After: time.Second}, nil
}

// failRebuild: a rebuild step that failed for good (not a rollback: one
// that could not be carried out). The old root disk and key are put back
// if they can be, so that the instance is never left without the disk it
// ran on, and the instance ends in ERROR with the reason.
func (m *Manager) failRebuild(ctx context.Context, t *tasks.Task, f *tasks.Failure) error {
	var p rebuildPayload
	t.Decode(&p)
	if p.KeysSaved && t.Step != "finish" {
		in, err := m.load(ctx, t.InstanceID)
		if err == nil {
			if srv, ok := serverOf(in); ok {
				if rb, ok := m.Compute.(compute.Rebuilder); ok {
					if err := m.DB.InTx(ctx, func(tx *store.Tx) error {
						if err := restoreOldVersion(ctx, tx, in.ID, p, m.now()); err != nil {
							return err
						}
						return agentendpoint.ReplaceKeys(ctx, tx, in.ID, p.OldKeys)
					}); err != nil {
						return err
					}
					drive, err := m.oldConfigDrive(ctx, in, p)
					if err == nil {
						err = rb.RevertServer(ctx, srv, drive)
					}
					if err != nil {
						f.Reason += fmt.Sprintf("; putting the old root disk back failed too: %v", err)
					}
				}
			}
		}
	}
	return m.recordFailure(ctx, t, f, true, true)
}

// upgradeWait waits for the datastore's upgrade step in the new guest;
// its failure rolls the upgrade back.
func (m *Manager) upgradeWait(ctx context.Context, t *tasks.Task, in instances.Instance, v registry.Version, p rebuildPayload) (tasks.Result, error) {
	res, done, err := m.opDone(ctx, in.ID, upgradeOpID(t.ID), "the "+v.DatastoreName+" upgrade step")
	var fail *tasks.Failure
	if errors.As(err, &fail) {
		return rollback(p, fail.Reason, m.consoleTail(ctx, in))
	}
	if err != nil {
		return tasks.Result{}, err
	}
	if !done {
		return tasks.Result{After: time.Second}, nil
	}
	var up wire.UpgradeResult
	if err := json.Unmarshal(res.Payload, &up); err != nil {
		return rollback(p, fmt.Sprintf("the upgrade step's result: %v", err), "")
	}
	p.Upgraded = &up
	return tasks.Result{Next: "finish", Payload: p}, nil
}

// restoreOldVersion puts an upgrade's instance back on its old version
// (nothing for a plain rebuild).
func restoreOldVersion(ctx context.Context, tx *store.Tx, id string, p rebuildPayload, now time.Time) error {
	if p.OldVersionID == "" {
		return nil
	}
	return instances.Update(ctx, tx, id, now, `datastore_version_id = ?`, p.OldVersionID)
}

// oldConfigDrive is the config drive the old guest boots with again on a
// rollback, for a driver that writes it anew (Nova): the bootstrap of the
// instance's old version. Its enrolment token is never stored, so it
// enrols nothing: the old guest's agent comes back with the key on its
// root disk, which the rollback enrols again.
func (m *Manager) oldConfigDrive(ctx context.Context, in instances.Instance, p rebuildPayload) (map[string][]byte, error) {
	vid := in.DatastoreVersionID
	if p.OldVersionID != "" {
		vid = p.OldVersionID
	}
	v, err := m.Registry.Version(ctx, vid)
	if err != nil {
		return nil, err
	}
	vol, _ := volumeOf(in)
	drive, _, err := m.configDrive(in, v, vol)
	return drive, err
}

// versionName is "datastore version" for a version id, the id when it is
// not found.
func (m *Manager) versionName(ctx context.Context, id string) string {
	v, err := m.Registry.Version(ctx, id)
	if err != nil {
		return id
	}
	return v.DatastoreName + " " + v.Name
}

// rebuildRelink gives a rebuilt replica its link back. What a replica's
// link needs beyond its data lives on the root disk the rebuild replaced
// (the agents' replication settings files: MariaDB's server_id and
// read_only, PostgreSQL's primary_conninfo, Redis's replicaof), and the
// replication password was never kept. So, as for a new replica: a new
// password for its account on the source (a re-run of
// create_replication_account resets it; PostgreSQL keeps the slot), then
// start_replication on the replica — a repoint to the same source for
// MariaDB, whose link itself (master.info, GTID position) is in its data
// and continues from its own position; a plain start for PostgreSQL (its
// standby.signal is in the data: it is a standby without a source) and
// Redis (a partial or full resynchronisation from the source). An
// instance that is no replica goes straight on. A failure does not roll
// the rebuild back (the old root disk's link holds a password the source
// no longer takes): the instance finishes on its new image with a fault
// saying its link was not restored and what to do.
func (m *Manager) rebuildRelink(ctx context.Context, t *tasks.Task, in instances.Instance, v registry.Version, p rebuildPayload) (tasks.Result, error) {
	link, ok, err := instances.LinkOf(ctx, m.DB, in.ID)
	if err != nil {
		return tasks.Result{}, err
	}
	if !ok {
		p.RelinkPassword = ""
		return tasks.Result{Next: "finish", Payload: p}, nil
	}
	src, err := m.loadFor(ctx, link.SourceID, "its source")
	var gone *tasks.Failure
	if errors.As(err, &gone) {
		return m.relinkFailed(ctx, in, p, gone.Reason)
	} else if err != nil {
		return tasks.Result{}, err
	}
	switch t.Step {
	case "relink":
		if p.RelinkPassword == "" {
			// Stored before the account is queued: a run again after the
			// queue (a controller killed before its record) queues the
			// same operation, found by its id, not one with another
			// password (refused, as a different operation under that id).
			p.RelinkPassword = rand.Text() + rand.Text()
			return tasks.Result{Next: "relink", Payload: p}, nil
		}
		args, err := json.Marshal(wire.ReplicationAccountArgs{Name: link.Account, Password: p.RelinkPassword})
		if err != nil {
			return tasks.Result{}, err
		}
		if err := m.queue(ctx, t, src.ID, wire.Operation{ID: relinkOpID(t.ID, "account"), Kind: wire.KindCreateReplicationAccount, Args: args}); err != nil {
			return tasks.Result{}, fmt.Errorf("queue the replication account on the source %s: %w", src.ID, err)
		}
		return tasks.Result{Next: "relinked", Payload: p, After: 200 * time.Millisecond}, nil
	case "relinked":
		_, done, err := m.opDone(ctx, src.ID, relinkOpID(t.ID, "account"), "resetting the replication account on the source "+src.ID)
		var f *tasks.Failure
		if errors.As(err, &f) {
			return m.relinkFailed(ctx, in, p, f.Reason)
		}
		if err != nil || !done {
			return tasks.Result{After: 200 * time.Millisecond}, err
		}
		router, ok := m.Compute.(compute.ReplicationRouter)
		rSrv, ok1 := serverOf(in)
		sSrv, ok2 := serverOf(src)
		if !ok || !ok1 || !ok2 || src.Host == "" || src.Port == 0 {
			return m.relinkFailed(ctx, in, p, "the compute driver cannot connect it to its source")
		}
		host, port, err := router.ReplicationRoute(ctx, rSrv, sSrv, src.Host, src.Port)
		if err != nil {
			return tasks.Result{}, fmt.Errorf("route from %s to its source %s: %w", in.ID, src.ID, err)
		}
		a := wire.StartReplicationArgs{Host: host, Port: port, Account: link.Account, Password: p.RelinkPassword, Repoint: v.Manager == managerMariaDB}
		args, err := json.Marshal(a)
		if err != nil {
			return tasks.Result{}, err
		}
		if err := m.queue(ctx, t, in.ID, wire.Operation{ID: relinkOpID(t.ID, "start"), Kind: wire.KindStartReplication, Args: args}); err != nil {
			return tasks.Result{}, fmt.Errorf("queue start_replication: %w", err)
		}
		p.RelinkPassword = ""
		p.RelinkDeadline = m.now().Add(linkTimeout)
		return tasks.Result{Next: "relink-wait", Payload: p, After: 200 * time.Millisecond}, nil
	}
	// relink-wait
	res, done, err := m.opDone(ctx, in.ID, relinkOpID(t.ID, "start"), "following the source "+src.ID+" again")
	var f *tasks.Failure
	if errors.As(err, &f) {
		return m.relinkFailed(ctx, in, p, f.Reason)
	}
	if err != nil || !done {
		return tasks.Result{After: 200 * time.Millisecond}, err
	}
	st, running, err := m.linkStatus(ctx, in.ID, res)
	if err != nil {
		return m.relinkFailed(ctx, in, p, fmt.Sprintf("start_replication's result: %v", err))
	}
	if !running {
		if over, how := m.linkWaitOver(st, p.RelinkDeadline); over {
			return m.relinkFailed(ctx, in, p, fmt.Sprintf("it does not follow its source %s: %s", how, linkReason(st)))
		}
		return tasks.Result{After: time.Second}, nil
	}
	m.log().Info("rebuilt replica follows its source again", "instance", in.ID, "source", src.ID)
	return tasks.Result{Next: "finish", Payload: p}, nil
}

// relinkFailed records that a rebuilt replica's link was not restored;
// the rebuild finishes.
func (m *Manager) relinkFailed(ctx context.Context, in instances.Instance, p rebuildPayload, reason string) (tasks.Result, error) {
	f := instances.Fault{Message: fmt.Sprintf("rebuilt onto image %s, but its replication link was not restored: %s; "+
		"it may not follow its source: detach it and create a new replica, or rebuild it again", p.ImageID, reason)}
	if err := instances.SetFault(ctx, m.DB, in.ID, f, false, m.now()); err != nil {
		return tasks.Result{}, err
	}
	m.log().Warn("a rebuilt replica's link was not restored", "instance", in.ID, "reason", reason)
	p.RelinkPassword = ""
	return tasks.Result{Next: "finish", Payload: p}, nil
}

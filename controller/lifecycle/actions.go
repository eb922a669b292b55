package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/chaos"
	"strata/controller/compute"
	"strata/controller/instances"
	"strata/controller/quotas"
	"strata/controller/store"
	"strata/controller/tasks"
)

// get loads a project's instance for a request.
func (m *Manager) get(ctx context.Context, q store.Querier, project, id string) (instances.Instance, error) {
	in, err := instances.Get(ctx, q, project, id)
	if errors.Is(err, instances.ErrNotFound) {
		return in, wrap(ErrNotFound, "instance %q not found", show(id))
	}
	return in, err
}

// startTask sets the instance's task and queues the task in one
// transaction, after check passes on the current state.
func (m *Manager) startTask(ctx context.Context, project, id string, task instances.Task, n tasks.New,
	check func(in instances.Instance, status string) error, before ...func(*store.Tx, instances.Instance) error) error {
	err := m.DB.InTx(ctx, func(tx *store.Tx) error {
		in, err := m.get(ctx, tx, project, id)
		if err != nil {
			return err
		}
		status, _ := m.Status(in)
		if err := check(in, status); err != nil {
			return err
		}
		for _, b := range before {
			if err := b(tx, in); err != nil {
				return err
			}
		}
		now := m.now()
		if task != instances.TaskNone {
			if err := instances.SetTask(ctx, tx, id, task, now); err != nil {
				return err
			}
		}
		n.InstanceID = id
		_, err = tasks.Enqueue(ctx, tx, n, now)
		return err
	})
	if err == nil {
		m.kick()
	}
	return err
}

// Delete starts deleting an instance. A building instance must be reset
// first (force delete does both), as in Trove. A queued recover of the
// instance is cancelled rather than waited for: there is nothing to bring
// back.
func (m *Manager) Delete(ctx context.Context, project, id string) error {
	return m.startTask(ctx, project, id, instances.TaskDeleting, tasks.New{Kind: KindDelete, Step: "server"},
		func(in instances.Instance, status string) error {
			switch {
			case in.Task == instances.TaskDeleting:
				return wrap(ErrUnprocessable, "instance %s is being deleted already", in.ID)
			case in.Task == instances.TaskBuilding && !in.Errored:
				return wrap(ErrUnprocessable, "instance %s is not ready (status BUILD); reset its status first or use force delete", in.ID)
			case in.Task == instances.TaskPromoting || in.Task == instances.TaskEjecting:
				// The switchover's task repoints every member: one that
				// vanished midway would leave the group half-moved.
				return wrap(ErrUnprocessable, "instance %s is in a switchover of its replication group (task %s); delete it when that ends", in.ID, in.Task)
			}
			return nil
		},
		func(tx *store.Tx, in instances.Instance) error {
			// Trove's rule: replicas go (or are detached) first.
			if list, err := instances.ReplicasOf(ctx, tx, in.ID); err != nil {
				return err
			} else if len(list) > 0 {
				return wrap(ErrBadRequest, "The replica source cannot be deleted without detaching the replicas: instance %s has %d (first %s).",
					in.ID, len(list), list[0].InstanceID)
			}
			n, err := tasks.CancelKinds(ctx, tx, in.ID, []string{KindRecover}, "cancelled by delete", m.now())
			if n > 0 {
				m.log().Info("delete cancelled a queued recover", "instance", in.ID)
			}
			return err
		})
}

// ResetStatus cancels the instance's pending tasks and clears its task,
// error and fault (Trove's reset_status): afterwards the status is what
// the agent reports, ERROR if nothing, and the instance can be deleted.
func (m *Manager) ResetStatus(ctx context.Context, project, id string) error {
	return m.DB.InTx(ctx, func(tx *store.Tx) error {
		in, err := m.get(ctx, tx, project, id)
		if err != nil {
			return err
		}
		if err := refuseResetOfRollback(ctx, tx, id); err != nil {
			return err
		}
		if err := refuseResetOfReplicationTask(ctx, tx, id); err != nil {
			return err
		}
		now := m.now()
		n, err := tasks.CancelInstance(ctx, tx, id, now)
		if err != nil {
			return err
		}
		m.log().Info("instance status reset", "instance", id, "cancelled_tasks", n, "was_task", in.Task, "was_errored", in.Errored)
		return instances.Update(ctx, tx, id, now, `task = ?, task_started_at = NULL, errored = 0,
			fault_message = NULL, fault_details = NULL, fault_at = NULL`, string(instances.TaskNone))
	})
}

// Restart restarts the instance's database (Trove's restart action).
func (m *Manager) Restart(ctx context.Context, project, id string) error {
	timeout := m.RestartTimeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	return m.startTask(ctx, project, id, instances.TaskRebooting,
		tasks.New{Kind: KindRestart, Step: "submit", Deadline: m.now().Add(timeout)},
		func(in instances.Instance, status string) error {
			return requireStatus(in, status, "restart", instances.StatusActive, instances.StatusRestartRequired, instances.StatusShutdown)
		})
}

type resizePayload struct {
	SizeGB int `json:"size_gb"`
}

// ResizeVolume grows the instance's data volume to sizeGB.
func (m *Manager) ResizeVolume(ctx context.Context, project, id string, sizeGB int) error {
	timeout := m.ResizeTimeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	return m.startTask(ctx, project, id, instances.TaskResizing,
		tasks.New{Kind: KindResize, Step: "extend", Payload: resizePayload{SizeGB: sizeGB}, Deadline: m.now().Add(timeout)},
		func(in instances.Instance, status string) error {
			if err := requireStatus(in, status, "resize the volume of", instances.StatusActive, instances.StatusRestartRequired); err != nil {
				return err
			}
			if sizeGB <= in.VolumeSizeGB {
				return wrap(ErrBadRequest, "the new volume size %d GB must be larger than the current %d GB", sizeGB, in.VolumeSizeGB)
			}
			if sizeGB > m.MaxVolume() {
				return wrap(ErrBadRequest, "volume size %d GB is above the maximum of %d GB", sizeGB, m.MaxVolume())
			}
			return nil
		},
		func(tx *store.Tx, in instances.Instance) error {
			// A source's replicas grow with it, as in Trove: a replica
			// whose disk is smaller than its source's data stops with a
			// full disk. All or none: a replica that cannot be resized
			// now refuses the request.
			grow, err := m.replicasToGrow(ctx, tx, in, sizeGB, timeout)
			if err != nil {
				return err
			}
			// The growth counts against the project's volume quota from
			// now: the queued task holds the new size until it is done.
			if m.Quotas == nil {
				return nil
			}
			return m.Quotas.Check(ctx, tx, in.ProjectID, quotas.Limits{quotas.Volumes: int64(sizeGB-in.VolumeSizeGB) + grow})
		})
}

// replicasToGrow queues the volume resize of each of source's replicas
// smaller than sizeGB, in the source's transaction, and returns the GB
// they grow by. A replica that is not ACTIVE (or RESTART_REQUIRED) fails
// the whole request, naming it.
func (m *Manager) replicasToGrow(ctx context.Context, tx *store.Tx, source instances.Instance, sizeGB int, timeout time.Duration) (int64, error) {
	links, err := instances.ReplicasOf(ctx, tx, source.ID)
	if err != nil {
		return 0, err
	}
	var grow int64
	now := m.now()
	for _, l := range links {
		r, err := m.get(ctx, tx, source.ProjectID, l.InstanceID)
		if err != nil {
			return 0, err
		}
		if r.VolumeSizeGB >= sizeGB {
			continue
		}
		status, _ := m.Status(r)
		if err := requireStatus(r, status, "resize the volume of the replica", instances.StatusActive, instances.StatusRestartRequired); err != nil {
			return 0, wrap(ErrUnprocessable, "the volume of %s grows with its replicas; %v; nothing was resized", source.ID, err)
		}
		if err := instances.SetTask(ctx, tx, r.ID, instances.TaskResizing, now); err != nil {
			return 0, err
		}
		if _, err := tasks.Enqueue(ctx, tx, tasks.New{InstanceID: r.ID, Kind: KindResize, Step: "extend",
			Payload: resizePayload{SizeGB: sizeGB}, Deadline: now.Add(timeout)}, now); err != nil {
			return 0, err
		}
		grow += int64(sizeGB - r.VolumeSizeGB)
	}
	return grow, nil
}

func requireStatus(in instances.Instance, status, action string, allowed ...string) error {
	for _, a := range allowed {
		if status == a {
			return nil
		}
	}
	return wrap(ErrUnprocessable, "cannot %s instance %s: it is not available (status %s)", action, in.ID, status)
}

func (m *Manager) runDelete(ctx context.Context, t *tasks.Task) (tasks.Result, error) {
	in, err := m.load(ctx, t.InstanceID)
	if errors.Is(err, instances.ErrNotFound) {
		return tasks.Result{Done: true}, nil // deleted by an earlier run
	}
	if err != nil {
		return tasks.Result{}, err
	}
	switch t.Step {
	case "server":
		if err := m.unlinkDeleted(ctx, in); err != nil {
			return tasks.Result{}, err
		}
		if err := instances.DeleteEjection(ctx, m.DB, in.ID); err != nil {
			return tasks.Result{}, err
		}
		chaos.Reach("delete.start", in.ID)
		if srv, ok := serverOf(in); ok {
			if err := m.Compute.DeleteServer(ctx, srv); err != nil {
				return tasks.Result{}, fmt.Errorf("delete server: %w", err)
			}
		} else {
			// A create cut short before it recorded the server may still
			// have made one: the driver's ids are the instance's.
			if err := m.Compute.DeleteServer(ctx, compute.Server{ID: in.ID}); err != nil {
				return tasks.Result{}, fmt.Errorf("delete server: %w", err)
			}
		}
		chaos.Reach("delete.server-gone", in.ID) // the volume still there
		return tasks.Result{Next: "volume"}, nil
	case "volume":
		vol, ok := volumeOf(in)
		if !ok {
			vol = compute.Volume{ID: in.ID}
		}
		if err := m.Compute.DeleteVolume(ctx, vol); err != nil {
			return tasks.Result{}, fmt.Errorf("delete volume: %w", err)
		}
		return tasks.Result{Next: "forget"}, nil
	case "forget":
		err := m.DB.InTx(ctx, func(tx *store.Tx) error {
			if err := agentendpoint.Forget(ctx, tx, in.ID); err != nil {
				return err
			}
			return instances.MarkDeleted(ctx, tx, in.ID, m.now())
		})
		if err != nil {
			return tasks.Result{}, err
		}
		m.Agents.Disconnect(in.ID)
		m.log().Info("instance deleted", "instance", in.ID)
		return tasks.Result{Done: true}, nil
	}
	return tasks.Result{}, tasks.Fail("", "delete task at unknown step %q", t.Step)
}

// restartPayload: the restart restarts the server (its launch settings
// are outdated), not only the database; Since is when that began.
type restartPayload struct {
	Server bool      `json:"server,omitempty"`
	Since  time.Time `json:"since,omitzero"`
	// Reboot restarts the server whatever its launch settings (the
	// management API's reboot).
	Reboot bool `json:"reboot,omitempty"`
}

// Reboot restarts the instance's server — the machine, not just the
// database (Trove's management reboot) — and waits for the agent of the
// new boot to report the database running. An instance in ERROR or
// SHUTDOWN may be rebooted, one with a task in progress may not.
//
// Without a compute driver (the controller host's CLI queues the task for
// the running controller) the task itself refuses a driver that cannot.
func (m *Manager) Reboot(ctx context.Context, id string) error {
	if _, ok := m.Compute.(compute.Restarter); !ok && m.Compute != nil {
		return wrap(ErrUnprocessable, "the compute driver cannot reboot servers")
	}
	timeout := m.RestartTimeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	return m.startTask(ctx, "", id, instances.TaskRebooting,
		tasks.New{Kind: KindRestart, Step: "submit", Payload: restartPayload{Reboot: true}, Deadline: m.now().Add(timeout)},
		func(in instances.Instance, status string) error {
			if in.Task != instances.TaskNone {
				return wrap(ErrUnprocessable, "cannot reboot instance %s: task %s is in progress (reset its task status first)", in.ID, in.Task)
			}
			if _, ok := serverOf(in); !ok {
				return wrap(ErrUnprocessable, "cannot reboot instance %s: it has no server", in.ID)
			}
			return nil
		})
}

// ResetTask cancels the instance's pending tasks and sets its task to
// none (Trove's management reset-task-status), keeping its fault and
// error: unlike ResetStatus it does not claim the instance is healthy.
func (m *Manager) ResetTask(ctx context.Context, id string) error {
	return m.DB.InTx(ctx, func(tx *store.Tx) error {
		in, err := m.get(ctx, tx, "", id)
		if err != nil {
			return err
		}
		if err := refuseResetOfRollback(ctx, tx, id); err != nil {
			return err
		}
		if err := refuseResetOfReplicationTask(ctx, tx, id); err != nil {
			return err
		}
		now := m.now()
		n, err := tasks.CancelInstance(ctx, tx, id, now)
		if err != nil {
			return err
		}
		m.log().Info("instance task reset", "instance", id, "cancelled_tasks", n, "was_task", in.Task)
		return instances.SetTask(ctx, tx, id, instances.TaskNone, now)
	})
}

// refuseResetOfRollback refuses to cancel a rebuild that has set the old
// root disk or agent key aside: cancelling drops its payload, which holds
// the only record of the old keys, and leaves the old disk set aside with
// the old agent revoked. Such a rebuild ends by itself, ACTIVE on the new
// image or rolled back to the old one, within its boot timeout.
func refuseResetOfRollback(ctx context.Context, q store.Querier, id string) error {
	active, err := tasks.Active(ctx, q, id)
	if err != nil {
		return err
	}
	for _, t := range active {
		if t.Kind != KindRebuild {
			continue
		}
		var p rebuildPayload
		if err := t.Decode(&p); err != nil || p.KeysSaved {
			return wrap(ErrUnprocessable, "cannot reset the task of instance %s: its rebuild (step %s) has set the old root disk and agent key aside and puts them back itself if it fails; it ends, on the new image or rolled back, within the version's boot timeout", id, t.Step)
		}
	}
	return nil
}

// refuseResetOfReplicationTask refuses to cancel or clear the task of any
// member of a replication group whose switchover or failover (a promote
// task, promote.go) is past its election: from then on the source is
// fenced, or being fenced, or a replica is being promoted, and cancelling
// would leave a fenced source no one lifts, or two writable ones, or a
// group half repointed. Such a task ends by itself, done or rolled back,
// its guest operations giving up at its deadline. A failover still
// electing has changed nothing and may be cancelled. Nor is the task of an
// instance whose rejoin (rejoin.go) runs: it may have lifted the server's
// fence, and puts it back itself if it fails.
func refuseResetOfReplicationTask(ctx context.Context, q store.Querier, id string) error {
	rejoins, err := store.All(ctx, q, store.ScanString, `SELECT id FROM tasks WHERE kind = ? AND state = ? AND instance_id = ?`, KindRejoin, tasks.StateQueued, id)
	if err != nil {
		return err
	}
	for _, tid := range rejoins {
		t, err := tasks.Get(ctx, q, tid)
		if err != nil {
			return err
		}
		// A rejoin may have lifted the server's compute fence: cancelled,
		// it would leave an ejected source running outside its group.
		return wrap(ErrUnprocessable, "cannot reset the task of instance %s: its rejoin (task %s, step %s) may have lifted its server's fence; "+
			"it ends by itself (a replica again, or fenced again with the reason in its fault), its guest operations giving up at %s",
			id, t.ID, t.Step, t.Deadline.UTC().Format(time.RFC3339))
	}
	ids, err := store.All(ctx, q, store.ScanString, `SELECT id FROM tasks WHERE kind = ? AND state = ? ORDER BY seq`, KindPromote, tasks.StateQueued)
	if err != nil {
		return err
	}
	for _, tid := range ids {
		t, err := tasks.Get(ctx, q, tid)
		if err != nil {
			return err
		}
		var p promotePayload
		if err := t.Decode(&p); err != nil {
			return fmt.Errorf("the replication group task %s: %w", t.ID, err)
		}
		if !slices.Contains(append([]string{t.InstanceID, p.Source, p.Replica}, p.Others...), id) {
			continue
		}
		if p.Eject && t.Step == "elect" {
			continue
		}
		what := "switchover"
		if p.Eject {
			what = "failover"
		}
		return wrap(ErrUnprocessable, "cannot reset the task of instance %s: the %s of its replication group (task %s on instance %s, step %s) has fenced the source or is promoting a replica, "+
			"and cancelling it would leave a fenced source or two writable ones; it ends by itself (done, or rolled back or failed with the reason in a fault), its guest operations giving up at %s",
			id, what, t.ID, t.InstanceID, t.Step, t.Deadline.UTC().Format(time.RFC3339))
	}
	return nil
}

// Stop stops the instance's database and leaves the server running
// (Trove's management stop); the restart action starts it again.
func (m *Manager) Stop(ctx context.Context, id string) error {
	in, err := m.get(ctx, m.DB, "", id)
	if err != nil {
		return err
	}
	status, _ := m.Status(in)
	if err := requireStatus(in, status, "stop the database of", instances.StatusActive, instances.StatusRestartRequired, instances.StatusBlocked); err != nil {
		return err
	}
	res, err := m.Call(ctx, in, wire.KindStop, nil)
	if err == nil && res.Error != nil {
		return res.Error
	}
	return err
}

func (m *Manager) runRestart(ctx context.Context, t *tasks.Task) (tasks.Result, error) {
	in, err := m.load(ctx, t.InstanceID)
	if err != nil {
		return tasks.Result{}, tasks.Fail("", "%v", err)
	}
	var p restartPayload
	if err := t.Decode(&p); err != nil {
		return tasks.Result{}, tasks.Fail("", "%v", err)
	}
	opID := "restart-" + t.ID
	switch t.Step {
	case "submit":
		if _, ok := m.Compute.(compute.Restarter); !ok && p.Reboot {
			// Queued by the CLI for a driver that cannot: nothing was
			// done, so the instance keeps its status and shows why.
			err := m.DB.InTx(ctx, func(tx *store.Tx) error {
				if err := instances.SetFault(ctx, tx, in.ID, instances.Fault{Message: "reboot refused: the compute driver cannot reboot servers"}, in.Errored, m.now()); err != nil {
					return err
				}
				return instances.SetTask(ctx, tx, in.ID, instances.TaskNone, m.now())
			})
			if err != nil {
				return tasks.Result{}, err
			}
			return tasks.Result{Done: true}, nil
		}
		if r, ok := m.Compute.(compute.Restarter); ok && (in.ServerRestartReason != "" || p.Reboot) {
			srv, _ := serverOf(in)
			m.log().Info("restarting the server: it runs with outdated launch settings", "instance", in.ID, "reason", in.ServerRestartReason)
			p = restartPayload{Server: true, Since: m.now()}
			if err := r.RestartServer(ctx, srv); err != nil {
				return tasks.Result{}, err
			}
			return tasks.Result{Next: "wait", Payload: p, After: 2 * time.Second}, nil
		}
		if err := m.queue(ctx, t, in.ID, wire.Operation{ID: opID, Kind: wire.KindRestart}); err != nil {
			return tasks.Result{}, err
		}
		chaos.Reach("restart.queued", in.ID)
		return tasks.Result{Next: "wait", After: time.Second}, nil
	case "wait":
		done := false
		if p.Server {
			// Back once the agent of the new boot reports it running.
			done = runningSince(in, p.Since)
		} else {
			_, done, err = m.opDone(ctx, in.ID, opID, "restart")
			if err != nil {
				return tasks.Result{}, err
			}
		}
		if done {
			if err := instances.Update(ctx, m.DB, in.ID, m.now(), `task = ?, task_started_at = NULL, restart_required = 0, server_restart_reason = NULL`, string(instances.TaskNone)); err != nil {
				return tasks.Result{}, err
			}
			return tasks.Result{Done: true}, nil
		}
		if m.now().After(t.Deadline) {
			return tasks.Result{}, tasks.Fail(m.consoleTail(ctx, in), "the database did not restart within %s", t.Deadline.Sub(t.CreatedAt).Round(time.Second))
		}
		return tasks.Result{After: time.Second}, nil
	}
	return tasks.Result{}, tasks.Fail("", "restart task at unknown step %q", t.Step)
}

func (m *Manager) runResize(ctx context.Context, t *tasks.Task) (tasks.Result, error) {
	in, err := m.load(ctx, t.InstanceID)
	if err != nil {
		return tasks.Result{}, tasks.Fail("", "%v", err)
	}
	var p resizePayload
	if err := t.Decode(&p); err != nil {
		return tasks.Result{}, tasks.Fail("", "%v", err)
	}
	opID := "resize-fs-" + t.ID
	switch t.Step {
	case "extend":
		srv, okS := serverOf(in)
		vol, okV := volumeOf(in)
		if !okS || !okV {
			return tasks.Result{}, tasks.Fail("", "instance %s has no server or volume to resize", in.ID)
		}
		vol, err := m.Compute.ExtendVolume(ctx, srv, vol, p.SizeGB)
		if errors.Is(err, compute.ErrInvalid) {
			return tasks.Result{}, tasks.Fail("", "%v", err)
		}
		if err != nil {
			return tasks.Result{}, err
		}
		data, _ := json.Marshal(vol)
		if err := instances.Update(ctx, m.DB, in.ID, m.now(), `volume = ?`, string(data)); err != nil {
			return tasks.Result{}, err
		}
		chaos.Reach("resize.extended", in.ID) // the disk grew, the filesystem not yet
		return tasks.Result{Next: "grow"}, nil
	case "grow":
		if err := m.queue(ctx, t, in.ID, wire.Operation{ID: opID, Kind: wire.KindResizeFilesystem}); err != nil {
			return tasks.Result{}, err
		}
		return tasks.Result{Next: "wait", After: time.Second}, nil
	case "wait":
		_, done, err := m.opDone(ctx, in.ID, opID, "growing the filesystem")
		if err != nil {
			return tasks.Result{}, err
		}
		if done {
			if err := instances.Update(ctx, m.DB, in.ID, m.now(), `volume_size_gb = ?, task = ?, task_started_at = NULL`, p.SizeGB, string(instances.TaskNone)); err != nil {
				return tasks.Result{}, err
			}
			return tasks.Result{Done: true}, nil
		}
		if m.now().After(t.Deadline) {
			return tasks.Result{}, tasks.Fail("", "the guest did not grow its filesystem within %s", t.Deadline.Sub(t.CreatedAt).Round(time.Second))
		}
		return tasks.Result{After: time.Second}, nil
	}
	return tasks.Result{}, tasks.Fail("", "resize task at unknown step %q", t.Step)
}

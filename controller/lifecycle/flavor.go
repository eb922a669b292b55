package lifecycle

// Flavor resize (Trove's resize-instance with a flavorRef): the instance's
// machine moves to another flavor's memory and CPUs, keeping its disks.
// The steps of the durable task:
//
//	config        apply_flavor queued: the guest writes its base
//	              configuration for the new RAM (buffer pool, ...), read at
//	              the server's next start; a configuration group still wins
//	config-wait   its result
//	server        the driver stops the machine, resizes it, starts it
//	wait          the agent of the new boot reports the datastore running
//	              → the instance's flavor is the new one, ACTIVE
//
// A machine that does not come back within the version's boot timeout is
// rolled back: the old flavor's machine and configuration (revert-server,
// revert-config, revert-config-wait, revert-restart, revert-wait), and the
// instance ends ACTIVE on its old flavor with the failure in its fault. A
// controller restart at any step runs it again: each converges (the
// driver leaves a machine already running with the flavor alone; the
// guest's operations are found by id).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"strata/agent/wire"
	"strata/controller/compute"
	"strata/controller/instances"
	"strata/controller/registry"
	"strata/controller/tasks"
)

// KindResizeFlavor is the flavor resize task.
const KindResizeFlavor = "resize_flavor"

type flavorPayload struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Since is when the machine was (re)started with the flavor the
	// task waits for: a report after it is from the new boot.
	Since time.Time `json:"since,omitzero"`
	// Reason is why the resize is being rolled back.
	Reason  string `json:"reason,omitempty"`
	Details string `json:"details,omitempty"`
}

// ResizeFlavor moves an ACTIVE instance to another flavor (id, name or
// link).
func (m *Manager) ResizeFlavor(ctx context.Context, project, id, flavorRef string) error {
	if _, ok := m.Compute.(compute.FlavorResizer); !ok {
		return wrap(ErrBadRequest, "resize: the compute driver cannot change a server's flavor")
	}
	ref := flavorRef
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		ref = ref[i+1:] // a flavor link
	}
	if ref == "" {
		return wrap(ErrBadRequest, "resize.flavorRef is empty")
	}
	to, err := m.Registry.Flavor(ctx, ref)
	if errors.Is(err, registry.ErrNotFound) {
		return wrap(ErrNotFound, "flavor %q not found", show(ref))
	}
	if err != nil {
		return err
	}
	in, err := m.get(ctx, m.DB, project, id)
	if err != nil {
		return err
	}
	v, err := m.Registry.Version(ctx, in.DatastoreVersionID)
	if err != nil {
		return err
	}
	deadline := m.now().Add(2*v.BootTimeout + 10*time.Minute)
	err = m.startTask(ctx, project, id, instances.TaskResizing,
		tasks.New{Kind: KindResizeFlavor, Step: "config", Payload: flavorPayload{From: in.FlavorID, To: to.ID}, Deadline: deadline},
		func(in instances.Instance, status string) error {
			if in.Task != instances.TaskNone {
				return wrap(ErrUnprocessable, "cannot resize instance %s: task %s is in progress", in.ID, in.Task)
			}
			if err := requireStatus(in, status, "resize", instances.StatusActive); err != nil {
				return err
			}
			if in.FlavorID == to.ID {
				return wrap(ErrBadRequest, "instance %s has flavor %s already", in.ID, to.Name)
			}
			from, err := m.Registry.Flavor(ctx, in.FlavorID)
			if err != nil {
				return err
			}
			if to.DiskGB != 0 && to.DiskGB < from.DiskGB {
				return wrap(ErrBadRequest, "flavor %s has a %d GB root disk, smaller than the instance's %d GB: a root disk cannot shrink", to.Name, to.DiskGB, from.DiskGB)
			}
			if _, ok := serverOf(in); !ok {
				return wrap(ErrUnprocessable, "cannot resize instance %s: it has no server", in.ID)
			}
			return nil
		})
	if err == nil {
		m.log().Info("instance flavor resize queued", "instance", id, "from", in.FlavorID, "to", to.ID)
	}
	return err
}

func (m *Manager) runResizeFlavor(ctx context.Context, t *tasks.Task) (tasks.Result, error) {
	in, srv, p, err := serverTask[flavorPayload](ctx, m, t)
	if err != nil {
		return tasks.Result{}, err
	}
	rz, ok := m.Compute.(compute.FlavorResizer)
	if !ok {
		return tasks.Result{}, tasks.Fail("", "the compute driver cannot change a server's flavor")
	}
	v, err := m.Registry.Version(ctx, in.DatastoreVersionID)
	if err != nil {
		return tasks.Result{}, err
	}
	target := p.To
	if strings.HasPrefix(t.Step, "revert-") {
		target = p.From
	}
	f, err := m.Registry.Flavor(ctx, target)
	if err != nil {
		return tasks.Result{}, tasks.Fail("", "flavor %s: %v", target, err)
	}
	applyID, revertID, restartID := "flavor-"+t.ID, "flavor-revert-"+t.ID, "flavor-restart-"+t.ID
	switch t.Step {
	case "config":
		if err := m.queue(ctx, t, in.ID, applyFlavorOp(applyID, f)); err != nil {
			return tasks.Result{}, err
		}
		return tasks.Result{Next: "config-wait", After: time.Second}, nil
	case "config-wait":
		_, done, err := m.opDone(ctx, in.ID, applyID, "writing the configuration for the new flavor")
		if err != nil {
			var fail *tasks.Failure
			if errors.As(err, &fail) {
				// Nothing restarted: the instance runs as it did.
				return m.flavorRolledBack(ctx, t, in, p, fail.Reason)
			}
			return tasks.Result{}, err
		}
		if !done {
			if m.now().After(t.CreatedAt.Add(v.BootTimeout)) {
				// Nothing restarted yet: the resize ends with the instance as it was.
				return m.flavorRolledBack(ctx, t, in, p, "the guest did not write its configuration for the new flavor within "+v.BootTimeout.String())
			}
			return tasks.Result{After: time.Second}, nil
		}
		return tasks.Result{Next: "server"}, nil
	case "server", "revert-server":
		err := rz.ResizeServer(ctx, srv, compute.Flavor{RAMMB: f.RAMMB, VCPUs: f.VCPUs, RootDiskGB: f.DiskGB})
		if errors.Is(err, compute.ErrInvalid) && t.Step == "server" {
			p.Reason = err.Error()
			return tasks.Result{Next: "revert-config", Payload: p}, nil
		}
		if err != nil {
			return tasks.Result{}, fmt.Errorf("resize the server to flavor %s: %w", f.Name, err)
		}
		p.Since = m.now()
		if t.Step == "server" {
			return tasks.Result{Next: "wait", Payload: p, After: 2 * time.Second}, nil
		}
		return tasks.Result{Next: "revert-config", Payload: p, After: 2 * time.Second}, nil
	case "wait":
		if runningSince(in, p.Since) {
			if err := instances.Update(ctx, m.DB, in.ID, m.now(), `flavor_id = ?, task = ?, task_started_at = NULL`, f.ID, string(instances.TaskNone)); err != nil {
				return tasks.Result{}, err
			}
			m.log().Info("instance resized to a new flavor", "instance", in.ID, "flavor", f.Name, "seconds", m.now().Sub(t.CreatedAt).Seconds())
			return tasks.Result{Done: true}, nil
		}
		if m.now().After(p.Since.Add(v.BootTimeout)) {
			p.Reason = fmt.Sprintf("the instance did not come back on flavor %s within %s: %s", f.Name, v.BootTimeout, m.silentGuestReason(in, v.BootTimeout))
			p.Details = m.consoleTail(ctx, in)
			return tasks.Result{Next: "revert-server", Payload: p}, nil
		}
		return tasks.Result{After: time.Second}, nil
	case "revert-config":
		// The old flavor's configuration, written by the guest of the
		// machine on its old flavor (or, before the machine moved, by the
		// one that wrote the new one).
		if err := m.queue(ctx, t, in.ID, applyFlavorOp(revertID, f)); err != nil {
			return tasks.Result{}, err
		}
		return tasks.Result{Next: "revert-config-wait", After: time.Second}, nil
	case "revert-config-wait":
		res, done, err := m.opDone(ctx, in.ID, revertID, "writing the configuration for the old flavor")
		if err != nil {
			return tasks.Result{}, err
		}
		if !done {
			if m.now().After(p.Since.Add(v.BootTimeout)) && !p.Since.IsZero() {
				return tasks.Result{}, tasks.Fail(m.consoleTail(ctx, in), "the resize failed (%s) and the instance did not come back on its old flavor within %s: %s",
					p.Reason, v.BootTimeout, m.silentGuestReason(in, v.BootTimeout))
			}
			return tasks.Result{After: time.Second}, nil
		}
		var fr wire.FlavorResult
		if err := res.Decode(&fr); err == nil && fr.Changed && !p.Since.IsZero() {
			// The server started with the new flavor's settings: restart
			// it with the old ones. (Before the machine moved, the running
			// server never read the new file: nothing to restart.)
			if err := m.queue(ctx, t, in.ID, wire.Operation{ID: restartID, Kind: wire.KindRestart}); err != nil {
				return tasks.Result{}, err
			}
			return tasks.Result{Next: "revert-restart", After: time.Second}, nil
		}
		return m.flavorRolledBack(ctx, t, in, p, p.Reason)
	case "revert-restart":
		_, done, err := m.opDone(ctx, in.ID, restartID, "restarting the database with the old flavor's configuration")
		if err != nil {
			return tasks.Result{}, err
		}
		if !done {
			return tasks.Result{After: time.Second}, nil
		}
		return m.flavorRolledBack(ctx, t, in, p, p.Reason)
	}
	return tasks.Result{}, tasks.Fail("", "flavor resize task at unknown step %q", t.Step)
}

func applyFlavorOp(id string, f registry.Flavor) wire.Operation {
	args, _ := json.Marshal(wire.FlavorArgs{MemoryMB: f.RAMMB})
	return wire.Operation{ID: id, Kind: wire.KindApplyFlavor, Args: args}
}

// flavorRolledBack ends a resize that did not happen: the instance keeps
// its old flavor, ACTIVE, with the reason in its fault.
func (m *Manager) flavorRolledBack(ctx context.Context, t *tasks.Task, in instances.Instance, p flavorPayload, reason string) (tasks.Result, error) {
	msg := fmt.Sprintf("resize to flavor %s failed and was rolled back: %s", p.To, reason)
	if err := instances.SetFault(ctx, m.DB, in.ID, instances.Fault{Message: msg, Details: p.Details}, false, m.now()); err != nil {
		return tasks.Result{}, err
	}
	if err := instances.SetTask(ctx, m.DB, in.ID, instances.TaskNone, m.now()); err != nil {
		return tasks.Result{}, err
	}
	m.log().Warn("instance flavor resize rolled back", "instance", in.ID, "flavor", p.To, "reason", reason)
	return tasks.Result{Done: true}, nil
}

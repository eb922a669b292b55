package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"strata/agent/wire"
	"strata/controller/compute"
	"strata/controller/instances"
	"strata/controller/store"
	"strata/controller/tasks"
)

// Recover starts again the servers that should run but do not (after a
// controller or host restart, or a VM that died). An idle instance gets a
// recover task (status REBOOT until its agent reports again); one with a
// task in progress just gets its server started, and the task carries on.
// Errored and deleting instances are left alone.
func (m *Manager) Recover(ctx context.Context) error {
	list, err := instances.List(ctx, m.DB, instances.ListOptions{})
	if err != nil {
		return err
	}
	var errs []error
	for _, in := range list {
		srv, ok := serverOf(in)
		if !ok || in.Errored || in.Task == instances.TaskDeleting {
			continue
		}
		st, err := m.Compute.ServerState(ctx, srv)
		if err != nil || st != compute.StateStopped {
			continue
		}
		if in.Task != instances.TaskNone {
			m.log().Info("starting the server of an instance whose task is in progress", "instance", in.ID, "task", in.Task)
			if err := m.Compute.StartServer(ctx, srv); err != nil {
				errs = append(errs, fmt.Errorf("instance %s: %w", in.ID, err))
			}
			continue
		}
		v, err := m.Registry.Version(ctx, in.DatastoreVersionID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = m.DB.InTx(ctx, func(tx *store.Tx) error {
			active, err := tasks.Active(ctx, tx, in.ID)
			if err != nil || len(active) > 0 {
				return err
			}
			now := m.now()
			if err := instances.SetTask(ctx, tx, in.ID, instances.TaskRebooting, now); err != nil {
				return err
			}
			_, err = tasks.Enqueue(ctx, tx, tasks.New{InstanceID: in.ID, Kind: KindRecover, Step: "start",
				Payload: recoverPayload{Since: now}, Deadline: now.Add(v.BootTimeout)}, now)
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("instance %s: %w", in.ID, err))
			continue
		}
		m.log().Info("server found stopped; starting it again", "instance", in.ID)
	}
	m.kick()
	return errors.Join(errs...)
}

// RunRecovery calls Recover every interval, and soon after RecoverSoon,
// until ctx ends.
func (m *Manager) RunRecovery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.recoverKick():
		}
		if err := m.Recover(ctx); err != nil && ctx.Err() == nil {
			m.log().Error("recovering stopped servers", "err", err)
		}
	}
}

// RecoverSoon makes the recovery loop run now (a VM exited).
func (m *Manager) RecoverSoon() {
	select {
	case m.recoverKick() <- struct{}{}:
	default:
	}
}

func (m *Manager) recoverKick() chan struct{} {
	m.kickOnce.Do(func() { m.kickCh = make(chan struct{}, 1) })
	return m.kickCh
}

type recoverPayload struct {
	Since time.Time `json:"since"`
}

func (m *Manager) runRecover(ctx context.Context, t *tasks.Task) (tasks.Result, error) {
	in, err := m.load(ctx, t.InstanceID)
	if errors.Is(err, instances.ErrNotFound) {
		return tasks.Result{Done: true}, nil
	}
	if err != nil {
		return tasks.Result{}, err
	}
	var p recoverPayload
	if err := t.Decode(&p); err != nil {
		return tasks.Result{}, tasks.Fail("", "%v", err)
	}
	srv, ok := serverOf(in)
	if !ok {
		return tasks.Result{}, tasks.Fail("", "instance %s has no server", in.ID)
	}
	switch t.Step {
	case "start":
		if err := m.Compute.StartServer(ctx, srv); err != nil {
			return tasks.Result{}, err
		}
		return tasks.Result{Next: "wait", After: 2 * time.Second}, nil
	case "wait":
		if r := in.Reported; r != nil && r.ReceivedAt.After(p.Since) &&
			(r.Status == wire.StatusRunning || r.Status == wire.StatusRestartRequired) {
			if err := instances.SetTask(ctx, m.DB, in.ID, instances.TaskNone, m.now()); err != nil {
				return tasks.Result{}, err
			}
			m.log().Info("instance back after its server was restarted", "instance", in.ID, "seconds", m.now().Sub(p.Since).Seconds())
			return tasks.Result{Done: true}, nil
		}
		if m.now().After(t.Deadline) {
			return tasks.Result{}, tasks.Fail(m.consoleTail(ctx, in), "%s", m.silentGuestReason(in, t.Deadline.Sub(t.CreatedAt)))
		}
		return tasks.Result{After: 2 * time.Second}, nil
	}
	return tasks.Result{}, tasks.Fail("", "recover task at unknown step %q", t.Step)
}

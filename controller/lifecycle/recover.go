package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"strata/controller/compute"
	"strata/controller/configurations"
	"strata/controller/instances"
	"strata/controller/store"
	"strata/controller/tasks"
)

// Recover makes actual state agree with desired state after a controller
// start, a crash, or a VM that died:
//
//   - a server that runs is adopted; if it runs with launch settings older
//     than the driver's, the instance says so (ServerRestartReason: status
//     RESTART_REQUIRED) — it is neither kept silently nor killed;
//   - a server that should run and does not is started again: an idle
//     instance gets a recover task (status REBOOT until its agent reports
//     again); one with a task in progress just gets its server started,
//     and the task carries on;
//   - an idle, healthy instance whose volume is larger on disk or in the
//     driver's record than in its desired state rolls forward: a resize
//     task to the larger size grows the filesystem and records it; one
//     whose guest last applied another configuration than the attached
//     group gets a configure task;
//   - failures of guest calls answered 202 are recorded (ReportWatched).
//
// Errored and deleting instances are left alone.
func (m *Manager) Recover(ctx context.Context) error {
	list, err := instances.List(ctx, m.DB, instances.ListOptions{})
	if err != nil {
		return err
	}
	var errs []error
	for _, in := range list {
		if err := m.recoverOne(ctx, in); err != nil {
			errs = append(errs, fmt.Errorf("instance %s: %w", in.ID, err))
		}
	}
	if err := m.ReportWatched(ctx); err != nil {
		errs = append(errs, err)
	}
	m.kick()
	return errors.Join(errs...)
}

func (m *Manager) recoverOne(ctx context.Context, in instances.Instance) error {
	srv, ok := serverOf(in)
	if !ok || in.Task == instances.TaskDeleting {
		return nil
	}
	st, err := m.Compute.ServerState(ctx, srv)
	if err != nil {
		return err
	}
	switch st {
	case compute.StateRunning:
		if lc, ok := m.Compute.(compute.LaunchChecker); ok {
			reason, err := lc.LaunchOutdated(ctx, srv)
			if err != nil {
				return err
			}
			if reason != in.ServerRestartReason {
				if err := instances.Update(ctx, m.DB, in.ID, m.now(), `server_restart_reason = ?`, nullIfEmpty(reason)); err != nil {
					return err
				}
				if reason != "" {
					m.log().Warn("instance's server runs with outdated launch settings; it needs a restart", "instance", in.ID, "reason", reason)
				}
			}
		}
		if in.Errored || in.Task != instances.TaskNone {
			return nil
		}
		return m.reconcile(ctx, in)
	case compute.StateStopped:
	default:
		return nil
	}
	if in.Errored {
		return nil
	}
	if in.Task != instances.TaskNone {
		m.log().Info("starting the server of an instance whose task is in progress", "instance", in.ID, "task", in.Task)
		return m.Compute.StartServer(ctx, srv)
	}
	v, err := m.Registry.Version(ctx, in.DatastoreVersionID)
	if err != nil {
		return err
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
		return err
	}
	m.log().Info("server found stopped; starting it again", "instance", in.ID)
	return nil
}

// reconcile rolls an idle, healthy instance forward to what a crash cut
// short: the larger volume size, the attached configuration.
func (m *Manager) reconcile(ctx context.Context, in instances.Instance) error {
	if !m.healthy(in) {
		return nil
	}
	size := in.VolumeSizeGB
	vol, hasVol := volumeOf(in)
	if hasVol {
		size = max(size, vol.SizeGB)
		if vs, ok := m.Compute.(compute.VolumeSizer); ok {
			actual, err := vs.VolumeSize(ctx, vol)
			if err != nil {
				return err
			}
			size = max(size, actual)
		}
	}
	var wantCfg string
	if in.ConfigurationApplied != "" {
		args, err := m.configurationArgs(ctx, in)
		if err != nil && !errors.Is(err, configurations.ErrNotFound) {
			return err
		}
		if err == nil {
			wantCfg = configDigest(args)
		}
	}
	resize := size > in.VolumeSizeGB
	configure := wantCfg != "" && wantCfg != in.ConfigurationApplied
	if !resize && !configure {
		return nil
	}
	timeout := m.ResizeTimeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	return m.DB.InTx(ctx, func(tx *store.Tx) error {
		active, err := tasks.Active(ctx, tx, in.ID)
		if err != nil || len(active) > 0 {
			return err
		}
		// What was read above may be behind: a task that finished since
		// (a configure recording the digest it applied, a resize its
		// size) has done what this would queue again. Seen again, the
		// next pass decides.
		cur, err := instances.Get(ctx, tx, "", in.ID)
		if errors.Is(err, instances.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if cur.ConfigurationApplied != in.ConfigurationApplied || cur.VolumeSizeGB != in.VolumeSizeGB || cur.Task != in.Task {
			return nil
		}
		now := m.now()
		if resize {
			m.log().Warn("volume larger than recorded after a crash; rolling the resize forward", "instance", in.ID,
				"recorded_gb", in.VolumeSizeGB, "actual_gb", size)
			if err := instances.SetTask(ctx, tx, in.ID, instances.TaskResizing, now); err != nil {
				return err
			}
			if _, err := tasks.Enqueue(ctx, tx, tasks.New{InstanceID: in.ID, Kind: KindResize, Step: "extend",
				Payload: resizePayload{SizeGB: size}, Deadline: now.Add(timeout)}, now); err != nil {
				return err
			}
		}
		if configure {
			m.log().Warn("the guest applied another configuration than the attached one; applying it again", "instance", in.ID)
			if _, err := tasks.Enqueue(ctx, tx, tasks.New{InstanceID: in.ID, Kind: KindConfigure, Step: "submit", Deadline: now.Add(10 * time.Minute)}, now); err != nil {
				return err
			}
		}
		return nil
	})
}

// RunRecovery calls Recover every interval, and soon after RecoverSoon,
// CheckAutoFailover every second, and ReportWatched and CheckUserDrift
// every interval or 5 s, whichever is shorter, until ctx ends.
func (m *Manager) RunRecovery(ctx context.Context, interval time.Duration) {
	defer m.driftWG.Wait()
	t := time.NewTicker(interval)
	defer t.Stop()
	// Failures of accepted guest calls are looked for more often.
	report := time.NewTicker(min(interval, 5*time.Second))
	defer report.Stop()
	// Sources with automatic failover are looked at every second.
	auto := time.NewTicker(time.Second)
	defer auto.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-auto.C:
			if err := m.CheckAutoFailover(ctx); err != nil && ctx.Err() == nil {
				m.log().Error("checking automatic failovers", "err", err)
			}
			continue
		case <-report.C:
			if err := m.ReportWatched(ctx); err != nil && ctx.Err() == nil {
				m.log().Error("recording failed guest operations", "err", err)
			}
			if err := m.CheckUserDrift(ctx); err != nil && ctx.Err() == nil {
				m.log().Error("checking the replicas' users", "err", err)
			}
			continue
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
		if runningSince(in, p.Since) {
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

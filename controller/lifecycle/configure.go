package lifecycle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"strata/agent/wire"
	"strata/controller/configurations"
	"strata/controller/instances"
	"strata/controller/store"
	"strata/controller/tasks"
)

// configurationArgs is the complete override set for an instance: its
// group's values (none when detached), with the rules of every parameter
// of the version — not only of the values: a parameter dropped from the
// set is put back live by the agent when its rule says it is dynamic, as
// Trove resets a detached group.
func (m *Manager) configurationArgs(ctx context.Context, in instances.Instance) (wire.ConfigurationArgs, error) {
	args := wire.ConfigurationArgs{Values: map[string]json.RawMessage{}, Rules: []wire.ParameterRule{}}
	v, err := m.Registry.Version(ctx, in.DatastoreVersionID)
	if err != nil {
		return args, err
	}
	if v.Rules != nil {
		args.Rules = v.Rules
	}
	if in.ConfigurationID == "" {
		return args, nil
	}
	g, err := configurations.Get(ctx, m.DB, "", in.ConfigurationID)
	if err != nil {
		return args, err
	}
	args.Values = g.Values
	return args, nil
}

// configDigest identifies a configuration set as the guest gets it
// (encoding/json writes map keys sorted, so equal sets give equal
// digests).
func configDigest(args wire.ConfigurationArgs) string {
	data, _ := json.Marshal(args)
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:16])
}

type configurePayload struct {
	Digest string `json:"digest,omitempty"`
	// Args are the apply operation's arguments, stored before it is
	// queued: a run again after the queue (a controller killed before
	// its record) queues the same operation, found by its id, even if
	// the group changed in between — not one with other content under
	// that id, which is refused. A later change is the next configure's
	// (or reconcile's) to apply.
	Args json.RawMessage `json:"args,omitempty"`
}

// Apply is a configuration change queued for one instance: what a request
// waits on (WaitConfigured) to answer only once the change is applied.
type Apply struct {
	InstanceID, Name string
	// TaskID is the configure task carrying it out.
	TaskID string
}

// SetConfiguration attaches a configuration group to an instance ("" to
// detach) and queues pushing the resulting override set to the guest.
func (m *Manager) SetConfiguration(ctx context.Context, project, id, configurationID string) (Apply, error) {
	var a Apply
	err := m.DB.InTx(ctx, func(tx *store.Tx) error {
		in, err := m.get(ctx, tx, project, id)
		if err != nil {
			return err
		}
		status, _ := m.Status(in)
		if err := requireStatus(in, status, "change the configuration of", instances.StatusActive, instances.StatusRestartRequired); err != nil {
			return err
		}
		if configurationID != "" {
			if in.ConfigurationID != "" && in.ConfigurationID != configurationID {
				return wrap(ErrBadRequest, "instance %s has configuration %s attached; detach it first", in.ID, in.ConfigurationID)
			}
			// The group must be the instance's project's (an admin may act
			// on any project's instance, not mix projects).
			g, err := configurations.Get(ctx, tx, in.ProjectID, configurationID)
			if errors.Is(err, configurations.ErrNotFound) {
				return wrap(ErrNotFound, "configuration %q not found", show(configurationID))
			}
			if err != nil {
				return err
			}
			if g.DatastoreVersionID != in.DatastoreVersionID {
				return wrap(ErrBadRequest, "configuration %s is for another datastore version than instance %s", g.ID, in.ID)
			}
		} else if in.ConfigurationID == "" {
			return wrap(ErrBadRequest, "instance %s has no configuration attached", in.ID)
		}
		now := m.now()
		var cfg any
		if configurationID != "" {
			cfg = configurationID
		}
		if err := instances.Update(ctx, tx, id, now, `configuration_id = ?`, cfg); err != nil {
			return err
		}
		taskID, err := m.enqueueConfigure(ctx, tx, in.ID, now)
		a = Apply{InstanceID: in.ID, Name: in.Name, TaskID: taskID}
		return err
	})
	if err == nil {
		m.kick()
	}
	return a, err
}

func (m *Manager) enqueueConfigure(ctx context.Context, q store.Querier, instanceID string, now time.Time) (string, error) {
	return tasks.Enqueue(ctx, q, tasks.New{InstanceID: instanceID, Kind: KindConfigure, Step: "submit", Deadline: now.Add(10 * time.Minute)}, now)
}

// ConfigurationChanged queues pushing a changed group to every instance it
// is attached to, in q (the transaction that changed the group). It
// returns the changes to wait for: those of ACTIVE (or RESTART_REQUIRED)
// instances. The others apply it when their tasks let them (a building
// instance's prepare takes the group as it is then).
func (m *Manager) ConfigurationChanged(ctx context.Context, q store.Querier, configurationID string) ([]Apply, error) {
	list, err := instances.List(ctx, q, instances.ListOptions{ConfigurationID: configurationID})
	if err != nil {
		return nil, err
	}
	now := m.now()
	var out []Apply
	for _, in := range list {
		taskID, err := m.enqueueConfigure(ctx, q, in.ID, now)
		if err != nil {
			return nil, err
		}
		if status, _ := m.Status(in); status == instances.StatusActive || status == instances.StatusRestartRequired {
			out = append(out, Apply{InstanceID: in.ID, Name: in.Name, TaskID: taskID})
		}
	}
	return out, nil
}

// Applied says how a configuration change ended on one instance when the
// request answered.
type Applied struct {
	Apply
	// State is AppliedDone, AppliedPending (still queued or running when
	// the wait ended: the durable task goes on) or AppliedFailed (the task
	// failed; the instance's fault has the reason).
	State string
	// RestartRequired: some values wait for a restart of the database.
	RestartRequired bool
	Reason          string
}

// Applied states.
const (
	AppliedDone    = "applied"
	AppliedPending = "pending"
	AppliedFailed  = "failed"
)

// configureWait is how long WaitConfigured waits by default.
const configureWait = 30 * time.Second

// WaitConfigured waits, up to ConfigureWait in all (or until ctx ends),
// for the configure tasks of applies to finish, and says how each ended.
// The tasks are durable: one not finished in time goes on, and a
// controller stopped meanwhile finishes or fails it when it runs again.
func (m *Manager) WaitConfigured(ctx context.Context, applies []Apply) []Applied {
	wait := m.ConfigureWait
	if wait <= 0 {
		wait = configureWait
	}
	deadline := time.Now().Add(wait)
	m.kick() // the tasks were queued in a transaction committed just now
	out := make([]Applied, len(applies))
	for i, a := range applies {
		out[i] = Applied{Apply: a, State: AppliedPending}
	}
	for {
		open := 0
		for i := range out {
			if out[i].State != AppliedPending {
				continue
			}
			t, err := tasks.Get(ctx, m.DB, out[i].TaskID)
			switch {
			case err != nil:
				out[i].Reason = fmt.Sprintf("its task could not be read: %v", err)
				open++
			case t.State == tasks.StateDone:
				out[i].State = AppliedDone
				if in, err := m.load(ctx, out[i].InstanceID); err == nil {
					out[i].RestartRequired = in.RestartRequired
				}
			case t.State == tasks.StateFailed, t.State == tasks.StateCancelled:
				out[i].State, out[i].Reason = AppliedFailed, t.Error
			default:
				open++
			}
		}
		if open == 0 {
			return out
		}
		if !time.Now().Before(deadline) || ctx.Err() != nil {
			for i := range out {
				if out[i].State == AppliedPending && out[i].Reason == "" {
					out[i].Reason = fmt.Sprintf("not applied within %s; the change stays queued and is applied when the guest answers (or the instance gets a fault)", wait)
				}
			}
			return out
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (m *Manager) runConfigure(ctx context.Context, t *tasks.Task) (tasks.Result, error) {
	in, err := m.load(ctx, t.InstanceID)
	if errors.Is(err, instances.ErrNotFound) {
		return tasks.Result{Done: true}, nil
	}
	if err != nil {
		return tasks.Result{}, err
	}
	opID := "configure-" + t.ID
	switch t.Step {
	case "submit":
		var p configurePayload
		if err := t.Decode(&p); err != nil {
			return tasks.Result{}, tasks.Fail("", "%v", err)
		}
		if len(p.Args) == 0 {
			args, err := m.configurationArgs(ctx, in)
			if errors.Is(err, configurations.ErrNotFound) {
				// The group is gone: the instance runs without one.
				in.ConfigurationID = ""
				args, err = m.configurationArgs(ctx, in)
			}
			if err != nil {
				return tasks.Result{}, err
			}
			p.Args, _ = json.Marshal(args)
			p.Digest = configDigest(args)
			return tasks.Result{Next: "submit", Payload: p}, nil
		}
		if err := m.queue(ctx, t, in.ID, wire.Operation{ID: opID, Kind: wire.KindApplyConfiguration, Args: p.Args}); err != nil {
			return tasks.Result{}, err
		}
		// A request waits for this (read-after-write): look soon.
		return tasks.Result{Next: "wait", Payload: configurePayload{Digest: p.Digest}, After: 200 * time.Millisecond}, nil
	case "wait":
		res, done, err := m.opDone(ctx, in.ID, opID, "applying the configuration")
		if err != nil {
			return tasks.Result{}, err
		}
		if !done {
			if m.now().After(t.Deadline) {
				return tasks.Result{}, tasks.Fail("", "the guest did not apply the configuration within %s", t.Deadline.Sub(t.CreatedAt).Round(time.Second))
			}
			return tasks.Result{After: 200 * time.Millisecond}, nil
		}
		var cr wire.ConfigurationResult
		if err := res.Decode(&cr); err != nil {
			return tasks.Result{}, tasks.Fail("", "configuration result: %v", err)
		}
		var p configurePayload
		t.Decode(&p)
		if cr.RestartRequired {
			if err := instances.Update(ctx, m.DB, in.ID, m.now(), `restart_required = 1, configuration_applied = ?`, p.Digest); err != nil {
				return tasks.Result{}, err
			}
		} else if err := instances.Update(ctx, m.DB, in.ID, m.now(), `configuration_applied = ?`, p.Digest); err != nil {
			return tasks.Result{}, err
		}
		m.log().Info("configuration applied", "instance", in.ID, "live", cr.AppliedLive, "pending_restart", cr.PendingRestart)
		return tasks.Result{Done: true}, nil
	}
	return tasks.Result{}, tasks.Fail("", "configure task at unknown step %q", t.Step)
}

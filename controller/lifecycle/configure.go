package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"strata/agent/wire"
	"strata/controller/configurations"
	"strata/controller/instances"
	"strata/controller/store"
	"strata/controller/tasks"
)

// configurationArgs is the complete override set for an instance: its
// group's values (none when detached) with the version's rules for them.
func (m *Manager) configurationArgs(ctx context.Context, in instances.Instance) (wire.ConfigurationArgs, error) {
	args := wire.ConfigurationArgs{Values: map[string]json.RawMessage{}, Rules: []wire.ParameterRule{}}
	if in.ConfigurationID == "" {
		return args, nil
	}
	g, err := configurations.Get(ctx, m.DB, "", in.ConfigurationID)
	if err != nil {
		return args, err
	}
	v, err := m.Registry.Version(ctx, in.DatastoreVersionID)
	if err != nil {
		return args, err
	}
	args.Values = g.Values
	args.Rules = configurations.RulesFor(v.Rules, g.Values)
	return args, nil
}

// SetConfiguration attaches a configuration group to an instance ("" to
// detach) and queues pushing the resulting override set to the guest.
func (m *Manager) SetConfiguration(ctx context.Context, project, id, configurationID string) error {
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
		_, err = tasks.Enqueue(ctx, tx, tasks.New{InstanceID: id, Kind: KindConfigure, Step: "submit", Deadline: now.Add(10 * time.Minute)}, now)
		return err
	})
	if err == nil {
		m.kick()
	}
	return err
}

// ConfigurationChanged queues pushing a changed group to every instance it
// is attached to.
func (m *Manager) ConfigurationChanged(ctx context.Context, q store.Querier, configurationID string) error {
	list, err := instances.List(ctx, q, instances.ListOptions{ConfigurationID: configurationID})
	if err != nil {
		return err
	}
	now := m.now()
	for _, in := range list {
		if _, err := tasks.Enqueue(ctx, q, tasks.New{InstanceID: in.ID, Kind: KindConfigure, Step: "submit", Deadline: now.Add(10 * time.Minute)}, now); err != nil {
			return err
		}
	}
	m.kick()
	return nil
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
		args, err := m.configurationArgs(ctx, in)
		if errors.Is(err, configurations.ErrNotFound) {
			args, err = wire.ConfigurationArgs{Values: map[string]json.RawMessage{}, Rules: []wire.ParameterRule{}}, nil
		}
		if err != nil {
			return tasks.Result{}, err
		}
		data, _ := json.Marshal(args)
		if err := m.Agents.Submit(ctx, in.ID, wire.Operation{ID: opID, Kind: wire.KindApplyConfiguration, Args: data}); err != nil {
			return tasks.Result{}, err
		}
		return tasks.Result{Next: "wait", After: 500 * time.Millisecond}, nil
	case "wait":
		res, done, err := m.opDone(ctx, in.ID, opID, "applying the configuration")
		if err != nil {
			return tasks.Result{}, err
		}
		if !done {
			if m.now().After(t.Deadline) {
				return tasks.Result{}, tasks.Fail("", "the guest did not apply the configuration within %s", t.Deadline.Sub(t.CreatedAt).Round(time.Second))
			}
			return tasks.Result{After: 500 * time.Millisecond}, nil
		}
		var cr wire.ConfigurationResult
		if err := res.Decode(&cr); err != nil {
			return tasks.Result{}, tasks.Fail("", "configuration result: %v", err)
		}
		if cr.RestartRequired {
			if err := instances.Update(ctx, m.DB, in.ID, m.now(), `restart_required = 1`); err != nil {
				return tasks.Result{}, err
			}
		}
		m.log().Info("configuration applied", "instance", in.ID, "live", cr.AppliedLive, "pending_restart", cr.PendingRestart)
		return tasks.Result{Done: true}, nil
	}
	return tasks.Result{}, tasks.Fail("", "configure task at unknown step %q", t.Step)
}

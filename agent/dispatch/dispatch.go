// Package dispatch maps an operation's kind to the datastore manager call
// that carries it out: it decodes the arguments strictly (an unknown field
// is an invalid_argument error), calls the manager, and turns the outcome
// into a wire.Result with a typed error. For an operation that changes the
// guest (wire.Class.Mutates) it then makes the change durable — the
// datastore's own flush (datastore.Flusher), then syncfs of the data and
// root filesystems — before the result goes out, and puts the datastore's
// status in the result. A re-run (Operation.Attempt > 0) of an
// interrupted operation converges: it creates only what is missing, and
// what it would remove being gone already counts as done.
//
// dispatch holds no state and must not validate names or values itself;
// that is the manager's job, where the datastore's rules are known.
package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"strata/agent/chaos"
	"strata/agent/datastore"
	"strata/agent/fsstats"
	"strata/agent/wire"
)

// AgentLog is the agent's own log, offered next to the datastore's logs.
type AgentLog interface {
	Info(ctx context.Context) wire.LogInfo
	Tail(ctx context.Context, lines int) (wire.LogTail, error)
}

// AgentLogName is the name the agent's own log is listed under.
const AgentLogName = "agent"

// VolumeGrower grows the data volume's filesystem to its device's size.
type VolumeGrower interface {
	Grow(ctx context.Context) error
}

// Dispatcher runs operations against a manager.
type Dispatcher struct {
	Manager  datastore.Manager
	AgentLog AgentLog // optional
	// Volume is the data volume; nil when the guest has none, and then
	// resize_filesystem is not_supported.
	Volume VolumeGrower
	// Streams opens backup and restore data channels; nil: backup and
	// restore fail with failed_precondition.
	Streams Streams
	// Datastore names the datastore in not_supported answers.
	Datastore string
}

// Run executes op; it is the ops.RunFunc of the agent.
func (d *Dispatcher) Run(ctx context.Context, op wire.Operation) wire.Result {
	chaos.Point(wire.GuestPointPrefix + "op." + string(op.Kind))
	payload, err := d.run(ctx, op)
	class := wire.ClassOf(op.Kind)
	if err != nil && op.Attempt > 0 && class.NotFoundIsDone && wire.ErrorCodeOf(err) == wire.CodeNotFound {
		err = nil // removed by the run that was cut short
	}
	if class.Mutates {
		// Even a failed operation may have changed something (and undone
		// it): what it reports must hold after a crash too.
		if ferr := d.flush(ctx); ferr != nil && err == nil {
			err = wire.Errorf(wire.CodeInternal, "%s was carried out but could not be made durable: %v", op.Kind, ferr)
		}
		res := d.result(payload, err)
		st := d.Manager.Status(ctx)
		res.Datastore = &st
		chaos.Point(wire.GuestPointPrefix + "op." + string(op.Kind) + ".done")
		return res
	}
	return d.result(payload, err)
}

// Paths whose filesystems hold what operations change besides the data
// volume: configuration, the agent's state, systemd units.
var rootFS = "/"

// flush makes what the datastore acknowledged durable: its own flush, if
// it has one and runs, then the data volume's and the root filesystem's.
func (d *Dispatcher) flush(ctx context.Context) error {
	if f, ok := d.Manager.(datastore.Flusher); ok {
		if err := f.Flush(ctx); err != nil {
			return err
		}
	}
	for _, p := range []string{d.Manager.DataPath(), rootFS} {
		if err := datastore.SyncFS(p); err != nil {
			return err
		}
	}
	return nil
}

func (d *Dispatcher) result(payload any, err error) wire.Result {
	if err != nil {
		var oe *wire.OpError
		if errors.As(err, &oe) {
			return wire.Result{Error: oe}
		}
		return wire.Result{Error: &wire.OpError{Code: wire.CodeInternal, Message: err.Error()}}
	}
	if payload == nil {
		return wire.Result{}
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return wire.Result{Error: wire.Errorf(wire.CodeInternal, "encode result: %v", err)}
	}
	return wire.Result{Payload: data}
}

func (d *Dispatcher) run(ctx context.Context, op wire.Operation) (any, error) {
	m := d.Manager
	switch op.Kind {
	case wire.KindPrepare:
		a, err := decode[wire.PrepareArgs](op)
		if err != nil {
			return nil, err
		}
		if op.Attempt > 0 && prepared(m.Status(ctx)) {
			// The cut-short run finished prepare before its result was
			// recorded: done.
			return wire.PrepareResult{}, nil
		}
		return m.Prepare(ctx, a)
	case wire.KindStatus:
		if err := noArgs(op); err != nil {
			return nil, err
		}
		return m.Status(ctx), nil
	case wire.KindRestart:
		return nil, noArgsThen(op, func() error { return m.Restart(ctx) })
	case wire.KindStop:
		return nil, noArgsThen(op, func() error { return m.Stop(ctx) })
	case wire.KindListDatabases:
		if err := noArgs(op); err != nil {
			return nil, err
		}
		dbs, err := m.ListDatabases(ctx)
		return wire.ListDatabasesResult{Databases: dbs}, err
	case wire.KindCreateDatabases:
		a, err := decode[wire.CreateDatabasesArgs](op)
		if err != nil {
			return nil, err
		}
		if op.Attempt > 0 {
			return nil, datastore.CreateMissingDatabases(ctx, m, a.Databases)
		}
		return nil, m.CreateDatabases(ctx, a.Databases)
	case wire.KindDeleteDatabase:
		a, err := decode[wire.DeleteDatabaseArgs](op)
		if err != nil {
			return nil, err
		}
		return nil, m.DeleteDatabase(ctx, a.Name)
	case wire.KindListUsers:
		if err := noArgs(op); err != nil {
			return nil, err
		}
		users, err := m.ListUsers(ctx)
		return wire.ListUsersResult{Users: users}, err
	case wire.KindCreateUsers:
		a, err := decode[wire.CreateUsersArgs](op)
		if err != nil {
			return nil, err
		}
		if op.Attempt > 0 {
			return nil, datastore.CreateMissingUsers(ctx, m, a.Users)
		}
		return nil, m.CreateUsers(ctx, a.Users)
	case wire.KindDeleteUser:
		a, err := decode[wire.UserRef](op)
		if err != nil {
			return nil, err
		}
		return nil, m.DeleteUser(ctx, a)
	case wire.KindGrantAccess:
		a, err := decode[wire.GrantAccessArgs](op)
		if err != nil {
			return nil, err
		}
		return nil, m.GrantAccess(ctx, wire.UserRef{Name: a.Name, Host: a.Host}, a.Databases)
	case wire.KindRevokeAccess:
		a, err := decode[wire.RevokeAccessArgs](op)
		if err != nil {
			return nil, err
		}
		return nil, m.RevokeAccess(ctx, wire.UserRef{Name: a.Name, Host: a.Host}, a.Database)
	case wire.KindListAccess:
		a, err := decode[wire.UserRef](op)
		if err != nil {
			return nil, err
		}
		dbs, err := m.ListAccess(ctx, a)
		return wire.ListAccessResult{Databases: dbs}, err
	case wire.KindEnableRoot:
		a, err := decodeOptional[wire.EnableRootArgs](op)
		if err != nil {
			return nil, err
		}
		return m.EnableRoot(ctx, a.Password)
	case wire.KindDisableRoot:
		return nil, noArgsThen(op, func() error { return m.DisableRoot(ctx) })
	case wire.KindIsRootEnabled:
		if err := noArgs(op); err != nil {
			return nil, err
		}
		on, err := m.IsRootEnabled(ctx)
		return wire.IsRootEnabledResult{Enabled: on}, err
	case wire.KindApplyConfiguration:
		a, err := decode[wire.ConfigurationArgs](op)
		if err != nil {
			return nil, err
		}
		return m.ApplyConfiguration(ctx, a)
	case wire.KindFilesystemStats:
		if err := noArgs(op); err != nil {
			return nil, err
		}
		return fsstats.Stat(m.DataPath())
	case wire.KindResizeFilesystem:
		if err := noArgs(op); err != nil {
			return nil, err
		}
		if d.Volume == nil {
			return nil, wire.Errorf(wire.CodeNotSupported, "this guest has no separate data volume to resize")
		}
		if err := d.Volume.Grow(ctx); err != nil {
			return nil, err
		}
		return fsstats.Stat(m.DataPath())
	case wire.KindListLogs:
		if err := noArgs(op); err != nil {
			return nil, err
		}
		logs, err := m.Logs(ctx)
		if err != nil {
			return nil, err
		}
		if d.AgentLog != nil {
			logs = append(logs, d.AgentLog.Info(ctx))
		}
		return wire.ListLogsResult{Logs: logs}, nil
	case wire.KindBackup:
		a, err := decode[wire.BackupArgs](op)
		if err != nil {
			return nil, err
		}
		return d.backup(ctx, op.ID, a)
	case wire.KindRestore:
		a, err := decode[wire.RestoreArgs](op)
		if err != nil {
			return nil, err
		}
		return d.restore(ctx, op.ID, a)
	case wire.KindUpdateUser:
		a, err := decode[wire.UpdateUserArgs](op)
		if err != nil {
			return nil, err
		}
		u, ok := m.(datastore.UserUpdater)
		if !ok {
			return nil, wire.Errorf(wire.CodeNotSupported, "%s does not support changing a user's name, host or password", d.datastoreName())
		}
		return nil, u.UpdateUser(ctx, a)
	case wire.KindChangePasswords:
		a, err := decode[wire.ChangePasswordsArgs](op)
		if err != nil {
			return nil, err
		}
		u, ok := m.(datastore.UserUpdater)
		if !ok {
			return nil, wire.Errorf(wire.CodeNotSupported, "%s does not support changing passwords", d.datastoreName())
		}
		return nil, u.ChangePasswords(ctx, a.Users)
	case wire.KindSetLog:
		a, err := decode[wire.SetLogArgs](op)
		if err != nil {
			return nil, err
		}
		return d.setLog(ctx, a)
	case wire.KindGetConfiguration:
		if err := noArgs(op); err != nil {
			return nil, err
		}
		r, ok := m.(datastore.ConfigurationReader)
		if !ok {
			return nil, wire.Errorf(wire.CodeNotSupported, "%s does not support reporting its configuration", d.datastoreName())
		}
		return r.Configuration(ctx)
	case wire.KindPublishLog:
		a, err := decode[wire.PublishLogArgs](op)
		if err != nil {
			return nil, err
		}
		return d.publishLog(ctx, op.ID, a)
	case wire.KindApplyFlavor:
		return d.applyFlavor(ctx, op)
	case wire.KindUpgradeDatastore:
		if err := noArgs(op); err != nil {
			return nil, err
		}
		u, ok := m.(datastore.Upgrader)
		if !ok {
			return nil, wire.Errorf(wire.CodeNotSupported, "%s has no upgrade step for data of an older version", d.datastoreName())
		}
		return u.UpgradeDatastore(ctx)
	case wire.KindCreateReplicationAccount, wire.KindDropReplicationAccount,
		wire.KindStartReplication, wire.KindReplicationStatus, wire.KindDetachReplica,
		wire.KindSetReadOnly, wire.KindPromoteReplica, wire.KindRejoinReplication:
		return d.replication(ctx, op)
	case wire.KindExportUsers, wire.KindImportUsers:
		return d.syncUsers(ctx, op)
	case wire.KindTailLog:
		a, err := decode[wire.TailLogArgs](op)
		if err != nil {
			return nil, err
		}
		if a.Name == AgentLogName && d.AgentLog != nil {
			if err := datastore.CheckTailLines(a.Lines); err != nil {
				return nil, err
			}
			return d.AgentLog.Tail(ctx, a.Lines)
		}
		return m.TailLog(ctx, a.Name, a.Lines)
	}
	return nil, wire.Errorf(wire.CodeNotSupported, "this agent does not know the operation %q", op.Kind)
}

// prepared reports whether a status is one of a prepared datastore's (not
// new, preparing, or failed to prepare).
func prepared(st wire.StatusResult) bool {
	switch st.Status {
	case wire.StatusNew, wire.StatusBuilding, wire.StatusFailed:
		return false
	}
	return true
}

// decode unmarshals the operation's arguments strictly; they are required.
func decode[T any](op wire.Operation) (T, error) {
	var v T
	if isEmpty(op.Args) {
		return v, wire.Errorf(wire.CodeInvalidArgument, "%s: arguments are required", op.Kind)
	}
	if err := wire.DecodeStrict(op.Args, &v); err != nil {
		return v, wire.Errorf(wire.CodeInvalidArgument, "%s: bad arguments: %s", op.Kind, cleanJSONError(err))
	}
	return v, nil
}

// decodeOptional is decode for kinds whose arguments may be left out.
func decodeOptional[T any](op wire.Operation) (T, error) {
	var v T
	if isEmpty(op.Args) {
		return v, nil
	}
	return decode[T](op)
}

func noArgs(op wire.Operation) error {
	if !isEmpty(op.Args) && strings.TrimSpace(string(op.Args)) != "{}" {
		return wire.Errorf(wire.CodeInvalidArgument, "%s takes no arguments", op.Kind)
	}
	return nil
}

func noArgsThen(op wire.Operation, f func() error) error {
	if err := noArgs(op); err != nil {
		return err
	}
	return f()
}

func isEmpty(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

// cleanJSONError turns encoding/json's messages into ones that name the
// parameter ("unknown parameter \"x\"").
func cleanJSONError(err error) string {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return fmt.Sprintf("unknown parameter %s", rest)
	}
	return strings.TrimPrefix(msg, "json: ")
}

package dispatch

import (
	"context"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// replication runs the datastore.Replicator kinds.
func (d *Dispatcher) replication(ctx context.Context, op wire.Operation) (any, error) {
	r, ok := d.Manager.(datastore.Replicator)
	if !ok {
		return nil, wire.Errorf(wire.CodeNotSupported, "%s does not support replication", d.datastoreName())
	}
	switch op.Kind {
	case wire.KindCreateReplicationAccount:
		a, err := decode[wire.ReplicationAccountArgs](op)
		if err != nil {
			return nil, err
		}
		return r.CreateReplicationAccount(ctx, a)
	case wire.KindDropReplicationAccount:
		a, err := decode[wire.ReplicationAccountRef](op)
		if err != nil {
			return nil, err
		}
		return nil, r.DropReplicationAccount(ctx, a.Name)
	case wire.KindStartReplication:
		a, err := decode[wire.StartReplicationArgs](op)
		if err != nil {
			return nil, err
		}
		return r.StartReplication(ctx, a)
	case wire.KindReplicationStatus:
		if err := noArgs(op); err != nil {
			return nil, err
		}
		return r.ReplicationStatus(ctx)
	case wire.KindSetReadOnly:
		a, err := decode[wire.SetReadOnlyArgs](op)
		if err != nil {
			return nil, err
		}
		return r.SetReadOnly(ctx, a.ReadOnly)
	case wire.KindPromoteReplica:
		a, err := decode[wire.PromoteReplicaArgs](op)
		if err != nil {
			return nil, err
		}
		return r.PromoteReplica(ctx, a)
	case wire.KindRejoinReplication:
		a, err := decode[wire.StartReplicationArgs](op)
		if err != nil {
			return nil, err
		}
		j, ok := r.(datastore.Rejoiner)
		if !ok {
			return nil, wire.Errorf(wire.CodeNotSupported, "%s has no rejoin for a former primary: it follows a new source with start_replication", d.datastoreName())
		}
		return j.RejoinReplication(ctx, a)
	default: // wire.KindDetachReplica
		if err := noArgs(op); err != nil {
			return nil, err
		}
		return r.DetachReplica(ctx)
	}
}

// syncUsers runs the datastore.UserSyncer kinds; the arguments are
// checked first, as for the other capabilities.
func (d *Dispatcher) syncUsers(ctx context.Context, op wire.Operation) (any, error) {
	var a wire.ImportUsersArgs
	var err error
	if op.Kind == wire.KindExportUsers {
		err = noArgs(op)
	} else {
		a, err = decode[wire.ImportUsersArgs](op)
	}
	if err != nil {
		return nil, err
	}
	s, ok := d.Manager.(datastore.UserSyncer)
	if !ok {
		return nil, wire.Errorf(wire.CodeNotSupported, "%s does not support carrying users to replicas (its replication carries them)", d.datastoreName())
	}
	if op.Kind == wire.KindExportUsers {
		return s.ExportUsers(ctx)
	}
	return s.ImportUsers(ctx, a.Users)
}

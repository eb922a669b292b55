// Package heartbeat builds the facts an agent reports every heartbeat
// interval: datastore status, data-volume filesystem usage and the last
// completed operation. The agent's transport (transport.Client) stamps
// version, boot id, sequence and time and sends it.
//
// It only gathers facts; it must not act on them.
package heartbeat

import (
	"context"

	"strata/agent/fsstats"
	"strata/agent/wire"
)

// StatusSource reports the datastore's status.
type StatusSource interface {
	Status(ctx context.Context) wire.StatusResult
}

// Builder implements transport.HeartbeatSource.
type Builder struct {
	Status StatusSource
	// VolumePath is a path on the data volume.
	VolumePath string
	// LastCompleted returns the id of the last finished operation.
	LastCompleted func() string
	// Replication, if set, reports the server's replication state: a
	// replica's link goes into the heartbeat (its lag, for the
	// controller's view), and so does any other server's binary log
	// position (gtid_binlog_pos: how far a source's replicas are behind
	// in transactions).
	Replication func(ctx context.Context) (wire.ReplicationStatus, error)
	// UsersDigest, if set, is the digest of the users a replica of this
	// server must hold (Redis: wire.UsersDigest of its export); it goes
	// into the heartbeat while the datastore runs.
	UsersDigest func(ctx context.Context) (string, error)
}

// Heartbeat gathers the current facts. A filesystem that cannot be read is
// left out rather than failing the heartbeat.
func (b Builder) Heartbeat(ctx context.Context) wire.Heartbeat {
	st := b.Status.Status(ctx)
	hb := wire.Heartbeat{Status: st.Status, StatusDetail: st.Detail}
	if len(hb.StatusDetail) > 1000 {
		hb.StatusDetail = hb.StatusDetail[:1000]
	}
	if b.VolumePath != "" {
		if fs, err := fsstats.Stat(b.VolumePath); err == nil {
			hb.Volume = &fs
		} else if hb.StatusDetail == "" {
			hb.StatusDetail = "data volume: " + err.Error()
		}
	}
	if b.LastCompleted != nil {
		hb.LastCompletedOp = b.LastCompleted()
	}
	if b.Replication != nil && (st.Status == wire.StatusRunning || st.Status == wire.StatusRestartRequired) {
		if r, err := b.Replication(ctx); err == nil && (r.Role == wire.RoleReplica || r.GTIDBinlogPos != "") {
			hb.Replication = &r
		}
	}
	if b.UsersDigest != nil && (st.Status == wire.StatusRunning || st.Status == wire.StatusRestartRequired) {
		if d, err := b.UsersDigest(ctx); err == nil {
			hb.UsersDigest = d
		}
	}
	return hb
}

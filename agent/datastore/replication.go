package datastore

import (
	"context"

	"strata/agent/wire"
)

// Replicator is a Manager whose datastore can be a replication primary
// and replica (docs/replication.md). The dispatcher type-asserts it and
// answers not_supported, naming the datastore, for a manager without it.
//
// On the primary, CreateReplicationAccount makes (or resets) one
// replica's account, allowed to replicate and nothing else, and
// DropReplicationAccount removes it. On a replica, StartReplication
// follows a primary from a position (only while no link exists: a re-run
// must not rewind a replica), makes the server read-only across restarts
// and returns the link's status (or, with Repoint, moves an existing link
// to another source at its own position); DetachReplica removes the link
// and the read-only setting, leaving a standalone writable server.
type Replicator interface {
	CreateReplicationAccount(ctx context.Context, args wire.ReplicationAccountArgs) (wire.ReplicationSourceResult, error)
	DropReplicationAccount(ctx context.Context, name string) error
	StartReplication(ctx context.Context, args wire.StartReplicationArgs) (wire.ReplicationStatus, error)
	ReplicationStatus(ctx context.Context) (wire.ReplicationStatus, error)
	DetachReplica(ctx context.Context) (wire.ReplicationStatus, error)
	// SetReadOnly fences a primary for a switchover (its users' writes
	// refused, across restarts; the result's GTIDBinlogPos is read after
	// the fence) or lifts the fence; lifting it on a replica is refused.
	SetReadOnly(ctx context.Context, readOnly bool) (wire.ReplicationStatus, error)
	// PromoteReplica waits until the replica applied args.GTIDPos, then
	// detaches it keeping its binary log and GTID state; on timeout it
	// changes nothing.
	PromoteReplica(ctx context.Context, args wire.PromoteReplicaArgs) (wire.ReplicationStatus, error)
}

// Rejoiner is a Replicator whose former primary needs more than
// StartReplication to follow the new primary after a switchover
// (PostgreSQL: a primary is a standby only from its start). The
// controller stops the old primary cleanly before it promotes a replica,
// so the old primary's WAL ends where the new primary's timeline
// begins; RejoinReplication then makes the stopped server a standby of
// args' source and starts it. A server that was not shut down cleanly,
// or that runs as a primary, is refused: its WAL may hold writes the new
// primary lacks (that takes pg_rewind). A re-run that finds the server
// already following the same source only makes sure the link is loaded.
type Rejoiner interface {
	RejoinReplication(ctx context.Context, args wire.StartReplicationArgs) (wire.ReplicationStatus, error)
}

// UserSyncer is a manager whose replication does not carry its users
// (Redis: ACL users live in the ACL file, outside the replicated
// dataset), so the controller carries them: ExportUsers on the source
// describes its API-managed users (root included; never the agent's own
// user nor replication accounts) as the server does, password hashes and
// no passwords; ImportUsers on a replica makes its API-managed users
// exactly that set, validating every line before it changes anything,
// and changes nothing when they are so already.
type UserSyncer interface {
	ExportUsers(ctx context.Context) (wire.ExportUsersResult, error)
	ImportUsers(ctx context.Context, lines []string) (wire.ImportUsersResult, error)
}

// UsersDigester is a UserSyncer whose heartbeats carry a digest of its
// exported users (wire.UsersDigest), so the controller sees a replica
// whose users drifted from its source's. It must be cheap when nothing
// changed: it is called every heartbeat.
type UsersDigester interface {
	UsersDigest(ctx context.Context) (string, error)
}

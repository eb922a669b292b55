package agentendpoint

import (
	"context"
	"errors"
	"time"

	"strata/agent/wire"
)

// Store is what the agent endpoint (Server) persists through. The
// controller implements it on its database; MemStore implements it in
// memory for tests. Every method may be called concurrently.
//
// A durable implementation must make RedeemEnrollment atomic (one
// transaction: the token row is marked used only if it was unused, and the
// key row is inserted in the same transaction), keep ops per instance in
// the order EnqueueOp saw them, and make StoreResult keep the first result
// it is given for an op.
type Store interface {
	// RedeemEnrollment burns the unused, unexpired token whose HashToken
	// is tokenHash and binds key to that token's instance. Unknown, used
	// or expired token: ErrTokenRejected, and nothing changes.
	RedeemEnrollment(ctx context.Context, tokenHash string, key wire.AgentKey) (instanceID string, err error)
	// InstanceForKey maps an enrolled key's fingerprint to its instance.
	// Unknown or revoked key: ErrUnknownKey.
	InstanceForKey(ctx context.Context, fingerprint string) (instanceID string, err error)
	// RecordHeartbeat stores hb unless it is stale: same BootID as the last
	// accepted heartbeat and a Seq not greater than its Seq. It reports
	// whether hb was stored.
	RecordHeartbeat(ctx context.Context, instanceID string, hb wire.Heartbeat, received time.Time) (accepted bool, err error)

	// EnqueueOp queues op for instanceID. Queuing an id again with the same
	// content (Operation.Digest) is a no-op; with other content it is
	// ErrOpConflict.
	EnqueueOp(ctx context.Context, instanceID string, op wire.Operation) error
	// PendingOps lists the instance's ops that have no result yet, in queue
	// order. The server sends these after every (re)connect until each has
	// a result: an op acknowledged but without a result is still pending,
	// because the agent answers a resend with the stored result.
	PendingOps(ctx context.Context, instanceID string) ([]wire.Operation, error)
	// MarkAcked records that the agent acknowledged opID.
	MarkAcked(ctx context.Context, instanceID, opID string, state wire.AckState, at time.Time) error
	// StoreResult records an op's result; a second result for the same op
	// is ignored. Unknown op: ErrUnknownOp.
	StoreResult(ctx context.Context, instanceID string, res wire.Result) error
	// OpResult returns the stored result; done is false while there is
	// none. Unknown op: ErrUnknownOp.
	OpResult(ctx context.Context, instanceID, opID string) (res wire.Result, done bool, err error)
}

// DefaultTokenLifetime is how long an enrolment token is good for when
// its instance gives no boot timeout.
const DefaultTokenLifetime = time.Hour

// Store errors.
var (
	ErrTokenRejected = errors.New("enrollment token unknown, expired or already used")
	ErrUnknownKey    = errors.New("agent key not enrolled")
	ErrOpConflict    = errors.New("operation id already queued with different content")
	ErrUnknownOp     = errors.New("unknown operation")
)

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
	// RecordHeartbeat stores hb unless it is stale (same BootID as the
	// last accepted heartbeat and a Seq not greater than its Seq) or the
	// instance has no enrolled key (forgotten, or its keys revoked while
	// hb was in flight). It reports whether hb was stored.
	RecordHeartbeat(ctx context.Context, instanceID string, hb wire.Heartbeat, received time.Time) (accepted bool, err error)

	// EnqueueOp queues op for instanceID. Queuing an id again with the same
	// content (Operation.Digest) is a no-op; with other content it is
	// ErrOpConflict.
	EnqueueOp(ctx context.Context, instanceID string, op wire.Operation, opts QueueOptions) error
	// PendingOps lists the instance's ops that have no result yet, in queue
	// order, each at its current Attempt. The server sends these after
	// every (re)connect until each has a result: an op acknowledged but
	// without a result is still pending, because the agent answers a
	// resend with the stored result.
	PendingOps(ctx context.Context, instanceID string) ([]wire.Operation, error)
	// RetryOp moves an op that has no result from attempt to attempt+1,
	// to be sent (and run) again, unless that would reach
	// wire.MaxAttempts or the op's expiry has passed at now. It reports
	// whether the op moved.
	RetryOp(ctx context.Context, instanceID, opID string, attempt int, now time.Time) (bool, error)
	// ExpireOps gives up on the ops whose expiry has passed at now: one
	// not delivered in its current attempt gets a CodeExpired result; the
	// secret arguments of every expired op are dropped. It returns the ops
	// that got a result.
	ExpireOps(ctx context.Context, now time.Time) ([]OpRef, error)
	// RecordOpStatus stores the datastore status an op's result carried
	// as the instance's reported status, if the report is of the same
	// agent process (bootID) and not newer than at.
	RecordOpStatus(ctx context.Context, instanceID, bootID string, st wire.StatusResult, at, received time.Time) error
	// MarkAcked records that the agent acknowledged opID.
	MarkAcked(ctx context.Context, instanceID, opID string, state wire.AckState, at time.Time) error
	// StoreResult records an op's result; a second result for the same op
	// is ignored, and so is a result of an earlier attempt than the op's
	// current one. Unknown op: ErrUnknownOp.
	StoreResult(ctx context.Context, instanceID string, res wire.Result) error
	// OpResult returns the stored result; done is false while there is
	// none. Unknown op: ErrUnknownOp.
	OpResult(ctx context.Context, instanceID, opID string) (res wire.Result, done bool, err error)
}

// QueueOptions go with an op into the queue.
type QueueOptions struct {
	// Expires is when the controller gives up on the op (zero: never):
	// not delivered by then, it fails with wire.CodeExpired; it is not
	// re-run after it; its secret arguments are dropped then at the
	// latest.
	Expires time.Time
	// Watch marks an op whose failure nobody may be waiting for (a guest
	// call answered 202): lifecycle records it on the instance.
	Watch bool
}

// OpRef names one op of one instance.
type OpRef struct{ InstanceID, OpID string }

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

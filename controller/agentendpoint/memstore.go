package agentendpoint

import (
	"context"
	"crypto/subtle"
	"fmt"
	"sync"
	"time"

	"strata/agent/wire"
)

// MemStore is an in-memory Store for tests (agent and controller, through
// endpointtest), and behind MemEndpoint for boot tests and the footprint
// benchmark. It forgets everything when the process ends.
type MemStore struct {
	mu         sync.Mutex
	tokens     map[string]*memToken // by token hash
	keys       map[string]memKey    // by fingerprint
	heartbeats map[string][]wire.Heartbeat
	ops        map[string][]*OpRecord
	statuses   map[string]wire.StatusResult // from op results
	redeemed   int                          // successful redemptions, for tests
}

type memToken struct {
	instanceID string
	used       bool
	expires    time.Time
}

type memKey struct {
	instanceID string
	key        wire.AgentKey
}

// OpRecord is MemStore's view of one queued operation.
type OpRecord struct {
	Op       wire.Operation
	Options  QueueOptions
	AckState wire.AckState
	AckedAt  time.Time
	Acks     int
	Result   *wire.Result
}

// NewMemStore returns an empty store.
func NewMemStore() *MemStore {
	return &MemStore{
		tokens:     map[string]*memToken{},
		keys:       map[string]memKey{},
		heartbeats: map[string][]wire.Heartbeat{},
		ops:        map[string][]*OpRecord{},
		statuses:   map[string]wire.StatusResult{},
	}
}

// OpStatus returns the datastore status the last op result of instanceID
// carried.
func (m *MemStore) OpStatus(instanceID string) (wire.StatusResult, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.statuses[instanceID]
	return st, ok
}

// AddInstance registers a one-time enrollment token for instanceID, good
// for DefaultTokenLifetime.
func (m *MemStore) AddInstance(instanceID, token string) {
	m.AddInstanceUntil(instanceID, token, time.Now().Add(DefaultTokenLifetime))
}

// AddInstanceUntil registers a one-time enrollment token for instanceID
// that expires at expires.
func (m *MemStore) AddInstanceUntil(instanceID, token string, expires time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens[wire.HashToken(token)] = &memToken{instanceID: instanceID, expires: expires}
}

// RevokeKeys forgets every key bound to instanceID.
func (m *MemStore) RevokeKeys(instanceID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for fp, k := range m.keys {
		if k.instanceID == instanceID {
			delete(m.keys, fp)
		}
	}
}

// Keys returns the keys bound to instanceID.
func (m *MemStore) Keys(instanceID string) []wire.AgentKey {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []wire.AgentKey
	for _, k := range m.keys {
		if k.instanceID == instanceID {
			out = append(out, k.key)
		}
	}
	return out
}

// Redemptions counts successful token redemptions.
func (m *MemStore) Redemptions() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.redeemed
}

// Heartbeats returns the accepted heartbeats of instanceID, oldest first.
func (m *MemStore) Heartbeats(instanceID string) []wire.Heartbeat {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]wire.Heartbeat(nil), m.heartbeats[instanceID]...)
}

// Op returns a copy of the record of one op.
func (m *MemStore) Op(instanceID, opID string) (OpRecord, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.find(instanceID, opID)
	if r == nil {
		return OpRecord{}, false
	}
	return *r, true
}

func (m *MemStore) RedeemEnrollment(_ context.Context, tokenHash string, key wire.AgentKey) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var tok *memToken
	for h, t := range m.tokens {
		if subtle.ConstantTimeCompare([]byte(h), []byte(tokenHash)) == 1 {
			tok = t
		}
	}
	if tok == nil || tok.used || !time.Now().Before(tok.expires) {
		return "", ErrTokenRejected
	}
	if _, taken := m.keys[key.Fingerprint]; taken {
		return "", fmt.Errorf("key %s is enrolled already: %w", key.Fingerprint, ErrTokenRejected)
	}
	tok.used = true
	for h, t := range m.tokens {
		if t.instanceID == tok.instanceID && !t.used {
			delete(m.tokens, h) // void once the instance is enrolled
		}
	}
	m.keys[key.Fingerprint] = memKey{instanceID: tok.instanceID, key: key}
	m.redeemed++
	return tok.instanceID, nil
}

func (m *MemStore) InstanceForKey(_ context.Context, fingerprint string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.keys[fingerprint]
	if !ok {
		return "", ErrUnknownKey
	}
	return k.instanceID, nil
}

func (m *MemStore) RecordHeartbeat(_ context.Context, instanceID string, hb wire.Heartbeat, _ time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	enrolled := false
	for _, k := range m.keys {
		enrolled = enrolled || k.instanceID == instanceID
	}
	if !enrolled {
		// As SQLStore: the keys revoked, the report is not taken.
		return false, nil
	}
	list := m.heartbeats[instanceID]
	if n := len(list); n > 0 {
		last := list[n-1]
		if last.BootID == hb.BootID && hb.Seq <= last.Seq {
			return false, nil
		}
	}
	if len(list) >= 1000 {
		list = list[1:]
	}
	m.heartbeats[instanceID] = append(list, hb)
	return true, nil
}

func (m *MemStore) EnqueueOp(_ context.Context, instanceID string, op wire.Operation, opts QueueOptions) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.find(instanceID, op.ID); r != nil {
		if r.Op.Digest() != op.Digest() {
			return fmt.Errorf("op %s: %w", op.ID, ErrOpConflict)
		}
		return nil
	}
	op.Attempt = 0
	m.ops[instanceID] = append(m.ops[instanceID], &OpRecord{Op: op, Options: opts})
	return nil
}

func (m *MemStore) RetryOp(_ context.Context, instanceID, opID string, attempt int, now time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.find(instanceID, opID)
	if r == nil || r.Result != nil || r.Op.Attempt != attempt || attempt+1 >= wire.MaxAttempts ||
		(!r.Options.Expires.IsZero() && !r.Options.Expires.After(now)) {
		return false, nil
	}
	r.Op.Attempt++
	r.AckState = ""
	return true, nil
}

func (m *MemStore) ExpireOps(_ context.Context, now time.Time) ([]OpRef, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []OpRef
	for inst, list := range m.ops {
		for _, r := range list {
			if r.Options.Expires.IsZero() || r.Options.Expires.After(now) {
				continue
			}
			if r.Result == nil && r.AckState == "" {
				r.Result = &wire.Result{OpID: r.Op.ID, Attempt: r.Op.Attempt, FinishedAt: now.UTC(),
					Error: wire.Errorf(wire.CodeExpired, "the controller gave up on %s: not delivered to the guest agent before its timeout", r.Op.Kind)}
				out = append(out, OpRef{InstanceID: inst, OpID: r.Op.ID})
			}
			if wire.ClassOf(r.Op.Kind).SecretArgs {
				r.Op.Args = nil
			}
		}
	}
	return out, nil
}

func (m *MemStore) RecordOpStatus(_ context.Context, instanceID, _ string, st wire.StatusResult, _, _ time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.statuses[instanceID] = st
	return nil
}

func (m *MemStore) PendingOps(_ context.Context, instanceID string) ([]wire.Operation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []wire.Operation
	for _, r := range m.ops[instanceID] {
		if r.Result == nil {
			out = append(out, r.Op)
		}
	}
	return out, nil
}

func (m *MemStore) MarkAcked(_ context.Context, instanceID, opID string, state wire.AckState, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.find(instanceID, opID)
	if r == nil {
		return fmt.Errorf("op %s: %w", opID, ErrUnknownOp)
	}
	r.AckState, r.AckedAt = state, at
	r.Acks++
	return nil
}

func (m *MemStore) StoreResult(_ context.Context, instanceID string, res wire.Result) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.find(instanceID, res.OpID)
	if r == nil {
		return fmt.Errorf("op %s: %w", res.OpID, ErrUnknownOp)
	}
	if r.Result == nil && res.Attempt >= r.Op.Attempt {
		r.Result = &res
		if wire.ClassOf(r.Op.Kind).SecretArgs {
			r.Op.Args = nil
		}
	}
	return nil
}

func (m *MemStore) OpResult(_ context.Context, instanceID, opID string) (wire.Result, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.find(instanceID, opID)
	if r == nil {
		return wire.Result{}, false, fmt.Errorf("op %s: %w", opID, ErrUnknownOp)
	}
	if r.Result == nil {
		return wire.Result{}, false, nil
	}
	return *r.Result, true, nil
}

func (m *MemStore) find(instanceID, opID string) *OpRecord {
	for _, r := range m.ops[instanceID] {
		if r.Op.ID == opID {
			return r
		}
	}
	return nil
}

var _ Store = (*MemStore)(nil)

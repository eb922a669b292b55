package agentendpoint

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"strata/agent/wire"
	"strata/controller/store"
)

// SQLStore is the durable Store: enrolment tokens and keys, the latest
// heartbeat of each instance (its reported state) and the operation queue,
// in the controller's database. It mirrors MemStore's semantics.
type SQLStore struct {
	DB *store.DB
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

var _ Store = (*SQLStore)(nil)

func (s *SQLStore) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// secretArgs are the kinds whose arguments carry passwords: once their
// result is stored nothing will send them again, so the arguments are
// dropped (the digest stays for conflict checks).
var secretArgs = map[wire.Kind]bool{
	wire.KindPrepare: true, wire.KindCreateUsers: true, wire.KindEnableRoot: true,
}

// AddEnrollment records a one-time token for instanceID, storing only its
// hash, good until expires (zero: DefaultTokenLifetime from now).
func AddEnrollment(ctx context.Context, q store.Querier, instanceID, token string, now, expires time.Time) error {
	if expires.IsZero() {
		expires = now.Add(DefaultTokenLifetime)
	}
	_, err := q.Exec(ctx, `INSERT INTO agent_tokens (token_hash, instance_id, created_at, expires_at) VALUES (?, ?, ?, ?)`,
		wire.HashToken(token), instanceID, store.Millis(now), store.Millis(expires))
	if err != nil {
		return fmt.Errorf("record enrollment token for %s: %w", instanceID, err)
	}
	return nil
}

// RevokeUnusedTokens deletes the instance's tokens that were never redeemed
// (a re-made config drive replaces them).
func RevokeUnusedTokens(ctx context.Context, q store.Querier, instanceID string) error {
	_, err := q.Exec(ctx, `DELETE FROM agent_tokens WHERE instance_id = ? AND used_at IS NULL`, instanceID)
	return err
}

// Forget removes everything the endpoint keeps about an instance: tokens,
// keys, queued operations and its reported state. After it the agent can
// no longer authenticate.
func Forget(ctx context.Context, q store.Querier, instanceID string) error {
	for _, table := range []string{"agent_tokens", "agent_keys", "agent_ops", "instance_reports"} {
		if _, err := q.Exec(ctx, `DELETE FROM `+table+` WHERE instance_id = ?`, instanceID); err != nil {
			return fmt.Errorf("forget %s in %s: %w", instanceID, table, err)
		}
	}
	return nil
}

func (s *SQLStore) RedeemEnrollment(ctx context.Context, tokenHash string, key wire.AgentKey) (string, error) {
	var instanceID string
	err := s.DB.InTx(ctx, func(tx *store.Tx) error {
		// A token written before tokens had an expiry is good for the
		// default lifetime from its creation.
		now := store.Millis(s.now())
		err := tx.QueryRow(ctx, `UPDATE agent_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL
			AND COALESCE(expires_at, created_at + ?) > ? RETURNING instance_id`,
			now, tokenHash, DefaultTokenLifetime.Milliseconds(), now).Scan(&instanceID)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrTokenRejected
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO agent_keys (fingerprint, instance_id, authorized_key, enrolled_at) VALUES (?, ?, ?, ?)`,
			key.Fingerprint, instanceID, key.AuthorizedKey, store.Millis(s.now()))
		if store.IsUniqueViolation(err) {
			return fmt.Errorf("key %s is enrolled already: %w", key.Fingerprint, ErrTokenRejected)
		}
		return err
	})
	if err != nil {
		return "", err
	}
	return instanceID, nil
}

func (s *SQLStore) InstanceForKey(ctx context.Context, fingerprint string) (string, error) {
	var id string
	err := s.DB.QueryRow(ctx, `SELECT instance_id FROM agent_keys WHERE fingerprint = ?`, fingerprint).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrUnknownKey
	}
	return id, err
}

func (s *SQLStore) RecordHeartbeat(ctx context.Context, instanceID string, hb wire.Heartbeat, received time.Time) (bool, error) {
	var vol []byte
	if hb.Volume != nil {
		vol, _ = json.Marshal(hb.Volume)
	}
	// The conflict clause keeps the stored row unless hb is newer: a
	// different boot, or a higher sequence number within the same boot.
	res, err := s.DB.Exec(ctx, `INSERT INTO instance_reports
		(instance_id, agent_version, boot_id, seq, status, status_detail, volume, last_completed_op, sent_at, received_at, heartbeats)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
		ON CONFLICT (instance_id) DO UPDATE SET
			agent_version = excluded.agent_version, boot_id = excluded.boot_id, seq = excluded.seq,
			status = excluded.status, status_detail = excluded.status_detail, volume = excluded.volume,
			last_completed_op = excluded.last_completed_op, sent_at = excluded.sent_at,
			received_at = excluded.received_at, heartbeats = instance_reports.heartbeats + 1
		WHERE NOT (instance_reports.boot_id = excluded.boot_id AND excluded.seq <= instance_reports.seq)`,
		instanceID, hb.AgentVersion, hb.BootID, int64(hb.Seq), string(hb.Status), hb.StatusDetail, nullBytes(vol),
		hb.LastCompletedOp, store.Millis(hb.SentAt), store.Millis(received))
	if err != nil {
		return false, fmt.Errorf("record heartbeat of %s: %w", instanceID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (s *SQLStore) EnqueueOp(ctx context.Context, instanceID string, op wire.Operation) error {
	digest := op.Digest()
	res, err := s.DB.Exec(ctx, `INSERT INTO agent_ops (instance_id, op_id, kind, args, digest, queued_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (instance_id, op_id) DO NOTHING`,
		instanceID, op.ID, string(op.Kind), nullBytes(op.Args), digest, store.Millis(s.now()))
	if err != nil {
		return fmt.Errorf("queue op %s: %w", op.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	var have string
	if err := s.DB.QueryRow(ctx, `SELECT digest FROM agent_ops WHERE instance_id = ? AND op_id = ?`, instanceID, op.ID).Scan(&have); err != nil {
		return fmt.Errorf("queue op %s: %w", op.ID, err)
	}
	if have != digest {
		return fmt.Errorf("op %s: %w", op.ID, ErrOpConflict)
	}
	return nil
}

func (s *SQLStore) PendingOps(ctx context.Context, instanceID string) ([]wire.Operation, error) {
	rows, err := s.DB.Query(ctx, `SELECT op_id, kind, args FROM agent_ops
		WHERE instance_id = ? AND done_at IS NULL ORDER BY seq`, instanceID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []wire.Operation
	for rows.Next() {
		var op wire.Operation
		var kind string
		var args sql.NullString
		if err := rows.Scan(&op.ID, &kind, &args); err != nil {
			return nil, err
		}
		op.Kind = wire.Kind(kind)
		if args.Valid {
			op.Args = json.RawMessage(args.String)
		}
		out = append(out, op)
	}
	return out, rows.Err()
}

func (s *SQLStore) MarkAcked(ctx context.Context, instanceID, opID string, state wire.AckState, at time.Time) error {
	res, err := s.DB.Exec(ctx, `UPDATE agent_ops SET ack_state = ?, acked_at = ?, acks = acks + 1
		WHERE instance_id = ? AND op_id = ?`, string(state), store.Millis(at), instanceID, opID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("op %s: %w", opID, ErrUnknownOp)
	}
	return nil
}

func (s *SQLStore) StoreResult(ctx context.Context, instanceID string, r wire.Result) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.DB.InTx(ctx, func(tx *store.Tx) error {
		var kind string
		var done sql.NullInt64
		err := tx.QueryRow(ctx, `SELECT kind, done_at FROM agent_ops WHERE instance_id = ? AND op_id = ?`, instanceID, r.OpID).Scan(&kind, &done)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("op %s: %w", r.OpID, ErrUnknownOp)
		}
		if err != nil || done.Valid {
			return err // the first result wins
		}
		q := `UPDATE agent_ops SET result = ?, done_at = ? WHERE instance_id = ? AND op_id = ? AND done_at IS NULL`
		if secretArgs[wire.Kind(kind)] {
			q = `UPDATE agent_ops SET result = ?, done_at = ?, args = NULL WHERE instance_id = ? AND op_id = ? AND done_at IS NULL`
		}
		_, err = tx.Exec(ctx, q, string(data), store.Millis(s.now()), instanceID, r.OpID)
		return err
	})
}

func (s *SQLStore) OpResult(ctx context.Context, instanceID, opID string) (wire.Result, bool, error) {
	var res sql.NullString
	err := s.DB.QueryRow(ctx, `SELECT result FROM agent_ops WHERE instance_id = ? AND op_id = ?`, instanceID, opID).Scan(&res)
	if errors.Is(err, sql.ErrNoRows) {
		return wire.Result{}, false, fmt.Errorf("op %s: %w", opID, ErrUnknownOp)
	}
	if err != nil || !res.Valid {
		return wire.Result{}, false, err
	}
	var r wire.Result
	if err := json.Unmarshal([]byte(res.String), &r); err != nil {
		return wire.Result{}, false, fmt.Errorf("op %s: stored result: %w", opID, err)
	}
	return r, true, nil
}

// ForgetPayload blanks a stored result's payload once the caller has read
// it: root passwords are handed out once and not kept.
func (s *SQLStore) ForgetPayload(ctx context.Context, instanceID, opID string) error {
	r, done, err := s.OpResult(ctx, instanceID, opID)
	if err != nil || !done {
		return err
	}
	r.Payload = nil
	data, _ := json.Marshal(r)
	_, err = s.DB.Exec(ctx, `UPDATE agent_ops SET result = ? WHERE instance_id = ? AND op_id = ?`, string(data), instanceID, opID)
	return err
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

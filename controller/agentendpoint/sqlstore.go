package agentendpoint

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"strata/agent/wire"
	"strata/controller/instances"
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

// The arguments of kinds that carry passwords (wire.Class.SecretArgs) are
// dropped once nothing will send them again — a final result, or the
// op's expiry — and the digest stays for conflict checks.
func secretArgs(kind string) bool { return wire.ClassOf(wire.Kind(kind)).SecretArgs }

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
		if err != nil {
			return err
		}
		// The instance is enrolled: tokens written for config drives that
		// never reached a guest are void.
		return RevokeUnusedTokens(ctx, tx, instanceID)
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
	accepted := false
	err := s.DB.InTx(ctx, func(tx *store.Tx) error {
		accepted = false
		// Only an instance with an enrolled key reports: a heartbeat in
		// flight while the instance is forgotten (deleted) or its keys
		// revoked (rebuilt) must not bring its report back. PostgreSQL:
		// the key row is held until this commits, so a Forget that has
		// not yet deleted it waits, and one that has is seen.
		lock := ""
		if tx.Dialect() == store.Postgres {
			lock = " FOR SHARE"
		}
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM agent_keys WHERE instance_id = ? LIMIT 1`+lock, instanceID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		// The conflict clause keeps the stored row unless hb is newer: a
		// different boot, or a higher sequence number within the same
		// boot sent no earlier than what is stored (an op's result may
		// have set the status after the last heartbeat: RecordOpStatus).
		// users_digest_beats counts the heartbeats in a row that carried
		// this users_digest (0: none carried): in the same write.
		beats := 0
		if hb.UsersDigest != "" {
			beats = 1
		}
		res, err := tx.Exec(ctx, `INSERT INTO instance_reports
			(instance_id, agent_version, boot_id, seq, status, status_detail, volume, last_completed_op, sent_at, received_at, heartbeats,
			 users_digest, users_digest_beats)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)
			ON CONFLICT (instance_id) DO UPDATE SET
				agent_version = excluded.agent_version, boot_id = excluded.boot_id, seq = excluded.seq,
				status = excluded.status, status_detail = excluded.status_detail, volume = excluded.volume,
				last_completed_op = excluded.last_completed_op, sent_at = excluded.sent_at,
				received_at = excluded.received_at, heartbeats = instance_reports.heartbeats + 1,
				users_digest = excluded.users_digest,
				users_digest_beats = CASE WHEN excluded.users_digest = '' THEN 0
					WHEN excluded.users_digest = instance_reports.users_digest THEN instance_reports.users_digest_beats + 1 ELSE 1 END
			WHERE NOT (instance_reports.boot_id = excluded.boot_id AND (excluded.seq <= instance_reports.seq OR excluded.sent_at < instance_reports.sent_at))`,
			instanceID, hb.AgentVersion, hb.BootID, int64(hb.Seq), string(hb.Status), hb.StatusDetail, nullBytes(vol),
			hb.LastCompletedOp, store.Millis(hb.SentAt), store.Millis(received), hb.UsersDigest, beats)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return err
		}
		accepted = true
		return recordReplication(ctx, tx, instanceID, hb, received)
	})
	if err != nil {
		return false, fmt.Errorf("record heartbeat of %s: %w", instanceID, err)
	}
	return accepted, nil
}

// recordReplication keeps a replica's reported link beside its report
// (docs/replication.md); a heartbeat without one clears it.
func recordReplication(ctx context.Context, q store.Querier, instanceID string, hb wire.Heartbeat, received time.Time) error {
	if hb.Replication == nil {
		_, err := q.Exec(ctx, `DELETE FROM replication_reports WHERE instance_id = ?`, instanceID)
		return err
	}
	if hb.Replication.Role != wire.RoleReplica {
		// A source's binary log position: written only when it moved, so
		// an idle server's heartbeats add no write (its freshness is its
		// report's, above).
		return instances.SetReplicationReportIfMoved(ctx, q, instanceID, *hb.Replication, received)
	}
	return instances.SetReplicationReport(ctx, q, instanceID, *hb.Replication, received)
}

func (s *SQLStore) EnqueueOp(ctx context.Context, instanceID string, op wire.Operation, opts QueueOptions) error {
	digest := op.Digest()
	var expires any
	if !opts.Expires.IsZero() {
		expires = store.Millis(opts.Expires)
	}
	res, err := s.DB.Exec(ctx, `INSERT INTO agent_ops (instance_id, op_id, kind, args, digest, queued_at, expires_at, watched)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (instance_id, op_id) DO NOTHING`,
		instanceID, op.ID, string(op.Kind), nullBytes(op.Args), digest, store.Millis(s.now()), expires, store.Bool(opts.Watch))
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
	rows, err := s.DB.Query(ctx, `SELECT op_id, kind, args, attempt FROM agent_ops
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
		if err := rows.Scan(&op.ID, &kind, &args, &op.Attempt); err != nil {
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

func (s *SQLStore) RetryOp(ctx context.Context, instanceID, opID string, attempt int, now time.Time) (bool, error) {
	if attempt+1 >= wire.MaxAttempts {
		return false, nil
	}
	res, err := s.DB.Exec(ctx, `UPDATE agent_ops SET attempt = ?, ack_state = NULL
		WHERE instance_id = ? AND op_id = ? AND attempt = ? AND done_at IS NULL AND (expires_at IS NULL OR expires_at > ?)`,
		attempt+1, instanceID, opID, attempt, store.Millis(now))
	if err != nil {
		return false, fmt.Errorf("retry op %s: %w", opID, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

func (s *SQLStore) ExpireOps(ctx context.Context, now time.Time) ([]OpRef, error) {
	type row struct {
		OpRef
		kind    string
		attempt int
	}
	rows, err := store.All(ctx, s.DB, func(sc store.Scanner) (row, error) {
		var r row
		return r, sc.Scan(&r.InstanceID, &r.OpID, &r.kind, &r.attempt)
	}, `SELECT instance_id, op_id, kind, attempt FROM agent_ops
		WHERE done_at IS NULL AND ack_state IS NULL AND expires_at IS NOT NULL AND expires_at <= ?`, store.Millis(now))
	if err != nil {
		return nil, err
	}
	var out []OpRef
	for _, r := range rows {
		res := wire.Result{OpID: r.OpID, Attempt: r.attempt, FinishedAt: now.UTC(), Error: wire.Errorf(wire.CodeExpired,
			"the controller gave up on %s: not delivered to the guest agent before its timeout", r.kind)}
		if r.attempt > 0 {
			res.Error.Message = fmt.Sprintf("the controller gave up on %s: run %d times, each cut short, and not run again before its timeout", r.kind, r.attempt)
		}
		data, _ := json.Marshal(res)
		n, err := s.DB.Exec(ctx, `UPDATE agent_ops SET result = ?, done_at = ? WHERE instance_id = ? AND op_id = ? AND done_at IS NULL AND ack_state IS NULL`,
			string(data), store.Millis(now), r.InstanceID, r.OpID)
		if err != nil {
			return out, err
		}
		if k, _ := n.RowsAffected(); k == 1 {
			out = append(out, r.OpRef)
		}
	}
	// Secrets go at the expiry whatever else happens to the op.
	for kind, c := range wire.Classes {
		if !c.SecretArgs {
			continue
		}
		if _, err := s.DB.Exec(ctx, `UPDATE agent_ops SET args = NULL WHERE kind = ? AND args IS NOT NULL AND expires_at IS NOT NULL AND expires_at <= ?`,
			string(kind), store.Millis(now)); err != nil {
			return out, err
		}
	}
	return out, nil
}

func (s *SQLStore) RecordOpStatus(ctx context.Context, instanceID, bootID string, st wire.StatusResult, at, received time.Time) error {
	detail := st.Detail
	if len(detail) > 1000 {
		detail = detail[:1000]
	}
	_, err := s.DB.Exec(ctx, `UPDATE instance_reports SET status = ?, status_detail = ?, sent_at = ?, received_at = ?
		WHERE instance_id = ? AND boot_id = ? AND sent_at <= ?`,
		string(st.Status), detail, store.Millis(at), store.Millis(received), instanceID, bootID, store.Millis(at))
	if err != nil {
		return fmt.Errorf("record the status %s's result reported for %s: %w", st.Status, instanceID, err)
	}
	return nil
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
	bare := r
	bare.Payload = nil
	blank, err := json.Marshal(bare)
	if err != nil {
		return err
	}
	return s.DB.InTx(ctx, func(tx *store.Tx) error {
		var kind string
		var done sql.NullInt64
		var attempt int
		err := tx.QueryRow(ctx, `SELECT kind, done_at, attempt FROM agent_ops WHERE instance_id = ? AND op_id = ?`, instanceID, r.OpID).Scan(&kind, &done, &attempt)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("op %s: %w", r.OpID, ErrUnknownOp)
		}
		if err != nil || done.Valid || r.Attempt < attempt {
			return err // the first result wins; an earlier run's is stale
		}
		// The payload's caller may have given up on it already
		// (ForgetPayload): decided in the write itself, so a
		// ForgetPayload committed meanwhile is never missed.
		q := `UPDATE agent_ops SET result = CASE WHEN forget_payload = 1 THEN ? ELSE ? END, done_at = ?`
		if secretArgs(kind) {
			q += `, args = NULL`
		}
		q += ` WHERE instance_id = ? AND op_id = ? AND done_at IS NULL`
		_, err = tx.Exec(ctx, q, string(blank), string(data), store.Millis(s.now()), instanceID, r.OpID)
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
// it (root passwords are handed out once and not kept), or once it gave
// up waiting: a result that comes later is stored without its payload.
func (s *SQLStore) ForgetPayload(ctx context.Context, instanceID, opID string) error {
	if _, err := s.DB.Exec(ctx, `UPDATE agent_ops SET forget_payload = 1 WHERE instance_id = ? AND op_id = ?`, instanceID, opID); err != nil {
		return fmt.Errorf("forget the result of op %s: %w", opID, err)
	}
	r, done, err := s.OpResult(ctx, instanceID, opID)
	if err != nil || !done || len(r.Payload) == 0 {
		return err
	}
	r.Payload = nil
	data, _ := json.Marshal(r)
	_, err = s.DB.Exec(ctx, `UPDATE agent_ops SET result = ? WHERE instance_id = ? AND op_id = ?`, string(data), instanceID, opID)
	return err
}

// WatchedResult is the final result of a watched op (QueueOptions.Watch)
// not yet recorded on its instance.
type WatchedResult struct {
	InstanceID, OpID string
	Kind             wire.Kind
	Result           wire.Result
}

// WatchedResults lists the final results of watched ops not yet reported.
func WatchedResults(ctx context.Context, q store.Querier) ([]WatchedResult, error) {
	return store.All(ctx, q, func(sc store.Scanner) (WatchedResult, error) {
		var w WatchedResult
		var kind, res string
		if err := sc.Scan(&w.InstanceID, &w.OpID, &kind, &res); err != nil {
			return w, err
		}
		w.Kind = wire.Kind(kind)
		if err := json.Unmarshal([]byte(res), &w.Result); err != nil {
			return w, fmt.Errorf("op %s: stored result: %w", w.OpID, err)
		}
		return w, nil
	}, `SELECT instance_id, op_id, kind, result FROM agent_ops WHERE watched = 1 AND reported_at IS NULL AND done_at IS NOT NULL ORDER BY seq`)
}

// Unwatch marks an op as needing no report: its result reached whoever
// asked (now, or a report was recorded).
func Unwatch(ctx context.Context, q store.Querier, instanceID, opID string, now time.Time) error {
	_, err := q.Exec(ctx, `UPDATE agent_ops SET watched = 0, reported_at = ? WHERE instance_id = ? AND op_id = ?`,
		store.Millis(now), instanceID, opID)
	return err
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

// EnrolledKey is one agent key an instance enrolled (a public key).
type EnrolledKey struct {
	Fingerprint   string    `json:"fingerprint"`
	AuthorizedKey string    `json:"authorized_key"`
	EnrolledAt    time.Time `json:"enrolled_at"`
}

// Keys lists the agent keys an instance enrolled.
func Keys(ctx context.Context, q store.Querier, instanceID string) ([]EnrolledKey, error) {
	return store.All(ctx, q, func(s store.Scanner) (EnrolledKey, error) {
		var k EnrolledKey
		var at int64
		err := s.Scan(&k.Fingerprint, &k.AuthorizedKey, &at)
		k.EnrolledAt = store.FromMillis(at)
		return k, err
	}, `SELECT fingerprint, authorized_key, enrolled_at FROM agent_keys WHERE instance_id = ? ORDER BY enrolled_at, fingerprint`, instanceID)
}

// ReplaceKeys revokes every agent key of the instance and its unused
// tokens, and enrols keys instead (none: the instance's agent can only
// enrol again, with a token written after this). A rebuild revokes the old
// agent's key this way; its rollback puts it back.
func ReplaceKeys(ctx context.Context, q store.Querier, instanceID string, keys []EnrolledKey) error {
	if _, err := q.Exec(ctx, `DELETE FROM agent_keys WHERE instance_id = ?`, instanceID); err != nil {
		return fmt.Errorf("revoke the agent keys of %s: %w", instanceID, err)
	}
	if err := RevokeUnusedTokens(ctx, q, instanceID); err != nil {
		return fmt.Errorf("revoke the enrolment tokens of %s: %w", instanceID, err)
	}
	for _, k := range keys {
		if _, err := q.Exec(ctx, `INSERT INTO agent_keys (fingerprint, instance_id, authorized_key, enrolled_at) VALUES (?, ?, ?, ?)`,
			k.Fingerprint, instanceID, k.AuthorizedKey, store.Millis(k.EnrolledAt)); err != nil {
			return fmt.Errorf("restore agent key %s of %s: %w", k.Fingerprint, instanceID, err)
		}
	}
	return nil
}

// CancelOp ends an op not yet finished with an expired result saying
// reason, and drops its arguments: it is not delivered any more (an op
// meant for an agent that is gone, such as a rebuilt guest's prepare after
// a rollback). A delivered op's own result, should it come, is dropped.
func CancelOp(ctx context.Context, q store.Querier, instanceID, opID, reason string, now time.Time) error {
	data, _ := json.Marshal(wire.Result{OpID: opID, FinishedAt: now.UTC(), Error: wire.Errorf(wire.CodeExpired, "%s", reason)})
	_, err := q.Exec(ctx, `UPDATE agent_ops SET result = ?, done_at = ?, args = NULL WHERE instance_id = ? AND op_id = ? AND done_at IS NULL`,
		string(data), store.Millis(now), instanceID, opID)
	if err != nil {
		return fmt.Errorf("cancel op %s of %s: %w", opID, instanceID, err)
	}
	return nil
}

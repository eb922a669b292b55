package instances

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"strata/agent/wire"

	"strata/controller/store"
)

// Link is a replica's link to its replication source (docs/replication.md).
type Link struct {
	InstanceID string
	SourceID   string
	// Account is the replication account's name on the source.
	Account   string
	CreatedAt time.Time
}

// InsertLink records that instance follows source.
func InsertLink(ctx context.Context, q store.Querier, l Link) error {
	_, err := q.Exec(ctx, `INSERT INTO replication_links (instance_id, source_id, account, created_at) VALUES (?, ?, ?, ?)`,
		l.InstanceID, l.SourceID, l.Account, store.Millis(l.CreatedAt))
	return err
}

// DeleteLink forgets instance's link (detach, delete).
func DeleteLink(ctx context.Context, q store.Querier, instanceID string) error {
	_, err := q.Exec(ctx, `DELETE FROM replication_links WHERE instance_id = ?`, instanceID)
	return err
}

// LinkOf returns instance's link; ok is false for an instance that is no
// replica.
func LinkOf(ctx context.Context, q store.Querier, instanceID string) (l Link, ok bool, err error) {
	var created int64
	err = q.QueryRow(ctx, `SELECT instance_id, source_id, account, created_at FROM replication_links WHERE instance_id = ?`, instanceID).
		Scan(&l.InstanceID, &l.SourceID, &l.Account, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return l, false, nil
	}
	l.CreatedAt = store.FromMillis(created)
	return l, err == nil, err
}

// Ejection is what the controller keeps of a source ejected from its
// replication group (failover): the replica elected in its place, and
// the position the group forked at (the elected replica's received
// position when it was promoted; ForkReplID is a Redis position's
// replication ID). A rejoin checks the instance holds nothing past it.
// Redis: ForkPrevReplID is the replication ID the elected replica
// followed before ForkReplID, and ForkPrevEnd the last offset of the
// group's history under it (empty when it had none).
type Ejection struct {
	InstanceID     string
	ElectedID      string
	ForkPos        string
	ForkReplID     string
	ForkPrevReplID string
	ForkPrevEnd    string
	EjectedAt      time.Time
}

// InsertEjection records that an instance was ejected (replacing an
// older record of it).
func InsertEjection(ctx context.Context, q store.Querier, e Ejection) error {
	_, err := q.Exec(ctx, `INSERT INTO ejections (instance_id, elected_id, fork_pos, fork_repl_id, fork_prev_repl_id, fork_prev_end, ejected_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (instance_id) DO UPDATE SET elected_id = excluded.elected_id, fork_pos = excluded.fork_pos,
			fork_repl_id = excluded.fork_repl_id, fork_prev_repl_id = excluded.fork_prev_repl_id,
			fork_prev_end = excluded.fork_prev_end, ejected_at = excluded.ejected_at`,
		e.InstanceID, e.ElectedID, e.ForkPos, e.ForkReplID, e.ForkPrevReplID, e.ForkPrevEnd, store.Millis(e.EjectedAt))
	return err
}

// EjectionOf returns an instance's ejection; ok is false when it was
// not ejected (or rejoined since).
func EjectionOf(ctx context.Context, q store.Querier, instanceID string) (e Ejection, ok bool, err error) {
	var at int64
	err = q.QueryRow(ctx, `SELECT instance_id, elected_id, fork_pos, fork_repl_id, fork_prev_repl_id, fork_prev_end, ejected_at
		FROM ejections WHERE instance_id = ?`, instanceID).
		Scan(&e.InstanceID, &e.ElectedID, &e.ForkPos, &e.ForkReplID, &e.ForkPrevReplID, &e.ForkPrevEnd, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return e, false, nil
	}
	e.EjectedAt = store.FromMillis(at)
	return e, err == nil, err
}

// DeleteEjection forgets an instance's ejection (rejoined, deleted).
func DeleteEjection(ctx context.Context, q store.Querier, instanceID string) error {
	_, err := q.Exec(ctx, `DELETE FROM ejections WHERE instance_id = ?`, instanceID)
	return err
}

// ReplicasOf lists the live replicas following source, oldest first.
func ReplicasOf(ctx context.Context, q store.Querier, sourceID string) ([]Link, error) {
	return store.All(ctx, q, func(s store.Scanner) (Link, error) {
		var l Link
		var created int64
		err := s.Scan(&l.InstanceID, &l.SourceID, &l.Account, &created)
		l.CreatedAt = store.FromMillis(created)
		return l, err
	}, `SELECT l.instance_id, l.source_id, l.account, l.created_at FROM replication_links l
		JOIN instances i ON i.id = l.instance_id AND i.deleted_at IS NULL
		WHERE l.source_id = ? ORDER BY l.created_at, l.instance_id`, sourceID)
}

// TransactionsBehind is how many transactions a replica that applied
// replicaPos (its gtid_slave_pos) is behind a source that wrote sourcePos
// (its gtid_binlog_pos): per replication domain of the source, the
// source's sequence number less the replica's (none below zero: the two
// reports are read at different moments), summed. A MariaDB domain's
// sequence numbers count its transactions whichever server wrote them, so
// the distance holds across a switchover. ok is false when either list
// is malformed or the source's is empty.
func TransactionsBehind(sourcePos, replicaPos string) (n uint64, ok bool) {
	src, ok1 := gtidSeqs(sourcePos)
	rep, ok2 := gtidSeqs(replicaPos)
	if !ok1 || !ok2 || len(src) == 0 {
		return 0, false
	}
	for d, seq := range src {
		if seq > rep[d] {
			n += seq - rep[d]
		}
	}
	return n, true
}

// gtidSeqs maps a GTID list's domains to their sequence numbers.
func gtidSeqs(list string) (map[uint64]uint64, bool) {
	out := map[uint64]uint64{}
	if list == "" {
		return out, true
	}
	if wire.CheckGTIDList(list) != nil {
		return nil, false
	}
	for _, g := range strings.Split(list, ",") {
		parts := strings.Split(strings.TrimSpace(g), "-")
		if len(parts) != 3 {
			return nil, false
		}
		d, err1 := strconv.ParseUint(parts[0], 10, 32)
		seq, err2 := strconv.ParseUint(parts[2], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, false
		}
		out[d] = max(out[d], seq)
	}
	return out, true
}

// SetReplicationReport records a replica's link as its agent reported it
// at received (a heartbeat, or the status the replica's create read when
// it attached it).
func SetReplicationReport(ctx context.Context, q store.Querier, instanceID string, st wire.ReplicationStatus, received time.Time) error {
	return setReplicationReport(ctx, q, instanceID, st, received, "")
}

// SetReplicationReportIfMoved is SetReplicationReport that leaves a
// stored report with the same status alone (a source's binary log
// position: an idle server's heartbeats then write nothing), in one
// statement.
func SetReplicationReportIfMoved(ctx context.Context, q store.Querier, instanceID string, st wire.ReplicationStatus, received time.Time) error {
	return setReplicationReport(ctx, q, instanceID, st, received, ` WHERE replication_reports.status <> excluded.status`)
}

func setReplicationReport(ctx context.Context, q store.Querier, instanceID string, st wire.ReplicationStatus, received time.Time, where string) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = q.Exec(ctx, `INSERT INTO replication_reports (instance_id, status, received_at) VALUES (?, ?, ?)
		ON CONFLICT (instance_id) DO UPDATE SET status = excluded.status, received_at = excluded.received_at`+where,
		instanceID, string(data), store.Millis(received))
	return err
}

// ReplicationReport is a replica's link as its agent last reported it;
// ok is false when there is no report.
func ReplicationReport(ctx context.Context, q store.Querier, instanceID string) (st wire.ReplicationStatus, received time.Time, ok bool, err error) {
	var data string
	var at int64
	err = q.QueryRow(ctx, `SELECT status, received_at FROM replication_reports WHERE instance_id = ?`, instanceID).Scan(&data, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return st, received, false, nil
	}
	if err != nil {
		return st, received, false, err
	}
	if err := json.Unmarshal([]byte(data), &st); err != nil {
		return st, received, false, err
	}
	return st, store.FromMillis(at), true, nil
}

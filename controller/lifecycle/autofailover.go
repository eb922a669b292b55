package lifecycle

import (
	"context"
	"time"

	"strata/controller/compute"
	"strata/controller/instances"
	"strata/controller/store"
)

// Automatic failover (docs/replication.md): a replication source with a
// grace period set is ejected by the controller itself once its last
// heartbeat is older than the grace period — the eject of eject.go, with
// the grace period for the controller's stale limit.

// MaxAutoFailoverGrace bounds the grace period.
const MaxAutoFailoverGrace = time.Hour

// MinAutoFailoverGrace is the shortest grace period: two heartbeats and
// five seconds, so that one late heartbeat never fails a group over.
func (m *Manager) MinAutoFailoverGrace() time.Duration {
	return 2*time.Duration(m.heartbeatSeconds())*time.Second + 5*time.Second
}

// SetAutoFailover sets (graceSeconds > 0) or clears (0) the automatic failover
// of the replication group whose source is id. It is set on the source,
// or on a standalone instance, to apply once it has replicas; a replica
// is refused, naming its source.
func (m *Manager) SetAutoFailover(ctx context.Context, project, id string, graceSeconds int) error {
	lo, hi := int(m.MinAutoFailoverGrace()/time.Second), int(MaxAutoFailoverGrace/time.Second)
	if graceSeconds != 0 && (graceSeconds < lo || graceSeconds > hi) {
		return wrap(ErrBadRequest, "auto_failover.grace_seconds: %d is out of range: 0 (off) or %d to %d (at least two heartbeats of %d s and 5 s)",
			graceSeconds, lo, hi, m.heartbeatSeconds())
	}
	grace := time.Duration(graceSeconds) * time.Second
	if _, ok := m.Compute.(compute.ReplicationRouter); !ok && m.Compute != nil && grace > 0 {
		return wrap(ErrBadRequest, "this controller's compute driver cannot connect replicas to a new source: automatic failover is not possible")
	}
	return m.DB.InTx(ctx, func(tx *store.Tx) error {
		in, err := m.get(ctx, tx, project, id)
		if err != nil {
			return err
		}
		if l, ok, err := instances.LinkOf(ctx, tx, in.ID); err != nil {
			return err
		} else if ok {
			return wrap(ErrBadRequest, "instance %s is a replica: automatic failover is set on its source %s", in.ID, l.SourceID)
		}
		if err := instances.Update(ctx, tx, in.ID, m.now(), `auto_failover_grace_s = ?`, int(grace/time.Second)); err != nil {
			return err
		}
		m.log().Info("automatic failover set", "source", in.ID, "grace_seconds", int(grace/time.Second))
		return nil
	})
}

// CheckAutoFailover ejects every source with automatic failover whose
// last heartbeat is older than its grace period (or that never reported
// within it of its creation), and that no other task holds (a recover
// task restarting it gives way).
func (m *Manager) CheckAutoFailover(ctx context.Context) error {
	ids, err := store.All(ctx, m.DB, func(s store.Scanner) (string, error) {
		var id string
		return id, s.Scan(&id)
	}, `SELECT i.id FROM instances i WHERE i.auto_failover_grace_s > 0 AND i.deleted_at IS NULL AND i.errored = 0
		AND EXISTS (SELECT 1 FROM replication_links l WHERE l.source_id = i.id)`)
	if err != nil {
		return err
	}
	for _, id := range ids {
		in, err := m.load(ctx, id)
		if err != nil {
			continue
		}
		last := in.CreatedAt
		if in.Reported != nil {
			last = in.Reported.ReceivedAt
		}
		silent := m.now().Sub(last)
		if silent <= in.AutoFailoverGrace || (in.Task != instances.TaskNone && in.Task != instances.TaskRebooting) {
			continue
		}
		if err := m.eject(ctx, "", id, in.AutoFailoverGrace); err != nil {
			if m.autoFailoverWarnDue(id) { // retried every second; said once a minute
				m.log().Warn("automatic failover not started; retrying", "source", id, "err", err)
			}
			continue
		}
		m.log().Warn("automatic failover started: the source is silent past its grace period", "source", id,
			"silent_seconds", silent.Seconds(), "grace_seconds", int(in.AutoFailoverGrace/time.Second))
	}
	return nil
}

// autoFailoverWarnDue says whether a failover that could not start may be
// logged again for source id (once a minute).
func (m *Manager) autoFailoverWarnDue(id string) bool {
	m.autoMu.Lock()
	defer m.autoMu.Unlock()
	if m.autoWarned == nil {
		m.autoWarned = map[string]time.Time{}
	}
	if t, ok := m.autoWarned[id]; ok && time.Since(t) < time.Minute {
		return false
	}
	m.autoWarned[id] = time.Now()
	return true
}

package api

import (
	"net/http"

	"strata/controller/instances"
)

// notOnReplica refuses a write that would make a replica diverge from its
// source (databases, users, root): those are made on the source and
// arrive by replication.
func (s *Server) notOnReplica(h handler) handler {
	return func(w http.ResponseWriter, c *call) error {
		in, err := instances.Get(c.ctx(), s.DB, c.instanceScope(), c.r.PathValue("id"))
		if err != nil {
			return err
		}
		if err := refuseOnReplica(c, s, in, "databases, users and root"); err != nil {
			return err
		}
		return h(w, c)
	}
}

func refuseOnReplica(c *call, s *Server, in instances.Instance, what string) error {
	l, ok, err := instances.LinkOf(c.ctx(), s.DB, in.ID)
	if err != nil || !ok {
		return err
	}
	return errorf(http.StatusBadRequest, "instance %s is a replica of %s: %s are changed on its source and arrive by replication (detach the replica to change it on its own)",
		in.ID, l.SourceID, what)
}

// replicationView adds Trove's replica_of (on a replica) and replicas (on
// a source) to an instance's detailed view.
func (s *Server) replicationView(c *call, in instances.Instance, out map[string]any) {
	if l, ok, err := instances.LinkOf(c.ctx(), s.DB, in.ID); err == nil && ok {
		out["replica_of"] = map[string]any{"id": l.SourceID, "links": c.links("/instances/" + l.SourceID)}
		out["replication"] = s.replicationState(c, in, l.SourceID)
	}
	if list, err := instances.ReplicasOf(c.ctx(), s.DB, in.ID); err == nil && len(list) > 0 {
		replicas := make([]map[string]any, 0, len(list))
		for _, l := range list {
			replicas = append(replicas, map[string]any{"id": l.InstanceID, "links": c.links("/instances/" + l.InstanceID)})
		}
		out["replicas"] = replicas
	}
	// strata's own: the group's automatic failover, on its source.
	if in.AutoFailoverGrace > 0 {
		out["auto_failover"] = map[string]any{"grace_seconds": int(in.AutoFailoverGrace.Seconds())}
	}
}

// replicationState is strata's own view of a replica's link, beyond
// Trove: from its latest heartbeat, RUNNING with the lag and positions,
// ERROR with the reason when a thread stopped or reports an error, and
// UNKNOWN without a fresh report (the agent is silent: its lag cannot be
// told). transactions_behind is the distance from the source's binary
// log position in its latest heartbeat to what the replica applied, shown
// while both agents report (an agent baked before sources reported their
// position sends none: it is left out).
//
// PostgreSQL and Redis replicas show their own positions: PostgreSQL's
// received_lsn and replayed_lsn, with bytes_behind as the replica
// measures it (from the primary's position its WAL sender last sent);
// Redis's repl_offset and last_io_seconds_ago (a Redis source's offset
// is not in its heartbeats: a bytes distance is not shown).
func (s *Server) replicationState(c *call, in instances.Instance, sourceID string) map[string]any {
	st, at, ok, err := instances.ReplicationReport(c.ctx(), s.DB, in.ID)
	if err != nil || !ok {
		return map[string]any{"state": "UNKNOWN"}
	}
	out := map[string]any{"state": "RUNNING", "io_running": st.IORunning, "sql_running": st.SQLRunning, "updated": troveTime(at)}
	if st.SecondsBehind != nil {
		out["seconds_behind"] = *st.SecondsBehind
	}
	// Each datastore's own positions: no empty GTIDs on a PostgreSQL or
	// Redis replica.
	for k, v := range map[string]string{"gtid_slave_pos": st.GTIDSlavePos, "gtid_io_pos": st.GTIDIOPos,
		"received_lsn": st.ReceivedLSN, "replayed_lsn": st.ReplayedLSN, "repl_id": st.ReplID} {
		if v != "" {
			out[k] = v
		}
	}
	if st.BytesBehind != nil {
		out["bytes_behind"] = *st.BytesBehind
	}
	if st.ReplOffset != nil {
		out["repl_offset"] = *st.ReplOffset
	}
	if st.LastIOSecondsAgo != nil {
		out["last_io_seconds_ago"] = *st.LastIOSecondsAgo
	}
	switch {
	case st.LastError != "" || !st.IORunning || !st.SQLRunning:
		out["state"] = "ERROR"
		out["reason"] = st.LastError
	default:
		if _, operating := s.Lifecycle.Status(in); operating == "UNKNOWN" {
			// The agent went silent: the last lag is history.
			out["state"] = "UNKNOWN"
		}
	}
	if out["state"] == "UNKNOWN" {
		return out
	}
	srcIn, err := instances.Get(c.ctx(), s.DB, "", sourceID)
	if err != nil {
		return out
	}
	if _, operating := s.Lifecycle.Status(srcIn); operating == "UNKNOWN" {
		return out // the source's agent is silent: its position is history
	}
	// The position is stored when it moves (agentendpoint): with the
	// source's agent reporting, the stored one is current.
	src, _, ok, err := instances.ReplicationReport(c.ctx(), s.DB, sourceID)
	if err != nil || !ok {
		return out // the source reports no position
	}
	if n, ok := instances.TransactionsBehind(src.GTIDBinlogPos, st.GTIDSlavePos); ok {
		out["transactions_behind"] = n
		out["source_gtid_binlog_pos"] = src.GTIDBinlogPos
	}
	return out
}

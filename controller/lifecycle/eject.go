package lifecycle

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"strata/agent/wire"
	"strata/controller/compute"
	"strata/controller/instances"
	"strata/controller/store"
	"strata/controller/tasks"
)

// Failover (Trove's eject-replica-source, docs/replication.md): the
// source P is gone (its heartbeats stale); a task on P elects the replica
// that received the most (MariaDB gtid_io_pos, PostgreSQL received_lsn,
// Redis repl_offset within the group's replication ID), promotes it once it applied all
// it received, and repoints the others — the switchover's steps from
// "promoted" on (promote.go), without P: P leaves the group, and a fence
// (set_read_only) waits queued for its agent.

// EjectedFenceWait is how long the ejected source's fence waits for its
// agent to come back.
const EjectedFenceWait = 7 * 24 * time.Hour

// Eject starts a failover away from the source id (Trove's rules: it has
// replicas, and its heartbeat is stale; every replica is ACTIVE with no
// task in progress). A recovery restarting the source's server is
// cancelled: the failover fences that server instead.
func (m *Manager) Eject(ctx context.Context, project, id string) error {
	return m.eject(ctx, project, id, 0)
}

// eject is Eject; an automatic failover (autoGrace > 0) counts the
// source's heartbeat as stale after its group's grace period instead of
// the controller's limit.
func (m *Manager) eject(ctx context.Context, project, id string, autoGrace time.Duration) error {
	err := m.DB.InTx(ctx, func(tx *store.Tx) error {
		src, err := m.get(ctx, tx, project, id)
		if err != nil {
			return err
		}
		links, err := instances.ReplicasOf(ctx, tx, src.ID)
		if err != nil {
			return err
		}
		if len(links) == 0 {
			return wrap(ErrBadRequest, "Instance %s is not a replica source.", src.ID)
		}
		if _, ok := m.Compute.(compute.ReplicationRouter); !ok {
			return wrap(ErrBadRequest, "this controller's compute driver cannot connect replicas to a new source; nothing was changed")
		}
		stale := m.Stale()
		if autoGrace > 0 {
			stale = autoGrace
		}
		if src.Reported != nil && m.now().Sub(src.Reported.ReceivedAt) <= stale || autoGrace == 0 && m.healthy(src) {
			return wrap(ErrBadRequest, "Replica Source %s cannot be ejected as it has a current heartbeat (stale after %s).", src.ID, stale)
		}
		if src.Task == instances.TaskRebooting {
			// Recovery is restarting the source: the failover wins (its
			// server is fenced, not restarted). A restart a user asked
			// for is another task kind and still refuses the eject.
			if _, err := tasks.CancelKinds(ctx, tx, src.ID, []string{KindRecover}, "the instance is failed over from", m.now()); err != nil {
				return err
			}
			src.Task = instances.TaskNone
			if active, err := tasks.Active(ctx, tx, src.ID); err != nil {
				return err
			} else if len(active) > 0 {
				src.Task = instances.TaskRebooting
			}
		}
		if src.Task != instances.TaskNone {
			return wrap(ErrUnprocessable, "cannot eject instance %s: task %s is in progress", src.ID, src.Task)
		}
		p := promotePayload{Source: src.ID, Eject: true, Auto: autoGrace > 0}
		members := []instances.Instance{src}
		for _, l := range links {
			in, err := instances.Get(ctx, tx, "", l.InstanceID)
			if err != nil {
				return fmt.Errorf("replica %s of %s: %w", l.InstanceID, src.ID, err)
			}
			if in.Task != instances.TaskNone {
				return wrap(ErrUnprocessable, "cannot eject instance %s: its replica %s has task %s in progress", src.ID, in.ID, in.Task)
			}
			status, _ := m.Status(in)
			if err := requireStatus(in, status, "fail over to a group with", instances.StatusActive); err != nil {
				return err
			}
			members = append(members, in)
			p.Others = append(p.Others, in.ID)
		}
		now := m.now()
		for _, in := range members {
			if err := instances.SetTask(ctx, tx, in.ID, instances.TaskEjecting, now); err != nil {
				return err
			}
		}
		_, err = tasks.Enqueue(ctx, tx, tasks.New{InstanceID: src.ID, Kind: KindPromote, Step: "elect", Payload: p,
			Deadline: now.Add(m.opTimeout())}, now)
		return err
	})
	if err == nil {
		m.kick()
		m.log().Info("failover queued", "source", id, "automatic", autoGrace > 0)
	}
	return err
}

// electStep asks every replica what it received and elects the most
// current; the choice is stored before anything is queued, so a restart
// never promotes two.
func (m *Manager) electStep(ctx context.Context, t *tasks.Task, p promotePayload) (tasks.Result, error) {
	var cands []candidate
	var asked []string
	for _, id := range p.Others {
		in, err := m.load(ctx, id)
		if err != nil {
			asked = append(asked, id+": "+err.Error())
			continue
		}
		res, err := m.Call(ctx, in, wire.KindReplicationStatus, nil)
		var st wire.ReplicationStatus
		if err == nil && res.Error == nil {
			err = res.Decode(&st)
		} else if err == nil {
			err = fmt.Errorf("%s: %s", res.Error.Code, res.Error.Message)
		}
		if err != nil {
			asked = append(asked, id+": "+err.Error())
			continue
		}
		c, ok := receivedPosition(p.Manager, st)
		if !ok {
			asked = append(asked, fmt.Sprintf("%s: no usable position (%q)", id, c.pos))
			continue
		}
		c.id = id
		asked = append(asked, id+": "+c.String())
		cands = append(cands, c)
	}
	best, ok := elect(p.Manager, cands)
	if !ok {
		return tasks.Result{}, tasks.Fail("", "failover from %s: no replica could be elected (%s); nothing was changed", p.Source, strings.Join(asked, "; "))
	}
	p.Replica, p.FencePos, p.FenceReplID = best.id, best.pos, best.replID
	p.FencePrevReplID, p.FencePrevEnd = best.prevReplID, best.prevEnd
	var others []string
	for _, id := range p.Others {
		if id != best.id {
			others = append(others, id)
		}
	}
	p.Others = others
	m.log().Info("failover: replica elected", "source", p.Source, "elected", best.id, "position", best.String(), "asked", asked)
	return tasks.Result{Next: "elected", Payload: p}, nil
}

// candidate is a replica's received position in an election. Redis:
// prevReplID and prevEnd are the stream it followed before replID and
// the last offset of its history under it (a replica that continued
// that stream with a promoted source), empty when it has none.
type candidate struct {
	id, pos, replID     string
	prevReplID, prevEnd string
}

func (c candidate) String() string {
	if c.replID != "" {
		return c.replID + ":" + c.pos
	}
	return c.pos
}

// receivedPosition is what a replica received, by datastore: MariaDB's
// gtid_io_pos (gtid_slave_pos without one), PostgreSQL's received_lsn
// (its replayed_lsn when further),
// Redis's repl_offset (it applies what it receives) with its repl_id,
// and its previous repl_id2 up to repl_id2_end (the group's stream
// before the fork's ID, which a source started again from an older
// snapshot may hold).
func receivedPosition(manager string, st wire.ReplicationStatus) (candidate, bool) {
	switch manager {
	case managerPostgreSQL:
		// pg_last_wal_receive_lsn goes back to the start of its WAL
		// segment when the WAL receiver restarts (as it does while the
		// source is gone); what was replayed never goes back.
		recv, ok := parseLSN(st.ReceivedLSN)
		if replayed, ok2 := parseLSN(st.ReplayedLSN); ok2 && (!ok || replayed > recv) {
			return candidate{pos: st.ReplayedLSN}, true
		}
		return candidate{pos: st.ReceivedLSN}, ok
	case managerRedis:
		if st.ReplOffset == nil || *st.ReplOffset < 0 || st.ReplID == "" {
			return candidate{}, false
		}
		c := candidate{pos: strconv.FormatInt(*st.ReplOffset, 10), replID: st.ReplID}
		if st.ReplID2 != "" && st.ReplID2 != st.ReplID && st.ReplID2End != nil && *st.ReplID2End >= 0 {
			c.prevReplID, c.prevEnd = st.ReplID2, strconv.FormatInt(*st.ReplID2End, 10)
		}
		return c, true
	}
	pos := st.GTIDIOPos
	if pos == "" {
		pos = st.GTIDSlavePos
	}
	return candidate{pos: pos}, pos != "" && wire.CheckGTIDList(pos) == nil
}

// elect picks the most current candidate. Redis offsets compare only
// within one replication ID: the one most replicas share (on a tie, the
// one with the furthest offset) is the group's.
func elect(manager string, cands []candidate) (candidate, bool) {
	if manager == managerRedis {
		count := map[string]int{}
		for _, c := range cands {
			count[c.replID]++
		}
		group, far := "", int64(-1)
		for _, c := range cands {
			off, _ := strconv.ParseInt(c.pos, 10, 64)
			if count[c.replID] > count[group] || count[c.replID] == count[group] && off > far {
				group, far = c.replID, off
			}
		}
		var in []candidate
		for _, c := range cands {
			if c.replID == group {
				in = append(in, c)
			}
		}
		cands = in
	}
	var best candidate
	found := false
	for _, c := range cands {
		if !found || positionAhead(manager, c.pos, best.pos) {
			best, found = c, true
		}
	}
	return best, found
}

// positionAhead reports whether position a is further than b.
func positionAhead(manager, a, b string) bool {
	switch manager {
	case managerPostgreSQL:
		x, _ := parseLSN(a)
		y, _ := parseLSN(b)
		return x > y
	case managerRedis:
		x, _ := strconv.ParseInt(a, 10, 64)
		y, _ := strconv.ParseInt(b, 10, 64)
		return x > y
	}
	return gtidAhead(a, b)
}

// parseLSN reads a PostgreSQL WAL position ("16/B374D848": the high and
// low 32 bits in hexadecimal) as the number it is: compared as strings,
// "9/0" would be ahead of "10/0".
func parseLSN(s string) (uint64, bool) {
	if s == "" || wire.CheckLSN(s) != nil {
		return 0, false
	}
	hi, lo, _ := strings.Cut(s, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	return h<<32 | l, err1 == nil && err2 == nil
}

// gtidAhead reports whether GTID list a is ahead of b: at least as far
// in every domain of b, and further in one (a list that is behind in any
// domain is not ahead).
func gtidAhead(a, b string) bool {
	pa, pb := gtidDomains(a), gtidDomains(b)
	further := false
	for d, g := range pb {
		if pa[d].seq < g.seq {
			return false
		}
		if pa[d].seq > g.seq {
			further = true
		}
	}
	for d := range pa {
		if _, ok := pb[d]; !ok {
			further = true
		}
	}
	return further
}

// gtid is a GTID list's entry for one domain: the server that wrote its
// last transaction, and that transaction's sequence number.
type gtid struct {
	server string
	seq    uint64
}

// gtidDomains maps a GTID list's domains to their last GTIDs.
func gtidDomains(list string) map[string]gtid {
	out := map[string]gtid{}
	for _, g := range strings.Split(list, ",") {
		parts := strings.Split(g, "-")
		if len(parts) != 3 {
			continue
		}
		n, _ := strconv.ParseUint(parts[2], 10, 64)
		out[parts[0]] = gtid{server: parts[1], seq: n}
	}
	return out
}

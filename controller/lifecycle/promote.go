package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/chaos"
	"strata/controller/compute"
	"strata/controller/instances"
	"strata/controller/store"
	"strata/controller/tasks"
)

// Switchover (Trove's promote-to-replica-source, docs/replication.md): a
// durable task on the promoted replica R, every member of the group in
// PROMOTING meanwhile. Steps:
//
//	fence    queue set_read_only on the primary P (its users' writes
//	         refused from now on)
//	fenced   P's position after the fence → queue promote_replica on R
//	         (it waits until R applied that position, then detaches)
//	promoted R is writable: the links now say R is the source, P and
//	         the others its replicas (one transaction); passwords drawn
//	accounts queue an account on R for P and each other replica, and
//	         the drop of R's own account
//	repoint  queue start_replication on P (from its fenced position)
//	         and a repoint on every other replica; passwords dropped
//	linked   wait until every link runs
//
// PostgreSQL runs "stopped" between "fenced" and "promoted": P is
// stopped cleanly (a fenced primary still writes WAL of its own, which R
// would lack and the others have: they could not follow R), its WAL
// senders wait until every replica flushed the shutdown checkpoint, and
// R is promoted at the fence's LSN. Replication slots do not travel with
// the data, so "accounts" makes one on R for every other replica and for
// P before they are repointed. P's WAL ends with its shutdown checkpoint,
// which R replayed before its new timeline began, so P follows R without
// pg_rewind: "repoint" sends P rejoin_replication (the stopped server
// becomes a standby of R and starts) instead of start_replication. When
// its agent refuses that (P's server started or crashed meanwhile: its
// WAL may run past R's fork), P rejoins through pg_rewind at the fork R's
// promotion reported ("rewind-account", "rewind": rejoinByRewind). A
// rejoin that still fails (P's agent too old, a commit past the fork)
// does not fail the switchover: P leaves the group, stopped or
// read-only, with a fault that says why and what to do, and its account
// on R is dropped. Redis promotes R at the
// fence's offset (and replication ID) and makes P a replica of R, as
// MariaDB does.
//
// Chaos kill points (controller/chaos): "promote.fenced" once R's
// promotion is queued (P fenced; the eject's old source fenced off),
// "promote.promoted" once R is writable and the links say so, before the
// followers are repointed; in both the step is not yet saved, so the
// restarted controller runs it again (ci/e2e chaos_replication_test.go).
//
// Until R is writable a failure rolls back: "unfence" lifts P's fence
// (only after R reports it is still a replica: never two writable
// primaries) and the task fails with the reason. After it, the task only
// goes forward; a failure leaves R the writable source and P read-only.

// KindPromote is the switchover task's kind.
const KindPromote = "promote"

// PromoteWait bounds how long R may take to apply P's last position.
const PromoteWait = 60 * time.Second

type promotePayload struct {
	Source   string   `json:"source"`
	Others   []string `json:"others,omitempty"`
	FencePos string   `json:"fence_pos,omitempty"`
	// Passwords (member → password) live here from "promoted" until
	// "repoint" queued the operations that carry them.
	Passwords    map[string]string `json:"passwords,omitempty"`
	LinkDeadline time.Time         `json:"link_deadline,omitzero"`
	// Reason is why the switchover is being rolled back.
	Reason string `json:"reason,omitempty"`
	// Eject: a failover (eject.go). The task is the old source's;
	// Replica is the replica it elected (empty before "elect" ran).
	Eject   bool   `json:"eject,omitempty"`
	Replica string `json:"replica,omitempty"`
	// Auto: the failover was the controller's own (automatic failover);
	// Fenced: the old source's server was fenced (compute.Fencer).
	Auto   bool `json:"auto,omitempty"`
	Fenced bool `json:"fenced,omitempty"`
	// FenceReplID is a Redis position's replication ID (FencePos is its
	// offset); Stopped: the "stop" of a PostgreSQL P was queued (a
	// rollback starts it again before lifting the fence).
	FenceReplID string `json:"fence_repl_id,omitempty"`
	Stopped     bool   `json:"stopped,omitempty"`
	// FencePrevReplID and FencePrevEnd (a Redis failover): the stream
	// the elected replica followed before FenceReplID and the last
	// offset of the group's history under it, as its status reported
	// them at the election; the ejection keeps them.
	FencePrevReplID string `json:"fence_prev_repl_id,omitempty"`
	FencePrevEnd    string `json:"fence_prev_end,omitempty"`
	// RejoinFailed: the old PostgreSQL source could not rejoin as a
	// replica; it left the group with a fault (rejoinFailed).
	RejoinFailed bool `json:"rejoin_failed,omitempty"`
	// ForkLSN: PostgreSQL, where the promoted replica's new timeline
	// branched (its promote result): the exact fork, at or past
	// FencePos. Rewind: the old source's plain rejoin was refused, and
	// it rejoins through pg_rewind at ForkLSN (rejoinByRewind).
	ForkLSN string `json:"fork_lsn,omitempty"`
	Rewind  bool   `json:"rewind,omitempty"`
	// Manager is the group's datastore manager, read by runPromote.
	Manager string `json:"-"`
}

// followers are the members that follow the new source once it is
// promoted: the old source too, unless it was ejected.
func (p promotePayload) followers() []string {
	if !p.oldSourceFollows() {
		return p.Others
	}
	return append([]string{p.Source}, p.Others...)
}

// oldSourceFollows says whether the old source becomes a replica of the
// new one: not when ejected, and not when its rejoin failed.
func (p promotePayload) oldSourceFollows() bool {
	return !p.Eject && !p.RejoinFailed
}

// rejoins says whether the old source follows through a rejoin (a
// PostgreSQL primary, stopped for the switchover) rather than
// start_replication.
func (p promotePayload) rejoins() bool {
	return p.oldSourceFollows() && p.Manager == managerPostgreSQL
}

// promoteArgs asks the replica to apply the position p holds (the
// fenced source's, or the elected replica's own) in its datastore's
// terms, then to leave its source.
func (p promotePayload) promoteArgs() wire.PromoteReplicaArgs {
	a := wire.PromoteReplicaArgs{TimeoutSeconds: int(PromoteWait / time.Second)}
	switch p.Manager {
	case managerPostgreSQL:
		a.LSN = p.FencePos
	case managerRedis:
		off, _ := strconv.ParseInt(p.FencePos, 10, 64)
		a.ReplOffset, a.ReplID = &off, p.FenceReplID
	default:
		a.GTIDPos = p.FencePos
	}
	return a
}

// fencePosition is a fenced source's position in its status, by
// datastore: MariaDB's gtid_binlog_pos, PostgreSQL's lsn, Redis's
// repl_offset with its repl_id.
func fencePosition(manager string, st wire.ReplicationStatus) (pos, replID string, ok bool) {
	switch manager {
	case managerPostgreSQL:
		return st.LSN, "", st.LSN != "" && wire.CheckLSN(st.LSN) == nil
	case managerRedis:
		if st.ReplOffset == nil || *st.ReplOffset < 0 {
			return "", "", false
		}
		return strconv.FormatInt(*st.ReplOffset, 10), st.ReplID, true
	}
	return st.GTIDBinlogPos, "", st.GTIDBinlogPos != "" && wire.CheckGTIDList(st.GTIDBinlogPos) == nil
}

func promoteOpID(t *tasks.Task, what string) string { return "promote-" + what + "-" + t.ID }

// Promote starts a switchover to the replica id (Trove's rules: it must
// be a replica, ACTIVE like its source, and no member of the group may
// have a task in progress).
func (m *Manager) Promote(ctx context.Context, project, id string) error {
	timeout := m.opTimeout()
	err := m.DB.InTx(ctx, func(tx *store.Tx) error {
		r, err := m.get(ctx, tx, project, id)
		if err != nil {
			return err
		}
		link, ok, err := instances.LinkOf(ctx, tx, r.ID)
		if err != nil {
			return err
		}
		if !ok {
			return wrap(ErrBadRequest, "Instance %s is not a replica.", r.ID)
		}
		if _, ok := m.Compute.(compute.ReplicationRouter); !ok {
			return wrap(ErrBadRequest, "this controller's compute driver cannot connect replicas to a new source; nothing was changed")
		}
		src, err := instances.Get(ctx, tx, "", link.SourceID)
		if err != nil {
			return fmt.Errorf("the source %s of replica %s: %w", link.SourceID, r.ID, err)
		}
		links, err := instances.ReplicasOf(ctx, tx, src.ID)
		if err != nil {
			return err
		}
		p := promotePayload{Source: src.ID}
		members := []instances.Instance{src, r}
		for _, l := range links {
			if l.InstanceID == r.ID {
				continue
			}
			in, err := instances.Get(ctx, tx, "", l.InstanceID)
			if err != nil {
				return fmt.Errorf("replica %s of %s: %w", l.InstanceID, src.ID, err)
			}
			members = append(members, in)
			p.Others = append(p.Others, in.ID)
		}
		for _, in := range members {
			if in.Task != instances.TaskNone {
				return wrap(ErrUnprocessable, "cannot promote instance %s: instance %s of its replication group has task %s in progress", r.ID, in.ID, in.Task)
			}
			status, _ := m.Status(in)
			if err := requireStatus(in, status, "promote a replication group with", instances.StatusActive); err != nil {
				return err
			}
		}
		now := m.now()
		for _, in := range members {
			if err := instances.SetTask(ctx, tx, in.ID, instances.TaskPromoting, now); err != nil {
				return err
			}
		}
		_, err = tasks.Enqueue(ctx, tx, tasks.New{InstanceID: r.ID, Kind: KindPromote, Step: "fence", Payload: p,
			Deadline: now.Add(timeout)}, now)
		return err
	})
	if err == nil {
		m.kick()
		m.log().Info("switchover queued", "replica", id)
	}
	return err
}

func (m *Manager) runPromote(ctx context.Context, t *tasks.Task) (tasks.Result, error) {
	var p promotePayload
	if err := t.Decode(&p); err != nil {
		return tasks.Result{}, tasks.Fail("", "%v", err)
	}
	src, err := m.loadFor(ctx, p.Source, "the replication source")
	if err != nil {
		return tasks.Result{}, err
	}
	if p.Manager, err = m.managerOf(ctx, src); err != nil {
		return tasks.Result{}, err
	}
	var r instances.Instance
	switch {
	case p.Eject && t.Step == "elect":
		return m.electStep(ctx, t, p)
	case p.Eject:
		r, err = m.loadFor(ctx, p.Replica, "the elected replica")
	default:
		r, err = m.taskInstance(ctx, t)
	}
	if err != nil {
		return tasks.Result{}, err
	}
	switch t.Step {
	case "elected":
		// The old source must never take another write: fenced by the
		// compute driver before the elected replica becomes writable.
		if f, ok := m.Compute.(compute.Fencer); ok && !p.Fenced {
			if srv, ok := serverOf(src); ok {
				if err := f.FenceServer(ctx, srv); err != nil {
					return tasks.Result{}, fmt.Errorf("fencing the old source %s: %w", src.ID, err)
				}
				p.Fenced = true
				m.log().Warn("failover: the old source's server is fenced (powered off, kept off)", "source", src.ID)
				return tasks.Result{Next: "elected", Payload: p}, nil
			}
		}
		args, _ := json.Marshal(p.promoteArgs())
		if err := m.queue(ctx, t, r.ID, wire.Operation{ID: promoteOpID(t, "replica"), Kind: wire.KindPromoteReplica, Args: args}); err != nil {
			return tasks.Result{}, fmt.Errorf("queue promote_replica: %w", err)
		}
		chaos.Reach("promote.fenced", t.InstanceID) // the old source off, the promotion queued, the step not yet saved
		return tasks.Result{Next: "promoted", After: 200 * time.Millisecond}, nil
	case "fence":
		args, _ := json.Marshal(wire.SetReadOnlyArgs{ReadOnly: true})
		if err := m.queue(ctx, t, src.ID, wire.Operation{ID: promoteOpID(t, "fence"), Kind: wire.KindSetReadOnly, Args: args}); err != nil {
			return tasks.Result{}, fmt.Errorf("queue the fence of %s: %w", src.ID, err)
		}
		return tasks.Result{Next: "fenced", After: 200 * time.Millisecond}, nil
	case "fenced":
		res, done, err := m.opDone(ctx, src.ID, promoteOpID(t, "fence"), "fencing the primary")
		if err != nil {
			return m.rollback(p, err)
		}
		if !done {
			return tasks.Result{After: 200 * time.Millisecond}, nil
		}
		var st wire.ReplicationStatus
		err = res.Decode(&st)
		pos, replID, ok := fencePosition(p.Manager, st)
		if err != nil || !st.ReadOnly || !ok {
			return m.rollback(p, tasks.Fail("", "the fenced primary %s reported %+v (%v)", src.ID, st, err))
		}
		p.FencePos, p.FenceReplID = pos, replID
		m.log().Info("primary fenced", "source", src.ID, "replica", r.ID, "position", p.FencePos)
		if p.Manager == managerPostgreSQL {
			// Stopped cleanly, P's last WAL (its shutdown checkpoint)
			// reaches every replica before R is promoted.
			p.Stopped = true
			if err := m.queue(ctx, t, src.ID, wire.Operation{ID: promoteOpID(t, "stop"), Kind: wire.KindStop}); err != nil {
				return tasks.Result{}, fmt.Errorf("queue the stop of %s: %w", src.ID, err)
			}
			return tasks.Result{Next: "stopped", Payload: p, After: 200 * time.Millisecond}, nil
		}
		if p.Manager == managerRedis {
			// P's users (no user changes while the group is PROMOTING)
			// reach R before its promotion: the agent runs R's
			// operations in order, the import first. A fenced source
			// that does not answer within SwitchoverExportWait does not
			// hold the group's writes longer: R keeps its users.
			m.syncUsersFrom(ctx, src.ID, r.ID, "switchover", SwitchoverExportWait)
		}
		args, _ := json.Marshal(p.promoteArgs())
		if err := m.queue(ctx, t, r.ID, wire.Operation{ID: promoteOpID(t, "replica"), Kind: wire.KindPromoteReplica, Args: args}); err != nil {
			return tasks.Result{}, fmt.Errorf("queue promote_replica: %w", err)
		}
		chaos.Reach("promote.fenced", t.InstanceID) // P read-only, R's promotion queued, the step not yet saved
		return tasks.Result{Next: "promoted", Payload: p, After: 200 * time.Millisecond}, nil
	case "stopped":
		_, done, err := m.opDone(ctx, src.ID, promoteOpID(t, "stop"), "stopping the fenced primary")
		if err != nil {
			return m.rollback(p, err)
		}
		if !done {
			return tasks.Result{After: 200 * time.Millisecond}, nil
		}
		args, _ := json.Marshal(p.promoteArgs())
		if err := m.queue(ctx, t, r.ID, wire.Operation{ID: promoteOpID(t, "replica"), Kind: wire.KindPromoteReplica, Args: args}); err != nil {
			return tasks.Result{}, fmt.Errorf("queue promote_replica: %w", err)
		}
		m.log().Info("fenced primary stopped", "source", src.ID, "replica", r.ID)
		chaos.Reach("promote.fenced", t.InstanceID)
		return tasks.Result{Next: "promoted", After: 200 * time.Millisecond}, nil
	case "promoted":
		res, done, err := m.opDone(ctx, r.ID, promoteOpID(t, "replica"), "promoting the replica")
		if err != nil {
			return m.rollback(p, err)
		}
		if !done {
			return tasks.Result{After: 200 * time.Millisecond}, nil
		}
		var st wire.ReplicationStatus
		if err := res.Decode(&st); err != nil || st.Role != wire.RoleStandalone || st.ReadOnly {
			return m.rollback(p, tasks.Fail("", "the promoted replica %s reported %+v (%v)", r.ID, st, err))
		}
		p.ForkLSN = promotedFork(p.Manager, st, p.FencePos)
		fork := p.FencePos
		if p.ForkLSN != "" {
			fork = p.ForkLSN
		}
		// R is the source from now on: the links say so first, so a
		// restart anywhere after this goes forward.
		if err := m.DB.InTx(ctx, func(tx *store.Tx) error {
			now := m.now()
			if err := instances.DeleteLink(ctx, tx, r.ID); err != nil {
				return err
			}
			if err := instances.DeleteLink(ctx, tx, src.ID); err != nil {
				return err
			}
			if p.oldSourceFollows() {
				if err := instances.InsertLink(ctx, tx, instances.Link{InstanceID: src.ID, SourceID: r.ID, Account: replicationAccount(src.ID), CreatedAt: now}); err != nil {
					return err
				}
			}
			if p.Eject {
				// What a rejoin of the old source checks it against.
				if err := instances.InsertEjection(ctx, tx, instances.Ejection{InstanceID: src.ID, ElectedID: r.ID,
					ForkPos: fork, ForkReplID: p.FenceReplID, ForkPrevReplID: p.FencePrevReplID, ForkPrevEnd: p.FencePrevEnd,
					EjectedAt: now}); err != nil {
					return err
				}
			}
			for _, id := range p.Others {
				if _, err := tx.Exec(ctx, `UPDATE replication_links SET source_id = ? WHERE instance_id = ?`, r.ID, id); err != nil {
					return err
				}
			}
			// The group's automatic failover moves with the source role.
			if src.AutoFailoverGrace > 0 {
				if err := instances.Update(ctx, tx, r.ID, now, `auto_failover_grace_s = ?`, int(src.AutoFailoverGrace/time.Second)); err != nil {
					return err
				}
				if err := instances.Update(ctx, tx, src.ID, now, `auto_failover_grace_s = 0`); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return tasks.Result{}, err
		}
		p.Passwords = map[string]string{}
		for _, id := range p.followers() {
			p.Passwords[id] = rand.Text() + rand.Text()
		}
		if p.Eject {
			// The old source, when it comes back, must not take writes:
			// its fence waits queued for its agent.
			args, _ := json.Marshal(wire.SetReadOnlyArgs{ReadOnly: true})
			if err := m.Agents.Queue(ctx, src.ID, wire.Operation{ID: promoteOpID(t, "fence"), Kind: wire.KindSetReadOnly, Args: args},
				agentendpoint.QueueOptions{Expires: m.now().Add(EjectedFenceWait)}); err != nil {
				return tasks.Result{}, fmt.Errorf("queue the fence of the ejected source: %w", err)
			}
		}
		m.log().Info("replica promoted: it is the source now", "replica", r.ID, "old_source", src.ID, "others", p.Others)
		// R writable and the links saying so, P not yet repointed, the
		// step not yet saved: a restart runs "promoted" again.
		chaos.Reach("promote.promoted", t.InstanceID)
		return tasks.Result{Next: "accounts", Payload: p}, nil
	case "accounts":
		for id, pw := range p.Passwords {
			args, err := json.Marshal(wire.ReplicationAccountArgs{Name: replicationAccount(id), Password: pw})
			if err != nil {
				return tasks.Result{}, err
			}
			if err := m.queue(ctx, t, r.ID, wire.Operation{ID: promoteOpID(t, "account-"+id), Kind: wire.KindCreateReplicationAccount, Args: args}); err != nil {
				return tasks.Result{}, fmt.Errorf("queue the replication account of %s: %w", id, err)
			}
		}
		// R's own account (made on the old source, present everywhere
		// by replication) goes: dropped on R, by replication everywhere.
		args, _ := json.Marshal(wire.ReplicationAccountRef{Name: replicationAccount(r.ID)})
		if err := m.queue(ctx, t, r.ID, wire.Operation{ID: promoteOpID(t, "drop"), Kind: wire.KindDropReplicationAccount, Args: args}); err != nil {
			return tasks.Result{}, fmt.Errorf("queue the drop of %s's account: %w", r.ID, err)
		}
		return tasks.Result{Next: "repoint", After: 200 * time.Millisecond}, nil
	case "repoint":
		for id := range p.Passwords {
			_, done, err := m.opDone(ctx, r.ID, promoteOpID(t, "account-"+id), "creating the replication account of "+id+" on the new source")
			if err != nil || !done {
				return tasks.Result{After: 200 * time.Millisecond}, err
			}
		}
		for id, pw := range p.Passwords {
			host, port, err := m.routeToNewSource(ctx, r, id)
			if err != nil {
				return tasks.Result{}, err
			}
			a := wire.StartReplicationArgs{Host: host, Port: port, Account: replicationAccount(id), Password: pw}
			kind := wire.KindStartReplication
			switch {
			case id == src.ID && p.rejoins():
				kind = wire.KindRejoinReplication // from where its WAL ends
			case id == src.ID && p.Manager != managerRedis:
				a.GTIDSlavePos = p.FencePos // the old source starts where it stopped
			case id == src.ID: // a Redis one continues from its own offset: PSYNC
			default:
				a.Repoint = true // the others keep their own positions
			}
			args, err := json.Marshal(a)
			if err != nil {
				return tasks.Result{}, err
			}
			if err := m.queue(ctx, t, id, wire.Operation{ID: promoteOpID(t, "start-"+id), Kind: kind, Args: args}); err != nil {
				return tasks.Result{}, fmt.Errorf("queue start_replication on %s: %w", id, err)
			}
		}
		p.Passwords = nil
		p.LinkDeadline = m.now().Add(linkTimeout)
		return tasks.Result{Next: "linked", Payload: p, After: 200 * time.Millisecond}, nil
	case "linked":
		for _, id := range p.followers() {
			op := "start-" + id
			if id == src.ID && p.Rewind {
				op = "rewind-" + id
			}
			res, done, err := m.opDone(ctx, id, promoteOpID(t, op), "following the new source "+r.ID+" from "+id)
			var f *tasks.Failure
			if id == src.ID && p.rejoins() && errors.As(err, &f) {
				if !p.Rewind && p.ForkLSN != "" {
					return m.rejoinByRewind(p, r, f.Reason)
				}
				return m.rejoinFailed(ctx, t, p, r, f.Reason)
			}
			if err != nil || !done {
				return tasks.Result{After: 200 * time.Millisecond}, err
			}
			st, running, err := m.linkStatus(ctx, id, res)
			if err != nil {
				return tasks.Result{}, tasks.Fail("", "start_replication result of %s: %v", id, err)
			}
			if !running {
				if over, how := m.linkWaitOver(st, p.LinkDeadline); over {
					if id == src.ID && p.rejoins() {
						return m.rejoinFailed(ctx, t, p, r, fmt.Sprintf("it does not follow %s: %s", how, linkReason(st)))
					}
					return tasks.Result{}, tasks.Fail("", "%s does not follow the new source %s %s: %s", id, r.ID, how, linkReason(st))
				}
				return tasks.Result{After: time.Second}, nil
			}
		}
		// The drop of R's old account is best effort: a failure leaves
		// an account whose password nobody knows.
		if _, done, err := m.opDone(ctx, r.ID, promoteOpID(t, "drop"), "dropping the promoted replica's account"); err != nil {
			m.log().Warn("the promoted replica's old replication account was not dropped", "replica", r.ID, "err", err)
		} else if !done {
			return tasks.Result{After: 200 * time.Millisecond}, nil
		}
		var note *tasks.Failure
		if p.Eject {
			how := "read-only once its agent takes the queued fence"
			if p.Fenced {
				how = "its server is fenced (powered off and kept off)"
			}
			what := "ejected"
			if p.Auto {
				what = "failed over automatically: ejected"
			}
			next := fmt.Sprintf("bring it back as a replica with the action rejoin_as_replica (refused if it holds writes %s never received), or delete it", r.ID)
			note = &tasks.Failure{Reason: fmt.Sprintf("%s from its replication group: %s is the source now; this instance is out of the group, "+
				"and %s; %s", what, r.ID, how, next)}
		}
		if err := m.clearGroup(ctx, t, p, note); err != nil {
			return tasks.Result{}, err
		}
		m.log().Info("switchover done", "source", r.ID, "replicas", p.followers(), "eject", p.Eject, "rejoin_failed", p.RejoinFailed)
		return tasks.Result{Done: true}, nil
	case "rewind-account":
		// The old source's account on R gets the password rejoinByRewind
		// drew (queued again on every run: found by its id, run once).
		args, err := json.Marshal(wire.ReplicationAccountArgs{Name: replicationAccount(src.ID), Password: p.Passwords[src.ID]})
		if err != nil {
			return tasks.Result{}, err
		}
		if err := m.queue(ctx, t, r.ID, wire.Operation{ID: promoteOpID(t, "account-"+src.ID+"-rewind"), Kind: wire.KindCreateReplicationAccount, Args: args}); err != nil {
			return tasks.Result{}, fmt.Errorf("queue the replication account of %s: %w", src.ID, err)
		}
		return tasks.Result{Next: "rewind", After: 200 * time.Millisecond}, nil
	case "rewind":
		_, done, err := m.opDone(ctx, r.ID, promoteOpID(t, "account-"+src.ID+"-rewind"), "resetting the old source's replication account on the new source")
		var f *tasks.Failure
		if errors.As(err, &f) {
			p.Passwords = nil
			return m.rejoinFailed(ctx, t, p, r, f.Reason)
		}
		if err != nil || !done {
			return tasks.Result{After: 200 * time.Millisecond}, err
		}
		host, port, err := m.routeToNewSource(ctx, r, src.ID)
		if err != nil {
			return tasks.Result{}, err
		}
		args, err := json.Marshal(wire.StartReplicationArgs{Host: host, Port: port, Account: replicationAccount(src.ID),
			Password: p.Passwords[src.ID], ForkLSN: p.ForkLSN})
		if err != nil {
			return tasks.Result{}, err
		}
		if err := m.queue(ctx, t, src.ID, wire.Operation{ID: promoteOpID(t, "rewind-"+src.ID), Kind: wire.KindRejoinReplication, Args: args}); err != nil {
			return tasks.Result{}, fmt.Errorf("queue the rewound rejoin of %s: %w", src.ID, err)
		}
		p.Passwords = nil
		p.LinkDeadline = m.now().Add(linkTimeout)
		return tasks.Result{Next: "linked", Payload: p, After: 200 * time.Millisecond}, nil
	case "unfence":
		// Never two writable primaries: lift P's fence only while R
		// reports it still follows a source.
		cr, err := m.Call(ctx, r, wire.KindReplicationStatus, nil)
		if err != nil {
			return tasks.Result{}, fmt.Errorf("before lifting the fence, the replica's state: %w", err)
		}
		var st wire.ReplicationStatus
		if cr.Error != nil || cr.Decode(&st) != nil || st.Role != wire.RoleReplica || !st.ReadOnly {
			return tasks.Result{}, tasks.Fail("", "switchover to %s failed (%s), and the replica does not report itself a read-only replica (%+v, %v): the source %s stays read-only; detach or promote again",
				r.ID, p.Reason, st, cr.Error, src.ID)
		}
		if p.Stopped {
			// A PostgreSQL P stopped for the switchover starts again
			// first (still fenced: the fence survives a restart).
			// Queued again on every run: found by its id, run once.
			if err := m.Agents.Queue(ctx, src.ID, wire.Operation{ID: promoteOpID(t, "restart"), Kind: wire.KindRestart},
				agentendpoint.QueueOptions{Expires: m.now().Add(m.opTimeout())}); err != nil {
				return tasks.Result{}, fmt.Errorf("queue the restart of the source: %w", err)
			}
			_, done, err := m.opDone(ctx, src.ID, promoteOpID(t, "restart"), "starting the stopped source again")
			if err != nil {
				return tasks.Result{}, tasks.Fail("", "switchover to %s failed (%s), and %v: the source %s stays stopped and read-only; restart it, then promote again",
					r.ID, p.Reason, err, src.ID)
			}
			if !done {
				return tasks.Result{After: 200 * time.Millisecond}, nil
			}
		}
		args, _ := json.Marshal(wire.SetReadOnlyArgs{ReadOnly: false})
		// A fresh expiry: the task's deadline may be what failed it.
		if err := m.Agents.Queue(ctx, src.ID, wire.Operation{ID: promoteOpID(t, "unfence"), Kind: wire.KindSetReadOnly, Args: args},
			agentendpoint.QueueOptions{Expires: m.now().Add(m.opTimeout())}); err != nil {
			return tasks.Result{}, fmt.Errorf("queue the lifting of the fence: %w", err)
		}
		return tasks.Result{Next: "unfenced", After: 200 * time.Millisecond}, nil
	case "unfenced":
		_, done, err := m.opDone(ctx, src.ID, promoteOpID(t, "unfence"), "lifting the fence of the source")
		if err != nil {
			return tasks.Result{}, tasks.Fail("", "switchover to %s failed (%s), and %v: the source %s stays read-only", r.ID, p.Reason, err, src.ID)
		}
		if !done {
			return tasks.Result{After: 200 * time.Millisecond}, nil
		}
		return tasks.Result{}, tasks.Fail("", "switchover to %s rolled back: %s; %s is the writable source again", r.ID, p.Reason, src.ID)
	}
	return tasks.Result{}, tasks.Fail("", "unknown promote step %q", t.Step)
}

// rejoinFailed takes the old PostgreSQL source out of the group when its
// rejoin failed (the switchover itself succeeded): its link goes, its
// fault says why and what to do, and its account on the new source is
// dropped (best effort: an account whose password nobody holds). The
// task goes on with the other members.
func (m *Manager) rejoinFailed(ctx context.Context, t *tasks.Task, p promotePayload, r instances.Instance, reason string) (tasks.Result, error) {
	f := instances.Fault{Message: fmt.Sprintf("switched over: %s is the source now. This instance was its PostgreSQL primary and could not rejoin as its replica: %s. "+
		"It is out of the replication group, stopped or read-only, and its data stops at the switchover; delete it, and create a replica of %s in its place", r.ID, reason, r.ID)}
	if err := m.DB.InTx(ctx, func(tx *store.Tx) error {
		if err := instances.DeleteLink(ctx, tx, p.Source); err != nil {
			return err
		}
		err := instances.SetFault(ctx, tx, p.Source, f, false, m.now())
		if errors.Is(err, instances.ErrNotFound) {
			return nil
		}
		return err
	}); err != nil {
		return tasks.Result{}, err
	}
	args, _ := json.Marshal(wire.ReplicationAccountRef{Name: replicationAccount(p.Source)})
	if err := m.queue(ctx, t, r.ID, wire.Operation{ID: promoteOpID(t, "drop-"+p.Source), Kind: wire.KindDropReplicationAccount, Args: args}); err != nil {
		m.log().Warn("the old source's replication account on the new source was not dropped", "source", p.Source, "err", err)
	}
	m.log().Warn("switchover: the old PostgreSQL source could not rejoin; it left the group", "source", p.Source, "new_source", r.ID, "reason", reason)
	p.RejoinFailed = true
	return tasks.Result{Next: "linked", Payload: p, After: 200 * time.Millisecond}, nil
}

// rejoinByRewind: the old PostgreSQL source's rejoin was refused — it
// crashed, or ran again as a primary, after the switchover stopped it,
// so its WAL may go past the fork and only pg_rewind can make it a
// standby. With the fork the promotion reported it rejoins through
// pg_rewind, which its agent refuses for a server that committed past
// the fork. The account's first password was dropped once queued: a
// new one is drawn and saved before anything is queued ("rewind-account"
// sets it on R, "rewind" queues rejoin_replication with the fork).
func (m *Manager) rejoinByRewind(p promotePayload, r instances.Instance, reason string) (tasks.Result, error) {
	m.log().Warn("switchover: the old PostgreSQL source's rejoin was refused; rewinding it to the fork", "source", p.Source, "new_source", r.ID,
		"fork_lsn", p.ForkLSN, "reason", reason)
	p.Rewind = true
	p.Passwords = map[string]string{p.Source: rand.Text() + rand.Text()}
	return tasks.Result{Next: "rewind-account", Payload: p}, nil
}

// routeToNewSource is where member id reaches the new source r's
// database (compute.ReplicationRouter).
func (m *Manager) routeToNewSource(ctx context.Context, r instances.Instance, id string) (string, int, error) {
	router, ok := m.Compute.(compute.ReplicationRouter)
	rSrv, ok1 := serverOf(r)
	if !ok || !ok1 || r.Host == "" || r.Port == 0 {
		return "", 0, tasks.Fail("", "the compute driver cannot connect the group to the new source %s", r.ID)
	}
	in, err := m.loadFor(ctx, id, "the replication group's member")
	if err != nil {
		return "", 0, err
	}
	srv, ok := serverOf(in)
	if !ok {
		return "", 0, tasks.Fail("", "member %s of the replication group has no server", id)
	}
	host, port, err := router.ReplicationRoute(ctx, srv, rSrv, r.Host, r.Port)
	if err != nil {
		return "", 0, fmt.Errorf("route from %s to the new source %s: %w", id, r.ID, err)
	}
	return host, port, nil
}

// promotedFork is the exact fork a promoted PostgreSQL replica reported
// (its timeline's switch point), "" when there is none to trust: another
// datastore, an older agent, or a position before the one it was
// promoted at (it applied that much, so its timeline cannot branch
// earlier).
func promotedFork(manager string, st wire.ReplicationStatus, promotedAt string) string {
	if manager != managerPostgreSQL || st.ForkLSN == "" {
		return ""
	}
	fork, ok1 := parseLSN(st.ForkLSN)
	at, ok2 := parseLSN(promotedAt)
	if !ok1 || !ok2 || fork < at {
		return ""
	}
	return st.ForkLSN
}

// opTimeout is how long a queued operation waits for its agent.
func (m *Manager) opTimeout() time.Duration {
	if m.GuestOpTimeout <= 0 {
		return 10 * time.Minute
	}
	return m.GuestOpTimeout
}

func linkReason(st wire.ReplicationStatus) string {
	if st.LastError != "" {
		return st.LastError
	}
	return fmt.Sprintf("I/O thread running %v, SQL thread running %v", st.IORunning, st.SQLRunning)
}

// rollback turns a failure before R is writable into the "unfence"
// step. Any other error (reading a result) is transient: retried.
func (m *Manager) rollback(p promotePayload, err error) (tasks.Result, error) {
	var f *tasks.Failure
	if !errors.As(err, &f) {
		return tasks.Result{}, err
	}
	if p.Eject {
		// Nothing was changed yet but the old source's fence: it is gone
		// anyway.
		if p.Fenced {
			return tasks.Result{}, tasks.Fail("", "failover from %s: %s; nothing was changed but the old source's server, which is fenced (off); eject again once a replica can be promoted", p.Source, f.Reason)
		}
		return tasks.Result{}, tasks.Fail("", "failover from %s: %s; nothing was changed", p.Source, f.Reason)
	}
	p.Reason = f.Reason
	m.log().Warn("switchover rolling back", "source", p.Source, "reason", p.Reason)
	return tasks.Result{Next: "unfence", Payload: p}, nil
}

// failPromote ends a switchover that failed: every member leaves
// PROMOTING and the promoted replica records the fault with the reason
// (its status stays what its agent reports).
func (m *Manager) failPromote(ctx context.Context, t *tasks.Task, f *tasks.Failure) error {
	var p promotePayload
	if err := t.Decode(&p); err != nil {
		return m.recordFailure(ctx, t, f, false, true)
	}
	return m.clearGroup(ctx, t, p, f)
}

// clearGroup clears every member's task, and records f on the replica
// the task promoted, in one transaction.
func (m *Manager) clearGroup(ctx context.Context, t *tasks.Task, p promotePayload, f *tasks.Failure) error {
	return m.DB.InTx(ctx, func(tx *store.Tx) error {
		now := m.now()
		for _, id := range append([]string{t.InstanceID, p.Source, p.Replica}, p.Others...) {
			if id == "" {
				continue
			}
			err := instances.SetTask(ctx, tx, id, instances.TaskNone, now)
			if err != nil && !errors.Is(err, instances.ErrNotFound) {
				return err
			}
		}
		if f == nil {
			return nil
		}
		err := instances.SetFault(ctx, tx, t.InstanceID, instances.Fault{Message: f.Reason, Details: f.Details}, false, now)
		if errors.Is(err, instances.ErrNotFound) {
			return nil
		}
		return err
	})
}

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
	"strata/controller/compute"
	"strata/controller/instances"
	"strata/controller/store"
	"strata/controller/tasks"
)

// Rejoin (strata's own, docs/replication.md): a source ejected from its
// replication group (failover) comes back as a replica of the group's
// source. A durable task on the ejected instance E, task REJOINING:
//
//	boot     lift E's compute fence and start its server; queue a fence
//	         (set_read_only) for its agent: read-only before anything
//	         else, and its position
//	fenced   E's position against the position the group forked from
//	         it at (what the elected replica had received from it): E
//	         may hold nothing past it (MariaDB: no domain further;
//	         Redis: the group's stream, under its ID or — started again
//	         from its snapshot — its previous one, no further offset; or
//	         the group's stream before the fork's ID, up to where the
//	         group continued it: a switchover's source whose snapshot is
//	         from before its promotion) — else
//	         it is refused, since following the group would silently
//	         drop writes E took. Then draw E's replication password and
//	         store it; the next run queues E's account on the group's
//	         source S with it
//	account  queue start_replication on E: MariaDB from its own
//	         gtid_binlog_pos (contained in S's history), Redis from its
//	         offset (a partial or full resynchronisation); PostgreSQL's
//	         rejoin_replication with the fork's LSN: the agent refuses a
//	         server whose WAL holds a commit past it, else stops it,
//	         rewinds it to S's history (pg_rewind) and starts it as S's
//	         standby
//	linked   wait until the link runs and E applied the group's history
//	         up to the fork (a link runs for a moment before the source
//	         answers it lacks E's position); then, in one transaction:
//	         the link E → S, the ejection forgotten, the fault cleared
//	         (run again after that commit, it finds the link: done)
//
// Any failure puts E back as it was — its server fenced again when the
// rejoin lifted the fence, its account on S dropped, the ejection kept
// (so the request can be made again) — with the reason in its fault.
// A PostgreSQL primary that was failed over from always ran past the
// promoted standby's fork (at least its crash recovery's checkpoint), so
// it is rewound; the check for what it committed past the fork is its
// agent's, in its WAL.

// KindRejoin is the rejoin task's kind.
const KindRejoin = "rejoin"

// RejoinBootWait bounds how long the ejected instance's agent may take
// to come back and take its fence (a boot under TCG takes a minute or
// two).
const RejoinBootWait = 10 * time.Minute

type rejoinPayload struct {
	// Source is the group's source the instance follows.
	Source     string `json:"source"`
	ForkPos    string `json:"fork_pos"`
	ForkReplID string `json:"fork_repl_id,omitempty"`
	// ForkPrevReplID and ForkPrevEnd (Redis): the group's stream before
	// ForkReplID, up to where the group continued it (the ejection's).
	ForkPrevReplID string `json:"fork_prev_repl_id,omitempty"`
	ForkPrevEnd    string `json:"fork_prev_end,omitempty"`
	// Unfenced: the task lifted the server's compute fence (a failure
	// fences it again).
	Unfenced bool `json:"unfenced,omitempty"`
	// Position is the instance's own, read at its fence.
	Position string `json:"position,omitempty"`
	// Password lives here from "fenced" until "account" queued the
	// operation that carries it; Account: the account was queued on
	// Source (a failure drops it).
	Password     string    `json:"password,omitempty"`
	Account      bool      `json:"account,omitempty"`
	LinkDeadline time.Time `json:"link_deadline,omitzero"`
}

func (p rejoinPayload) fork() forkPoint {
	return forkPoint{pos: p.ForkPos, replID: p.ForkReplID, prevReplID: p.ForkPrevReplID, prevEnd: p.ForkPrevEnd}
}

func rejoinOpID(t *tasks.Task, what string) string { return "rejoin-" + what + "-" + t.ID }

// Rejoin starts the rejoin of an instance ejected from its replication
// group. The group's source is the replica elected in its place or,
// when that one is a replica itself by now (a later switchover), its
// source.
func (m *Manager) Rejoin(ctx context.Context, project, id string) error {
	err := m.DB.InTx(ctx, func(tx *store.Tx) error {
		in, err := m.get(ctx, tx, project, id)
		if err != nil {
			return err
		}
		ej, ok, err := instances.EjectionOf(ctx, tx, in.ID)
		if err != nil {
			return err
		}
		if !ok {
			return wrap(ErrBadRequest, "instance %s was not ejected from a replication group: there is no group for it to rejoin", in.ID)
		}
		if in.Task != instances.TaskNone {
			return wrap(ErrUnprocessable, "cannot rejoin instance %s: task %s is in progress", in.ID, in.Task)
		}
		if _, ok, err := instances.LinkOf(ctx, tx, in.ID); err != nil {
			return err
		} else if ok {
			return wrap(ErrBadRequest, "instance %s is a replica already", in.ID)
		}
		if _, ok := m.Compute.(compute.ReplicationRouter); !ok {
			return wrap(ErrBadRequest, "this controller's compute driver cannot connect replicas to a source; nothing was changed")
		}
		manager, err := m.managerOf(ctx, in)
		if err != nil {
			return err
		}
		src, err := instances.Get(ctx, tx, "", ej.ElectedID)
		if errors.Is(err, instances.ErrNotFound) {
			return wrap(ErrBadRequest, "instance %s cannot rejoin its replication group: %s, elected in its place, is gone; delete it", in.ID, ej.ElectedID)
		} else if err != nil {
			return err
		}
		if l, ok, err := instances.LinkOf(ctx, tx, src.ID); err != nil {
			return err
		} else if ok {
			if src, err = instances.Get(ctx, tx, "", l.SourceID); err != nil {
				return fmt.Errorf("the source %s of %s: %w", l.SourceID, ej.ElectedID, err)
			}
		}
		if manager != managerMariaDB && manager != managerPostgreSQL && manager != managerRedis {
			return wrap(ErrBadRequest, "instance %s cannot rejoin its replication group: datastore %s has no rejoin", in.ID, manager)
		}
		status, _ := m.Status(src)
		if err := requireStatus(src, status, "rejoin a group whose source is", instances.StatusActive); err != nil {
			return err
		}
		if src.Task != instances.TaskNone {
			return wrap(ErrUnprocessable, "cannot rejoin instance %s: its group's source %s has task %s in progress", in.ID, src.ID, src.Task)
		}
		now := m.now()
		if err := instances.SetTask(ctx, tx, in.ID, instances.TaskRejoining, now); err != nil {
			return err
		}
		_, err = tasks.Enqueue(ctx, tx, tasks.New{InstanceID: in.ID, Kind: KindRejoin, Step: "boot",
			Payload: rejoinPayload{Source: src.ID, ForkPos: ej.ForkPos, ForkReplID: ej.ForkReplID,
				ForkPrevReplID: ej.ForkPrevReplID, ForkPrevEnd: ej.ForkPrevEnd},
			Deadline: now.Add(RejoinBootWait + m.opTimeout())}, now)
		return err
	})
	if err == nil {
		m.kick()
		m.log().Info("rejoin queued", "instance", id)
	}
	return err
}

func (m *Manager) runRejoin(ctx context.Context, t *tasks.Task) (tasks.Result, error) {
	var p rejoinPayload
	if err := t.Decode(&p); err != nil {
		return tasks.Result{}, tasks.Fail("", "%v", err)
	}
	in, err := m.taskInstance(ctx, t)
	if err != nil {
		return tasks.Result{}, err
	}
	src, err := m.loadFor(ctx, p.Source, "the group's source")
	if err != nil {
		return tasks.Result{}, err
	}
	manager, err := m.managerOf(ctx, in)
	if err != nil {
		return tasks.Result{}, err
	}
	srv, ok := serverOf(in)
	if !ok {
		return tasks.Result{}, tasks.Fail("", "instance %s has no server", in.ID)
	}
	switch t.Step {
	case "boot":
		st, err := m.Compute.ServerState(ctx, srv)
		if err != nil {
			return tasks.Result{}, fmt.Errorf("the state of its server: %w", err)
		}
		if st == compute.StateFenced {
			f, ok := m.Compute.(compute.Fencer)
			if !ok {
				return tasks.Result{}, tasks.Fail("", "its server is fenced, and this compute driver cannot lift a fence")
			}
			// Recorded first: a failure from here on fences it again.
			if !p.Unfenced {
				p.Unfenced = true
				return tasks.Result{Next: "boot", Payload: p}, nil
			}
			if err := f.UnfenceServer(ctx, srv); err != nil {
				return tasks.Result{}, fmt.Errorf("lifting the fence of its server: %w", err)
			}
			m.log().Warn("rejoin: the ejected source's fence is lifted; it boots read-only", "instance", in.ID)
		}
		if st != compute.StateRunning {
			if err := m.Compute.StartServer(ctx, srv); err != nil {
				return tasks.Result{}, fmt.Errorf("starting its server: %w", err)
			}
		}
		args, _ := json.Marshal(wire.SetReadOnlyArgs{ReadOnly: true})
		if err := m.queue(ctx, t, in.ID, wire.Operation{ID: rejoinOpID(t, "fence"), Kind: wire.KindSetReadOnly, Args: args}); err != nil {
			return tasks.Result{}, fmt.Errorf("queue its fence: %w", err)
		}
		return tasks.Result{Next: "fenced", Payload: p, After: time.Second}, nil
	case "fenced":
		res, done, err := m.opDone(ctx, in.ID, rejoinOpID(t, "fence"), "making it read-only")
		if err != nil || !done {
			return tasks.Result{After: time.Second}, err
		}
		var st wire.ReplicationStatus
		err = res.Decode(&st)
		pos, _, ok := fencePosition(manager, st)
		if err != nil || !st.ReadOnly || !ok {
			return tasks.Result{}, tasks.Fail("", "its fence reported %+v (%v)", st, err)
		}
		// PostgreSQL's agent makes the check itself, in the server's WAL
		// (its position is past the fork whatever it committed: crash
		// recovery writes a checkpoint).
		if why := pastFork(manager, st, p.fork()); manager != managerPostgreSQL && why != "" {
			return tasks.Result{}, tasks.Fail("", "it holds writes its group never received (%s): following %s would drop them", why, src.ID)
		}
		if p.Password == "" {
			// The password is stored before the account is queued: a
			// run again after the queue (a controller killed before its
			// record) queues the same operation, found by its id, not one
			// with another password (refused, as a different operation
			// under that id).
			p.Position = pos
			p.Password = rand.Text() + rand.Text()
			p.Account = true
			return tasks.Result{Next: "fenced", Payload: p}, nil
		}
		args, err := json.Marshal(wire.ReplicationAccountArgs{Name: replicationAccount(in.ID), Password: p.Password})
		if err != nil {
			return tasks.Result{}, err
		}
		if err := m.queue(ctx, t, src.ID, wire.Operation{ID: rejoinOpID(t, "account"), Kind: wire.KindCreateReplicationAccount, Args: args}); err != nil {
			return tasks.Result{}, fmt.Errorf("queue its replication account on %s: %w", src.ID, err)
		}
		m.log().Info("rejoin: the ejected source holds nothing past the fork", "instance", in.ID, "position", pos, "fork", p.ForkPos)
		return tasks.Result{Next: "account", Payload: p, After: 200 * time.Millisecond}, nil
	case "account":
		_, done, err := m.opDone(ctx, src.ID, rejoinOpID(t, "account"), "creating its replication account on "+src.ID)
		if err != nil || !done {
			return tasks.Result{After: 200 * time.Millisecond}, err
		}
		router, ok := m.Compute.(compute.ReplicationRouter)
		sSrv, ok1 := serverOf(src)
		if !ok || !ok1 || src.Host == "" || src.Port == 0 {
			return tasks.Result{}, tasks.Fail("", "the compute driver cannot connect it to the group's source %s", src.ID)
		}
		host, port, err := router.ReplicationRoute(ctx, srv, sSrv, src.Host, src.Port)
		if err != nil {
			return tasks.Result{}, fmt.Errorf("route from %s to the group's source %s: %w", in.ID, src.ID, err)
		}
		a := wire.StartReplicationArgs{Host: host, Port: port, Account: replicationAccount(in.ID), Password: p.Password}
		kind := wire.KindStartReplication
		switch manager {
		case managerMariaDB:
			a.GTIDSlavePos = p.Position // where it stopped: in the source's history
		case managerPostgreSQL:
			// Rewound to the fork (pg_rewind) unless it committed past it.
			kind, a.ForkLSN = wire.KindRejoinReplication, p.ForkPos
		}
		args, err := json.Marshal(a)
		if err != nil {
			return tasks.Result{}, err
		}
		if err := m.queue(ctx, t, in.ID, wire.Operation{ID: rejoinOpID(t, "start"), Kind: kind, Args: args}); err != nil {
			return tasks.Result{}, fmt.Errorf("queue start_replication: %w", err)
		}
		p.Password = ""
		p.LinkDeadline = m.now().Add(linkTimeout)
		return tasks.Result{Next: "linked", Payload: p, After: 200 * time.Millisecond}, nil
	case "linked":
		res, done, err := m.opDone(ctx, in.ID, rejoinOpID(t, "start"), "following "+src.ID)
		if err != nil || !done {
			return tasks.Result{After: 200 * time.Millisecond}, err
		}
		st, running, err := m.linkStatus(ctx, in.ID, res)
		if err != nil {
			return tasks.Result{}, tasks.Fail("", "start_replication's result: %v", err)
		}
		// Running is not enough: a link runs for a moment before the
		// source answers that it lacks the instance's position, or before
		// the instance fails to apply what it receives. It has rejoined
		// once it applied the group's history up to the fork.
		applied, reached := appliedFork(manager, st, p.ForkPos)
		if !running || !reached {
			if over, how := m.linkWaitOver(st, p.LinkDeadline); over {
				why := linkReason(st)
				if running {
					why = fmt.Sprintf("it applied %s, not yet the fork at %s", applied, p.ForkPos)
				}
				return tasks.Result{}, tasks.Fail("", "it does not follow %s %s: %s", src.ID, how, why)
			}
			return tasks.Result{After: time.Second}, nil
		}
		// Redis: the users changed on the group's source while this one
		// was away follow it (its replication carries none).
		m.syncUsersFrom(ctx, src.ID, in.ID, "rejoined", 0)
		if err := m.DB.InTx(ctx, func(tx *store.Tx) error {
			// A run again after this transaction committed (a controller
			// killed before the step's record) finds the link it made:
			// the rejoin is done. (Nothing else links an instance while it
			// rejoins: the request refuses a replica.)
			if _, ok, err := instances.LinkOf(ctx, tx, in.ID); err != nil || ok {
				return err
			}
			now := m.now()
			if err := instances.InsertLink(ctx, tx, instances.Link{InstanceID: in.ID, SourceID: src.ID, Account: replicationAccount(in.ID), CreatedAt: now}); err != nil {
				return err
			}
			if err := instances.DeleteEjection(ctx, tx, in.ID); err != nil {
				return err
			}
			return instances.Update(ctx, tx, in.ID, now, `task = ?, task_started_at = NULL, fault_message = NULL, fault_details = NULL, fault_at = NULL`,
				string(instances.TaskNone))
		}); err != nil {
			return tasks.Result{}, err
		}
		m.log().Info("rejoin done: the ejected source is a replica again", "instance", in.ID, "source", src.ID)
		return tasks.Result{Done: true}, nil
	}
	return tasks.Result{}, tasks.Fail("", "unknown rejoin step %q", t.Step)
}

// failRejoin puts the instance back as it was before the request: its
// server fenced again if the rejoin lifted the fence, its account on the
// group's source dropped (best effort: nobody holds its password), the
// ejection kept; the reason is its fault.
func (m *Manager) failRejoin(ctx context.Context, t *tasks.Task, f *tasks.Failure) error {
	var p rejoinPayload
	_ = t.Decode(&p)
	reason := "rejoin refused or failed: " + f.Reason
	if in, err := m.load(ctx, t.InstanceID); err == nil && p.Unfenced {
		fencer, ok := m.Compute.(compute.Fencer)
		srv, ok1 := serverOf(in)
		if ok && ok1 {
			if err := fencer.FenceServer(ctx, srv); err != nil {
				// Not fenced again: its database keeps the fence (read-only)
				// its agent took, if it took it.
				reason += fmt.Sprintf("; fencing its server again failed too (%v): it may run, read-only", err)
			} else {
				reason += "; its server is fenced again (powered off and kept off)"
			}
		}
	}
	if p.Account && p.Source != "" {
		if src, err := m.load(ctx, p.Source); err == nil {
			args, _ := json.Marshal(wire.ReplicationAccountRef{Name: replicationAccount(t.InstanceID)})
			if err := m.queue(ctx, t, src.ID, wire.Operation{ID: rejoinOpID(t, "drop"), Kind: wire.KindDropReplicationAccount, Args: args}); err != nil {
				m.log().Warn("rejoin: its replication account on the group's source was not dropped", "instance", t.InstanceID, "err", err)
			}
		}
	}
	reason += "; it is still out of its replication group: ask again once the cause is gone, or delete it"
	m.log().Warn("rejoin failed", "instance", t.InstanceID, "reason", reason)
	return m.recordFailure(ctx, t, &tasks.Failure{Reason: reason, Details: f.Details}, false, true)
}

// forkPoint is where a failover's group forked from the ejected source
// (its ejection): the position, with a Redis position's replication ID;
// Redis also keeps the stream the group followed before that ID
// (prevReplID) and the last offset of the group's history under it
// (prevEnd: where the group continued it under replID), empty when the
// elected replica reported none.
type forkPoint struct {
	pos, replID         string
	prevReplID, prevEnd string
}

// pastFork says what an ejected source whose fence reported st holds
// past the position its group forked at ("" when nothing). MariaDB: a
// domain of its gtid_binlog_pos further than the fork's, or one the fork
// lacks (a domain's sequence numbers count its transactions whichever
// server wrote them, and the ejected source was the group's only
// writer). Redis: its stream must be the group's up to an offset at or
// before the fork's; or the group's stream before the fork's ID up to
// where the group continued it (a source promoted by a switchover, whose
// snapshot is from before its promotion) — either under its own
// replication ID, or (a server started again from its snapshot: a new
// ID) under its previous ID, with no byte written under the new one.
func pastFork(manager string, st wire.ReplicationStatus, fp forkPoint) string {
	switch manager {
	case managerRedis:
		fork, err := strconv.ParseInt(fp.pos, 10, 64)
		if err != nil || st.ReplOffset == nil {
			return fmt.Sprintf("its position %s:%v cannot be compared with the fork's %s:%s", st.ReplID, st.ReplOffset, fp.replID, fp.pos)
		}
		if why, ours := redisPast(st, fp.replID, fork, "the fork"); ours {
			return why
		}
		prevEnd, err := strconv.ParseInt(fp.prevEnd, 10, 64)
		if fp.prevReplID == "" || err != nil {
			return fmt.Sprintf("its stream %s (before it %q) is not the group's, which forked at %s:%d", st.ReplID, st.ReplID2, fp.replID, fork)
		}
		if why, ours := redisPast(st, fp.prevReplID, prevEnd, "the point the group continued as "+fp.replID); ours {
			return why
		}
		return fmt.Sprintf("its stream %s (before it %q) is not the group's, which forked at %s:%d and before that was %s up to offset %d",
			st.ReplID, st.ReplID2, fp.replID, fork, fp.prevReplID, prevEnd)
	case managerMariaDB:
		forkPos := fp.pos
		pos := st.GTIDBinlogPos
		fork := gtidDomains(forkPos)
		for d, g := range gtidDomains(pos) {
			f, ok := fork[d]
			switch {
			case !ok || g.seq > f.seq:
				return fmt.Sprintf("its gtid_binlog_pos %s is past the fork at %s in domain %s", pos, forkPos, d)
			case g.seq == f.seq && g.server != f.server:
				// The fork's number written by another server: its own
				// transaction, not the group's. (Below the fork's number
				// the source's binary log is the judge: MariaDB refuses a
				// replica whose position it lacks, and the rejoin ends
				// only once the fork is applied.)
				return fmt.Sprintf("its gtid_binlog_pos %s has transaction %d of domain %s from server %s; the group's is from server %s", pos, g.seq, d, g.server, f.server)
			}
		}
		return ""
	}
	return fmt.Sprintf("%s has no rejoin", manager)
}

// redisPast says what a Redis server whose status is st holds of stream
// id past its offset end (what names that point), and whether st is that
// stream at all: under its own replication ID, or — a server started
// again from its snapshot continues the snapshot's stream under a new
// ID — under its previous one, with no byte written under the new one.
func redisPast(st wire.ReplicationStatus, id string, end int64, what string) (why string, ours bool) {
	off := *st.ReplOffset
	switch {
	case st.ReplID == id && off > end:
		return fmt.Sprintf("%d bytes of writes past %s (offset %d of stream %s)", off-end, what, end, id), true
	case st.ReplID == id:
		return "", true
	case st.ReplID2 != id || st.ReplID2End == nil:
		return "", false
	case off > *st.ReplID2End:
		return fmt.Sprintf("%d bytes of writes since it started again (stream %s)", off-*st.ReplID2End, st.ReplID), true
	case *st.ReplID2End > end:
		return fmt.Sprintf("%d bytes of writes past %s (offset %d of stream %s)", *st.ReplID2End-end, what, end, id), true
	}
	return "", true
}

// appliedFork says what a rejoining instance applied (its status st) and
// whether that reaches the fork: MariaDB's gtid_slave_pos at or past the
// fork in every domain, PostgreSQL's replayed LSN, Redis's offset.
func appliedFork(manager string, st wire.ReplicationStatus, forkPos string) (string, bool) {
	switch manager {
	case managerPostgreSQL:
		x, ok1 := parseLSN(st.ReplayedLSN)
		y, ok2 := parseLSN(forkPos)
		return st.ReplayedLSN, ok1 && ok2 && x >= y
	case managerRedis:
		fork, err := strconv.ParseInt(forkPos, 10, 64)
		if st.ReplOffset == nil || err != nil {
			return "no offset", false
		}
		return strconv.FormatInt(*st.ReplOffset, 10), *st.ReplOffset >= fork
	}
	applied := gtidDomains(st.GTIDSlavePos)
	for d, g := range gtidDomains(forkPos) {
		if applied[d].seq < g.seq {
			return st.GTIDSlavePos, false
		}
	}
	return st.GTIDSlavePos, true
}

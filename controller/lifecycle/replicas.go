package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/compute"
	"strata/controller/instances"
	"strata/controller/quotas"
	"strata/controller/store"
	"strata/controller/tasks"
)

// Replicas (docs/replication.md). A replica is made by the create task
// with four more steps: "seed" before "volume" waits for the seed backup
// of the source; after the restore, "account" creates the replica's
// replication account on the source, "attach" starts replication on the
// replica, and "linked" waits until the link runs. Only then is the
// replica ACTIVE.
//
// PostgreSQL (accountFirst) makes each replica's account, and so its
// replication slot, on the source before the seed backup is queued: the
// slot keeps the source's WAL from before the backup's start until the
// replica streams it, so nothing between the backup's end and the link
// can be recycled. Its tasks are queued held (RunAfter) until the
// accounts and the backup are queued, then released with the backup; a
// controller stopped in between lets the hold end and the tasks fail,
// and a failed replica's account (and slot) is dropped (failCreate).

// MaxReplicaCount is Trove's limit on replicas made by one request.
const MaxReplicaCount = 3

// replicatingManagers are the datastore managers whose agent implements
// datastore.Replicator.
var replicatingManagers = map[string]bool{"mariadb": true, "postgresql": true, "redis": true}

// Managers with replication, by name.
const (
	managerMariaDB    = "mariadb"
	managerPostgreSQL = "postgresql"
	managerRedis      = "redis"
)

// accountFirst says whether a manager's replica accounts are made on the
// source before its seed backup (PostgreSQL: the account's slot keeps
// the WAL the replica needs after the backup's end).
func accountFirst(manager string) bool { return manager == managerPostgreSQL }

// seedIncremental says whether a replica of the datastore is seeded from
// an incremental on its source's newest backup, where one exists, rather
// than from a full backup, as the issue asks: MariaDB only. A MariaDB
// incremental needs nothing but its parent's LSN, and its restore (the
// parent's, then the pages changed since) ends at the GTID position the
// incremental recorded. Redis has no incrementals. A PostgreSQL
// incremental is the WAL its backup slot kept since the newest backup,
// which the slot may have dropped (the incremental then fails, and with
// it the replica), and a standby restored from a base and WAL chain is
// not tested: its replicas keep a full seed.
func seedIncremental(manager string) bool { return manager == managerMariaDB }

// managerOf is the datastore manager of an instance's version.
func (m *Manager) managerOf(ctx context.Context, in instances.Instance) (string, error) {
	v, err := m.Registry.Version(ctx, in.DatastoreVersionID)
	if err != nil {
		return "", err
	}
	return v.Manager, nil
}

// linkTimeout bounds waiting for a started link to run.
const linkTimeout = 2 * time.Minute

// Seeds is what replica create needs from the backups.
type Seeds interface {
	// SeedBackup queues a backup of the instance to seed replicas from
	// and returns its id (the source must be ACTIVE and idle): with
	// incremental, one on the instance's newest completed backup that
	// can take one (same datastore version, room in its chain), else a
	// full one.
	SeedBackup(ctx context.Context, project, instanceID, name string, incremental bool) (string, error)
	// SeedState reports whether the backup completed, its GTID position
	// and the chain to restore (full first, the seed last); a failed
	// backup, or one whose chain is broken, is a *tasks.Failure with its
	// reason.
	SeedState(ctx context.Context, backupID string) (done bool, gtid string, chain []string, err error)
	// DeleteSeed deletes a seed backup every replica restored (a gone
	// one is not an error).
	DeleteSeed(ctx context.Context, backupID string) error
}

// ReplicaRequest asks for Count replicas of SourceID.
type ReplicaRequest struct {
	// ProjectID scopes the source; empty reaches any project (admin).
	ProjectID string
	Name      string
	SourceID  string
	Count     int
}

// replicaPayload is the create task's payload fields for a replica.
type replicaPayload struct {
	SeedBackup string `json:"seed_backup,omitempty"`
	ReplicaOf  string `json:"replica_of,omitempty"`
	SeedGTID   string `json:"seed_gtid,omitempty"`
	// ReplicationPassword lives here from "account" until "attach"
	// queued start_replication (then only the two SecretArgs operations
	// hold it, until they end).
	ReplicationPassword string `json:"replication_password,omitempty"`
	// LinkDeadline bounds "linked".
	LinkDeadline time.Time `json:"link_deadline,omitzero"`
	// AccountFirst: the account was made on the source before the seed
	// backup (PostgreSQL); the task was held until then. Reason, if set,
	// is why that failed.
	AccountFirst bool   `json:"account_first,omitempty"`
	Reason       string `json:"reason,omitempty"`
}

func accountOpID(replicaID string) string { return "repl-account-" + replicaID }
func startOpID(replicaID string) string   { return "repl-start-" + replicaID }

// replicationAccount names a replica's account from its id.
func replicationAccount(replicaID string) string {
	id := strings.ToLower(strings.ReplaceAll(replicaID, "-", ""))
	if len(id) > 20 {
		id = id[:20]
	}
	return wire.ReplicationAccountPrefix + id
}

// CreateReplicas checks the source, queues its seed backup and records
// Count replicas (BUILD) with their create tasks, which wait for the
// backup. Trove's rules: the source is ACTIVE, not itself a replica, and
// its datastore replicates; flavor, volume size, version and
// configuration group come from the source.
func (m *Manager) CreateReplicas(ctx context.Context, r ReplicaRequest) ([]instances.Instance, error) {
	if r.Count == 0 {
		r.Count = 1
	}
	if r.Count < 1 || r.Count > MaxReplicaCount {
		return nil, wrap(ErrBadRequest, "replica_count %d: between 1 and %d replicas per request", r.Count, MaxReplicaCount)
	}
	if err := CheckInstanceName(r.Name); err != nil {
		return nil, err
	}
	if m.Seeds == nil {
		return nil, wrap(ErrBadRequest, "this controller has no backup store; replicas are seeded from a backup of their source")
	}
	src, err := m.get(ctx, m.DB, r.ProjectID, r.SourceID)
	if err != nil {
		return nil, err
	}
	if _, ok, err := instances.LinkOf(ctx, m.DB, src.ID); err != nil {
		return nil, err
	} else if ok {
		return nil, wrap(ErrBadRequest, "Cannot create a replica of a replica %s.", src.ID)
	}
	v, err := m.Registry.Version(ctx, src.DatastoreVersionID)
	if err != nil {
		return nil, err
	}
	if !replicatingManagers[v.Manager] {
		return nil, wrap(ErrBadRequest, "datastore %s (manager %s) does not support replication; replicas exist for mariadb, postgresql and redis", v.DatastoreName, v.Manager)
	}
	if _, ok := m.Compute.(compute.ReplicationRouter); !ok {
		return nil, wrap(ErrBadRequest, "this controller's compute driver cannot connect a replica to its source yet (docs/replication.md); no replica was made")
	}
	status, _ := m.Status(src)
	if err := requireStatus(src, status, "replicate", instances.StatusActive); err != nil {
		return nil, err
	}
	// Quota first, so a refused request leaves no seed backup behind.
	if m.Quotas != nil {
		if err := m.DB.InTx(ctx, func(tx *store.Tx) error {
			return m.Quotas.Check(ctx, tx, src.ProjectID, quotas.Limits{quotas.Instances: int64(r.Count), quotas.Volumes: int64(r.Count * src.VolumeSizeGB)})
		}); err != nil {
			return nil, err
		}
	}
	first := accountFirst(v.Manager)
	var seed string
	if !first {
		if seed, err = m.Seeds.SeedBackup(ctx, src.ProjectID, src.ID, "replica seed for "+src.ID, seedIncremental(v.Manager)); err != nil {
			return nil, err
		}
	}
	now := m.now()
	var ids []string
	var held []heldReplica
	err = m.DB.InTx(ctx, func(tx *store.Tx) error {
		if m.Quotas != nil {
			if err := m.Quotas.Check(ctx, tx, src.ProjectID, quotas.Limits{quotas.Instances: int64(r.Count), quotas.Volumes: int64(r.Count * src.VolumeSizeGB)}); err != nil {
				return err
			}
		}
		for i := 0; i < r.Count; i++ {
			name := r.Name
			if r.Count > 1 {
				name = fmt.Sprintf("%s-%d", r.Name, i+1)
			}
			d := instances.Desired{ID: store.NewID(), ProjectID: src.ProjectID, Name: name, DatastoreVersionID: src.DatastoreVersionID,
				FlavorID: src.FlavorID, VolumeSizeGB: src.VolumeSizeGB, ConfigurationID: src.ConfigurationID,
				Task: instances.TaskBuilding, TaskStartedAt: now, CreatedAt: now, NICs: src.NICs,
				// Trove's locality: a replica joins its source's server group.
				Locality: src.Locality, ServerGroup: src.ServerGroup}
			if err := instances.Insert(ctx, tx, d); err != nil {
				return err
			}
			if err := instances.InsertLink(ctx, tx, instances.Link{InstanceID: d.ID, SourceID: src.ID, Account: replicationAccount(d.ID), CreatedAt: now}); err != nil {
				return err
			}
			p := replicaTaskPayload{replicaPayload: replicaPayload{SeedBackup: seed, ReplicaOf: src.ID}}
			n := tasks.New{InstanceID: d.ID, Kind: KindCreate, Step: "seed", Payload: p, Deadline: now.Add(v.BootTimeout + time.Hour)}
			if first {
				p.AccountFirst, p.ReplicationPassword = true, rand.Text()+rand.Text()
				n.Payload, n.RunAfter = p, now.Add(m.accountFirstHold(r.Count))
			}
			taskID, err := tasks.Enqueue(ctx, tx, n, now)
			if err != nil {
				return err
			}
			ids = append(ids, d.ID)
			held = append(held, heldReplica{id: d.ID, taskID: taskID, deadline: n.Deadline, p: p})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if first {
		seed = m.accountsThenSeed(ctx, src, held)
	}
	m.kick()
	m.log().Info("replicas queued", "source", src.ID, "replicas", ids, "seed_backup", seed)
	out := make([]instances.Instance, 0, len(ids))
	for _, id := range ids {
		in, err := instances.Get(ctx, m.DB, "", id)
		if err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, nil
}

// heldReplica is a PostgreSQL replica whose create task waits for its
// account and the seed backup.
type heldReplica struct {
	id, taskID string
	deadline   time.Time
	p          replicaTaskPayload
}

// accountFirstHold is how long held tasks wait for accountsThenSeed
// before they run (and fail) anyway: longer than its guest calls.
func (m *Manager) accountFirstHold(count int) time.Duration {
	timeout := m.GuestCallTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	return time.Duration(count)*timeout + time.Minute
}

// accountsThenSeed makes each held replica's account (and its slot) on
// the source, then queues the seed backup, then releases the tasks with
// it, or with the reason it failed (their seed step fails with it, and
// failCreate drops the accounts). It returns the seed backup's id.
func (m *Manager) accountsThenSeed(ctx context.Context, src instances.Instance, held []heldReplica) string {
	// The request's client may go: the accounts and the release may not.
	ctx = context.WithoutCancel(ctx)
	timeout := m.GuestCallTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	var seed, reason string
	for _, h := range held {
		args, err := json.Marshal(wire.ReplicationAccountArgs{Name: replicationAccount(h.id), Password: h.p.ReplicationPassword})
		if err != nil {
			reason = err.Error()
			break
		}
		// The op id is the one the "account" step queues: there it is
		// found done, not run again.
		op := wire.Operation{ID: accountOpID(h.id), Kind: wire.KindCreateReplicationAccount, Args: args}
		res, err := m.Agents.Call(ctx, src.ID, op, agentendpoint.QueueOptions{Expires: h.deadline}, timeout)
		if err == nil && res.Error != nil {
			err = fmt.Errorf("%s: %s", res.Error.Code, res.Error.Message)
		}
		if err != nil {
			reason = fmt.Sprintf("creating the replication account (and its slot) on the source %s before the seed backup failed: %v", src.ID, err)
			break
		}
	}
	if reason == "" {
		var err error
		if seed, err = m.Seeds.SeedBackup(ctx, src.ProjectID, src.ID, "replica seed for "+src.ID, seedIncremental(managerPostgreSQL)); err != nil {
			reason = fmt.Sprintf("queueing the seed backup of the source %s failed: %v", src.ID, err)
		}
	}
	for _, h := range held {
		p := h.p
		p.SeedBackup, p.Reason = seed, reason
		if ok, err := tasks.Release(ctx, m.DB, h.taskID, "seed", p, m.now()); err != nil || !ok {
			m.log().Warn("a held replica task was not released: it fails when its hold ends, and its account is dropped", "instance", h.id, "err", err)
		}
	}
	if reason != "" {
		m.log().Warn("replicas fail before their seed backup", "source", src.ID, "reason", reason)
	}
	return seed
}

// replicaTaskPayload is the whole create payload of a replica.
type replicaTaskPayload struct {
	createPayload
	replicaPayload
}

func decodeReplica(t *tasks.Task) (replicaTaskPayload, error) {
	var p replicaTaskPayload
	if err := t.Decode(&p); err != nil {
		return p, tasks.Fail("", "%v", err)
	}
	return p, nil
}

// seedStep waits for the seed backup, then restores it like any backup.
func (m *Manager) seedStep(ctx context.Context, t *tasks.Task) (tasks.Result, error) {
	p, err := decodeReplica(t)
	if err != nil {
		return tasks.Result{}, err
	}
	if m.Seeds == nil {
		return tasks.Result{}, tasks.Fail("", "this controller has no backup store; the replica cannot be seeded")
	}
	if p.SeedBackup == "" && p.AccountFirst {
		if p.Reason != "" {
			return tasks.Result{}, tasks.Fail("", "%s", p.Reason)
		}
		return tasks.Result{}, tasks.Fail("", "the request that made this replica did not finish queuing its seed backup (the controller stopped meanwhile); delete the replica and ask again")
	}
	done, gtid, chain, err := m.Seeds.SeedState(ctx, p.SeedBackup)
	if err != nil {
		return tasks.Result{}, err
	}
	if !done {
		if !t.Deadline.IsZero() && m.now().After(t.Deadline) {
			return tasks.Result{}, tasks.Fail("", "the seed backup %s of the source did not complete before the replica's deadline", p.SeedBackup)
		}
		return tasks.Result{After: 2 * time.Second}, nil
	}
	if err := wire.CheckGTIDList(gtid); err != nil {
		return tasks.Result{}, tasks.Fail("", "seed backup %s: %v", p.SeedBackup, err)
	}
	p.RestoreChain, p.SeedGTID = chain, gtid
	return tasks.Result{Next: "volume", Payload: p}, nil
}

// source decodes a replica's task and loads its source, for the link
// steps.
func (m *Manager) source(ctx context.Context, t *tasks.Task) (replicaTaskPayload, instances.Instance, error) {
	p, err := decodeReplica(t)
	if err != nil {
		return p, instances.Instance{}, err
	}
	src, err := m.loadFor(ctx, p.ReplicaOf, "the replication source")
	return p, src, err
}

// accountStep queues the replica's account on the source, with a
// password drawn once (a re-run of the step after a restart finds it in
// the payload, and the queued operation by its id).
func (m *Manager) accountStep(ctx context.Context, t *tasks.Task, in instances.Instance) (tasks.Result, error) {
	p, src, err := m.source(ctx, t)
	if err != nil {
		return tasks.Result{}, err
	}
	if t.Step == "account" {
		m.releaseSeed(ctx, t, p.SeedBackup)
	}
	if p.ReplicationPassword == "" {
		p.ReplicationPassword = rand.Text() + rand.Text()
	}
	args, err := json.Marshal(wire.ReplicationAccountArgs{Name: replicationAccount(in.ID), Password: p.ReplicationPassword})
	if err != nil {
		return tasks.Result{}, err
	}
	// The payload with the password is stored before the operation is
	// queued: a restart in between queues the same operation again.
	if t.Step == "account" {
		return tasks.Result{Next: "account-queue", Payload: p}, nil
	}
	if err := m.queue(ctx, t, src.ID, wire.Operation{ID: accountOpID(in.ID), Kind: wire.KindCreateReplicationAccount, Args: args}); err != nil {
		return tasks.Result{}, fmt.Errorf("queue the replication account: %w", err)
	}
	return tasks.Result{Next: "attach", After: time.Second}, nil
}

// attachStep waits for the account, then queues start_replication on the
// replica and drops the password from the task.
func (m *Manager) attachStep(ctx context.Context, t *tasks.Task, in instances.Instance) (tasks.Result, error) {
	p, src, err := m.source(ctx, t)
	if err != nil {
		return tasks.Result{}, err
	}
	_, done, err := m.opDone(ctx, src.ID, accountOpID(in.ID), "creating the replication account on the source")
	if err != nil || !done {
		return tasks.Result{After: time.Second}, err
	}
	if src.Host == "" || src.Port == 0 {
		return tasks.Result{}, tasks.Fail("", "the replication source %s has no address", src.ID)
	}
	router, ok := m.Compute.(compute.ReplicationRouter)
	replicaSrv, ok1 := serverOf(in)
	sourceSrv, ok2 := serverOf(src)
	if !ok || !ok1 || !ok2 {
		return tasks.Result{}, tasks.Fail("", "the compute driver cannot connect replica %s to its source %s", in.ID, src.ID)
	}
	host, port, err := router.ReplicationRoute(ctx, replicaSrv, sourceSrv, src.Host, src.Port)
	if err != nil {
		return tasks.Result{}, fmt.Errorf("route from replica %s to its source: %w", in.ID, err)
	}
	a := wire.StartReplicationArgs{Host: host, Port: port, Account: replicationAccount(in.ID), Password: p.ReplicationPassword}
	if manager, err := m.managerOf(ctx, src); err != nil {
		return tasks.Result{}, err
	} else if manager == managerMariaDB {
		// PostgreSQL and Redis start where the restored data ends (a
		// standby's WAL; Redis's own synchronisation).
		a.GTIDSlavePos = p.SeedGTID
	}
	args, err := json.Marshal(a)
	if err != nil {
		return tasks.Result{}, err
	}
	if err := m.queue(ctx, t, in.ID, wire.Operation{ID: startOpID(in.ID), Kind: wire.KindStartReplication, Args: args}); err != nil {
		return tasks.Result{}, fmt.Errorf("queue start_replication: %w", err)
	}
	p.ReplicationPassword = ""
	p.LinkDeadline = m.now().Add(linkTimeout)
	return tasks.Result{Next: "linked", Payload: p, After: time.Second}, nil
}

// linkedStep waits for start_replication, then until the link runs; only
// then is the replica ACTIVE.
func (m *Manager) linkedStep(ctx context.Context, t *tasks.Task, in instances.Instance) (tasks.Result, error) {
	p, err := decodeReplica(t)
	if err != nil {
		return tasks.Result{}, err
	}
	res, done, err := m.opDone(ctx, in.ID, startOpID(in.ID), "starting replication")
	if err != nil || !done {
		return tasks.Result{After: time.Second}, err
	}
	st, running, err := m.linkStatus(ctx, in.ID, res)
	if err != nil {
		return tasks.Result{}, tasks.Fail("", "start_replication result: %v", err)
	}
	if running {
		// The link as read now is its first report: the view shows it
		// RUNNING from ACTIVE on, not UNKNOWN until the next heartbeat.
		if err := instances.SetReplicationReport(ctx, m.DB, in.ID, st, m.now()); err != nil {
			return tasks.Result{}, err
		}
		// Redis: users changed on the source since the seed's backup
		// (its replication carries none) follow, queued before ACTIVE.
		m.syncUsersFrom(ctx, p.ReplicaOf, in.ID, "replica created", 0)
		if err := instances.Update(ctx, m.DB, in.ID, m.now(), `task = ?, task_started_at = NULL, configuration_applied = ?`,
			string(instances.TaskNone), nullIfEmpty(p.ConfigDigest)); err != nil {
			return tasks.Result{}, err
		}
		m.log().Info("replica attached", "instance", in.ID, "source", p.ReplicaOf, "gtid_slave_pos", st.GTIDSlavePos)
		return tasks.Result{Done: true}, nil
	}
	if over, how := m.linkWaitOver(st, p.LinkDeadline); over {
		return tasks.Result{}, tasks.Fail("", "replication from %s does not run %s: %s", p.ReplicaOf, how, linkReason(st))
	}
	return tasks.Result{After: 2 * time.Second}, nil
}

// linkWaitOver says whether a wait for a link that does not run (yet) is
// over, and how it ended, for the fault: at the wait's deadline, or at
// once when the agent reports the link stopped on an error it does not
// retry (link_stopped: waiting out linkTimeout would change nothing).
func (m *Manager) linkWaitOver(st wire.ReplicationStatus, deadline time.Time) (over bool, how string) {
	if st.LinkStopped {
		return true, "(its link stopped on an error it does not retry)"
	}
	return m.now().After(deadline), "after " + linkTimeout.String()
}

// linkStatus reads a start_replication (or rejoin) result of replica id
// and, when the link it reports does not run yet, the replica's status
// now (the link comes up a moment after the operation's answer); running
// says whether both its halves run. Every step that waits for a link
// (a replica's create, a switchover, a rebuilt replica's relink) reads
// it so, and keeps its own deadline.
func (m *Manager) linkStatus(ctx context.Context, id string, res wire.Result) (st wire.ReplicationStatus, running bool, err error) {
	if err := res.Decode(&st); err != nil {
		return st, false, err
	}
	if !st.IORunning || !st.SQLRunning {
		if in, err := m.load(ctx, id); err == nil {
			if cr, err := m.Call(ctx, in, wire.KindReplicationStatus, nil); err == nil && cr.Error == nil {
				cr.Decode(&st)
			}
		}
	}
	return st, st.IORunning && st.SQLRunning, nil
}

func dropOpID(replicaID string) string { return "repl-drop-" + replicaID }

// unlinkDeleted, for a replica being deleted (or detached), queues the drop of its
// account on the source, then forgets the link. The operation is queued
// (durably, by a stable id) before the link goes, so a crash in between
// queues the same operation again; a source that never takes it lets it
// expire after GuestOpTimeout, and the account is left (its password was
// never shown to anyone).
func (m *Manager) unlinkDeleted(ctx context.Context, in instances.Instance) error {
	l, ok, err := instances.LinkOf(ctx, m.DB, in.ID)
	if err != nil || !ok {
		return err
	}
	args, err := json.Marshal(wire.ReplicationAccountRef{Name: l.Account})
	if err != nil {
		return err
	}
	if _, err := m.load(ctx, l.SourceID); err == nil {
		timeout := m.GuestOpTimeout
		if timeout <= 0 {
			timeout = 10 * time.Minute
		}
		op := wire.Operation{ID: dropOpID(in.ID), Kind: wire.KindDropReplicationAccount, Args: args}
		if err := m.Agents.Queue(ctx, l.SourceID, op, agentendpoint.QueueOptions{Expires: m.now().Add(timeout)}); err != nil {
			return fmt.Errorf("queue the drop of replication account %s on %s: %w", l.Account, l.SourceID, err)
		}
	}
	if err := instances.DeleteLink(ctx, m.DB, in.ID); err != nil {
		return err
	}
	m.log().Info("replica unlinked for delete", "instance", in.ID, "source", l.SourceID, "account", l.Account)
	return nil
}

// Detach makes an ACTIVE replica a standalone writable instance (Trove's
// detach-replica): the replica's server forgets the link and leaves
// read-only, then its account on the source is dropped and the link
// forgotten. Run again after a failure, each part converges.
func (m *Manager) Detach(ctx context.Context, project, id string) error {
	in, err := m.Guest(ctx, project, id)
	if err != nil {
		return err
	}
	if _, ok, err := instances.LinkOf(ctx, m.DB, in.ID); err != nil {
		return err
	} else if !ok {
		return wrap(ErrBadRequest, "instance %s is not a replica", in.ID)
	}
	res, err := m.Call(ctx, in, wire.KindDetachReplica, nil)
	if err != nil {
		return err
	}
	if res.Error != nil {
		return wrap(ErrUnprocessable, "detaching instance %s failed in the guest: %s: %s", in.ID, res.Error.Code, res.Error.Message)
	}
	var st wire.ReplicationStatus
	if err := res.Decode(&st); err != nil || st.Role != wire.RoleStandalone || st.ReadOnly {
		return wrap(ErrUnprocessable, "instance %s still reports a link after detach (%+v, %v)", in.ID, st, err)
	}
	if err := m.unlinkDeleted(ctx, in); err != nil {
		return err
	}
	m.log().Info("replica detached", "instance", in.ID)
	return nil
}

// releaseSeed deletes the seed backup once no other replica of its
// request still needs it (their create tasks are past the restore, or
// ended). Best effort: a backup left behind is an ordinary backup of the
// source, visible and deletable, so a failure is logged, not fatal.
func (m *Manager) releaseSeed(ctx context.Context, t *tasks.Task, backupID string) {
	if backupID == "" || m.Seeds == nil {
		return
	}
	var waiting int
	err := m.DB.QueryRow(ctx, `SELECT COUNT(*) FROM tasks WHERE kind = ? AND state = ? AND id <> ?
		AND step IN ('seed', 'volume', 'server', 'prepare', 'restore', 'wait') AND payload LIKE ?`,
		KindCreate, tasks.StateQueued, t.ID, `%"seed_backup":"`+backupID+`"%`).Scan(&waiting)
	if err == nil && waiting > 0 {
		return
	}
	if err == nil {
		err = m.Seeds.DeleteSeed(ctx, backupID)
	}
	if err != nil {
		m.log().Warn("the seed backup of a replica could not be deleted; delete it by hand", "backup", backupID, "err", err)
		return
	}
	m.log().Info("seed backup deleted: every replica restored it", "backup", backupID)
}

func dropFailedOpID(replicaID string) string { return "repl-drop-failed-" + replicaID }

// failCreate is the create task's failure handler: failErrored, except
// that a replica always ends in ERROR (without a running link it is not
// a replica, whatever its database reports), and a replica whose account
// was queued on its source has it dropped there at once rather than when
// the replica is deleted.
func (m *Manager) failCreate(ctx context.Context, t *tasks.Task, f *tasks.Failure) error {
	var p replicaTaskPayload
	if t.Decode(&p) != nil || p.ReplicaOf == "" {
		return m.failErrored(ctx, t, f)
	}
	switch {
	case p.AccountFirst, t.Step == "account-queue", t.Step == "attach", t.Step == "linked":
		// An account made before the seed backup exists from the start
		// (with a PostgreSQL slot holding the source's WAL).
		m.dropFailedReplicaAccount(ctx, t.InstanceID, p.ReplicaOf)
	}
	return m.recordFailure(ctx, t, f, true, true)
}

// dropFailedReplicaAccount queues the drop of a failed replica's account
// on its source. Best effort: the failure is recorded whatever happens
// here, and the replica's delete queues its own drop (another op id, so
// one that expired here does not stop it).
func (m *Manager) dropFailedReplicaAccount(ctx context.Context, replicaID, sourceID string) {
	account := replicationAccount(replicaID)
	src, err := m.load(ctx, sourceID)
	if errors.Is(err, instances.ErrNotFound) {
		return // the source is gone, and its accounts with it
	}
	if err != nil {
		m.log().Warn("the failed replica's account on its source was not dropped: the source could not be read; deleting the replica drops it",
			"instance", replicaID, "source", sourceID, "account", account, "err", err)
		return
	}
	args, _ := json.Marshal(wire.ReplicationAccountRef{Name: account})
	expires := m.now().Add(m.opTimeout())
	op := wire.Operation{ID: dropFailedOpID(replicaID), Kind: wire.KindDropReplicationAccount, Args: args}
	if err := m.Agents.Queue(ctx, src.ID, op, agentendpoint.QueueOptions{Expires: expires}); err != nil {
		m.log().Warn("the failed replica's account on its source was not dropped: queueing the drop failed; deleting the replica drops it",
			"instance", replicaID, "source", src.ID, "account", account, "err", err)
		return
	}
	if !m.healthy(src) {
		m.log().Warn("the failed replica's account waits for its source's agent, which is not reporting: it is dropped if the agent comes back before the drop expires; deleting the replica drops it too",
			"instance", replicaID, "source", src.ID, "account", account, "expires", expires)
		return
	}
	m.log().Info("the failed replica's account on its source is being dropped", "instance", replicaID, "source", src.ID, "account", account)
}

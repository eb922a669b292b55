package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/instances"
	"strata/controller/store"
)

// User sync (Redis; docs/replication.md "Redis users reach every
// member"). Redis replicates keys, not ACL users, so a replica has its
// source's users only as its seed backup held them. After every user
// change on a source with replicas (the API's create_users, delete_user,
// update_user, change_passwords, enable_root, disable_root), when a
// replica's create finishes, and in a switchover before the replica is
// promoted, the controller reads the source's users (export_users: rules
// and password hashes, never passwords) and queues import_users with
// that whole set for each replica. The queue is durable and waits
// UserSyncWait for a replica that is away; each snapshot has an id of
// its own (a later one is never dropped as a duplicate of an earlier
// one), and since each is the whole set, the last one delivered is what
// the replica holds. The imports are watched: one that fails (an agent
// too old for the kind answers not_supported) is recorded on its replica
// as a fault. Nothing here fails the change that started it.

// UserSyncWait is how long a replica's queued import_users waits for its
// agent, as the ejected source's fence does.
const UserSyncWait = EjectedFenceWait

// SwitchoverExportWait bounds a switchover's export on the fenced source:
// the group takes no writes meanwhile, so a source whose agent stops
// answering right after its fence must not hold it for a whole guest
// call timeout. The switchover goes on without the users (logged);
// CheckUserDrift repairs the new source's replicas afterwards.
const SwitchoverExportWait = 5 * time.Second

// userSyncs says which datastores carry users this way: those whose
// replication does not (MariaDB and PostgreSQL users are replicated
// data).
var userSyncs = map[string]bool{managerRedis: true}

// SyncUsers carries the users of sourceID, just changed by the API
// (why: the operation), to each of its replicas. Errors are logged and
// recorded, never returned: the user's change is done.
func (m *Manager) SyncUsers(ctx context.Context, sourceID string, why wire.Kind) {
	ctx = context.WithoutCancel(ctx)
	src, ok := m.userSyncSource(ctx, sourceID)
	if !ok {
		return
	}
	links, err := instances.ReplicasOf(ctx, m.DB, src.ID)
	if err != nil {
		m.log().Error("user sync: the replicas", "source", src.ID, "err", err)
		return
	}
	if len(links) == 0 {
		return
	}
	ids := make([]string, len(links))
	for i, l := range links {
		ids[i] = l.InstanceID
	}
	if err := m.syncUsersTo(ctx, src, ids, string(why), 0); err != nil {
		m.log().Warn("user sync after a user change failed; the replicas keep their users until the next change", "source", src.ID, "change", why, "err", err)
	}
}

// errUserSyncUnsupported: the source's agent does not know export_users
// (an image from before it).
var errUserSyncUnsupported = errors.New("the agent cannot export users (its image predates user sync)")

// syncUsersTo exports src's users (waiting up to wait for them; 0: the
// guest call timeout) and queues their import on each of targets. Export
// and queueing run under the source's lock, so this controller queues a
// source's snapshots in the order it read them.
func (m *Manager) syncUsersTo(ctx context.Context, src instances.Instance, targets []string, why string, wait time.Duration) error {
	mu, _ := m.userSyncMu.LoadOrStore(src.ID, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	users, err := m.exportUsers(ctx, src, wait)
	if errors.Is(err, errUserSyncUnsupported) {
		m.log().Warn("user sync: the source's agent is too old for it; its replicas keep the users of their seed", "source", src.ID, "replicas", targets)
		if ferr := instances.SetFault(ctx, m.DB, src.ID, instances.Fault{Message: fmt.Sprintf(
			"users changed here (%s) do not reach the replicas %v: this instance's agent cannot export users (rebuild it onto a newer image)", why, targets)},
			false, m.now()); ferr != nil {
			m.log().Error("user sync: recording the fault", "source", src.ID, "err", ferr)
		}
		return err
	}
	if err != nil {
		return err
	}
	args, err := json.Marshal(wire.ImportUsersArgs{Users: users})
	if err != nil {
		return err
	}
	now := m.now()
	stamp := now.UTC().Format("20060102T150405.000000000")
	for _, id := range targets {
		op := wire.Operation{ID: "users-" + stamp + "-" + randomID(), Kind: wire.KindImportUsers, Args: args}
		if err := m.Agents.Queue(ctx, id, op, agentendpoint.QueueOptions{Expires: now.Add(UserSyncWait), Watch: true}); err != nil {
			return fmt.Errorf("queue the users for replica %s: %w", id, err)
		}
	}
	m.log().Info("users queued for the replicas", "source", src.ID, "why", why, "replicas", targets, "users", len(users), "op_stamp", stamp)
	return nil
}

// exportUsers runs export_users on src, waiting up to wait (0: the guest
// call timeout), and returns its lines; the stored result (password
// hashes) is blanked once read or given up on.
func (m *Manager) exportUsers(ctx context.Context, src instances.Instance, wait time.Duration) ([]string, error) {
	timeout := m.GuestCallTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	if wait > 0 {
		timeout = min(timeout, wait)
	}
	op := wire.Operation{ID: "export_users-" + randomID(), Kind: wire.KindExportUsers}
	res, err := m.Agents.Call(ctx, src.ID, op, agentendpoint.QueueOptions{Expires: m.now().Add(timeout)}, timeout)
	// Read, or given up on (an agent that answers late must not leave
	// the hashes in the queue): not kept either way.
	if ferr := m.Agents.ForgetPayload(context.WithoutCancel(ctx), src.ID, op.ID); ferr != nil {
		m.log().Error("user sync: could not drop the stored export", "source", src.ID, "err", ferr)
	}
	if err != nil {
		return nil, fmt.Errorf("export the users of %s: %w", src.ID, err)
	}
	if res.Error != nil {
		if res.Error.Code == wire.CodeNotSupported {
			return nil, errUserSyncUnsupported
		}
		return nil, fmt.Errorf("export the users of %s: %s: %s", src.ID, res.Error.Code, res.Error.Message)
	}
	var out wire.ExportUsersResult
	if err := res.Decode(&out); err != nil {
		return nil, fmt.Errorf("export the users of %s: %w", src.ID, err)
	}
	if len(out.Skipped) > 0 {
		m.log().Warn("user sync: users not in a form the API makes are left out (an import removes them from replicas)", "source", src.ID, "users", out.Skipped)
	}
	return out.Users, nil
}

// syncUsersFrom carries sourceID's users to one replica (a replica's
// create finishing, a switchover's replica before its promotion), for
// the datastores that need it, waiting up to wait for the export (0: the
// guest call timeout); a failure is logged, and the step that asked goes
// on.
func (m *Manager) syncUsersFrom(ctx context.Context, sourceID, replicaID, why string, wait time.Duration) {
	src, ok := m.userSyncSource(ctx, sourceID)
	if !ok {
		return
	}
	if err := m.syncUsersTo(ctx, src, []string{replicaID}, why, wait); err != nil {
		m.log().Warn("user sync failed; the replica keeps the users it has", "source", src.ID, "replica", replicaID, "why", why, "err", err)
	}
}

// userSyncSource is the source sourceID when its datastore's users need
// the sync (userSyncs); false otherwise, or when it cannot be read
// (logged).
func (m *Manager) userSyncSource(ctx context.Context, sourceID string) (instances.Instance, bool) {
	src, err := instances.Get(ctx, m.DB, "", sourceID)
	if err != nil {
		m.log().Error("user sync: the source", "source", sourceID, "err", err)
		return src, false
	}
	manager, err := m.managerOf(ctx, src)
	return src, err == nil && userSyncs[manager]
}

// userChanges are the operations that change a source's users (the
// API's; each is followed by SyncUsers).
var userChanges = []wire.Kind{wire.KindCreateUsers, wire.KindDeleteUser, wire.KindUpdateUser,
	wire.KindChangePasswords, wire.KindEnableRoot, wire.KindDisableRoot}

// driftSeen is a replica's users seen differing from its source's: the
// two digests, each server's heartbeat count then, and when.
type driftSeen struct {
	source, sourceDigest, replicaDigest string
	sourceBeats, replicaBeats           int64
	at                                  time.Time
}

// CheckUserDrift carries a source's users again to each replica whose
// heartbeats describe other users than the source's (Redis: a sync lost
// to a controller stopped before it queued it, a change answered 202
// before the guest carried it out, a switchover that went on without
// the export, users changed by hand). A replica is synced when its
// digest and its source's differed in two heartbeats in a row of each,
// and again in a later check after at least one more heartbeat of each,
// with no import for it waiting or finished since it was first seen, no
// user change on the source in the last two heartbeat intervals (its
// own sync is on its way) and neither server in a task. One sync at a
// time per group, in the background, logged.
func (m *Manager) CheckUserDrift(ctx context.Context) error {
	type row struct {
		replica, source  string
		sDigest, rDigest string
		sStreak, rStreak int64
		sBeats, rBeats   int64
	}
	rows, err := store.All(ctx, m.DB, func(sc store.Scanner) (row, error) {
		var r row
		return r, sc.Scan(&r.replica, &r.source, &r.sDigest, &r.rDigest, &r.sStreak, &r.rStreak, &r.sBeats, &r.rBeats)
	}, `SELECT l.instance_id, l.source_id, s.users_digest, r.users_digest, s.users_digest_beats, r.users_digest_beats, s.heartbeats, r.heartbeats
		FROM replication_links l
		JOIN instance_reports s ON s.instance_id = l.source_id
		JOIN instance_reports r ON r.instance_id = l.instance_id
		WHERE s.users_digest <> '' AND r.users_digest <> '' AND s.users_digest <> r.users_digest`)
	if err != nil {
		return err
	}
	now := m.now()
	settle := 2 * time.Duration(m.heartbeatSeconds()) * time.Second
	due := map[string][]string{} // source → its drifted replicas
	m.driftMu.Lock()
	if m.drift == nil {
		m.drift = map[string]driftSeen{}
	}
	seen := map[string]bool{}
	for _, r := range rows {
		seen[r.replica] = true
		if r.sStreak < 2 || r.rStreak < 2 {
			continue
		}
		cur := driftSeen{source: r.source, sourceDigest: r.sDigest, replicaDigest: r.rDigest, sourceBeats: r.sBeats, replicaBeats: r.rBeats, at: now}
		was, ok := m.drift[r.replica]
		if !ok || was.source != cur.source || was.sourceDigest != cur.sourceDigest || was.replicaDigest != cur.replicaDigest {
			m.drift[r.replica] = cur
			continue
		}
		if r.sBeats <= was.sourceBeats || r.rBeats <= was.replicaBeats {
			continue
		}
		quiet, err := m.userSyncQuiet(ctx, r.source, r.replica, was.at, now.Add(-settle))
		if err != nil {
			m.driftMu.Unlock()
			return err
		}
		if !quiet {
			m.drift[r.replica] = cur // seen again from now
			continue
		}
		due[r.source] = append(due[r.source], r.replica)
	}
	for id := range m.drift {
		if !seen[id] {
			delete(m.drift, id)
		}
	}
	m.driftMu.Unlock()
	for source, replicas := range due {
		if m.inTask(ctx, append([]string{source}, replicas...)) {
			continue
		}
		if _, busy := m.driftBusy.LoadOrStore(source, true); busy {
			continue
		}
		m.driftMu.Lock()
		for _, id := range replicas {
			delete(m.drift, id)
		}
		m.driftMu.Unlock()
		m.driftWG.Add(1)
		go func() {
			defer m.driftWG.Done()
			defer m.driftBusy.Delete(source)
			src, ok := m.userSyncSource(ctx, source)
			if !ok {
				return
			}
			m.log().Warn("replicas' users differ from their source's; carrying the source's users again", "source", source, "replicas", replicas)
			if err := m.syncUsersTo(ctx, src, replicas, "drift", 0); err != nil && ctx.Err() == nil {
				m.log().Warn("user sync after a drift failed; the next check tries again", "source", source, "replicas", replicas, "err", err)
			}
		}()
	}
	return nil
}

// userSyncQuiet says whether nothing is on its way that would change
// what replica holds of source's users: no import_users for it waiting,
// none finished since since, no user change on source waiting or
// finished after changedBefore.
func (m *Manager) userSyncQuiet(ctx context.Context, source, replica string, since, changedBefore time.Time) (bool, error) {
	var n int
	if err := m.DB.QueryRow(ctx, `SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = ? AND (done_at IS NULL OR done_at >= ?)`,
		replica, string(wire.KindImportUsers), store.Millis(since)).Scan(&n); err != nil || n > 0 {
		return false, err
	}
	args := []any{source}
	for _, k := range userChanges {
		args = append(args, string(k))
	}
	args = append(args, store.Millis(changedBefore))
	err := m.DB.QueryRow(ctx, `SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind IN (`+
		strings.TrimSuffix(strings.Repeat("?, ", len(userChanges)), ", ")+`) AND (done_at IS NULL OR done_at >= ?)`, args...).Scan(&n)
	return err == nil && n == 0, err
}

// inTask says whether any of ids is in a task (or cannot be read).
func (m *Manager) inTask(ctx context.Context, ids []string) bool {
	for _, id := range ids {
		in, err := m.load(ctx, id)
		if err != nil || in.Task != instances.TaskNone {
			return true
		}
	}
	return false
}

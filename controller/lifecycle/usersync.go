package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/instances"
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
// call timeout. The switchover goes on without the users (logged): the
// new source keeps the users it had until the next user change.
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

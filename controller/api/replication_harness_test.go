package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"strata/agent/wire"
	"strata/controller/compute"
	"strata/controller/registry"
)

// ReplicationRoute: the fake's guests reach each other's databases where
// clients do.
func (fc *fakeCompute) ReplicationRoute(_ context.Context, replica, source compute.Server, host string, port int) (string, int, error) {
	fc.record("route " + replica.ID + " -> " + source.ID)
	return host, port, nil
}

// fakeReplication is a fake guest's replication state: the accounts it
// holds as a source (name → password) and the link it follows as a
// replica. Callers hold the guest's mutex.
type fakeReplication struct {
	accounts map[string]string
	link     *wire.StartReplicationArgs
	starts   int
	// broken, if set, is the link's I/O error (the source unreachable).
	broken string
	// fenced: set_read_only made this source read-only; binlog is its
	// position (each fence moves it on).
	fenced bool
	binlog int
	// lagging: promote_replica times out (the replica cannot reach the
	// source's position).
	lagging    bool
	promotes   int
	promotedAt string
	// fencedAt and writableAt: when the fake took its fence and became a
	// writable source, to measure a switchover's write unavailability.
	fencedAt, writableAt time.Time
	// promoteGate, if set, holds promote_replica until it is closed;
	// exportGate export_users.
	promoteGate, exportGate chan struct{}
	// ioPos is what this replica received (gtid_io_pos; a PostgreSQL
	// replica's received_lsn; a Redis replica's repl_offset), for
	// elections.
	ioPos string
	// standby: restored as a PostgreSQL standby (RestoreArgs.Standby);
	// only such a server takes start_replication.
	standby bool
	// failRestore, if set, makes restore fail with it.
	failRestore string
	// failAccount, if set, makes create_replication_account fail with it.
	failAccount string
	// failRejoin, if set, makes rejoin_replication without a fork fail
	// with it (as a server whose control file says it crashed);
	// failRewind makes one with a fork fail (a server that committed
	// past it).
	failRejoin, failRewind string
	// rootHash is root's password hash (hex SHA-256) since enable_root;
	// noUserSync makes export_users and import_users answer as an agent
	// from before them (not_supported); imports counts import_users runs.
	rootHash   string
	noUserSync bool
	// dropImports makes import_users answer success and change nothing
	// (an import lost on the way).
	dropImports bool
	imports     int
	// streams, if set, is what a Redis guest reports of its replication
	// streams instead of the fake group's one ID (fakeReplID).
	streams *fakeStreams
}

// fakeStreams is what a test makes a fake Redis guest report as a real
// server would: its replication ID, its previous one up to id2End (a
// promoted source's, a replica's that followed it, a server's started
// again from an older snapshot), and, as a primary, its offset when off
// is set. A start_replication drops it: the replica takes its source's
// stream.
type fakeStreams struct {
	id, id2 string
	id2End  int64
	off     *int64
}

// setStreams sets (nil: drops) what the guest reports of its streams.
func (g *fakeGuest) setStreams(s *fakeStreams) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.repl.streams = s
}

// redisStreams puts a guest's streams, if a test set them, in st.
func (g *fakeGuest) redisStreams(st *wire.ReplicationStatus) {
	s := g.repl.streams
	if s == nil {
		return
	}
	st.ReplID = s.id
	if s.id2 != "" {
		end := s.id2End
		st.ReplID2, st.ReplID2End = s.id2, &end
	}
	if s.off != nil && st.Role == wire.RoleStandalone {
		off := *s.off
		st.ReplOffset = &off
	}
}

// registerVersion registers datastore manager (named as it) version
// name on the rig's image, serving port: the fake guests answer as that
// manager's agent does.
func registerVersion(t *testing.T, r *rig, manager, name string, port int) {
	t.Helper()
	ctx := context.Background()
	reg := &registry.Registry{DB: r.ctl.DB}
	if _, err := reg.UpdateDatastore(ctx, manager, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.UpdateVersion(ctx, registry.VersionSpec{Datastore: manager, Name: name, Manager: manager, ImageID: r.imageID,
		Packages: []string{manager}, Active: true, Port: port, BootTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
}

// newActiveOf creates an instance of datastore ds version v and waits
// until it is ACTIVE.
func newActiveOf(c *client, ds, v, name string) string {
	c.t.Helper()
	body := createBody(name, nil)
	body["instance"].(map[string]any)["datastore"] = map[string]any{"type": ds, "version": v}
	id := c.must(200, "POST", "/instances", body)["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 30*time.Second)
	return id
}

// fakeReplID is every fake Redis group's replication ID.
const fakeReplID = "5f0c8a2b9d7e4c1a3b6f8e0d2c4a6b8d0e2f4a6c"

// manager is the datastore manager the guest's image carries.
func (g *fakeGuest) manager() string {
	if m := g.lastBoot.Datastore.Manager; m != "" {
		return m
	}
	return "mariadb"
}

// note adds a replication event to the compute's journal (ordering
// across guests); callers hold the guest's mutex.
func (g *fakeGuest) note(format string, args ...any) {
	if g.journal != nil {
		g.journal.add(fmt.Sprintf(format, args...))
	}
}

// opJournal is the fake compute's record of replication events, in the
// order the guests ran them.
type opJournal struct {
	mu    sync.Mutex
	lines []string
}

func (j *opJournal) add(s string) {
	j.mu.Lock()
	j.lines = append(j.lines, s)
	j.mu.Unlock()
}

// events returns the journal's lines that start with one of prefixes.
func (j *opJournal) events(prefixes ...string) []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []string
	for _, l := range j.lines {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// position is this server's own position in its datastore's terms,
// moved on by each fence: a GTID list, an LSN or a Redis offset.
func (g *fakeGuest) position() string {
	switch g.manager() {
	case "postgresql":
		return fmt.Sprintf("0/%X", 0x3000000+0x100*g.repl.binlog)
	case "redis":
		return strconv.Itoa(1000 + g.repl.binlog)
	}
	return fmt.Sprintf("0-1-%d", 100+g.repl.binlog)
}

func (g *fakeGuest) replicationOp(op wire.Operation) wire.Result {
	decode := func(v any) bool { return len(op.Args) > 0 && wire.DecodeStrict(op.Args, v) == nil }
	r := &g.repl
	switch op.Kind {
	case wire.KindCreateReplicationAccount:
		var a wire.ReplicationAccountArgs
		if !decode(&a) || wire.CheckReplicationAccount(a.Name) != nil || a.Password == "" {
			return opErr(wire.CodeInvalidArgument, "bad replication account args")
		}
		if r.failAccount != "" {
			return opErr(wire.CodeFailedPrecondition, "create replication account %s: %s", a.Name, r.failAccount)
		}
		if r.accounts == nil {
			r.accounts = map[string]string{}
		}
		r.accounts[a.Name] = a.Password
		g.note("account %s %s", g.lastBoot.InstanceID, a.Name)
		switch g.manager() {
		case "postgresql":
			return okResult(wire.ReplicationSourceResult{LSN: g.position()})
		case "redis":
			off := int64(1000 + r.binlog)
			return okResult(wire.ReplicationSourceResult{ReplID: fakeReplID, ReplOffset: &off})
		}
		return okResult(wire.ReplicationSourceResult{GTIDBinlogPos: "0-1-99"})
	case wire.KindDropReplicationAccount:
		var a wire.ReplicationAccountRef
		if !decode(&a) {
			return opErr(wire.CodeInvalidArgument, "bad args")
		}
		g.note("drop %s %s", g.lastBoot.InstanceID, a.Name)
		if _, ok := r.accounts[a.Name]; !ok && g.manager() == "mariadb" {
			return opErr(wire.CodeNotFound, "replication account %s does not exist", a.Name)
		}
		delete(r.accounts, a.Name) // PostgreSQL and Redis: absent is done
		return okResult(nil)
	case wire.KindStartReplication:
		var a wire.StartReplicationArgs
		if !decode(&a) || a.Validate() != nil {
			return opErr(wire.CodeInvalidArgument, "bad start args")
		}
		switch {
		case a.GTIDSlavePos != "" && g.manager() != "mariadb":
			return opErr(wire.CodeInvalidArgument, "gtid_slave_pos: %s takes none", g.manager())
		case g.manager() == "postgresql" && r.link == nil && !r.standby:
			return opErr(wire.CodeFailedPrecondition, "start replication: this server is not a standby; it can follow a primary only after pg_rewind")
		case g.manager() == "redis" && r.link != nil && !a.Repoint && (r.link.Host != a.Host || r.link.Port != a.Port):
			return opErr(wire.CodeFailedPrecondition, "start replication: this server follows %s:%d already", r.link.Host, r.link.Port)
		case a.Repoint && r.link == nil:
			return opErr(wire.CodeFailedPrecondition, "repoint replication: this server follows no source")
		case a.Repoint:
			a.GTIDSlavePos = r.link.GTIDSlavePos
		case r.link != nil && (r.link.Host != a.Host || r.link.Port != a.Port):
			return opErr(wire.CodeFailedPrecondition, "follows another source")
		}
		r.link = &a
		r.starts++
		if g.manager() == "redis" {
			r.fenced = false // as the agent: the link's replica-read-only replaces the fence
			r.streams = nil
		}
		g.note("start %s %s repoint=%v", g.lastBoot.InstanceID, a.Account, a.Repoint)
	case wire.KindRejoinReplication:
		// As the PostgreSQL agent: only a server stopped cleanly after
		// its fence rejoins; a re-run finds it following the same source.
		var a wire.StartReplicationArgs
		if !decode(&a) || a.Validate() != nil || a.GTIDSlavePos != "" || a.Repoint {
			return opErr(wire.CodeInvalidArgument, "bad rejoin args")
		}
		switch {
		case g.manager() != "postgresql":
			return opErr(wire.CodeNotSupported, "%s has no rejoin for a former primary", g.manager())
		case !g.stopped && r.link != nil && r.link.Host == a.Host && r.link.Port == a.Port:
		case r.failRejoin != "" && a.ForkLSN == "":
			return opErr(wire.CodeFailedPrecondition, "rejoin: %s", r.failRejoin)
		case r.failRewind != "" && a.ForkLSN != "":
			return opErr(wire.CodeFailedPrecondition, "rejoin: %s", r.failRewind)
		case a.ForkLSN != "":
			// A failover's former primary: rewound to the fork (the
			// agent's pg_rewind), running or not.
			g.note("rewind %s %s", g.lastBoot.InstanceID, a.ForkLSN)
		case !g.stopped:
			return opErr(wire.CodeFailedPrecondition, "rejoin: this server runs as a primary; only pg_rewind could make it a standby")
		}
		g.stopped, r.fenced, r.standby = false, false, true
		r.link = &a
		r.starts++
		g.note("rejoin %s %s", g.lastBoot.InstanceID, a.Account)
	case wire.KindDetachReplica:
		r.link, r.standby = nil, false
	case wire.KindSetReadOnly:
		var a wire.SetReadOnlyArgs
		if !decode(&a) {
			return opErr(wire.CodeInvalidArgument, "bad args")
		}
		if !a.ReadOnly && r.link != nil {
			return opErr(wire.CodeFailedPrecondition, "lift the fence: this server follows a source")
		}
		if g.stopped {
			return opErr(wire.CodeFailedPrecondition, "set_read_only: the database is stopped")
		}
		if a.ReadOnly && !r.fenced {
			r.binlog++
			r.fencedAt = time.Now()
			g.note("fence %s", g.lastBoot.InstanceID)
		}
		r.fenced = a.ReadOnly
	case wire.KindPromoteReplica:
		var a wire.PromoteReplicaArgs
		if !decode(&a) || a.Validate() != nil {
			return opErr(wire.CodeInvalidArgument, "bad promote args")
		}
		want := map[string]bool{"mariadb": a.GTIDPos != "", "postgresql": a.LSN != "", "redis": a.ReplOffset != nil}[g.manager()]
		if !want || g.manager() == "redis" && a.ReplID != "" && a.ReplID != fakeReplID && (r.streams == nil || a.ReplID != r.streams.id) {
			return opErr(wire.CodeInvalidArgument, "promote: not a %s position: %+v", g.manager(), a)
		}
		r.promotes++
		r.promotedAt = a.GTIDPos + a.LSN
		if a.ReplOffset != nil {
			r.promotedAt = strconv.FormatInt(*a.ReplOffset, 10)
		}
		g.note("promote %s %s", g.lastBoot.InstanceID, r.promotedAt)
		if r.lagging {
			return opErr(wire.CodeFailedPrecondition, "promote: the replica did not apply the primary's position %s within %d s; nothing was changed", r.promotedAt, a.TimeoutSeconds)
		}
		r.link, r.fenced, r.standby = nil, false, false
		r.writableAt = time.Now()
		st := g.replicationStatus()
		if g.manager() == "postgresql" {
			st.ForkLSN = fakeForkAfter(a.LSN)
		}
		return okResult(st)
	}
	return okResult(g.replicationStatus())
}

// fakeForkAfter is the fork a fake PostgreSQL replica promoted at lsn
// reports: 0x28 bytes on (the shutdown checkpoint it replayed after the
// fence's position), so a test tells it from the position.
func fakeForkAfter(lsn string) string {
	hi, lo, _ := strings.Cut(lsn, "/")
	h, _ := strconv.ParseUint(hi, 16, 32)
	l, _ := strconv.ParseUint(lo, 16, 32)
	v := h<<32 | l + 0x28
	return fmt.Sprintf("%X/%X", v>>32, uint32(v))
}

func (g *fakeGuest) replicationStatus() wire.ReplicationStatus {
	l := g.repl.link
	zero := int64(0)
	if l == nil {
		st := wire.ReplicationStatus{Role: wire.RoleStandalone, ReadOnly: g.repl.fenced}
		switch g.manager() {
		case "postgresql":
			st.LSN = g.position()
		case "redis":
			off, _ := strconv.ParseInt(g.position(), 10, 64)
			st.ReplID, st.ReplOffset = fakeReplID, &off
			g.redisStreams(&st)
		default:
			st.GTIDBinlogPos = g.position()
		}
		return st
	}
	st := wire.ReplicationStatus{Role: wire.RoleReplica, SourceHost: l.Host, SourcePort: l.Port, IORunning: true, SQLRunning: true, ReadOnly: true}
	if g.repl.broken != "" {
		st.IORunning, st.LastError = false, "I/O: "+g.repl.broken
		st.SQLRunning = g.manager() != "redis"
	}
	switch g.manager() {
	case "postgresql":
		st.ReceivedLSN = g.repl.ioPos
		if st.ReceivedLSN == "" {
			st.ReceivedLSN = "0/3000000"
		}
		st.ReplayedLSN, st.LSN = st.ReceivedLSN, st.ReceivedLSN
		if g.repl.broken == "" {
			st.SecondsBehind, st.BytesBehind = &zero, &zero
		}
	case "redis":
		off := int64(1000)
		if g.repl.ioPos != "" {
			off, _ = strconv.ParseInt(g.repl.ioPos, 10, 64)
		}
		st.ReplID, st.ReplOffset = fakeReplID, &off
		g.redisStreams(&st)
		if g.repl.broken == "" {
			ago := int64(1)
			st.LastIOSecondsAgo = &ago
		}
	default:
		st.GTIDSlavePos = l.GTIDSlavePos
		if g.repl.broken == "" {
			st.GTIDIOPos, st.SecondsBehind = g.repl.ioPos, &zero
		}
	}
	return st
}

// replication returns a copy of the guest's replication state.
func (g *fakeGuest) replication() (accounts map[string]string, link *wire.StartReplicationArgs, starts int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	accounts = map[string]string{}
	for k, v := range g.repl.accounts {
		accounts[k] = v
	}
	if g.repl.link != nil {
		l := *g.repl.link
		link = &l
	}
	return accounts, link, g.repl.starts
}

// fence reports whether the guest is fenced (read-only as a source).
func (g *fakeGuest) fence() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.repl.fenced
}

// setIOPos sets what this replica reports it received.
func (g *fakeGuest) setIOPos(pos string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.repl.ioPos = pos
}

// setLagging makes promote_replica time out on this guest.
// setFailAccount makes create_replication_account fail with reason.
func (g *fakeGuest) setFailAccount(reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.repl.failAccount = reason
}

// setFailRejoin makes rejoin_replication without a fork fail with
// reason; setFailRewind one with a fork.
func (g *fakeGuest) setFailRejoin(reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.repl.failRejoin = reason
}

func (g *fakeGuest) setFailRewind(reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.repl.failRewind = reason
}

// isStopped says whether the guest's database is stopped.
func (g *fakeGuest) isStopped() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stopped
}

func (g *fakeGuest) setLagging(v bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.repl.lagging = v
}

// sha256Hex is a password's hash as Redis keeps it.
func sha256Hex(pw string) string {
	h := sha256.Sum256([]byte(pw))
	return hex.EncodeToString(h[:])
}

// userSyncOp is the Redis agent's export_users and import_users over the
// fake's users: each user a line "user <name> on sanitize-payload
// #<hash> ~* &* +@all -@admin", root "user default on #<hash> ~* &*
// +@all" or "user default off ~* &* +@all". An imported user keeps only
// its hash (passwords holds "#<hash>"). Callers hold the guest's mutex.
func (g *fakeGuest) userSyncOp(op wire.Operation) wire.Result {
	if g.manager() != "redis" {
		return opErr(wire.CodeNotSupported, "%s does not support carrying users to replicas (its replication carries them)", g.manager())
	}
	if g.repl.noUserSync {
		return opErr(wire.CodeNotSupported, "this agent does not know the operation %q", op.Kind)
	}
	if op.Kind == wire.KindExportUsers {
		return okResult(wire.ExportUsersResult{Users: g.userLines()})
	}
	var a wire.ImportUsersArgs
	if len(op.Args) == 0 || wire.DecodeStrict(op.Args, &a) != nil || a.Users == nil {
		return opErr(wire.CodeInvalidArgument, "bad import_users args")
	}
	users, passwords := map[string]*wire.User{}, map[string]string{}
	root, rootHash := false, ""
	for i, l := range a.Users {
		f := strings.Split(l, " ")
		switch {
		case len(f) == 6 && f[0] == "user" && f[1] == "default" && f[2] == "off" && strings.Join(f[2:], " ") == "off ~* &* +@all":
		case len(f) == 7 && f[0] == "user" && f[1] == "default" && f[2] == "on" && strings.HasPrefix(f[3], "#") && strings.Join(f[4:], " ") == "~* &* +@all":
			root, rootHash = true, f[3][1:]
		case len(f) == 9 && f[0] == "user" && f[1] != "default" && strings.Join(f[2:4], " ") == "on sanitize-payload" && strings.HasPrefix(f[4], "#") && strings.Join(f[5:], " ") == "~* &* +@all -@admin":
			k := userKey(f[1], "%")
			users[k], passwords[k] = &wire.User{Name: f[1], Host: "%"}, f[4]
		default:
			return opErr(wire.CodeInvalidArgument, "users: line %d refused, nothing changed", i+1)
		}
	}
	if !g.repl.dropImports {
		g.users, g.passwords, g.root, g.repl.rootHash = users, passwords, root, rootHash
	}
	g.repl.imports++
	g.note("import %s %d", g.lastBoot.InstanceID, len(a.Users))
	return okResult(wire.ImportUsersResult{})
}

// userLines are the fake's users as its export gives them, sorted.
func (g *fakeGuest) userLines() []string {
	lines := []string{"user default off ~* &* +@all"}
	if g.root {
		lines[0] = "user default on #" + g.repl.rootHash + " ~* &* +@all"
	}
	for k, u := range g.users {
		h := g.passwords[k]
		if !strings.HasPrefix(h, "#") {
			h = "#" + sha256Hex(h)
		}
		lines = append(lines, "user "+u.Name+" on sanitize-payload "+h+" ~* &* +@all -@admin")
	}
	slices.Sort(lines)
	return lines
}

// syncedUsers returns the guest's users as its export would give them.
func (g *fakeGuest) syncedUsers() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.userLines()
}

// setNoUserSync makes the guest's agent one from before user sync.
func (g *fakeGuest) setNoUserSync(v bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.repl.noUserSync = v
}

// holdExports makes the guest's agent answer export_users only once the
// returned function is called (an agent that answers late, or not at all).
func (g *fakeGuest) holdExports() (release func()) {
	gate := make(chan struct{})
	g.mu.Lock()
	g.repl.exportGate = gate
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.repl.exportGate = nil
			g.mu.Unlock()
			close(gate)
		})
	}
}

// setDropImports makes the guest lose every import_users it is given.
func (g *fakeGuest) setDropImports(v bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.repl.dropImports = v
}

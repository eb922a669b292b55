package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"golang.org/x/crypto/ssh"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strata/agent/transport"
	"strata/agent/wire"
	"strata/agent/wire/wiretest"
	"strata/controller/agentendpoint"
	"strata/controller/backups"
	"strata/controller/backups/format"
	"strata/controller/compute"
	"strata/controller/imagestore"
	"strata/controller/imagestore/local"
	"strata/controller/objectstore"
	"strata/controller/quotas"
	"strata/controller/registry"
	"strata/controller/server"
	"strata/controller/store"
	"strata/controller/tasks"
	"strings"
	"sync"
	"testing"
	"time"
)

const rulesFile = "../testdata/validation-rules/mariadb-10.11.json"

// fakeGuest is an agent over an in-memory datastore.
type fakeGuest struct {
	t        *testing.T
	mu       sync.Mutex
	key      ssh.Signer
	enrolled bool
	prepared bool
	dbs      map[string]bool
	users    map[string]*wire.User
	root     bool
	// rootPassword is the one prepare set (root_on_create); passwords
	// holds each user's current password, as the fake's login check.
	rootPassword string
	passwords    map[string]string
	// authPlugin is the one prepare was given; tlsFingerprint is the one
	// this guest's prepare reported.
	authPlugin      string
	tlsFingerprint  string
	restartRequired bool
	restarts        int
	// memoryMB is the memory the base configuration is written for
	// (prepare, apply_flavor).
	memoryMB int
	stopped  bool // the database was stopped (wire.KindStop)
	volumeGB int
	// interrupt: kinds whose every run is cut short (a guest that keeps
	// crashing in them).
	interrupt map[wire.Kind]bool
	configs   int
	results   map[string]wire.Result
	client    *transport.Client
	lastBoot  wire.Bootstrap
	streams   streamKnobs
	inflight  map[string]chan struct{}
	cancel    context.CancelFunc
	done      chan struct{}
	// config is the override set the guest last applied (prepare or
	// apply_configuration).
	config map[string]json.RawMessage
	// applyGate, if set, holds every apply_configuration until it is
	// closed; applying counts the ones waiting there.
	applyGate chan struct{}
	applying  int
	// refuse, if set, makes apply_configuration fail with it.
	refuse string
	// logs are the guest's logs (logs_harness_test.go).
	logs fakeLogs
	// agentVersion is what its agent reports ("fake-1" if empty): a
	// rebuilt guest's is its image's.
	agentVersion string
	// dataVersion is the datastore version the data volume's data is at
	// (set by a prepare that initialised it, by upgrade_datastore to the
	// guest's version); failUpgrade makes upgrade_datastore fail with it.
	dataVersion string
	failUpgrade string
	// failPrepare, if set, makes prepare fail with it (a new image whose
	// database does not start).
	failPrepare string
	// repl is the guest's replication (replication_test.go).
	repl fakeReplication
	// protocol is the protocol its agent speaks (0: wire's own;
	// skew_test.go).
	protocol int
	// journal is its compute's record of replication events.
	journal *opJournal
}

func newFakeGuest(t *testing.T, volumeGB int) *fakeGuest {
	return &fakeGuest{t: t, key: wiretest.NewSigner(t), dbs: map[string]bool{}, users: map[string]*wire.User{}, passwords: map[string]string{},
		results: map[string]wire.Result{}, volumeGB: volumeGB, interrupt: map[wire.Kind]bool{},
		inflight: map[string]chan struct{}{}}
}

// boot starts the guest's agent from a bootstrap document.
func (g *fakeGuest) boot(t *testing.T, boot wire.Bootstrap) {
	hostKey, err := boot.HostKey()
	if err != nil {
		t.Errorf("fake guest: bootstrap host key: %v", err)
		return
	}
	g.mu.Lock()
	enrolled := g.enrolled
	g.lastBoot = boot
	g.mu.Unlock()
	version := g.agentVersion
	if version == "" {
		version = "fake-1"
	}
	c, err := transport.NewClient(transport.ClientConfig{
		Controllers: boot.Controllers, HostKey: hostKey, Key: g.key, EnrollmentToken: boot.EnrollmentToken,
		Enrolled: enrolled, OnEnrolled: func() error { g.mu.Lock(); g.enrolled = true; g.mu.Unlock(); return nil },
		InstanceID: boot.InstanceID, AgentVersion: version, ProtocolVersion: g.protocol, Handler: wiretest.FuncHandler(g.handle), Heartbeats: g,
		// The keepalive timeout is short (the product's is 10 s) but not
		// so short that a busy machine (-race, many tests at once) ends a
		// session, and with it a backup stream, for a slow answer: 2 s did.
		HeartbeatInterval: 100 * time.Millisecond, KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: 6 * time.Second,
		DialTimeout: 2 * time.Second, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: wiretest.QuietLogger(),
	})
	if err != nil {
		t.Errorf("fake guest: %v", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	g.mu.Lock()
	g.cancel, g.done, g.client = cancel, done, c
	g.mu.Unlock()
	go func() { c.Run(ctx); close(done) }()
}

func (g *fakeGuest) halt() {
	g.mu.Lock()
	cancel, done := g.cancel, g.done
	g.cancel = nil
	g.stopped = false // the database starts with the next boot
	g.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// Heartbeat implements transport.HeartbeatSource.
func (g *fakeGuest) Heartbeat(context.Context) wire.Heartbeat {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := wire.StatusNew
	if g.prepared {
		st = wire.StatusRunning
		if g.restartRequired {
			st = wire.StatusRestartRequired
		}
		if g.stopped {
			st = wire.StatusShutdown
		}
	}
	total := uint64(g.volumeGB) << 30
	hb := wire.Heartbeat{Status: st, Volume: &wire.FilesystemStats{Path: "/var/lib/mysql", TotalBytes: total, UsedBytes: 64 << 20, FreeBytes: total - 64<<20}}
	if g.repl.link != nil || g.prepared && !g.stopped {
		// As the real agent: a replica's link, any other server's
		// binary log position (PostgreSQL and Redis sources send none).
		if r := g.replicationStatus(); r.Role == wire.RoleReplica || r.GTIDBinlogPos != "" {
			hb.Replication = &r
		}
	}
	if g.prepared && !g.stopped && g.manager() == "redis" && !g.repl.noUserSync {
		// As the Redis agent (an agent from before user sync sends none).
		hb.UsersDigest = wire.UsersDigest(g.userLines())
	}
	return hb
}

func opErr(code wire.ErrorCode, format string, args ...any) wire.Result {
	return wire.Result{Error: wire.Errorf(code, format, args...)}
}

func okResult(v any) wire.Result {
	if v == nil {
		return wire.Result{}
	}
	data, _ := json.Marshal(v)
	return wire.Result{Payload: data}
}

// handle runs each operation id once per attempt, answering resends from
// memory, as the real agent's journal does.
func (g *fakeGuest) handle(ctx context.Context, op wire.Operation) wire.Result {
	if op.Kind == wire.KindBackup || op.Kind == wire.KindRestore || op.Kind == wire.KindPublishLog {
		return g.handleStream(op)
	}
	g.mu.Lock()
	if r, ok := g.results[op.ID]; ok {
		g.mu.Unlock()
		return r
	}
	gate := g.applyGate
	if op.Kind == wire.KindPromoteReplica {
		gate = g.repl.promoteGate
	}
	if op.Kind == wire.KindExportUsers {
		gate = g.repl.exportGate
	}
	g.mu.Unlock()
	if gate != nil && (op.Kind == wire.KindApplyConfiguration || op.Kind == wire.KindPromoteReplica || op.Kind == wire.KindExportUsers) {
		g.mu.Lock()
		g.applying++
		g.mu.Unlock()
		select {
		case <-gate:
		case <-ctx.Done(): // the session ended: nothing is answered or kept
			g.mu.Lock()
			g.applying--
			g.mu.Unlock()
			return opErr(wire.CodeInterrupted, "session ended")
		}
		g.mu.Lock()
		g.applying--
		g.mu.Unlock()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	key := fmt.Sprintf("%s#%d", op.ID, op.Attempt)
	if r, ok := g.results[key]; ok {
		return r
	}
	var r wire.Result
	if g.interrupt[op.Kind] {
		r = opErr(wire.CodeInterrupted, "the fake agent stopped in %s", op.Kind)
	} else {
		r = g.run(op)
	}
	r.Attempt = op.Attempt
	g.results[key] = r
	return r
}

// applied returns one value of the configuration the guest runs with.
func (g *fakeGuest) applied(name string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return string(g.config[name])
}

func userKey(name, host string) string {
	if host == "" {
		host = "%"
	}
	return name + "@" + host
}

func (g *fakeGuest) run(op wire.Operation) wire.Result {
	decode := func(v any) bool { return len(op.Args) > 0 && wire.DecodeStrict(op.Args, v) == nil }
	if op.Kind != wire.KindPrepare && !g.prepared {
		return opErr(wire.CodeFailedPrecondition, "not prepared")
	}
	switch op.Kind {
	case wire.KindPrepare:
		var a wire.PrepareArgs
		if !decode(&a) {
			return opErr(wire.CodeInvalidArgument, "bad prepare args")
		}
		if g.prepared {
			return opErr(wire.CodeFailedPrecondition, "prepared already")
		}
		if g.failPrepare != "" {
			return opErr(wire.CodeInternal, "%s", g.failPrepare)
		}
		g.memoryMB = a.MemoryMB
		// A data volume that holds a database is adopted, not initialised
		// (a rebuilt guest).
		adopted := len(g.dbs) > 0 || len(g.users) > 0 || g.root
		for _, d := range a.Databases {
			g.dbs[d.Name] = true
		}
		for _, u := range a.Users {
			u := u
			g.passwords[userKey(u.Name, u.Host)] = u.Password
			u.Password = ""
			g.users[userKey(u.Name, u.Host)] = &u
		}
		if a.EnableRoot {
			g.root, g.rootPassword = true, a.RootPassword
		}
		if a.Configuration != nil {
			g.config = a.Configuration.Values
		}
		g.authPlugin = a.AuthPlugin
		if !adopted {
			g.dataVersion = g.lastBoot.Datastore.Version
		}
		g.tlsFingerprint = fakeFingerprint()
		g.prepared = true
		return okResult(wire.PrepareResult{Formatted: !adopted, Initialized: !adopted, TLSFingerprint: g.tlsFingerprint})
	case wire.KindListDatabases:
		var out []wire.Database
		for d := range g.dbs {
			out = append(out, wire.Database{Name: d})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		return okResult(wire.ListDatabasesResult{Databases: out})
	case wire.KindCreateDatabases:
		var a wire.CreateDatabasesArgs
		if !decode(&a) {
			return opErr(wire.CodeInvalidArgument, "bad args")
		}
		for _, d := range a.Databases {
			if g.dbs[d.Name] {
				return opErr(wire.CodeAlreadyExists, "database %s exists", d.Name)
			}
		}
		for _, d := range a.Databases {
			g.dbs[d.Name] = true
		}
		return okResult(nil)
	case wire.KindDeleteDatabase:
		var a wire.DeleteDatabaseArgs
		decode(&a)
		if !g.dbs[a.Name] {
			return opErr(wire.CodeNotFound, "database %s does not exist", a.Name)
		}
		delete(g.dbs, a.Name)
		return okResult(nil)
	case wire.KindListUsers:
		var out []wire.User
		for _, u := range g.users {
			out = append(out, *u)
		}
		return okResult(wire.ListUsersResult{Users: out})
	case wire.KindCreateUsers:
		var a wire.CreateUsersArgs
		decode(&a)
		for _, u := range a.Users {
			if g.users[userKey(u.Name, u.Host)] != nil {
				return opErr(wire.CodeAlreadyExists, "user %s exists", u.Name)
			}
		}
		for _, u := range a.Users {
			u := u
			g.passwords[userKey(u.Name, u.Host)] = u.Password
			u.Password = ""
			if u.Host == "" {
				u.Host = "%"
			}
			g.users[userKey(u.Name, u.Host)] = &u
		}
		return okResult(nil)
	case wire.KindUpdateUser:
		var a wire.UpdateUserArgs
		if !decode(&a) {
			return opErr(wire.CodeInvalidArgument, "bad args")
		}
		old := userKey(a.User.Name, a.User.Host)
		u := g.users[old]
		if u == nil {
			return opErr(wire.CodeNotFound, "user %s does not exist", a.User.Name)
		}
		name, host := u.Name, u.Host
		if a.NewName != "" {
			name = a.NewName
		}
		if a.NewHost != "" {
			host = a.NewHost
		}
		key := userKey(name, host)
		if key != old && g.users[key] != nil {
			return opErr(wire.CodeAlreadyExists, "user %s exists already", key)
		}
		pw := g.passwords[old]
		if a.NewPassword != "" {
			pw = a.NewPassword
		}
		delete(g.users, old)
		delete(g.passwords, old)
		u.Name, u.Host = name, host
		g.users[key], g.passwords[key] = u, pw
		return okResult(nil)
	case wire.KindChangePasswords:
		var a wire.ChangePasswordsArgs
		if !decode(&a) {
			return opErr(wire.CodeInvalidArgument, "bad args")
		}
		for _, u := range a.Users {
			if g.users[userKey(u.Name, u.Host)] == nil {
				return opErr(wire.CodeNotFound, "user %s does not exist", u.Name)
			}
		}
		for _, u := range a.Users {
			g.passwords[userKey(u.Name, u.Host)] = u.Password
		}
		return okResult(nil)
	case wire.KindDeleteUser, wire.KindListAccess:
		var a wire.UserRef
		decode(&a)
		u := g.users[userKey(a.Name, a.Host)]
		if u == nil {
			return opErr(wire.CodeNotFound, "user %s does not exist", a.Name)
		}
		if op.Kind == wire.KindListAccess {
			return okResult(wire.ListAccessResult{Databases: append([]string{}, u.Databases...)})
		}
		delete(g.users, userKey(a.Name, a.Host))
		return okResult(nil)
	case wire.KindGrantAccess:
		var a wire.GrantAccessArgs
		decode(&a)
		u := g.users[userKey(a.Name, a.Host)]
		if u == nil {
			return opErr(wire.CodeNotFound, "user %s does not exist", a.Name)
		}
		for _, d := range a.Databases {
			if !g.dbs[d] {
				return opErr(wire.CodeNotFound, "database %s does not exist", d)
			}
		}
		u.Databases = append(u.Databases, a.Databases...)
		return okResult(nil)
	case wire.KindRevokeAccess:
		var a wire.RevokeAccessArgs
		decode(&a)
		u := g.users[userKey(a.Name, a.Host)]
		if u == nil {
			return opErr(wire.CodeNotFound, "user %s does not exist", a.Name)
		}
		var keep []string
		for _, d := range u.Databases {
			if d != a.Database {
				keep = append(keep, d)
			}
		}
		u.Databases = keep
		return okResult(nil)
	case wire.KindEnableRoot:
		var a wire.EnableRootArgs
		decode(&a)
		pw := a.Password
		if pw == "" {
			pw = "generated-" + randHex()
		}
		g.root, g.repl.rootHash = true, sha256Hex(pw)
		return okResult(wire.RootCredentials{Name: "root", Password: pw})
	case wire.KindDisableRoot:
		g.root = false
		return okResult(nil)
	case wire.KindIsRootEnabled:
		return okResult(wire.IsRootEnabledResult{Enabled: g.root})
	case wire.KindApplyConfiguration:
		var a wire.ConfigurationArgs
		if !decode(&a) {
			return opErr(wire.CodeInvalidArgument, "bad configuration args")
		}
		g.configs++
		if g.refuse != "" {
			return opErr(wire.CodeInvalidArgument, "%s", g.refuse)
		}
		g.config = a.Values
		var res wire.ConfigurationResult
		for _, r := range a.Rules { // the rules of every parameter of the version
			if _, set := a.Values[r.Name]; !set {
				continue
			}
			if r.RestartRequired {
				res.PendingRestart = append(res.PendingRestart, r.Name)
			} else {
				res.AppliedLive = append(res.AppliedLive, r.Name)
			}
		}
		g.restartRequired = g.restartRequired || len(res.PendingRestart) > 0
		res.RestartRequired = g.restartRequired
		return okResult(res)
	case wire.KindRestart:
		g.restartRequired = false
		g.stopped = false
		g.restarts++
		g.note("restart %s", g.lastBoot.InstanceID)
		return okResult(nil)
	case wire.KindStop:
		g.stopped = true
		g.note("stop %s", g.lastBoot.InstanceID)
		return okResult(nil)
	case wire.KindApplyFlavor:
		var a wire.FlavorArgs
		if !decode(&a) || a.MemoryMB <= 0 {
			return opErr(wire.CodeInvalidArgument, "bad apply_flavor args")
		}
		changed := g.memoryMB != a.MemoryMB
		g.memoryMB = a.MemoryMB
		return okResult(wire.FlavorResult{Changed: changed})
	case wire.KindUpgradeDatastore:
		if g.failUpgrade != "" {
			return opErr(wire.CodeInternal, "%s", g.failUpgrade)
		}
		res := wire.UpgradeResult{ServerVersion: g.lastBoot.Datastore.Version + "-fake", DataVersion: g.dataVersion}
		res.Upgraded = g.dataVersion != g.lastBoot.Datastore.Version
		g.dataVersion = g.lastBoot.Datastore.Version
		return okResult(res)
	case wire.KindResizeFilesystem, wire.KindFilesystemStats:
		return okResult(wire.FilesystemStats{Path: "/var/lib/mysql", TotalBytes: uint64(g.volumeGB) << 30})
	case wire.KindStatus:
		return okResult(wire.StatusResult{Status: wire.StatusRunning})
	case wire.KindListLogs, wire.KindSetLog:
		return g.logOp(op)
	case wire.KindGetConfiguration:
		// The fake's rendered defaults, with the group over them.
		values := map[string]json.RawMessage{"character_set_server": json.RawMessage(`"utf8mb4"`), "max_connections": json.RawMessage(`151`)}
		for k, v := range g.config {
			values[k] = v
		}
		return okResult(wire.EffectiveConfiguration{Values: values})
	case wire.KindCreateReplicationAccount, wire.KindDropReplicationAccount,
		wire.KindStartReplication, wire.KindReplicationStatus, wire.KindDetachReplica,
		wire.KindSetReadOnly, wire.KindPromoteReplica, wire.KindRejoinReplication:
		return g.replicationOp(op)
	case wire.KindExportUsers, wire.KindImportUsers:
		return g.userSyncOp(op)
	}
	return opErr(wire.CodeNotSupported, "fake guest does not do %s", op.Kind)
}

func randHex() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// fakeCompute stands in for the qemu driver.
type fakeCompute struct {
	t      *testing.T
	mu     sync.Mutex
	silent bool // servers boot no guest (a guest that never reports)
	// streams tunes the backup and restore streams of guests made later.
	streams streamKnobs
	servers map[string]*fakeServer
	volumes map[string]compute.Volume
	guests  map[string]*fakeGuest // by instance id, kept across reboots
	calls   []string
	// journal records the guests' replication events in order.
	journal opJournal
	// outdated: servers that run with older launch settings (reason).
	outdated map[string]string
	// silentIDs: servers of these instances boot no guest.
	silentIDs map[string]bool
	// silentRAM: a server resized to this memory boots no guest (a
	// flavor the guest cannot come back on).
	silentRAM int
	// rebuilds are the old guests and boots a rebuild set aside, and its
	// knobs (rebuild_test.go).
	rebuilds map[string]*fakeRebuild
	// published: the access of public servers (Publish); its own lock,
	// as server() reads it under fc.mu and without. noPublic: the fake
	// has no public addresses (CheckAccess refuses public).
	pubMu     sync.Mutex
	published map[string]compute.Access
	noPublic  bool
	// pubGate, if set, holds Publish until closed (or its step's context
	// ends); publishing counts the calls waiting there.
	pubGate    chan struct{}
	publishing int
	// onNewGuest, if set, tunes each guest as it is made (under mu).
	onNewGuest func(id string, g *fakeGuest)

	// protocol is the protocol the agents of guests made later speak
	// (0: wire's own; skew_test.go).
	protocol int
}

var (
	_ compute.LaunchChecker = (*fakeCompute)(nil)
	_ compute.Restarter     = (*fakeCompute)(nil)
	_ compute.FlavorResizer = (*fakeCompute)(nil)
	_ compute.VolumeSizer   = (*fakeCompute)(nil)
	_ compute.Publisher     = (*fakeCompute)(nil)
)

func (fc *fakeCompute) CheckAccess(ctx context.Context, a compute.Access) error {
	if a.Public && fc.noPublic {
		return fmt.Errorf("%w: the fake has no public addresses (start it with --public-addresses)", compute.ErrInvalid)
	}
	return nil
}

// Publish records the server's publication: a public one has a public
// address (from its id) in server().
func (fc *fakeCompute) Publish(ctx context.Context, s compute.Server, ports []int, a compute.Access) (compute.Server, error) {
	fc.record(fmt.Sprintf("Publish %s %v %v", s.ID, a.Public, a.AllowedCIDRs))
	if err := fc.CheckAccess(ctx, a); err != nil {
		return compute.Server{}, err
	}
	fc.pubMu.Lock()
	gate := fc.pubGate
	fc.publishing++
	fc.pubMu.Unlock()
	var err error
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	fc.pubMu.Lock()
	fc.publishing--
	if err != nil {
		fc.pubMu.Unlock()
		return compute.Server{}, err
	}
	if a.Public {
		fc.published[s.ID] = a
	} else {
		delete(fc.published, s.ID)
	}
	fc.pubMu.Unlock()
	return fc.server(s.ID), nil
}

// publication is the server's access as last published (ok: public).
func (fc *fakeCompute) publication(id string) (compute.Access, bool) {
	fc.pubMu.Lock()
	defer fc.pubMu.Unlock()
	a, ok := fc.published[id]
	return a, ok
}

func (fc *fakeCompute) LaunchOutdated(ctx context.Context, s compute.Server) (string, error) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if srv := fc.servers[s.ID]; srv == nil || !srv.running {
		return "", nil
	}
	return fc.outdated[s.ID], nil
}

// RestartServer reboots the guest with "current" settings.
func (fc *fakeCompute) RestartServer(ctx context.Context, s compute.Server) error {
	fc.record("RestartServer " + s.ID)
	fc.mu.Lock()
	srv, g := fc.servers[s.ID], fc.guests[s.ID]
	delete(fc.outdated, s.ID)
	if srv != nil {
		srv.running = false
	}
	fc.mu.Unlock()
	if g != nil {
		g.halt()
	}
	return fc.StartServer(ctx, s)
}

// ResizeServer restarts the server with the flavor's memory and CPUs
// (the guest reboots, as the local driver's VM does).
func (fc *fakeCompute) ResizeServer(ctx context.Context, s compute.Server, f compute.Flavor) error {
	fc.record(fmt.Sprintf("ResizeServer %s %d %d", s.ID, f.RAMMB, f.VCPUs))
	fc.mu.Lock()
	srv, g := fc.servers[s.ID], fc.guests[s.ID]
	if srv == nil {
		fc.mu.Unlock()
		return fmt.Errorf("no server %s", s.ID)
	}
	if srv.running && srv.spec.RAMMB == f.RAMMB && srv.spec.VCPUs == f.VCPUs {
		fc.mu.Unlock()
		return nil
	}
	srv.spec.RAMMB, srv.spec.VCPUs = f.RAMMB, f.VCPUs
	srv.running = false
	if fc.silentRAM != 0 {
		fc.silentIDs[s.ID] = f.RAMMB == fc.silentRAM
	}
	fc.mu.Unlock()
	if g != nil {
		g.halt()
	}
	return fc.StartServer(ctx, s)
}

func (fc *fakeCompute) VolumeSize(ctx context.Context, v compute.Volume) (int, error) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.volumes[v.ID].SizeGB, nil
}

type fakeServer struct {
	spec    compute.ServerSpec
	running bool
	fenced  bool
	boot    wire.Bootstrap
}

func newFakeCompute(t *testing.T) *fakeCompute {
	fc := &fakeCompute{t: t, servers: map[string]*fakeServer{}, volumes: map[string]compute.Volume{}, guests: map[string]*fakeGuest{},
		outdated: map[string]string{}, silentIDs: map[string]bool{}, rebuilds: map[string]*fakeRebuild{}, published: map[string]compute.Access{}}
	t.Cleanup(fc.powerOff)
	return fc
}

func (fc *fakeCompute) record(s string) {
	fc.mu.Lock()
	fc.calls = append(fc.calls, s)
	fc.mu.Unlock()
}

func (fc *fakeCompute) CreateVolume(ctx context.Context, spec compute.VolumeSpec) (compute.Volume, error) {
	fc.record("CreateVolume " + spec.InstanceID)
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if v, ok := fc.volumes[spec.InstanceID]; ok {
		return v, nil
	}
	v := compute.Volume{ID: spec.InstanceID, SizeGB: spec.SizeGB, GuestDevice: "/dev/disk/by-id/virtio-strata-data"}
	fc.volumes[spec.InstanceID] = v
	return v, nil
}

func (fc *fakeCompute) CreateServer(ctx context.Context, spec compute.ServerSpec) (compute.Server, error) {
	fc.record("CreateServer " + spec.InstanceID)
	boot, err := wire.ParseBootstrap(spec.ConfigDrive["strata/bootstrap.json"], "config drive")
	if err != nil {
		return compute.Server{}, fmt.Errorf("%w: %v", compute.ErrInvalid, err)
	}
	fc.mu.Lock()
	srv := fc.servers[spec.InstanceID]
	if srv == nil {
		srv = &fakeServer{spec: spec}
		fc.servers[spec.InstanceID] = srv
	}
	srv.boot = boot
	fc.mu.Unlock()
	if err := fc.StartServer(ctx, fc.server(spec.InstanceID)); err != nil {
		return compute.Server{}, err
	}
	return fc.server(spec.InstanceID), nil
}

// fakeNetwork is the fake's one network, as the local driver has one.
var fakeNetwork = compute.Network{ID: "0f1e2d3c-4b5a-4678-9abc-def012345678", Name: "private", CIDRs: []string{"127.10.0.0/16"}, Default: true}

// server is where the fake's instance is: an address of its own (from its
// id), the guest's ports as they are (MariaDB's, PostgreSQL's, Redis's).
func (fc *fakeCompute) server(id string) compute.Server {
	addr := fmt.Sprintf("127.10.%d.%d", id[0], id[1])
	srv := compute.Server{ID: id, Addresses: []compute.Address{{Type: "private", Address: addr, Network: fakeNetwork.ID}},
		Endpoints: []compute.Endpoint{{GuestPort: 3306, Host: addr, Port: 3306}, {GuestPort: 5432, Host: addr, Port: 5432}, {GuestPort: 6379, Host: addr, Port: 6379}}}
	if strings.HasSuffix(fc.spec(id).Name, "-dualstack") {
		// A network with an IPv4 and an IPv6 subnet: Nova gives the
		// server a fixed address of each.
		srv.Addresses = append(srv.Addresses, compute.Address{Type: "private", Address: fmt.Sprintf("fd00::%x:%x", id[0], id[1]), Network: fakeNetwork.ID})
	}
	if _, ok := fc.publication(id); ok {
		srv.Addresses = append(srv.Addresses, compute.Address{Type: "public", Address: fmt.Sprintf("127.200.%d.%d", id[0], id[1])})
	}
	return srv
}

func (fc *fakeCompute) Networks(ctx context.Context) ([]compute.Network, error) {
	return []compute.Network{fakeNetwork}, nil
}

func (fc *fakeCompute) ResolveNICs(ctx context.Context, nics []compute.NIC) ([]compute.NIC, error) {
	valid := "; the networks are: " + compute.NetworkList([]compute.Network{fakeNetwork})
	if len(nics) == 0 {
		return []compute.NIC{{NetworkID: fakeNetwork.ID}}, nil
	}
	n := nics[0]
	switch {
	case n.PortID != "" || n.SubnetID != "":
		return nil, fmt.Errorf("%w: no ports or subnets here%s", compute.ErrInvalid, valid)
	case n.NetworkID == "":
		n.NetworkID = fakeNetwork.ID
	case n.NetworkID != fakeNetwork.ID:
		return nil, fmt.Errorf("%w: network %q is not one of this controller's%s", compute.ErrInvalid, n.NetworkID, valid)
	}
	return []compute.NIC{n}, nil
}

// spec returns what CreateServer was asked for.
func (fc *fakeCompute) spec(id string) compute.ServerSpec {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if srv := fc.servers[id]; srv != nil {
		return srv.spec
	}
	return compute.ServerSpec{}
}

func (fc *fakeCompute) ServerState(ctx context.Context, s compute.Server) (compute.State, error) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	srv := fc.servers[s.ID]
	switch {
	case srv == nil:
		return compute.StateGone, nil
	case srv.running:
		return compute.StateRunning, nil
	case srv.fenced:
		return compute.StateFenced, nil
	}
	return compute.StateStopped, nil
}

var _ compute.Fencer = (*fakeCompute)(nil)

// FenceServer halts the guest and keeps its server off.
func (fc *fakeCompute) FenceServer(ctx context.Context, s compute.Server) error {
	fc.record("FenceServer " + s.ID)
	fc.mu.Lock()
	g := fc.guests[s.ID]
	if srv := fc.servers[s.ID]; srv != nil {
		srv.running, srv.fenced = false, true
	}
	fc.mu.Unlock()
	if g != nil {
		g.halt()
	}
	return nil
}

// UnfenceServer lifts a fence: the server is off and may start again.
func (fc *fakeCompute) UnfenceServer(ctx context.Context, s compute.Server) error {
	fc.record("UnfenceServer " + s.ID)
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if srv := fc.servers[s.ID]; srv != nil {
		srv.fenced = false
	}
	return nil
}

func (fc *fakeCompute) StartServer(ctx context.Context, s compute.Server) error {
	fc.mu.Lock()
	srv := fc.servers[s.ID]
	if srv == nil {
		fc.mu.Unlock()
		return fmt.Errorf("no server %s", s.ID)
	}
	if srv.running {
		fc.mu.Unlock()
		return nil
	}
	if srv.fenced {
		fc.mu.Unlock()
		return fmt.Errorf("server %s: %w", s.ID, compute.ErrFenced)
	}
	srv.running = true
	g := fc.guests[s.ID]
	if g == nil {
		g = newFakeGuest(fc.t, fc.volumes[s.ID].SizeGB)
		g.streams, g.protocol, g.journal = fc.streams, fc.protocol, &fc.journal
		if fc.onNewGuest != nil {
			fc.onNewGuest(s.ID, g)
		}
		fc.guests[s.ID] = g
	}
	silent, boot := fc.silent || fc.silentIDs[s.ID], srv.boot
	fc.mu.Unlock()
	fc.record("StartServer " + s.ID)
	if !silent {
		g.boot(fc.t, boot)
	}
	return nil
}

func (fc *fakeCompute) ExtendVolume(ctx context.Context, s compute.Server, v compute.Volume, sizeGB int) (compute.Volume, error) {
	fc.record(fmt.Sprintf("ExtendVolume %s %d", v.ID, sizeGB))
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if sizeGB < v.SizeGB {
		return v, fmt.Errorf("%w: cannot shrink", compute.ErrInvalid)
	}
	v.SizeGB = sizeGB
	fc.volumes[v.ID] = v
	if g := fc.guests[v.ID]; g != nil {
		g.mu.Lock()
		g.volumeGB = sizeGB
		g.mu.Unlock()
	}
	return v, nil
}

func (fc *fakeCompute) DeleteServer(ctx context.Context, s compute.Server) error {
	fc.record("DeleteServer " + s.ID)
	fc.mu.Lock()
	g := fc.guests[s.ID]
	delete(fc.servers, s.ID)
	delete(fc.guests, s.ID)
	fc.mu.Unlock()
	fc.pubMu.Lock()
	delete(fc.published, s.ID)
	fc.pubMu.Unlock()
	if g != nil {
		g.halt()
	}
	return nil
}

func (fc *fakeCompute) DeleteVolume(ctx context.Context, v compute.Volume) error {
	fc.record("DeleteVolume " + v.ID)
	fc.mu.Lock()
	delete(fc.volumes, v.ID)
	fc.mu.Unlock()
	return nil
}

func (fc *fakeCompute) Console(ctx context.Context, s compute.Server, max int) (string, error) {
	return "fake console: no guest here\n", nil
}

// powerOffOne stops one server and its guest (a VM that died).
func (fc *fakeCompute) powerOffOne(id string) {
	fc.mu.Lock()
	g := fc.guests[id]
	if srv := fc.servers[id]; srv != nil {
		srv.running = false
	}
	fc.mu.Unlock()
	if g != nil {
		g.halt()
	}
}

// powerOff stops every guest, as a host that stops.
func (fc *fakeCompute) powerOff() {
	fc.mu.Lock()
	var gs []*fakeGuest
	for id, srv := range fc.servers {
		srv.running = false
		if g := fc.guests[id]; g != nil {
			gs = append(gs, g)
		}
	}
	fc.mu.Unlock()
	for _, g := range gs {
		g.halt()
	}
}

func (fc *fakeCompute) guest(id string) *fakeGuest {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.guests[id]
}

func (fc *fakeCompute) has(id string) (server, volume bool) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	_, server = fc.servers[id]
	_, volume = fc.volumes[id]
	return
}

// rig is a controller under test.
type rig struct {
	t        *testing.T
	ctl      *server.Controller
	compute  *fakeCompute
	stateDir string
	imageID  string
	version  registry.Version
}

type rigOptions struct {
	stateDir    string
	dsn         string
	agentListen string
	advertise   []string
	compute     *fakeCompute
	bootTimeout time.Duration
	hostKey     string
	listen      string
	// guestCallTimeout is how long guest calls wait before 202 (60s).
	guestCallTimeout time.Duration
	// backupStore replaces the local backup store; backups tunes the
	// backup manager after the rig's own tuning.
	backupStore objectstore.Store
	backups     func(*backups.Manager)
	// configureWait bounds a configuration change's wait (default 30s).
	configureWait time.Duration
	// images, if set, replaces the local image store.
	images func(db *store.DB, dir string) imagestore.Store
	// http bounds the API's clients (server defaults if zero).
	http server.HTTPLimits
	// quotas are the default quotas (Trove's if nil); apiRate the API
	// rate limit per user and verb (server default if zero).
	quotas  quotas.Limits
	apiRate int
	// driver, if set, is the compute driver the controller sees, made
	// from the fake (e.g. one without its optional interfaces).
	driver func(*fakeCompute) compute.Driver
	// defaultDatastore and defaultVersion: --default-datastore and
	// --default-datastore-version.
	defaultDatastore, defaultVersion string
	// heartbeatSeconds is the controller's heartbeat interval (bootstrap,
	// stale limit, automatic failover's shortest grace); 0: the default.
	heartbeatSeconds int
}

// newRig starts a controller with a registered mariadb 10.11 version.
func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	if o.stateDir == "" {
		o.stateDir = t.TempDir()
	}
	if o.compute == nil {
		o.compute = newFakeCompute(t)
	}
	if o.bootTimeout == 0 {
		o.bootTimeout = time.Minute
	}
	r := &rig{t: t, compute: o.compute, stateDir: o.stateDir}
	ctx := context.Background()
	db, err := server.OpenState(ctx, o.stateDir, o.dsn)
	if err != nil {
		t.Fatal(err)
	}
	r.register(db, o.bootTimeout)
	db.Close()
	// A port freeAddr picked may be taken by another test process before
	// the controller binds it: then the rig picks another.
	pickedAgent := o.agentListen == ""
	pickedAdvertise := len(o.advertise) == 0
	pick := func() {
		if pickedAgent {
			o.agentListen = freeAddr(t)
		}
		if pickedAdvertise {
			// The fake guests run on this host: they dial the endpoint itself.
			o.advertise = []string{o.agentListen}
		}
	}
	pick()
	if o.listen == "" {
		o.listen = "127.0.0.1:0"
	}
	var images imagestore.Store
	if o.images != nil {
		db, err := server.OpenState(ctx, o.stateDir, o.dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		images = o.images(db, filepath.Join(o.stateDir, "images"))
	}
	var driver compute.Driver = o.compute
	if o.driver != nil {
		driver = o.driver(o.compute)
	}
	var ctl *server.Controller
	for try := 0; ; try++ {
		ctl, err = server.Start(ctx, server.Config{
			StateDir: o.stateDir, DSN: o.dsn, Listen: o.listen, AgentListen: o.agentListen, AgentAdvertise: o.advertise, Images: images, HTTP: o.http,
			HostKeyFile: o.hostKey, Compute: driver, Logger: wiretest.QuietLogger(), RecoveryInterval: 500 * time.Millisecond,
			GuestCallTimeout: o.guestCallTimeout, HeartbeatSeconds: o.heartbeatSeconds,
			ConfigureWait: o.configureWait,
			Quotas:        o.quotas, APIRate: o.apiRate,
			DefaultDatastore: o.defaultDatastore, DefaultDatastoreVersion: o.defaultVersion,
			AgentTimings: agentendpoint.ServerConfig{KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: 6 * time.Second,
				AckTimeout: 5 * time.Second, PollInterval: 100 * time.Millisecond, MinHeartbeatInterval: 50 * time.Millisecond},
			EngineTuning: func(e *tasks.Engine) { e.Poll = 50 * time.Millisecond; e.Backoff = 50 * time.Millisecond },
			BackupStore:  o.backupStore, BackupStoreName: map[bool]string{true: "test"}[o.backupStore != nil],
			BackupTuning: func(m *backups.Manager) {
				// Small segments, so the tests' streams cross many.
				m.WriterOptions = &format.WriterOptions{ChunkSize: 64 << 10, SegmentSize: 1 << 20}
				m.StreamTimeout, m.ResultTimeout = 10*time.Second, 10*time.Second
				if o.backups != nil {
					o.backups(m)
				}
			},
		})
		if err != nil && pickedAgent && try < 3 && strings.Contains(err.Error(), "address already in use") {
			pick()
			continue
		}
		break
	}
	if err != nil {
		t.Fatal(err)
	}
	r.ctl = ctl
	t.Cleanup(func() { ctl.Stop() })
	return r
}

// register puts a tiny real qcow2 into the image store and registers
// mariadb 10.11 with the test rules (idempotent).
func (r *rig) register(db *store.DB, bootTimeout time.Duration) {
	t := r.t
	ctx := context.Background()
	imgs := &local.Store{DB: db, Dir: filepath.Join(r.stateDir, "images")}
	list, err := imgs.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) == 0 {
		if _, err := exec.LookPath("qemu-img"); err != nil {
			t.Fatal("qemu-img not found: install qemu-utils with `ci/deps.sh build`")
		}
		p := filepath.Join(t.TempDir(), "tiny.qcow2")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, "16M").CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		f, _ := os.Open(p)
		img, err := imgs.Register(ctx, f, imagestore.RegisterOptions{Name: "mariadb-10.11", DiskFormat: "qcow2"})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, img)
	}
	r.imageID = list[0].ID
	reg := &registry.Registry{DB: db}
	if _, err := reg.UpdateDatastore(ctx, "mariadb", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.UpdateVersion(ctx, registry.VersionSpec{Datastore: "mariadb", Name: "10.11", Manager: "mariadb", ImageID: r.imageID,
		Packages: []string{"mariadb-server"}, Active: true, Port: 3306, BootTimeout: bootTimeout}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(rulesFile)
	v, err := reg.LoadRules(ctx, "mariadb", "10.11", data, rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	r.version = v
}

// client is an API client logged in as one user.
type client struct {
	t       *testing.T
	base    string
	token   string
	project string
}

func (r *rig) login(user, password string) *client {
	r.t.Helper()
	return login(r.t, r.ctl.APIURL, user, password)
}

func (r *rig) admin() *client {
	r.t.Helper()
	pw := r.ctl.AdminPassword
	if pw == "" {
		data, err := os.ReadFile(filepath.Join(r.stateDir, "openrc"))
		if err != nil {
			r.t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "export OS_PASSWORD="); ok {
				pw = strings.Trim(v, "'")
			}
		}
	}
	return r.login("admin", pw)
}

func login(t *testing.T, base, user, password string) *client {
	t.Helper()
	body := fmt.Sprintf(`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":%q,"domain":{"name":"Default"},"password":%q}}}}}`, user, password)
	resp, err := http.Post(base+"/v3/auth/tokens", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Token struct {
			Project struct{ ID string } `json:"project"`
		} `json:"token"`
	}
	json.NewDecoder(resp.Body).Decode(&doc)
	if resp.StatusCode != 201 {
		t.Fatalf("login %s: HTTP %d", user, resp.StatusCode)
	}
	return &client{t: t, base: base, token: resp.Header.Get("X-Subject-Token"), project: doc.Token.Project.ID}
}

// raw sends a request with a raw body to an absolute path.
func (c *client) raw(method, path, body string) (int, map[string]any) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", c.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var doc map[string]any
	if len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, &doc); err != nil {
			c.t.Fatalf("%s %s: HTTP %d with a body that is not JSON: %q", method, path, resp.StatusCode, data)
		}
	}
	return resp.StatusCode, doc
}

// do sends a request under /v1.0/{project}.
func (c *client) do(method, path string, body any) (int, map[string]any) {
	c.t.Helper()
	var s string
	switch b := body.(type) {
	case nil:
	case string:
		s = b
	default:
		data, _ := json.Marshal(b)
		s = string(data)
	}
	return c.raw(method, "/v1.0/"+c.project+path, s)
}

// must sends a request and fails the test unless the status is want.
func (c *client) must(want int, method, path string, body any) map[string]any {
	c.t.Helper()
	code, doc := c.do(method, path, body)
	if code != want {
		c.t.Fatalf("%s %s: HTTP %d, want %d: %v", method, path, code, want, doc)
	}
	return doc
}

// errorMessage extracts Trove's error message.
func errorMessage(doc map[string]any) string {
	for _, v := range doc {
		if m, ok := v.(map[string]any); ok {
			if s, ok := m["message"].(string); ok {
				return s
			}
		}
	}
	return ""
}

func (c *client) instance(id string) map[string]any {
	c.t.Helper()
	return c.must(200, "GET", "/instances/"+id, nil)["instance"].(map[string]any)
}

// waitStatus polls an instance until its status is want.
func (c *client) waitStatus(id, want string, within time.Duration) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var last map[string]any
	for time.Now().Before(deadline) {
		code, doc := c.do("GET", "/instances/"+id, nil)
		if code == 200 {
			last = doc["instance"].(map[string]any)
			if last["status"] == want {
				return last
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("instance %s did not reach %s within %s; last: %v", id, want, within, last)
	return nil
}

func (c *client) waitGone(id string, within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if code, _ := c.do("GET", "/instances/"+id, nil); code == 404 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("instance %s still there after %s", id, within)
}

func createBody(name string, extra map[string]any) map[string]any {
	in := map[string]any{"name": name, "flavorRef": "strata.small", "volume": map[string]any{"size": 1},
		"datastore": map[string]any{"type": "mariadb", "version": "10.11"}}
	for k, v := range extra {
		in[k] = v
	}
	return map[string]any{"instance": in}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// fakeFingerprint is a fresh certificate fingerprint in the agent's form
// (SHA-256, colon-separated lowercase hex pairs).
func fakeFingerprint() string {
	b := make([]byte, 32)
	rand.Read(b)
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts, ":")
}

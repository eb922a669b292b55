package daemon_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/daemon"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/transport"
	"strata/agent/wire"
	"strata/agent/wire/wiretest"
	"strata/controller/agentendpoint/endpointtest"
)

type notes struct {
	mu   sync.Mutex
	seen []string
}

func (n *notes) add(s string) { n.mu.Lock(); n.seen = append(n.seen, s); n.mu.Unlock() }
func (n *notes) has(prefix string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.ContainsFunc(n.seen, func(s string) bool { return strings.HasPrefix(s, prefix) })
}

type agent struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startAgent(t *testing.T, cfg daemon.Config) *agent {
	ctx, cancel := context.WithCancel(context.Background())
	a := &agent{cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- daemon.Run(ctx, cfg) }()
	t.Cleanup(func() { a.stop(t) })
	return a
}

func (a *agent) stop(t *testing.T) {
	a.once.Do(func() {
		a.cancel()
		select {
		case <-a.done:
		case <-time.After(30 * time.Second):
			t.Fatal("agent did not stop")
		}
	})
}

func tune(c *transport.ClientConfig) {
	c.HeartbeatInterval = 100 * time.Millisecond
	c.KeepaliveInterval = 100 * time.Millisecond
	c.KeepaliveTimeout = time.Second
	c.MinBackoff = 20 * time.Millisecond
	c.MaxBackoff = 200 * time.Millisecond
}

func submit(t *testing.T, rig *endpointtest.Rig, instance, id string, kind wire.Kind, args string) wire.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	op := wire.Operation{ID: id, Kind: kind}
	if args != "" {
		op.Args = json.RawMessage(args)
	}
	if err := rig.Server.Submit(ctx, instance, op); err != nil {
		t.Fatal(err)
	}
	res, err := rig.Server.Await(ctx, instance, id)
	if err != nil {
		t.Fatalf("await %s: %v", id, err)
	}
	return res
}

// The whole agent against the test controller endpoint and a private
// MariaDB: enrollment, prepare, heartbeats reflecting the real server, an
// operation queued during an outage, restart with the enrolled key.
func TestAgentEnrollsPreparesAndReportsOverTheWire(t *testing.T) {
	rig := endpointtest.NewRig(t)
	inst := mariadbtest.NewT(t)
	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance("inst-7", token)
	boot := wire.Bootstrap{
		Format: 1, InstanceID: "inst-7", Controllers: []string{rig.Proxy.Addr},
		ControllerHostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(rig.HostKey.PublicKey()))),
		EnrollmentToken:   token,
		Datastore:         wire.DatastoreRef{Manager: "mariadb", Version: "10.11"},
	}
	if err := boot.Validate(); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(t.TempDir(), "state")
	n := &notes{}
	cfg := daemon.Config{Bootstrap: boot, StateDir: stateDir, Version: "1.2.3-test", Logger: wiretest.QuietLogger(),
		Manager: inst.Manager, Notify: n.add, Tune: tune}
	a := startAgent(t, cfg)
	rig.WaitConnected("inst-7", true, 10*time.Second)
	if !n.has("READY=1") {
		t.Fatal("no READY=1 notification")
	}
	eventually(t, "enrollment recorded", func() bool {
		_, err := os.Stat(filepath.Join(stateDir, "enrolled.json"))
		return err == nil
	})

	res := submit(t, rig, "inst-7", "prep-1", wire.KindPrepare, `{"databases":[{"name":"app"}],"users":[{"name":"app","password":"pw","databases":["app"]}]}`)
	if res.Error != nil {
		t.Fatalf("prepare: %+v", res.Error)
	}
	// Heartbeats now carry the real status, the data volume and the op.
	deadline := time.Now().Add(10 * time.Second)
	for {
		hbs := rig.Store.Heartbeats("inst-7")
		if len(hbs) > 0 {
			hb := hbs[len(hbs)-1]
			if hb.Status == wire.StatusRunning && hb.LastCompletedOp == "prep-1" && hb.Volume != nil && hb.Volume.TotalBytes > 0 && hb.AgentVersion == "1.2.3-test" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat reporting the prepared server; last: %+v", hbs[len(hbs)-1])
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Outage: an operation queued meanwhile is delivered on reconnect.
	rig.Proxy.Freeze(true)
	rig.Proxy.Cut()
	rig.WaitConnected("inst-7", false, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rig.Server.Submit(ctx, "inst-7", wire.Operation{ID: "db-2", Kind: wire.KindCreateDatabases, Args: json.RawMessage(`{"databases":[{"name":"later"}]}`)})
	rig.Proxy.Freeze(false)
	if r, err := rig.Server.Await(ctx, "inst-7", "db-2"); err != nil || r.Error != nil {
		t.Fatalf("op queued during the outage: %v %+v", err, r.Error)
	}
	var dbs wire.ListDatabasesResult
	if err := submit(t, rig, "inst-7", "list-1", wire.KindListDatabases, "").Decode(&dbs); err != nil {
		t.Fatal(err)
	}
	if len(dbs.Databases) != 2 || dbs.Databases[0].Name != "app" || dbs.Databases[1].Name != "later" {
		t.Fatalf("databases = %+v", dbs)
	}

	// A restarted agent authenticates with its key alone.
	a.stop(t)
	if !n.has("STOPPING=1") {
		t.Fatal("no STOPPING=1 notification")
	}
	rig.WaitConnected("inst-7", false, 10*time.Second)
	startAgent(t, cfg)
	rig.WaitConnected("inst-7", true, 10*time.Second)
	if rig.Store.Redemptions() != 1 {
		t.Fatalf("token redeemed %d times", rig.Store.Redemptions())
	}
	var st wire.StatusResult
	if err := submit(t, rig, "inst-7", "status-1", wire.KindStatus, "").Decode(&st); err != nil || st.Status != wire.StatusRunning {
		t.Fatalf("status after agent restart: %+v %v", st, err)
	}
}

func TestAgentRefusesAStateDirectoryOfAnotherInstance(t *testing.T) {
	rig := endpointtest.NewRig(t)
	inst := mariadbtest.NewT(t)
	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance("inst-a", token)
	boot := wire.Bootstrap{
		Format: 1, InstanceID: "inst-a", Controllers: []string{rig.Proxy.Addr},
		ControllerHostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(rig.HostKey.PublicKey()))),
		EnrollmentToken:   token, Datastore: wire.DatastoreRef{Manager: "mariadb", Version: "10.11"},
	}
	stateDir := t.TempDir()
	a := startAgent(t, daemon.Config{Bootstrap: boot, StateDir: stateDir, Logger: wiretest.QuietLogger(), Manager: inst.Manager, Notify: func(string) {}, Tune: tune})
	rig.WaitConnected("inst-a", true, 10*time.Second)
	// The controller counts the session from hello; the agent records
	// its enrolment just after. Stopping it in between would leave a
	// state directory that names no instance (CI once hung here).
	eventually(t, "enrollment recorded", func() bool {
		_, err := os.Stat(filepath.Join(stateDir, "enrolled.json"))
		return err == nil
	})
	a.stop(t)

	boot.InstanceID = "inst-b"
	// Refused before it dials: a regression fails within the minute
	// instead of retrying enrolment until the package's timeout.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := daemon.Run(ctx, daemon.Config{Bootstrap: boot, StateDir: stateDir, Logger: wiretest.QuietLogger(), Manager: inst.Manager})
	if err == nil || !strings.Contains(err.Error(), "belongs to instance inst-a") {
		t.Fatalf("err = %v", err)
	}
}

func TestNewManagerKnowsTheBuiltInDatastores(t *testing.T) {
	_, err := daemon.NewManager(wire.Bootstrap{Datastore: wire.DatastoreRef{Manager: "mongodb", Version: "7"}}, t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), "no datastore manager for mongodb") {
		t.Fatalf("err = %v", err)
	}
	for _, tc := range []struct{ manager, version, mount, wantPath string }{
		{"mariadb", "10.11", "/srv/db", "/srv/db"},
		{"postgresql", "15", "", "/var/lib/postgresql"},
		{"postgresql", "15.4", "/srv/pg", "/srv/pg"},
		{"redis", "7", "", "/var/lib/redis"},
		{"redis", "7.0", "/srv/redis", "/srv/redis"},
	} {
		m, err := daemon.NewManager(wire.Bootstrap{Datastore: wire.DatastoreRef{Manager: tc.manager, Version: tc.version}, MountPoint: tc.mount}, t.TempDir(), nil)
		if err != nil || m.DataPath() != tc.wantPath {
			t.Fatalf("%s %s manager: %v", tc.manager, tc.version, err)
		}
		if st := m.Status(context.Background()); st.Status != wire.StatusNew {
			t.Fatalf("%s status before prepare = %+v", tc.manager, st)
		}
	}
	_, err = daemon.NewManager(wire.Bootstrap{Datastore: wire.DatastoreRef{Manager: "postgresql", Version: "latest"}}, t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), "not a major version") {
		t.Fatalf("postgresql with a non-numeric version: %v", err)
	}
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package agentendpoint_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/transport"
	"strata/agent/wire"
	"strata/agent/wire/wiretest"
	"strata/controller/agentendpoint"
	"strata/controller/store"
	"strata/controller/store/storetest"
)

// testTimings are short wire timings for tests.
var testTimings = agentendpoint.ServerConfig{
	KeepaliveInterval:    100 * time.Millisecond,
	KeepaliveTimeout:     time.Second,
	AckTimeout:           2 * time.Second,
	PollInterval:         200 * time.Millisecond,
	MinHeartbeatInterval: 50 * time.Millisecond,
}

// replica is one controller's agent endpoint listening on addr.
type replica struct {
	ep     *agentendpoint.Endpoint
	addr   string
	cancel context.CancelFunc
	done   chan struct{}
}

func startReplica(t *testing.T, db *store.DB, key ssh.Signer, addr string) *replica {
	t.Helper()
	ep, err := agentendpoint.New(agentendpoint.Config{HostKey: key, DB: db, Logger: wiretest.QuietLogger(), Timings: testTimings})
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	for i := 0; ; i++ { // the previous listener on addr may still be closing
		ln, err = net.Listen("tcp", addr)
		if err == nil || i > 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{ep: ep, addr: ln.Addr().String(), cancel: cancel, done: make(chan struct{})}
	go func() { ep.Serve(ctx, ln); close(r.done) }()
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
}

// agent runs a real agent transport client for instanceID that counts the operations
// it executes.
type agent struct {
	client   *transport.Client
	executed atomic.Int32
	cancel   context.CancelFunc
	done     chan struct{}
}

// run (re)starts the client's connection loop: the same key, so after the
// first enrolment it authenticates without a token.
func (a *agent) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan struct{})
	done := a.done
	go func() { a.client.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (a *agent) stop() {
	a.cancel()
	<-a.done
}

func startAgent(t *testing.T, hostKey ssh.PublicKey, controller, instanceID, token string) *agent {
	t.Helper()
	a := &agent{}
	c, err := transport.NewClient(transport.ClientConfig{
		Controllers: []string{controller}, HostKey: hostKey, Key: wiretest.NewSigner(t),
		EnrollmentToken: token, InstanceID: instanceID, AgentVersion: "test",
		Handler: wiretest.FuncHandler(func(ctx context.Context, op wire.Operation) wire.Result {
			a.executed.Add(1)
			return wire.Result{Payload: json.RawMessage(`{"echo":"` + string(op.Kind) + `"}`)}
		}),
		Heartbeats:        wiretest.StaticHeartbeat{Status: wire.StatusRunning},
		HeartbeatInterval: 100 * time.Millisecond, KeepaliveInterval: 100 * time.Millisecond,
		KeepaliveTimeout: time.Second, DialTimeout: 2 * time.Second,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: wiretest.QuietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	a.client = c
	a.run(t)
	return a
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAgentEnrollsHeartbeatsAndGetsOperationsQueuedWhileAwayOrAcrossARestart(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		hostKey, err := agentendpoint.LoadOrCreateHostKey(filepath.Join(t.TempDir(), agentendpoint.HostKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		r1 := startReplica(t, db, hostKey, "127.0.0.1:0")
		proxy := wiretest.NewProxy(t, r1.addr)
		tok := wire.NewEnrollmentToken()
		if err := agentendpoint.AddEnrollment(ctx, db, "inst-1", tok, time.Now(), time.Time{}); err != nil {
			t.Fatal(err)
		}
		ag := startAgent(t, hostKey.PublicKey(), proxy.Addr, "inst-1", tok)
		waitFor(t, "the agent's session", 10*time.Second, func() bool { return r1.ep.Server.Connected("inst-1") })
		waitFor(t, "three heartbeats in instance_reports", 10*time.Second, func() bool {
			return storetest.Count(t, db, "SELECT COUNT(*) FROM instance_reports WHERE instance_id = ? AND heartbeats >= 3 AND status = 'running'", "inst-1") == 1
		})
		if n := storetest.Count(t, db, "SELECT COUNT(*) FROM agent_tokens WHERE instance_id = ? AND used_at IS NOT NULL", "inst-1"); n != 1 {
			t.Fatal("the enrolment token was not burned")
		}

		res, err := r1.ep.Call(ctx, "inst-1", wire.Operation{ID: "op-1", Kind: wire.KindStatus}, agentendpoint.QueueOptions{}, 10*time.Second)
		if err != nil || !res.OK() || string(res.Payload) != `{"echo":"status"}` {
			t.Fatalf("op while connected: %+v, %v", res, err)
		}

		// Link cut: an op submitted meanwhile is delivered on reconnect.
		proxy.Freeze(true)
		proxy.Cut()
		if err := r1.ep.Server.Submit(ctx, "inst-1", wire.Operation{ID: "op-2", Kind: wire.KindListDatabases}); err != nil {
			t.Fatal(err)
		}
		proxy.Freeze(false)
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		res, err = r1.ep.Server.Await(wctx, "inst-1", "op-2")
		cancel()
		if err != nil || !res.OK() {
			t.Fatalf("op queued while the link was down: %+v, %v", res, err)
		}

		// Controller restart: the agent is away, an op is queued in the
		// database, the controller stops; a new one on the same address
		// and database delivers it when the agent reconnects (with its
		// enrolled key: the token is spent).
		ag.stop()
		if err := r1.ep.Server.Submit(ctx, "inst-1", wire.Operation{ID: "op-3", Kind: wire.KindListUsers}); err != nil {
			t.Fatal(err)
		}
		addr := r1.addr
		r1.stop()
		r2 := startReplica(t, db, hostKey, addr)
		before := ag.executed.Load()
		ag.run(t)
		wctx, cancel = context.WithTimeout(ctx, 15*time.Second)
		res, err = r2.ep.Server.Await(wctx, "inst-1", "op-3")
		cancel()
		if err != nil || !res.OK() || string(res.Payload) != `{"echo":"list_users"}` {
			t.Fatalf("op queued before the restart: %+v, %v", res, err)
		}
		if got := ag.executed.Load() - before; got != 1 {
			t.Fatalf("after the restart the agent executed %d ops, want 1", got)
		}
		if n := storetest.Count(t, db, "SELECT COUNT(*) FROM agent_keys WHERE instance_id = ?", "inst-1"); n != 1 {
			t.Fatalf("%d keys enrolled for the instance, want 1 (reconnects use the enrolled key)", n)
		}
	})
}

func TestTwoReplicasOnOnePostgresDeliverEachOthersOperations(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	ctx := context.Background()
	open := func() *store.DB {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	dbA, dbB := open(), open()
	hostKey := wiretest.NewSigner(t)
	a := startReplica(t, dbA, hostKey, "127.0.0.1:0")
	b := startReplica(t, dbB, hostKey, "127.0.0.1:0")
	tok := wire.NewEnrollmentToken()
	if err := agentendpoint.AddEnrollment(ctx, dbB, "inst-r", tok, time.Now(), time.Time{}); err != nil {
		t.Fatal(err)
	}
	ag := startAgent(t, hostKey.PublicKey(), a.addr, "inst-r", tok) // enrolls at A with B's token
	waitFor(t, "the agent's session on replica A", 10*time.Second, func() bool { return a.ep.Server.Connected("inst-r") })
	if b.ep.Server.Connected("inst-r") {
		t.Fatal("replica B claims a session it does not hold")
	}
	// B queues; A's session picks it up from the shared queue; B sees the
	// result in the shared store.
	res, err := b.ep.Call(ctx, "inst-r", wire.Operation{ID: "via-b", Kind: wire.KindIsRootEnabled}, agentendpoint.QueueOptions{}, 15*time.Second)
	if err != nil || !res.OK() || string(res.Payload) != `{"echo":"is_root_enabled"}` {
		t.Fatalf("op submitted on B: %+v, %v", res, err)
	}
	if ag.executed.Load() != 1 {
		t.Fatalf("agent executed %d ops, want exactly 1", ag.executed.Load())
	}
}

func TestHostKeyIsCreatedOnceAndPrivate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", agentendpoint.HostKeyFile)
	k1, err := agentendpoint.LoadOrCreateHostKey(p)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := agentendpoint.LoadOrCreateHostKey(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(k1.PublicKey().Marshal()) != string(k2.PublicKey().Marshal()) {
		t.Fatal("host key changed between starts")
	}
	st, err := osStat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("host key mode %v, %v", st.Mode(), err)
	}
	if _, err := wire.ParseHostKey(agentendpoint.AuthorizedKey(k1)); err != nil {
		t.Fatalf("bootstrap host key line does not parse: %v", err)
	}
}

var osStat = os.Stat

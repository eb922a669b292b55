package agentendpoint_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/transport"
	"strata/agent/wire"
	"strata/agent/wire/wiretest"
	"strata/controller/agentendpoint"
	"strata/controller/agentendpoint/endpointtest"
)

// clientConfig is an agent of instanceID dialling rig through its proxy,
// with short test timings.
func clientConfig(rig *endpointtest.Rig, instanceID string, key ssh.Signer, h transport.OperationHandler) transport.ClientConfig {
	return transport.ClientConfig{
		Controllers:       []string{rig.Proxy.Addr},
		HostKey:           rig.HostKey.PublicKey(),
		Key:               key,
		InstanceID:        instanceID,
		AgentVersion:      "test",
		Handler:           h,
		Heartbeats:        wiretest.StaticHeartbeat{Status: wire.StatusRunning},
		HeartbeatInterval: 100 * time.Millisecond,
		KeepaliveInterval: 100 * time.Millisecond,
		KeepaliveTimeout:  time.Second,
		DialTimeout:       2 * time.Second,
		MinBackoff:        20 * time.Millisecond,
		MaxBackoff:        100 * time.Millisecond,
		Logger:            wiretest.QuietLogger().With("side", "agent"),
	}
}

// timeout bounds a single connection attempt, so a regression that lets
// a refused agent in fails the test instead of hanging it.
func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func okHandler() wiretest.FuncHandler {
	return func(ctx context.Context, op wire.Operation) wire.Result {
		return wire.Result{Payload: json.RawMessage(`{"echo":"` + string(op.Kind) + `"}`)}
	}
}

// runClient runs c.Run in the background until the test ends.
func runClient(t *testing.T, c *transport.Client) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return cancel
}

func TestEnrollmentBindsTheAgentKeyThenTheKeyAloneAuthenticates(t *testing.T) {
	rig := endpointtest.NewRig(t)
	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance("inst-1", token)
	key := wiretest.NewSigner(t)

	var enrolledCalls atomic.Int32
	cfg := clientConfig(rig, "inst-1", key, okHandler())
	cfg.EnrollmentToken = token
	cfg.OnEnrolled = func() error { enrolledCalls.Add(1); return nil }
	c, err := transport.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cancel := runClient(t, c)
	rig.WaitConnected("inst-1", true, 5*time.Second)
	keys := rig.Store.Keys("inst-1")
	if len(keys) != 1 || keys[0].Fingerprint != ssh.FingerprintSHA256(key.PublicKey()) {
		t.Fatalf("store binds %v to inst-1, want the agent's key", keys)
	}
	// The endpoint counts the agent connected as soon as the handshake is
	// done on its side; the client calls OnEnrolled when it is done on
	// its own, a moment later (under load, after this line).
	for deadline := time.Now().Add(5 * time.Second); enrolledCalls.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if enrolledCalls.Load() != 1 || !c.Enrolled() {
		t.Fatalf("OnEnrolled called %d times, Enrolled()=%v", enrolledCalls.Load(), c.Enrolled())
	}
	cancel()
	rig.WaitConnected("inst-1", false, 5*time.Second)

	// Second start: enrolled, no token at all.
	cfg2 := clientConfig(rig, "inst-1", key, okHandler())
	cfg2.Enrolled = true
	c2, _ := transport.NewClient(cfg2)
	runClient(t, c2)
	rig.WaitConnected("inst-1", true, 5*time.Second)
	if n := rig.Store.Redemptions(); n != 1 {
		t.Fatalf("token redeemed %d times, want 1", n)
	}
}

func TestTokenReuseIsRejectedAndChangesNothing(t *testing.T) {
	rig := endpointtest.NewRig(t)
	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance("inst-1", token)
	first := wiretest.NewSigner(t)
	cfg := clientConfig(rig, "inst-1", first, okHandler())
	cfg.EnrollmentToken = token
	c, _ := transport.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go c.RunOnce(ctx)
	rig.WaitConnected("inst-1", true, 5*time.Second)

	// Another key (a second guest, or this one after losing its state)
	// presents the same token.
	intruder := wiretest.NewSigner(t)
	cfg2 := clientConfig(rig, "inst-1", intruder, okHandler())
	cfg2.EnrollmentToken = token
	c2, _ := transport.NewClient(cfg2)
	err := c2.RunOnce(timeout(t))
	if !errors.Is(err, transport.ErrEnrollmentRejected) {
		t.Fatalf("reused token: err = %v, want transport.ErrEnrollmentRejected", err)
	}
	keys := rig.Store.Keys("inst-1")
	if len(keys) != 1 || keys[0].Fingerprint != ssh.FingerprintSHA256(first.PublicKey()) {
		t.Fatalf("keys after rejected reuse: %v", keys)
	}
	if _, err := rig.Store.InstanceForKey(context.Background(), ssh.FingerprintSHA256(intruder.PublicKey())); !errors.Is(err, agentendpoint.ErrUnknownKey) {
		t.Fatalf("intruder key lookup: %v", err)
	}
	if !rig.Server.Connected("inst-1") {
		t.Fatal("the legitimate session was disturbed")
	}
}

// countingStore records whether the server ever tried to redeem a token.
type countingStore struct {
	*agentendpoint.MemStore
	redeemCalls atomic.Int32
}

func (s *countingStore) RedeemEnrollment(ctx context.Context, h string, k wire.AgentKey) (string, error) {
	s.redeemCalls.Add(1)
	return s.MemStore.RedeemEnrollment(ctx, h, k)
}

func TestWrongHostKeyIsRefusedBeforeTheTokenIsSent(t *testing.T) {
	var cs *countingStore
	rig := endpointtest.NewRigWithStore(t, func(m *agentendpoint.MemStore) agentendpoint.Store {
		cs = &countingStore{MemStore: m}
		return cs
	})
	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance("inst-1", token)

	cfg := clientConfig(rig, "inst-1", wiretest.NewSigner(t), okHandler())
	cfg.EnrollmentToken = token
	cfg.HostKey = wiretest.NewSigner(t).PublicKey() // not the controller's
	c, _ := transport.NewClient(cfg)
	err := c.RunOnce(timeout(t))
	if !errors.Is(err, transport.ErrHostKeyMismatch) {
		t.Fatalf("err = %v, want transport.ErrHostKeyMismatch", err)
	}
	if cs.redeemCalls.Load() != 0 {
		t.Fatal("the token reached the server despite the host key mismatch")
	}
	// The token is still good for the real agent.
	cfg.HostKey = rig.HostKey.PublicKey()
	c2, _ := transport.NewClient(cfg)
	runClient(t, c2)
	rig.WaitConnected("inst-1", true, 5*time.Second)
}

func TestKeyNotEnrolledIsRejected(t *testing.T) {
	rig := endpointtest.NewRig(t)
	rig.Store.AddInstance("inst-1", wire.NewEnrollmentToken())

	// A fresh key and no token.
	c, _ := transport.NewClient(clientConfig(rig, "inst-1", wiretest.NewSigner(t), okHandler()))
	if err := c.RunOnce(timeout(t)); !errors.Is(err, transport.ErrNotEnrolled) {
		t.Fatalf("fresh key, no token: err = %v, want transport.ErrNotEnrolled", err)
	}
	// A key the agent believes enrolled, but the controller does not know
	// (revoked, or another controller).
	cfg := clientConfig(rig, "inst-1", wiretest.NewSigner(t), okHandler())
	cfg.Enrolled = true
	c2, _ := transport.NewClient(cfg)
	if err := c2.RunOnce(timeout(t)); !errors.Is(err, transport.ErrAuthRejected) {
		t.Fatalf("unknown key: err = %v, want transport.ErrAuthRejected", err)
	}
	if rig.Server.Connected("inst-1") || rig.Store.Redemptions() != 0 {
		t.Fatal("a rejected agent got a session or redeemed a token")
	}
}

func TestRevokedKeyIsRejected(t *testing.T) {
	rig := endpointtest.NewRig(t)
	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance("inst-1", token)
	key := wiretest.NewSigner(t)
	cfg := clientConfig(rig, "inst-1", key, okHandler())
	cfg.EnrollmentToken = token
	c, _ := transport.NewClient(cfg)
	cancel := runClient(t, c)
	rig.WaitConnected("inst-1", true, 5*time.Second)
	cancel()
	rig.WaitConnected("inst-1", false, 5*time.Second)

	rig.Store.RevokeKeys("inst-1")
	c2, _ := transport.NewClient(cfg) // token offered again: it is spent
	if err := c2.RunOnce(timeout(t)); !errors.Is(err, transport.ErrEnrollmentRejected) {
		t.Fatalf("revoked key with spent token: err = %v", err)
	}
}

func TestInstanceComesFromTheKeyNotFromTheClaim(t *testing.T) {
	rig := endpointtest.NewRig(t)
	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance("inst-1", token)
	rig.Store.AddInstance("inst-2", wire.NewEnrollmentToken())
	// The agent's bootstrap says inst-2 but it holds inst-1's token.
	cfg := clientConfig(rig, "inst-2", wiretest.NewSigner(t), okHandler())
	cfg.EnrollmentToken = token
	c, _ := transport.NewClient(cfg)
	err := c.RunOnce(timeout(t))
	if !errors.Is(err, transport.ErrHelloRejected) || !strings.Contains(err.Error(), "inst-1") {
		t.Fatalf("err = %v, want transport.ErrHelloRejected naming inst-1", err)
	}
	if rig.Server.Connected("inst-2") || rig.Server.Connected("inst-1") {
		t.Fatal("a session was registered for a mismatched agent")
	}
	// Nothing was queued or recorded for inst-2.
	if hb := rig.Store.Heartbeats("inst-2"); len(hb) != 0 {
		t.Fatalf("heartbeats recorded for the claimed instance: %v", hb)
	}
}

func enrolledClient(t *testing.T, rig *endpointtest.Rig, instanceID string, h transport.OperationHandler) (*transport.Client, transport.ClientConfig) {
	t.Helper()
	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance(instanceID, token)
	cfg := clientConfig(rig, instanceID, wiretest.NewSigner(t), h)
	cfg.EnrollmentToken = token
	c, err := transport.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, cfg
}

func TestHeartbeatsArriveInOrderAndStaleOnesAreDropped(t *testing.T) {
	rig := endpointtest.NewRig(t)
	c, _ := enrolledClient(t, rig, "inst-1", okHandler())
	runClient(t, c)
	rig.WaitConnected("inst-1", true, 5*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for len(rig.Store.Heartbeats("inst-1")) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("fewer than 3 heartbeats in 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	hbs := rig.Store.Heartbeats("inst-1")
	for i, hb := range hbs {
		if hb.BootID != c.BootID() || hb.AgentVersion != "test" || hb.Status != wire.StatusRunning || hb.Seq != uint64(i+1) {
			t.Fatalf("heartbeat %d = %+v", i, hb)
		}
	}
	// A replayed heartbeat (same boot, old seq) is dropped by the store.
	ok, err := rig.Store.RecordHeartbeat(context.Background(), "inst-1", hbs[0], time.Now())
	if err != nil || ok {
		t.Fatalf("stale heartbeat accepted=%v err=%v", ok, err)
	}
	// A new boot id starts again at 1.
	fresh := wire.Heartbeat{BootID: "another-boot", Seq: 1}
	if ok, _ := rig.Store.RecordHeartbeat(context.Background(), "inst-1", fresh, time.Now()); !ok {
		t.Fatal("heartbeat of a new boot dropped")
	}
}

func TestSubmittedOperationIsAckedExecutedAndAwaited(t *testing.T) {
	rig := endpointtest.NewRig(t)
	c, _ := enrolledClient(t, rig, "inst-1", okHandler())
	runClient(t, c)
	rig.WaitConnected("inst-1", true, 5*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	op := wire.Operation{ID: "op-1", Kind: wire.KindListDatabases}
	if err := rig.Server.Submit(ctx, "inst-1", op); err != nil {
		t.Fatal(err)
	}
	res, err := rig.Server.Await(ctx, "inst-1", "op-1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Error != nil || string(res.Payload) != `{"echo":"list_databases"}` {
		t.Fatalf("result = %+v", res)
	}
	rec, _ := rig.Store.Op("inst-1", "op-1")
	if rec.AckState != wire.AckAccepted || rec.AckedAt.IsZero() {
		t.Fatalf("op record = %+v, want acknowledged", rec)
	}
	// Same id, other content: refused by the queue.
	if err := rig.Server.Submit(ctx, "inst-1", wire.Operation{ID: "op-1", Kind: wire.KindStop}); !errors.Is(err, agentendpoint.ErrOpConflict) {
		t.Fatalf("conflicting resubmit: %v", err)
	}
}

func TestOperationQueuedWhileDisconnectedIsDeliveredOnConnect(t *testing.T) {
	rig := endpointtest.NewRig(t)
	c, _ := enrolledClient(t, rig, "inst-1", okHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rig.Server.Submit(ctx, "inst-1", wire.Operation{ID: "early", Kind: wire.KindStatus}); err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	res, err := rig.Server.Await(ctx, "inst-1", "early")
	if err != nil || res.Error != nil {
		t.Fatalf("await: %v %+v", err, res)
	}
}

// rawChannel opens an operation channel to instanceID's agent, as a
// misbehaving controller would.
func rawChannel(t *testing.T, rig *endpointtest.Rig, instanceID string) ssh.Channel {
	t.Helper()
	ch, err := agentendpoint.RawOpChannel(rig.Server, instanceID)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func readReply(t *testing.T, ch ssh.Channel) wire.OpReply {
	t.Helper()
	data, err := wire.ReadFrame(ch, wire.MaxMessageSize)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	var r wire.OpReply
	if err := wire.DecodeStrict(data, &r); err != nil {
		t.Fatalf("garbled reply %q: %v", data, err)
	}
	return r
}

func TestGarbledAndOversizedMessagesFailThatOperationOnly(t *testing.T) {
	rig := endpointtest.NewRig(t)
	var executed atomic.Int32
	c, _ := enrolledClient(t, rig, "inst-1", wiretest.FuncHandler(func(ctx context.Context, op wire.Operation) wire.Result {
		executed.Add(1)
		return wire.Result{}
	}))
	runClient(t, c)
	rig.WaitConnected("inst-1", true, 5*time.Second)
	sessBefore := agentendpoint.SessionOf(rig.Server, "inst-1")

	frame := func(body string) []byte {
		b := make([]byte, 4+len(body))
		binary.BigEndian.PutUint32(b, uint32(len(body)))
		copy(b[4:], body)
		return b
	}
	cases := []struct {
		name  string
		bytes []byte
		want  string
	}{
		{"not json", frame(`this is not json`), "garbled operation"},
		{"truncated json", frame(`{"id":"x1","kind":"st`), "garbled operation"},
		{"unknown field", frame(`{"id":"x2","kind":"status","sudo":true}`), "unknown field"},
		{"trailing data", frame(`{"id":"x3","kind":"status"} {"id":"x4"}`), "trailing data"},
		{"quote in id", frame(`{"id":"x'; DROP DATABASE mysql; --","kind":"status"}`), "operation id"},
		{"NUL in kind", frame(`{"id":"x5","kind":"stat\u0000us"}`), "not a valid kind"},
		{"oversized", append(binary.BigEndian.AppendUint32(nil, wire.MaxMessageSize+1), make([]byte, 64<<10)...), "too large"},
		{"length only", binary.BigEndian.AppendUint32(nil, 0xFFFFFFFF), "too large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := rawChannel(t, rig, "inst-1")
			defer ch.Close()
			go ch.Write(tc.bytes)
			r := readReply(t, ch)
			if r.Ack != nil || r.Result == nil || r.Result.Error == nil || r.Result.Error.Code != wire.CodeBadMessage {
				t.Fatalf("reply = %+v, want a bad_message result without ack", r)
			}
			if !strings.Contains(r.Result.Error.Message, tc.want) {
				t.Fatalf("message %q does not mention %q", r.Result.Error.Message, tc.want)
			}
		})
	}
	if executed.Load() != 0 {
		t.Fatalf("%d bad messages were executed", executed.Load())
	}
	// Same session, still serving.
	sessAfter := agentendpoint.SessionOf(rig.Server, "inst-1")
	if sessAfter != sessBefore {
		t.Fatal("bad messages cost the agent its session")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rig.Server.Submit(ctx, "inst-1", wire.Operation{ID: "good", Kind: wire.KindStatus})
	if res, err := rig.Server.Await(ctx, "inst-1", "good"); err != nil || res.Error != nil {
		t.Fatalf("good op after bad ones: %v %+v", err, res)
	}
	if executed.Load() != 1 {
		t.Fatalf("executed %d, want 1", executed.Load())
	}
}

func TestBadMessagesToTheServerAreRefused(t *testing.T) {
	rig := endpointtest.NewRig(t)
	c, _ := enrolledClient(t, rig, "inst-1", okHandler())
	runClient(t, c)
	rig.WaitConnected("inst-1", true, 5*time.Second)

	// Talk to the server as the enrolled agent would, with raw requests.
	key := wiretest.NewSigner(t)
	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance("inst-raw", token)
	conn, err := ssh.Dial("tcp", rig.Addr, &ssh.ClientConfig{
		User:            wire.SSHUser,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key), ssh.Password(token)},
		HostKeyCallback: ssh.FixedHostKey(rig.HostKey.PublicKey()),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if ok, _, _ := conn.SendRequest(wire.RequestHeartbeat, true, []byte(`{"boot_id":"b","seq":1}`)); ok {
		t.Fatal("heartbeat before hello accepted")
	}
	hello, _ := json.Marshal(wire.Hello{InstanceID: "inst-raw", BootID: "b"})
	if ok, _, err := conn.SendRequest(wire.RequestHello, true, hello); !ok || err != nil {
		t.Fatalf("hello refused: %v", err)
	}
	for _, bad := range []string{`garbage`, `{"boot_id":"b","seq":1,"extra":1}`, `{"boot_id":"b'","seq":1}`, `{"boot_id":"b","seq":0}`} {
		if ok, _, _ := conn.SendRequest(wire.RequestHeartbeat, true, []byte(bad)); ok {
			t.Fatalf("bad heartbeat %s accepted", bad)
		}
	}
	if ok, _, _ := conn.SendRequest(wire.RequestHeartbeat, true, []byte(`{"boot_id":"b","seq":1}`)); !ok {
		t.Fatal("good heartbeat refused after bad ones")
	}
	if n := len(rig.Store.Heartbeats("inst-raw")); n != 1 {
		t.Fatalf("%d heartbeats stored, want 1", n)
	}
	// The agent opens no channels on the controller.
	if _, _, err := conn.OpenChannel("session", nil); err == nil {
		t.Fatal("server accepted a channel from the agent")
	}
}

func TestDeadConnectionIsNoticedWithinSeconds(t *testing.T) {
	rig := endpointtest.NewRig(t)
	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance("inst-1", token)
	cfg := clientConfig(rig, "inst-1", wiretest.NewSigner(t), okHandler())
	cfg.EnrollmentToken = token
	// Freeze only once the agent's side of the session is up: the server
	// counts the connection before its welcome reaches the agent, and a
	// freeze in between is a hello with no reply, not a dead session.
	up := make(chan struct{}, 1)
	cfg.OnConnected = func(addr string) {
		if addr != "" {
			select {
			case up <- struct{}{}:
			default:
			}
		}
	}
	c, err := transport.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- c.RunOnce(timeout(t)) }()
	rig.WaitConnected("inst-1", true, 5*time.Second)
	select {
	case <-up:
	case <-time.After(5 * time.Second):
		t.Fatal("agent did not report the session up")
	}

	rig.Proxy.Freeze(true) // packets vanish, sockets stay open
	start := time.Now()
	select {
	case err := <-ended:
		if !strings.Contains(err.Error(), "unresponsive") {
			t.Fatalf("session ended with %v, want unresponsive controller", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("agent took %s to notice", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("agent did not notice the frozen connection")
	}
	rig.WaitConnected("inst-1", false, 3*time.Second) // the server too
}

func TestReconnectsAfterCut(t *testing.T) {
	rig := endpointtest.NewRig(t)
	c, _ := enrolledClient(t, rig, "inst-1", okHandler())
	runClient(t, c)
	for range 3 {
		rig.WaitConnected("inst-1", true, 5*time.Second)
		rig.Proxy.Cut()
		rig.WaitConnected("inst-1", false, 5*time.Second)
	}
	rig.WaitConnected("inst-1", true, 5*time.Second)
}

func TestHeartbeatFloodIsRefusedWithoutReachingTheStore(t *testing.T) {
	store := agentendpoint.NewMemStore()
	hostKey := wiretest.NewSigner(t)
	srv, err := agentendpoint.NewServer(agentendpoint.ServerConfig{HostKey: hostKey, Store: store, Logger: wiretest.QuietLogger(), MinHeartbeatInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, ln)
	token := wire.NewEnrollmentToken()
	store.AddInstance("inst-f", token)
	conn, err := ssh.Dial("tcp", ln.Addr().String(), &ssh.ClientConfig{
		User: wire.SSHUser, Auth: []ssh.AuthMethod{ssh.PublicKeys(wiretest.NewSigner(t)), ssh.Password(token)},
		HostKeyCallback: ssh.FixedHostKey(hostKey.PublicKey()),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hello, _ := json.Marshal(wire.Hello{InstanceID: "inst-f", BootID: "b"})
	conn.SendRequest(wire.RequestHello, true, hello)
	if ok, _, _ := conn.SendRequest(wire.RequestHeartbeat, true, []byte(`{"boot_id":"b","seq":1}`)); !ok {
		t.Fatal("first heartbeat refused")
	}
	for seq := 2; seq < 50; seq++ {
		ok, reply, _ := conn.SendRequest(wire.RequestHeartbeat, true, fmt.Appendf(nil, `{"boot_id":"b","seq":%d}`, seq))
		if ok || string(reply) != "heartbeats too frequent" {
			t.Fatalf("heartbeat %d: ok=%v reply=%q", seq, ok, reply)
		}
	}
	if n := len(store.Heartbeats("inst-f")); n != 1 {
		t.Fatalf("store holds %d heartbeats, want 1", n)
	}
}

// slowHeartbeatStore takes longer than the agent's keepalive timeout to
// record every heartbeat after the first, unless its context ends.
type slowHeartbeatStore struct {
	*agentendpoint.MemStore
	calls, logins atomic.Int32
}

func (s *slowHeartbeatStore) InstanceForKey(ctx context.Context, fingerprint string) (string, error) {
	s.logins.Add(1)
	return s.MemStore.InstanceForKey(ctx, fingerprint)
}

func (s *slowHeartbeatStore) RecordHeartbeat(ctx context.Context, id string, hb wire.Heartbeat, at time.Time) (bool, error) {
	if s.calls.Add(1) > 1 {
		select {
		case <-time.After(3 * time.Second):
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	return s.MemStore.RecordHeartbeat(ctx, id, hb, at)
}

// A store slower than the agent's keepalive timeout costs heartbeats,
// not the session: the agent's keepalives wait behind a heartbeat's
// reply, so the write is bounded below that timeout, and the session,
// with what runs on it, stays.
func TestASlowStoreDropsHeartbeatsNotTheSession(t *testing.T) {
	var ss *slowHeartbeatStore
	rig := endpointtest.NewRigWithStore(t, func(m *agentendpoint.MemStore) agentendpoint.Store {
		ss = &slowHeartbeatStore{MemStore: m}
		return ss
	})
	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance("inst-1", token)
	cfg := clientConfig(rig, "inst-1", wiretest.NewSigner(t), okHandler())
	cfg.EnrollmentToken = token
	c, _ := transport.NewClient(cfg)
	runClient(t, c)
	rig.WaitConnected("inst-1", true, 5*time.Second)
	logins := ss.logins.Load()
	time.Sleep(4 * time.Second)
	if n := ss.logins.Load(); n != logins || !rig.Server.Connected("inst-1") {
		t.Fatalf("the agent logged in %d more times (connected now: %v) during %d slow heartbeat writes: the session ended",
			n-logins, rig.Server.Connected("inst-1"), ss.calls.Load())
	}
	if n := ss.calls.Load(); n < 3 {
		t.Fatalf("only %d heartbeats reached the store in 4 s", n)
	}
}

// flippingHeartbeat reports building until running is set.
type flippingHeartbeat struct{ running atomic.Bool }

func (f *flippingHeartbeat) Heartbeat(context.Context) wire.Heartbeat {
	if f.running.Load() {
		return wire.Heartbeat{Status: wire.StatusRunning}
	}
	return wire.Heartbeat{Status: wire.StatusBuilding}
}

// TestHeartbeatsComeFastUntilTheDatastoreRuns: an agent whose datastore is
// not running yet (a guest that has just booted) reports every
// HeartbeatFastInterval, so the controller sees it running as soon as it
// runs; then only every HeartbeatInterval. The fast pace ends after
// HeartbeatFastFor even if the datastore never runs.
func TestHeartbeatsComeFastUntilTheDatastoreRuns(t *testing.T) {
	rig := endpointtest.NewRig(t)
	client := func(id string, src transport.HeartbeatSource, fastFor time.Duration) {
		token := wire.NewEnrollmentToken()
		rig.Store.AddInstance(id, token)
		cfg := clientConfig(rig, id, wiretest.NewSigner(t), okHandler())
		cfg.EnrollmentToken = token
		cfg.Heartbeats, cfg.HeartbeatInterval = src, time.Hour
		cfg.HeartbeatFastInterval, cfg.HeartbeatFastFor = 50*time.Millisecond, fastFor
		c, err := transport.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		runClient(t, c)
		rig.WaitConnected(id, true, 5*time.Second)
	}
	count := func(id string, status wire.DatastoreStatus) int {
		n := 0
		for _, hb := range rig.Store.Heartbeats(id) {
			if hb.Status == status {
				n++
			}
		}
		return n
	}
	waitCount := func(what, id string, status wire.DatastoreStatus, n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for count(id, status) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d %s heartbeats of %s in 10 s, want %d (an hour's interval sends one)", what, count(id, status), status, id, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// steady is the number of heartbeats once no more come for 300 ms.
	steady := func(id string) int {
		last := len(rig.Store.Heartbeats(id))
		for {
			time.Sleep(300 * time.Millisecond)
			n := len(rig.Store.Heartbeats(id))
			if n == last {
				return n
			}
			last = n
		}
	}

	src := &flippingHeartbeat{}
	client("booting", src, time.Minute)
	waitCount("while building", "booting", wire.StatusBuilding, 4)
	src.running.Store(true)
	waitCount("once running", "booting", wire.StatusRunning, 1)
	n := steady("booting")
	time.Sleep(time.Second)
	if m := len(rig.Store.Heartbeats("booting")); m != n || count("booting", wire.StatusRunning) != 1 {
		t.Fatalf("after the datastore runs: %d heartbeats, then %d a second later (%d running); want no more within the hour's interval", n, m, count("booting", wire.StatusRunning))
	}

	client("broken", &flippingHeartbeat{}, 300*time.Millisecond)
	waitCount("within the fast window", "broken", wire.StatusBuilding, 2)
	n = steady("broken")
	time.Sleep(time.Second)
	if m := len(rig.Store.Heartbeats("broken")); m != n {
		t.Fatalf("after the fast window a datastore that never runs sent %d heartbeats, then %d a second later; want the hour's interval", n, m)
	}
}

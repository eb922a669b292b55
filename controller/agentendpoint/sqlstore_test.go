package agentendpoint_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strata/agent/wire"
	"strata/agent/wire/wiretest"
	"strata/controller/agentendpoint"
	"strata/controller/store"
	"strata/controller/store/storetest"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

// subject is a agentendpoint.Store under test and how to give it a token.
type subject struct {
	store         agentendpoint.Store
	addToken      func(instanceID, token string)
	addTokenUntil func(instanceID, token string, expires time.Time)
	// forget removes the instance's keys (SQL: Forget, as a delete does);
	// stored says whether its heartbeat of that seq is kept.
	forget func(instanceID string)
	stored func(instanceID string, seq uint64) bool
}

// eachStore runs fn against the reference MemStore and against SQLStore on
// SQLite and PostgreSQL: the SQL store must behave exactly like the
// reference.
func eachStore(t *testing.T, fn func(t *testing.T, s subject)) {
	t.Run("memstore", func(t *testing.T) {
		m := agentendpoint.NewMemStore()
		stored := func(id string, seq uint64) bool {
			for _, hb := range m.Heartbeats(id) {
				if hb.Seq == seq {
					return true
				}
			}
			return false
		}
		fn(t, subject{store: m, addToken: m.AddInstance, addTokenUntil: m.AddInstanceUntil, forget: m.RevokeKeys, stored: stored})
	})
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		s := &agentendpoint.SQLStore{DB: db}
		until := func(id, tok string, expires time.Time) {
			if err := agentendpoint.AddEnrollment(context.Background(), db, id, tok, time.Now(), expires); err != nil {
				t.Fatal(err)
			}
		}
		forget := func(id string) {
			if err := agentendpoint.Forget(context.Background(), db, id); err != nil {
				t.Fatal(err)
			}
		}
		stored := func(id string, seq uint64) bool {
			return storetest.Count(t, db, "SELECT COUNT(*) FROM instance_reports WHERE instance_id = ? AND seq = ?", id, int64(seq)) == 1
		}
		fn(t, subject{store: s, addToken: func(id, tok string) { until(id, tok, time.Time{}) }, addTokenUntil: until, forget: forget, stored: stored})
	})
}

func key(t *testing.T) wire.AgentKey { return wire.NewAgentKey(wiretest.NewSigner(t).PublicKey()) }

func TestStoreEnrollmentIsOneTimeAndBindsTheKey(t *testing.T) {
	eachStore(t, func(t *testing.T, s subject) {
		ctx := context.Background()
		tok := wire.NewEnrollmentToken()
		s.addToken("inst-1", tok)
		k := key(t)
		if _, err := s.store.RedeemEnrollment(ctx, wire.HashToken("not-the-token-at-all-000"), k); !errors.Is(err, agentendpoint.ErrTokenRejected) {
			t.Fatalf("unknown token: %v", err)
		}
		if _, err := s.store.InstanceForKey(ctx, k.Fingerprint); !errors.Is(err, agentendpoint.ErrUnknownKey) {
			t.Fatalf("key before enrolment: %v", err)
		}
		id, err := s.store.RedeemEnrollment(ctx, wire.HashToken(tok), k)
		if err != nil || id != "inst-1" {
			t.Fatalf("redeem = %q, %v", id, err)
		}
		if id, err := s.store.InstanceForKey(ctx, k.Fingerprint); err != nil || id != "inst-1" {
			t.Fatalf("InstanceForKey = %q, %v", id, err)
		}
		if _, err := s.store.RedeemEnrollment(ctx, wire.HashToken(tok), key(t)); !errors.Is(err, agentendpoint.ErrTokenRejected) {
			t.Fatalf("second use of a token: %v", err)
		}
	})
}

func TestStoreEnrollmentWithAnEnrolledKeyBurnsNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, s subject) {
		ctx := context.Background()
		t1, t2 := wire.NewEnrollmentToken(), wire.NewEnrollmentToken()
		s.addToken("a", t1)
		s.addToken("b", t2)
		k := key(t)
		if _, err := s.store.RedeemEnrollment(ctx, wire.HashToken(t1), k); err != nil {
			t.Fatal(err)
		}
		if _, err := s.store.RedeemEnrollment(ctx, wire.HashToken(t2), k); !errors.Is(err, agentendpoint.ErrTokenRejected) {
			t.Fatalf("enrolled key with another token: %v", err)
		}
		if id, _ := s.store.InstanceForKey(ctx, k.Fingerprint); id != "a" {
			t.Fatalf("key moved to %q", id)
		}
		// The rejected attempt left b's token usable.
		if id, err := s.store.RedeemEnrollment(ctx, wire.HashToken(t2), key(t)); err != nil || id != "b" {
			t.Fatalf("b's token after the rejected attempt: %q, %v", id, err)
		}
	})
}

func TestStoreConcurrentRedemptionsOfOneTokenHaveOneWinner(t *testing.T) {
	eachStore(t, func(t *testing.T, s subject) {
		tok := wire.NewEnrollmentToken()
		s.addToken("race", tok)
		keys := make([]wire.AgentKey, 8)
		for i := range keys {
			keys[i] = key(t)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for _, k := range keys {
			wg.Go(func() {
				_, err := s.store.RedeemEnrollment(context.Background(), wire.HashToken(tok), k)
				if err != nil && !errors.Is(err, agentendpoint.ErrTokenRejected) {
					t.Errorf("unexpected error: %v", err)
				}
				mu.Lock()
				if err == nil {
					wins++
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d redemptions succeeded, want 1", wins)
		}
		bound := 0
		for _, k := range keys {
			if _, err := s.store.InstanceForKey(context.Background(), k.Fingerprint); err == nil {
				bound++
			}
		}
		if bound != 1 {
			t.Fatalf("%d keys bound, want 1", bound)
		}
	})
}

// enrol binds a new key to instance id through a token, as an agent's
// first connection does.
func enrol(t *testing.T, s subject, id string) wire.AgentKey {
	t.Helper()
	tok := wire.NewEnrollmentToken()
	s.addToken(id, tok)
	k := key(t)
	if _, err := s.store.RedeemEnrollment(context.Background(), wire.HashToken(tok), k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestStoreHeartbeatsDropStaleAndReordered(t *testing.T) {
	eachStore(t, func(t *testing.T, s subject) {
		ctx := context.Background()
		enrol(t, s, "i")
		hb := func(boot string, seq uint64) wire.Heartbeat {
			return wire.Heartbeat{AgentVersion: "v", BootID: boot, Seq: seq, SentAt: time.Now(), Status: wire.StatusRunning}
		}
		steps := []struct {
			hb   wire.Heartbeat
			want bool
		}{
			{hb("boot-a", 1), true},
			{hb("boot-a", 3), true},
			{hb("boot-a", 2), false}, // reordered
			{hb("boot-a", 3), false}, // repeated
			{hb("boot-a", 4), true},
			{hb("boot-b", 1), true}, // a new boot starts over
			{hb("boot-b", 1), false},
		}
		for i, st := range steps {
			got, err := s.store.RecordHeartbeat(ctx, "i", st.hb, time.Now())
			if err != nil || got != st.want {
				t.Fatalf("step %d (%s/%d): accepted=%v err=%v, want %v", i, st.hb.BootID, st.hb.Seq, got, err, st.want)
			}
		}
	})
}

// TestStoreDropsTheHeartbeatOfAnInstanceWithoutAKey: a heartbeat that was
// in flight when its instance was forgotten (deleted) does not bring the
// instance's report back — a CI run once found the row of a deleted
// instance so — and neither does one from before the instance's keys were
// revoked (a rebuild) until a key is enrolled again.
func TestStoreDropsTheHeartbeatOfAnInstanceWithoutAKey(t *testing.T) {
	eachStore(t, func(t *testing.T, s subject) {
		ctx := context.Background()
		hb := func(seq uint64) wire.Heartbeat {
			return wire.Heartbeat{AgentVersion: "v", BootID: "b", Seq: seq, SentAt: time.Now(), Status: wire.StatusRunning}
		}
		if ok, err := s.store.RecordHeartbeat(ctx, "never", hb(1), time.Now()); ok || err != nil {
			t.Fatalf("heartbeat of an instance never enrolled: accepted=%v err=%v", ok, err)
		}
		enrol(t, s, "gone")
		if ok, err := s.store.RecordHeartbeat(ctx, "gone", hb(1), time.Now()); !ok || err != nil {
			t.Fatalf("heartbeat of an enrolled instance: accepted=%v err=%v", ok, err)
		}
		s.forget("gone")
		if ok, err := s.store.RecordHeartbeat(ctx, "gone", hb(2), time.Now()); ok || err != nil {
			t.Fatalf("heartbeat after the keys were revoked: accepted=%v err=%v", ok, err)
		}
		if s.stored("gone", 2) {
			t.Fatal("the heartbeat sent after the instance was forgotten is stored")
		}
		enrol(t, s, "gone")
		if ok, err := s.store.RecordHeartbeat(ctx, "gone", hb(3), time.Now()); !ok || err != nil || !s.stored("gone", 3) {
			t.Fatalf("heartbeat after a new enrolment: accepted=%v err=%v", ok, err)
		}
	})
}

func op(id string, kind wire.Kind, args string) wire.Operation {
	o := wire.Operation{ID: id, Kind: kind}
	if args != "" {
		o.Args = json.RawMessage(args)
	}
	return o
}

func TestStoreOperationQueue(t *testing.T) {
	eachStore(t, func(t *testing.T, s subject) {
		ctx := context.Background()
		st := s.store
		for i := range 5 {
			if err := st.EnqueueOp(ctx, "i", op(fmt.Sprintf("op-%d", i), wire.KindCreateDatabases, fmt.Sprintf(`{"databases":[{"name":"d%d"}]}`, i)), agentendpoint.QueueOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		// Same id, same content (formatting aside): no-op. Other content: conflict.
		if err := st.EnqueueOp(ctx, "i", op("op-1", wire.KindCreateDatabases, `{"databases": [{"name": "d1"}]}`), agentendpoint.QueueOptions{}); err != nil {
			t.Fatalf("re-enqueue same content: %v", err)
		}
		if err := st.EnqueueOp(ctx, "i", op("op-1", wire.KindCreateDatabases, `{"databases":[{"name":"other"}]}`), agentendpoint.QueueOptions{}); !errors.Is(err, agentendpoint.ErrOpConflict) {
			t.Fatalf("re-enqueue other content: %v", err)
		}
		// Another instance's queue is separate.
		if err := st.EnqueueOp(ctx, "j", op("op-1", wire.KindStatus, ""), agentendpoint.QueueOptions{}); err != nil {
			t.Fatal(err)
		}
		pending, err := st.PendingOps(ctx, "i")
		if err != nil || len(pending) != 5 {
			t.Fatalf("pending = %v, %v", pending, err)
		}
		for i, p := range pending {
			if p.ID != fmt.Sprintf("op-%d", i) {
				t.Fatalf("pending[%d] = %s: queue order lost", i, p.ID)
			}
		}
		if err := st.MarkAcked(ctx, "i", "nope", wire.AckAccepted, time.Now()); !errors.Is(err, agentendpoint.ErrUnknownOp) {
			t.Fatalf("ack of unknown op: %v", err)
		}
		if err := st.MarkAcked(ctx, "i", "op-0", wire.AckAccepted, time.Now()); err != nil {
			t.Fatal(err)
		}
		// Acked but without a result: still pending.
		if p, _ := st.PendingOps(ctx, "i"); len(p) != 5 {
			t.Fatalf("acked op left the pending list: %v", p)
		}
		if _, done, err := st.OpResult(ctx, "i", "op-0"); done || err != nil {
			t.Fatalf("result before one was stored: done=%v err=%v", done, err)
		}
		if _, _, err := st.OpResult(ctx, "i", "missing"); !errors.Is(err, agentendpoint.ErrUnknownOp) {
			t.Fatalf("result of unknown op: %v", err)
		}
		first := wire.Result{OpID: "op-0", Payload: json.RawMessage(`{"n":1}`)}
		second := wire.Result{OpID: "op-0", Error: wire.Errorf(wire.CodeInternal, "late")}
		if err := st.StoreResult(ctx, "i", first); err != nil {
			t.Fatal(err)
		}
		if err := st.StoreResult(ctx, "i", second); err != nil {
			t.Fatal(err)
		}
		got, done, err := st.OpResult(ctx, "i", "op-0")
		if err != nil || !done || !got.OK() || string(got.Payload) != `{"n":1}` {
			t.Fatalf("stored result = %+v done=%v err=%v; the first result must win", got, done, err)
		}
		if err := st.StoreResult(ctx, "i", wire.Result{OpID: "ghost"}); !errors.Is(err, agentendpoint.ErrUnknownOp) {
			t.Fatalf("result for unknown op: %v", err)
		}
		pending, _ = st.PendingOps(ctx, "i")
		if len(pending) != 4 || pending[0].ID != "op-1" {
			t.Fatalf("pending after a result = %v", pending)
		}
	})
}

func TestSQLStoreKeepsTheQueueAcrossReopenAndDropsSecretsOnceDone(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.db")
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	s := &agentendpoint.SQLStore{DB: db}
	if err := s.EnqueueOp(ctx, "i", op("p1", wire.KindPrepare, `{"users":[{"name":"u","password":"hunter2hunter2"}]}`), agentendpoint.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.EnqueueOp(ctx, "i", op("s1", wire.KindStatus, ""), agentendpoint.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db, err = store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s = &agentendpoint.SQLStore{DB: db}
	pending, err := s.PendingOps(ctx, "i")
	if err != nil || len(pending) != 2 || pending[0].ID != "p1" || pending[1].ID != "s1" {
		t.Fatalf("pending after reopen = %+v, %v", pending, err)
	}
	if err := s.StoreResult(ctx, "i", wire.Result{OpID: "p1"}); err != nil {
		t.Fatal(err)
	}
	if n := storetest.Count(t, db, `SELECT COUNT(*) FROM agent_ops WHERE op_id = 'p1' AND args LIKE '%hunter2%'`); n != 0 {
		t.Fatal("a finished prepare op still holds its user passwords")
	}
	// The digest survives the scrub: the same op queued again is still
	// recognised as the same.
	if err := s.EnqueueOp(ctx, "i", op("p1", wire.KindPrepare, `{"users":[{"name":"u","password":"hunter2hunter2"}]}`), agentendpoint.QueueOptions{}); err != nil {
		t.Fatalf("re-enqueue of a finished, scrubbed op: %v", err)
	}
}

func TestForgetRemovesEnrollmentKeysOpsAndReports(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s := &agentendpoint.SQLStore{DB: db}
		tok := wire.NewEnrollmentToken()
		agentendpoint.AddEnrollment(ctx, db, "gone", tok, time.Now(), time.Time{})
		agentendpoint.AddEnrollment(ctx, db, "kept", wire.NewEnrollmentToken(), time.Now(), time.Time{})
		k := key(t)
		if _, err := s.RedeemEnrollment(ctx, wire.HashToken(tok), k); err != nil {
			t.Fatal(err)
		}
		s.EnqueueOp(ctx, "gone", op("x", wire.KindStatus, ""), agentendpoint.QueueOptions{})
		s.RecordHeartbeat(ctx, "gone", wire.Heartbeat{BootID: "b", Seq: 1, Status: wire.StatusRunning}, time.Now())
		if err := agentendpoint.Forget(ctx, db, "gone"); err != nil {
			t.Fatal(err)
		}
		for _, table := range []string{"agent_tokens", "agent_keys", "agent_ops", "instance_reports"} {
			if n := storetest.Count(t, db, "SELECT COUNT(*) FROM "+table+" WHERE instance_id = ?", "gone"); n != 0 {
				t.Errorf("%s still has %d rows of the forgotten instance", table, n)
			}
		}
		if n := storetest.Count(t, db, "SELECT COUNT(*) FROM agent_tokens WHERE instance_id = ?", "kept"); n != 1 {
			t.Error("Forget touched another instance")
		}
		if _, err := s.InstanceForKey(ctx, k.Fingerprint); !errors.Is(err, agentendpoint.ErrUnknownKey) {
			t.Fatalf("forgotten key still authenticates: %v", err)
		}
	})
}

// TestStoreReRunsExpiryAndStaleResults: the queue's re-run and timeout
// rules, the same in memory and in SQL.
func TestStoreReRunsExpiryAndStaleResults(t *testing.T) {
	eachStore(t, func(t *testing.T, s subject) {
		ctx := context.Background()
		now := time.Now()
		st := s.store
		if err := st.EnqueueOp(ctx, "i", op("u", wire.KindCreateUsers, `{"users":[{"name":"u","password":"pw-secret-1"}]}`),
			agentendpoint.QueueOptions{Expires: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		// A re-run moves the op to attempt 1, once.
		if ok, err := st.RetryOp(ctx, "i", "u", 0, now); !ok || err != nil {
			t.Fatalf("retry: %v %v", ok, err)
		}
		if ok, _ := st.RetryOp(ctx, "i", "u", 0, now); ok {
			t.Fatal("a second retry from the same attempt moved the op again")
		}
		pending, _ := st.PendingOps(ctx, "i")
		if len(pending) != 1 || pending[0].Attempt != 1 || len(pending[0].Args) == 0 {
			t.Fatalf("pending %+v, want the op at attempt 1 with its arguments", pending)
		}
		// A late result of attempt 0 is not the op's result.
		st.StoreResult(ctx, "i", wire.Result{OpID: "u", Attempt: 0, Error: wire.Errorf(wire.CodeInterrupted, "old")})
		if _, done, _ := st.OpResult(ctx, "i", "u"); done {
			t.Fatal("a stale attempt's result was stored")
		}
		// The bound: no re-run at wire.MaxAttempts, none after the expiry.
		if ok, _ := st.RetryOp(ctx, "i", "u", 1, now.Add(2*time.Minute)); ok {
			t.Fatal("re-run after the op's expiry")
		}
		for a := 1; a < wire.MaxAttempts-1; a++ {
			if ok, _ := st.RetryOp(ctx, "i", "u", a, now); !ok {
				t.Fatalf("retry from attempt %d refused", a)
			}
		}
		if ok, _ := st.RetryOp(ctx, "i", "u", wire.MaxAttempts-1, now); ok {
			t.Fatalf("a run beyond wire.MaxAttempts (%d)", wire.MaxAttempts)
		}
		// Expiry: the undelivered op gets an expired result, its secrets
		// go; an op without an expiry stays.
		st.EnqueueOp(ctx, "i", op("forever", wire.KindStatus, ""), agentendpoint.QueueOptions{})
		refs, err := st.ExpireOps(ctx, now.Add(2*time.Minute))
		if err != nil || len(refs) != 1 || refs[0].OpID != "u" {
			t.Fatalf("expired %v, %v", refs, err)
		}
		res, done, _ := st.OpResult(ctx, "i", "u")
		if !done || res.Error == nil || res.Error.Code != wire.CodeExpired {
			t.Fatalf("expired op's result %+v", res)
		}
		if pending, _ := st.PendingOps(ctx, "i"); len(pending) != 1 || pending[0].ID != "forever" {
			t.Fatalf("pending after expiry %+v", pending)
		}
	})
}

func TestSQLStoreKeepsSecretsNoLongerThanTheTimeoutAndReportsWatchedFailures(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s := &agentendpoint.SQLStore{DB: db}
		now := time.Now()
		// Delivered (acked) but never finished: the op keeps running in
		// the guest, but its password goes at the timeout.
		s.EnqueueOp(ctx, "i", op("u", wire.KindCreateUsers, `{"users":[{"name":"u","password":"pw-secret-1"}]}`),
			agentendpoint.QueueOptions{Expires: now.Add(time.Second), Watch: true})
		s.MarkAcked(ctx, "i", "u", wire.AckAccepted, now)
		if refs, _ := s.ExpireOps(ctx, now.Add(2*time.Second)); len(refs) != 0 {
			t.Fatalf("an op the agent runs was given up: %v", refs)
		}
		if n := storetest.Count(t, db, `SELECT COUNT(*) FROM agent_ops WHERE args LIKE '%pw-secret-1%'`); n != 0 {
			t.Fatal("a password outlived its op's timeout")
		}
		// Its failure, when it comes, is to be reported, once.
		if err := s.StoreResult(ctx, "i", wire.Result{OpID: "u", Error: wire.Errorf(wire.CodeAlreadyExists, "there")}); err != nil {
			t.Fatal(err)
		}
		w, err := agentendpoint.WatchedResults(ctx, db)
		if err != nil || len(w) != 1 || w[0].OpID != "u" || w[0].Result.Error.Code != wire.CodeAlreadyExists {
			t.Fatalf("watched %+v, %v", w, err)
		}
		agentendpoint.Unwatch(ctx, db, "i", "u", now)
		if w, _ := agentendpoint.WatchedResults(ctx, db); len(w) != 0 {
			t.Fatalf("reported twice: %+v", w)
		}
	})
}

// TestTheStatusAnOperationLeftBeatsAnOlderHeartbeat: after a restart op,
// the status its result carried is shown, and a heartbeat sent before the
// op ended does not bring back the old status.
func TestTheStatusAnOperationLeftBeatsAnOlderHeartbeat(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s := &agentendpoint.SQLStore{DB: db}
		tok := wire.NewEnrollmentToken()
		agentendpoint.AddEnrollment(ctx, db, "i", tok, time.Now(), time.Time{})
		if _, err := s.RedeemEnrollment(ctx, wire.HashToken(tok), key(t)); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now().Truncate(time.Millisecond)
		s.RecordHeartbeat(ctx, "i", wire.Heartbeat{BootID: "b", Seq: 1, SentAt: t0, Status: wire.StatusShutdown}, t0)
		if err := s.RecordOpStatus(ctx, "i", "b", wire.StatusResult{Status: wire.StatusRunning}, t0.Add(2*time.Second), t0.Add(2*time.Second)); err != nil {
			t.Fatal(err)
		}
		status := func() string {
			var st string
			db.QueryRow(ctx, `SELECT status FROM instance_reports WHERE instance_id = 'i'`).Scan(&st)
			return st
		}
		if got := status(); got != "running" {
			t.Fatalf("status after the op %q", got)
		}
		// Built during the restart, arriving after its result.
		if ok, _ := s.RecordHeartbeat(ctx, "i", wire.Heartbeat{BootID: "b", Seq: 2, SentAt: t0.Add(time.Second), Status: wire.StatusShutdown}, t0.Add(3*time.Second)); ok || status() != "running" {
			t.Fatalf("an older heartbeat overwrote the op's status: %q", status())
		}
		// Another agent process's report is not touched by this one's op.
		s.RecordOpStatus(ctx, "i", "other-boot", wire.StatusResult{Status: wire.StatusFailed}, t0.Add(4*time.Second), t0.Add(4*time.Second))
		if status() != "running" {
			t.Fatal("an op of another boot changed the status")
		}
		if ok, _ := s.RecordHeartbeat(ctx, "i", wire.Heartbeat{BootID: "b", Seq: 3, SentAt: t0.Add(5 * time.Second), Status: wire.StatusCrashed}, t0.Add(5*time.Second)); !ok || status() != "crashed" {
			t.Fatal("a newer heartbeat was not taken")
		}
	})
}

// TestEnrolmentVoidsTheInstancesOtherTokens: a create step run twice
// writes two tokens (the first VM may still run with the first); the
// first enrolment voids the other.
func TestEnrolmentVoidsTheInstancesOtherTokens(t *testing.T) {
	eachStore(t, func(t *testing.T, s subject) {
		ctx := context.Background()
		first, second := wire.NewEnrollmentToken(), wire.NewEnrollmentToken()
		s.addToken("i", first)
		s.addToken("i", second)
		if _, err := s.store.RedeemEnrollment(ctx, wire.HashToken(first), key(t)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.store.RedeemEnrollment(ctx, wire.HashToken(second), key(t)); !errors.Is(err, agentendpoint.ErrTokenRejected) {
			t.Fatalf("the instance's second token still enrols: %v", err)
		}
	})
}

// An enrolment token expires (the version's boot timeout, or an hour): a
// token that leaks from a config drive later is of no use.
func TestStoreEnrollmentTokensExpire(t *testing.T) {
	eachStore(t, func(t *testing.T, s subject) {
		ctx := context.Background()
		old := wire.NewEnrollmentToken()
		s.addTokenUntil("inst-1", old, time.Now().Add(-time.Second))
		if _, err := s.store.RedeemEnrollment(ctx, wire.HashToken(old), key(t)); !errors.Is(err, agentendpoint.ErrTokenRejected) {
			t.Fatalf("an expired token: %v", err)
		}
		fresh := wire.NewEnrollmentToken()
		s.addTokenUntil("inst-2", fresh, time.Now().Add(time.Minute))
		if id, err := s.store.RedeemEnrollment(ctx, wire.HashToken(fresh), key(t)); err != nil || id != "inst-2" {
			t.Fatalf("a token within its lifetime: %q, %v", id, err)
		}
	})
}

// A token written before tokens had an expiry is good for an hour from
// its creation.
func TestStoreTokensWithoutExpiryLastAnHour(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s := &agentendpoint.SQLStore{DB: db}
		old, recent := wire.NewEnrollmentToken(), wire.NewEnrollmentToken()
		for tok, age := range map[string]time.Duration{old: 2 * time.Hour, recent: time.Minute} {
			if _, err := db.Exec(ctx, `INSERT INTO agent_tokens (token_hash, instance_id, created_at) VALUES (?, ?, ?)`,
				wire.HashToken(tok), "inst-"+tok[:4], store.Millis(time.Now().Add(-age))); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.RedeemEnrollment(ctx, wire.HashToken(old), key(t)); !errors.Is(err, agentendpoint.ErrTokenRejected) {
			t.Fatalf("a two-hour-old token without expiry: %v", err)
		}
		if _, err := s.RedeemEnrollment(ctx, wire.HashToken(recent), key(t)); err != nil {
			t.Fatalf("a minute-old token without expiry: %v", err)
		}
	})
}

// A heartbeat's users digest is kept in the report's own write, with the
// number of heartbeats in a row that carried it; one without a digest
// (an older agent, a session's first heartbeat) clears both; a stale
// heartbeat changes neither.
func TestTheUsersDigestIsKeptWithItsStreakInTheReportsWrite(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s := &agentendpoint.SQLStore{DB: db}
		tok := wire.NewEnrollmentToken()
		agentendpoint.AddEnrollment(ctx, db, "i", tok, time.Now(), time.Time{})
		if _, err := s.RedeemEnrollment(ctx, wire.HashToken(tok), key(t)); err != nil {
			t.Fatal(err)
		}
		a, b := wire.UsersDigest([]string{"user default off ~* &* +@all"}), wire.UsersDigest(nil)
		t0 := time.Now().Truncate(time.Millisecond)
		seq := uint64(0)
		beat := func(digest string) {
			t.Helper()
			seq++
			if ok, err := s.RecordHeartbeat(ctx, "i", wire.Heartbeat{BootID: "b", Seq: seq, SentAt: t0.Add(time.Duration(seq) * time.Second), Status: wire.StatusRunning, UsersDigest: digest}, t0); !ok || err != nil {
				t.Fatalf("heartbeat %d: %v %v", seq, ok, err)
			}
		}
		want := func(digest string, beats int) {
			t.Helper()
			var d string
			var n int
			if err := db.QueryRow(ctx, `SELECT users_digest, users_digest_beats FROM instance_reports WHERE instance_id = ?`, "i").Scan(&d, &n); err != nil {
				t.Fatal(err)
			}
			if d != digest || n != beats {
				t.Fatalf("after heartbeat %d: digest %.8s × %d, want %.8s × %d", seq, d, n, digest, beats)
			}
		}
		beat(a)
		want(a, 1)
		beat(a)
		beat(a)
		want(a, 3)
		beat(b)
		want(b, 1)
		beat("")
		want("", 0)
		beat(b)
		want(b, 1)
		if ok, _ := s.RecordHeartbeat(ctx, "i", wire.Heartbeat{BootID: "b", Seq: 1, SentAt: t0, Status: wire.StatusRunning, UsersDigest: a}, t0); ok {
			t.Fatal("a stale heartbeat was taken")
		}
		want(b, 1)
	})
}

package transport_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/ops"
	"strata/agent/transport"
	"strata/agent/wire"
	"strata/agent/wire/wiretest"
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

// The agent's real executor and journal behind the real transport: the
// connection is cut while an operation runs; after the reconnect the
// controller resends it, the agent answers with the one execution's result,
// and an operation queued during the outage is delivered too.
func TestConnectionCutMidOperationLosesNothingAndDoublesNothing(t *testing.T) {
	rig := endpointtest.NewRig(t)
	journal, err := ops.OpenJournal(filepath.Join(t.TempDir(), "journal"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer journal.Close()
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	runs := map[string]*atomic.Int32{"slow": {}, "queued": {}}
	exec := ops.NewExecutor(journal, func(ctx context.Context, op wire.Operation) wire.Result {
		runs[op.ID].Add(1)
		if op.ID == "slow" {
			started <- struct{}{}
			<-release
		}
		return wire.Result{Payload: json.RawMessage(`"` + op.ID + ` done"`)}
	}, wiretest.QuietLogger())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go exec.Run(ctx)

	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance("inst-1", token)
	cfg := clientConfig(rig, "inst-1", wiretest.NewSigner(t), exec)
	cfg.EnrollmentToken = token
	c, err := transport.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	rig.WaitConnected("inst-1", true, 5*time.Second)

	actx, acancel := context.WithTimeout(ctx, 20*time.Second)
	defer acancel()
	if err := rig.Server.Submit(actx, "inst-1", wire.Operation{ID: "slow", Kind: wire.KindRestart}); err != nil {
		t.Fatal(err)
	}
	<-started
	// The op runs as soon as it is queued, before its ack is out: wait for
	// the controller to have the ack, so the resend below is a second one.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if rec, ok := rig.Store.Op("inst-1", "slow"); ok && rec.Acks >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the controller never got slow's ack")
		}
	}
	// Cut and keep the agent away while a second op is queued.
	rig.Proxy.Freeze(true)
	rig.Proxy.Cut()
	rig.WaitConnected("inst-1", false, 5*time.Second)
	if err := rig.Server.Submit(actx, "inst-1", wire.Operation{ID: "queued", Kind: wire.KindStatus}); err != nil {
		t.Fatal(err)
	}
	close(release) // "slow" finishes while nobody listens
	time.Sleep(100 * time.Millisecond)
	rig.Proxy.Freeze(false)

	for _, id := range []string{"slow", "queued"} {
		res, err := rig.Server.Await(actx, "inst-1", id)
		if err != nil {
			t.Fatalf("await %s: %v", id, err)
		}
		if res.Error != nil || string(res.Payload) != `"`+id+` done"` {
			t.Fatalf("%s result = %+v", id, res)
		}
		if n := runs[id].Load(); n != 1 {
			t.Fatalf("%s executed %d times, want exactly 1", id, n)
		}
	}
	rec, _ := rig.Store.Op("inst-1", "slow")
	if rec.Acks < 2 || (rec.AckState != wire.AckDone && rec.AckState != wire.AckRunning) {
		t.Fatalf("slow was not resent and re-acknowledged: %+v", rec)
	}
	if exec.LastCompleted() != "queued" {
		t.Fatalf("last completed = %q", exec.LastCompleted())
	}
}

// A backup's data channel dies with its connection: the operation fails
// once, with the stream's error as its result, and the controller's resend
// after the reconnect gets that result back — the datastore's backup tool
// is never run a second time, and no second stream is opened.
func TestABackupCutWithItsConnectionRunsOnceAndReportsTheCut(t *testing.T) {
	rig := endpointtest.NewRig(t)
	journal, err := ops.OpenJournal(filepath.Join(t.TempDir(), "journal"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer journal.Close()
	var runs, opens atomic.Int32
	var client atomic.Pointer[transport.Client]
	exec := ops.NewExecutor(journal, func(ctx context.Context, op wire.Operation) wire.Result {
		runs.Add(1)
		st, err := client.Load().OpenStream(ctx, op.ID, 0)
		if err != nil {
			return wire.Result{Error: wire.Errorf(wire.CodeInternal, "open stream: %v", err)}
		}
		opens.Add(1)
		defer st.Close()
		chunk := make([]byte, 32<<10)
		for {
			if _, err := st.Write(chunk); err != nil {
				return wire.Result{Error: wire.Errorf(wire.CodeInternal, "backup stream: %v", err)}
			}
		}
	}, wiretest.QuietLogger())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go exec.Run(ctx)

	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance("inst-1", token)
	cfg := clientConfig(rig, "inst-1", wiretest.NewSigner(t), exec)
	cfg.EnrollmentToken = token
	c, err := transport.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client.Store(c)
	go c.Run(ctx)
	rig.WaitConnected("inst-1", true, 5*time.Second)

	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	defer acancel()
	op := wire.Operation{ID: "backup-1", Kind: wire.KindBackup, Args: json.RawMessage(`{"backup_id":"b1"}`)}
	w, err := rig.Server.ExpectStream("inst-1", op.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := rig.Server.Submit(actx, "inst-1", op); err != nil {
		t.Fatal(err)
	}
	st, err := w.Wait(actx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	var got int
	for got < 1<<20 {
		n, err := st.Read(buf)
		if err != nil {
			t.Fatalf("stream after %d bytes: %v", got, err)
		}
		got += n
	}
	rig.Proxy.Cut()
	// The controller's end of the stream ends too (never a silent EOF
	// that could pass for a finished backup: the agent's digest is what
	// proves the end, and it never comes).
	for {
		if _, err := st.Read(buf); err != nil {
			break
		}
	}
	res, err := rig.Server.Await(actx, "inst-1", op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if res.Error == nil || !strings.Contains(res.Error.Message, "backup stream") {
		t.Fatalf("result of the cut backup: %+v, want its stream's error", res)
	}
	if n, m := runs.Load(), opens.Load(); n != 1 || m != 1 {
		t.Fatalf("the backup ran %d times and opened %d streams, want 1 and 1", n, m)
	}
	if rec, _ := rig.Store.Op("inst-1", op.ID); rec.Acks < 2 {
		t.Fatalf("the backup was not resent after the reconnect: %+v", rec)
	}
	if _, err := rig.Server.ExpectStream("inst-1", op.ID, 0); err != nil {
		t.Fatalf("the operation's stream slot is still held: %v", err)
	}
}

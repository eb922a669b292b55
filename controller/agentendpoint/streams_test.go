package agentendpoint_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"strata/agent/transport"
	"strata/agent/wire"
	"strata/agent/wire/wiretest"
	"strata/controller/agentendpoint"
	"strata/controller/agentendpoint/endpointtest"
)

// streamAgent connects an enrolled agent for instanceID whose handler is
// h, given the client so it can open streams.
func streamAgent(t *testing.T, rig *endpointtest.Rig, instanceID string, h func(c *transport.Client, op wire.Operation) wire.Result) *transport.Client {
	t.Helper()
	key := wiretest.NewSigner(t)
	token := wire.NewEnrollmentToken()
	rig.Store.AddInstance(instanceID, token)
	var client atomic.Pointer[transport.Client]
	cfg := clientConfig(rig, instanceID, key, wiretest.FuncHandler(func(ctx context.Context, op wire.Operation) wire.Result {
		return h(client.Load(), op)
	}))
	cfg.EnrollmentToken = token
	c, err := transport.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client.Store(c)
	runClient(t, c)
	rig.WaitConnected(instanceID, true, 5*time.Second)
	return c
}

func digestOf(b []byte) wire.StreamDigest {
	sum := sha256.Sum256(b)
	return wire.StreamDigest{Bytes: int64(len(b)), SHA256: wire.SHA256Hex(sum[:])}
}

func readDigest(r io.Reader) (wire.StreamDigest, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return wire.StreamDigest{Bytes: n, SHA256: wire.SHA256Hex(h.Sum(nil))}, err
}

func submit(t *testing.T, rig *endpointtest.Rig, instanceID, opID string, kind wire.Kind) {
	t.Helper()
	if err := rig.Server.Submit(context.Background(), instanceID, wire.Operation{ID: opID, Kind: kind, Args: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
}

func TestAStreamCarriesAnOperationsDataBothWays(t *testing.T) {
	rig := endpointtest.NewRig(t)
	payload := make([]byte, 8<<20+123)
	rand.Read(payload)
	streamAgent(t, rig, "inst-1", func(c *transport.Client, op wire.Operation) wire.Result {
		st, err := c.OpenStream(context.Background(), op.ID, 0)
		if err != nil {
			return wire.Result{Error: wire.Errorf(wire.CodeInternal, "%v", err)}
		}
		defer st.Close()
		var d wire.StreamDigest
		if op.Kind == wire.KindBackup {
			_, err = st.Write(payload)
			if err == nil {
				err = st.CloseWrite()
			}
			d = digestOf(payload)
		} else {
			d, err = readDigest(st)
		}
		if err != nil {
			return wire.Result{Error: wire.Errorf(wire.CodeInternal, "%v", err)}
		}
		data, _ := json.Marshal(d)
		return wire.Result{Payload: data}
	})

	// Agent → controller.
	w, err := rig.Server.ExpectStream("inst-1", "backup-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	submit(t, rig, "inst-1", "backup-1", wire.KindBackup)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := w.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readDigest(st)
	st.Close()
	var sent wire.StreamDigest
	if err := await(t, rig, "inst-1", "backup-1").Decode(&sent); err != nil || !got.Equal(sent) || !got.Equal(digestOf(payload)) {
		t.Fatalf("controller received %+v (%v), agent sent %+v", got, err, sent)
	}

	// Controller → agent.
	w2, _ := rig.Server.ExpectStream("inst-1", "restore-1", 0)
	defer w2.Close()
	submit(t, rig, "inst-1", "restore-1", wire.KindRestore)
	st, err = w2.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(payload); err != nil {
		t.Fatal(err)
	}
	st.CloseWrite()
	var received wire.StreamDigest
	if err := await(t, rig, "inst-1", "restore-1").Decode(&received); err != nil || !received.Equal(digestOf(payload)) {
		t.Fatalf("agent received %+v (%v)", received, err)
	}
	st.Close()
}

func TestStreamsNobodyWaitsForAreRefused(t *testing.T) {
	rig := endpointtest.NewRig(t)
	type attempt struct {
		op    string
		index int
	}
	var plan atomic.Pointer[[]attempt]
	streamAgent(t, rig, "inst-1", func(c *transport.Client, op wire.Operation) wire.Result {
		var outcomes []string
		for _, a := range *plan.Load() {
			st, err := c.OpenStream(context.Background(), a.op, a.index)
			if err != nil {
				outcomes = append(outcomes, err.Error())
				continue
			}
			st.Close()
			outcomes = append(outcomes, "accepted")
		}
		data, _ := json.Marshal(outcomes)
		return wire.Result{Payload: data}
	})
	other := streamAgent(t, rig, "inst-2", func(c *transport.Client, op wire.Operation) wire.Result {
		_, err := c.OpenStream(context.Background(), "op-a", 0)
		data, _ := json.Marshal([]string{fmt.Sprint(err)})
		return wire.Result{Payload: data}
	})
	_ = other

	w, _ := rig.Server.ExpectStream("inst-1", "op-a", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		if st, err := w.Wait(ctx); err == nil {
			st.Close()
		}
	}()
	closed, _ := rig.Server.ExpectStream("inst-1", "op-closed", 0)
	closed.Close()

	// inst-2 asks for inst-1's stream: the instance comes from the key.
	submit(t, rig, "inst-2", "probe", wire.KindBackup)
	var out []string
	await(t, rig, "inst-2", "probe").Decode(&out)
	if len(out) != 1 || !strings.Contains(out[0], "controller refused the data stream") {
		t.Fatalf("another instance's agent opened inst-1's stream: %v", out)
	}

	plan.Store(&[]attempt{{"op-other", 0}, {"op-a", 1}, {"op-a", 0}, {"op-a", 0}, {"op-closed", 0}})
	submit(t, rig, "inst-1", "op-a", wire.KindBackup)
	await(t, rig, "inst-1", "op-a").Decode(&out)
	want := []string{"refused", "refused", "accepted", "refused", "refused"}
	if len(out) != len(want) {
		t.Fatalf("outcomes %v", out)
	}
	for i := range want {
		if !strings.Contains(out[i], want[i]) {
			t.Errorf("attempt %d: %q, want %q", i, out[i], want[i])
		}
	}
	if _, err := rig.Server.ExpectStream("inst-1", "op-a", 0); err != nil {
		t.Fatalf("a consumed wait blocks a new one: %v", err)
	}
}

func TestACutConnectionEndsTheStreamOnBothSides(t *testing.T) {
	rig := endpointtest.NewRig(t)
	agentErr := make(chan error, 1)
	chunk := make([]byte, 64<<10)
	streamAgent(t, rig, "inst-1", func(c *transport.Client, op wire.Operation) wire.Result {
		st, err := c.OpenStream(context.Background(), op.ID, 0)
		if err != nil {
			agentErr <- err
			return wire.Result{}
		}
		defer st.Close()
		for {
			if _, err := st.Write(chunk); err != nil {
				agentErr <- err
				return wire.Result{Error: wire.Errorf(wire.CodeUnavailable, "stream: %v", err)}
			}
		}
	})
	w, _ := rig.Server.ExpectStream("inst-1", "backup-cut", 0)
	defer w.Close()
	submit(t, rig, "inst-1", "backup-cut", wire.KindBackup)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := w.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, st, 1<<20); err != nil {
		t.Fatal(err)
	}
	rig.Proxy.Cut()
	readDone := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, st); readDone <- err }()
	select {
	case <-readDone: // EOF or an error: the stream ended without the agent's result
	case <-time.After(10 * time.Second):
		t.Fatal("the controller's read did not end after the cut")
	}
	select {
	case err := <-agentErr:
		if err == nil {
			t.Fatal("agent write kept succeeding")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent's write did not fail after the cut")
	}
	st.Close()
}

func TestAClosedWaitReturnsErrStreamClosed(t *testing.T) {
	rig := endpointtest.NewRig(t)
	w, err := rig.Server.ExpectStream("inst-1", "op-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rig.Server.ExpectStream("inst-1", "op-1", 0); err == nil {
		t.Fatal("a second wait for the same stream was registered")
	}
	go w.Close()
	if _, err := w.Wait(context.Background()); !errors.Is(err, agentendpoint.ErrStreamClosed) {
		t.Fatalf("Wait after Close: %v", err)
	}
}

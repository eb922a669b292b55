// Package endpointtest is the controller's end of the wire as a test rig:
// an agent endpoint (Server over a MemStore, short timings) on 127.0.0.1,
// reachable through a wiretest.Proxy that can cut or freeze connections.
//
// It is the one sanctioned way for tests outside the controller to reach
// into controller/: the agent's own tests (daemon, transport) need a real
// controller end to dial, and duplicating the server for them would test a
// copy. It imports nothing of agent/ but wire and wiretest. It is for tests
// only: nothing in a shipped binary may import it.
package endpointtest

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/wire/wiretest"
	"strata/controller/agentendpoint"
)

// Rig is a controller endpoint on 127.0.0.1 with a memory store, optionally
// behind a Proxy that can cut or freeze connections.
type Rig struct {
	T       testing.TB
	Store   *agentendpoint.MemStore
	Server  *agentendpoint.Server
	HostKey ssh.Signer
	Addr    string // the server's own address
	Proxy   *wiretest.Proxy
}

// NewRig starts a server with short test timings.
func NewRig(t testing.TB) *Rig { return NewRigWithStore(t, nil) }

// NewRigWithStore is NewRig with the server's store wrapped by wrap (to
// observe or fail store calls); Rig.Store stays the MemStore underneath.
func NewRigWithStore(t testing.TB, wrap func(*agentendpoint.MemStore) agentendpoint.Store) *Rig {
	t.Helper()
	r := &Rig{T: t, Store: agentendpoint.NewMemStore(), HostKey: wiretest.NewSigner(t)}
	var store agentendpoint.Store = r.Store
	if wrap != nil {
		store = wrap(r.Store)
	}
	srv, err := agentendpoint.NewServer(agentendpoint.ServerConfig{
		HostKey:           r.HostKey,
		Store:             store,
		Logger:            wiretest.QuietLogger().With("side", "server"),
		KeepaliveInterval: 100 * time.Millisecond,
		KeepaliveTimeout:  time.Second,
		AckTimeout:        2 * time.Second,
		PollInterval:      200 * time.Millisecond,
		// Test agents beat every 100ms.
		MinHeartbeatInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.Server = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.Addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	r.Proxy = wiretest.NewProxy(t, r.Addr)
	return r
}

// WaitConnected waits until instanceID has a session.
func (r *Rig) WaitConnected(instanceID string, want bool, within time.Duration) {
	r.T.Helper()
	deadline := time.Now().Add(within)
	for r.Server.Connected(instanceID) != want {
		if time.Now().After(deadline) {
			r.T.Fatalf("instance %s connected=%v not reached within %s", instanceID, want, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

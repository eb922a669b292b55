// Package wiretest provides a controller endpoint and agent-side helpers
// for tests on both sides of the wire: a Server on 127.0.0.1 backed by a
// MemStore, reachable through a Proxy that can cut or freeze connections,
// fresh keys, and trivial handlers.
//
// It is for tests only: nothing in a shipped binary may import it.
package wiretest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/transport"
	"strata/agent/wire"
)

// QuietLogger logs to stderr under -v, else nowhere.
func QuietLogger() *slog.Logger {
	var w io.Writer = io.Discard
	if testing.Verbose() {
		w = os.Stderr
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// NewSigner makes a fresh ed25519 key.
func NewSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Rig is a controller endpoint on 127.0.0.1 with a memory store, optionally
// behind a Proxy that can cut or freeze connections.
type Rig struct {
	T       testing.TB
	Store   *wire.MemStore
	Server  *wire.Server
	HostKey ssh.Signer
	Addr    string // the server's own address
	Proxy   *Proxy
}

// NewRig starts a server with short test timings.
func NewRig(t testing.TB) *Rig { return NewRigWithStore(t, nil) }

// NewRigWithStore is NewRig with the server's store wrapped by wrap (to
// observe or fail store calls); Rig.Store stays the MemStore underneath.
func NewRigWithStore(t testing.TB, wrap func(*wire.MemStore) wire.Store) *Rig {
	t.Helper()
	r := &Rig{T: t, Store: wire.NewMemStore(), HostKey: NewSigner(t)}
	var store wire.Store = r.Store
	if wrap != nil {
		store = wrap(r.Store)
	}
	srv, err := wire.NewServer(wire.ServerConfig{
		HostKey:           r.HostKey,
		Store:             store,
		Logger:            QuietLogger().With("side", "server"),
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
	r.Proxy = NewProxy(t, r.Addr)
	return r
}

// ClientConfig returns a config for an agent of instanceID dialling through
// the proxy, with short test timings.
func (r *Rig) ClientConfig(instanceID string, key ssh.Signer, h transport.OperationHandler) transport.ClientConfig {
	return transport.ClientConfig{
		Controllers:       []string{r.Proxy.Addr},
		HostKey:           r.HostKey.PublicKey(),
		Key:               key,
		InstanceID:        instanceID,
		AgentVersion:      "test",
		Handler:           h,
		Heartbeats:        StaticHeartbeat{Status: wire.StatusRunning},
		HeartbeatInterval: 100 * time.Millisecond,
		KeepaliveInterval: 100 * time.Millisecond,
		KeepaliveTimeout:  time.Second,
		DialTimeout:       2 * time.Second,
		MinBackoff:        20 * time.Millisecond,
		MaxBackoff:        100 * time.Millisecond,
		Logger:            QuietLogger().With("side", "agent"),
	}
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

// StaticHeartbeat reports a fixed status.
type StaticHeartbeat struct{ Status wire.DatastoreStatus }

func (s StaticHeartbeat) Heartbeat(context.Context) wire.Heartbeat {
	return wire.Heartbeat{Status: s.Status}
}

// FuncHandler runs fn for each new operation (no journal: tests of the
// transport alone).
type FuncHandler func(ctx context.Context, op wire.Operation) wire.Result

func (f FuncHandler) HandleOperation(ctx context.Context, op wire.Operation, ack func(wire.AckState) error) wire.Result {
	ack(wire.AckAccepted)
	return f(ctx, op)
}

// Proxy forwards TCP to a target; Cut closes every forwarded connection,
// Freeze silently drops all traffic while keeping connections open (a
// dead peer, as far as either side can tell).
type Proxy struct {
	Addr   string
	target string
	ln     net.Listener
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln}
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.Cut() })
	return p
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !p.frozen.Load() { // a frozen link does not carry the close either
				dst.Close()
			}
			return
		}
	}
}

// Cut closes all current connections.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Freeze starts or stops dropping traffic.
func (p *Proxy) Freeze(on bool) { p.frozen.Store(on) }

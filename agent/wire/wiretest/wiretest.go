// Package wiretest holds test helpers that need only the wire contract, for
// tests on both sides of it: fresh keys, a quiet logger, a TCP Proxy that
// can cut or freeze connections, a fixed heartbeat and a trivial operation
// handler. The controller's end as a test rig (an endpoint on 127.0.0.1
// behind such a Proxy) is controller/agentendpoint/endpointtest.
//
// Like wire, it imports nothing of strata but wire. It is for tests only:
// nothing in a shipped binary may import it.
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

	"golang.org/x/crypto/ssh"

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

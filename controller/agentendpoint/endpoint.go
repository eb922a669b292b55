// Package agentendpoint is the controller's end of the agent protocol
// (whose contract is strata/agent/wire; the agent's end is
// strata/agent/transport):
//
//   - server.go: Server, the SSH endpoint agents dial. It authenticates
//     agents (enrolled key, or one-time token), records their heartbeats
//     and delivers queued operations, resending each until its result is
//     stored.
//   - streams.go: the data channels of backup and restore operations
//     (ExpectStream/StreamWait): accepted only when the controller waits
//     for exactly that instance's operation and stream, once.
//   - store.go: Store, the small interface Server persists through.
//   - sqlstore.go: SQLStore, the durable Store in the controller's
//     database, where enrolment tokens (hashed), enrolled keys, the latest
//     heartbeat of every instance and the operation queue live. A
//     heartbeat lands in instance_reports.
//   - memstore.go: MemStore, the same semantics in memory.
//   - endpoint.go: Endpoint, what the running controller serves (Server
//     over SQLStore, its host key kept in the state directory).
//   - memendpoint.go: MemEndpoint (Server over MemStore) for programs that
//     talk to one short-lived guest: `strata boot-test --agent`, whose
//     builder code takes it through its own small interface so the builder
//     need not import the controller; the end-to-end tests; the agent
//     footprint bench.
//   - endpointtest/: the endpoint as a test rig, for tests of both sides.
//
// It moves facts and requests only: it never decides what an instance's
// status is or what to do about a silent agent (that is instances/ and
// lifecycle/), and it imports nothing of agent/ except wire.
package agentendpoint

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/wire"
	"strata/controller/store"
)

// HostKeyFile is the host key's file name in the state directory.
const HostKeyFile = "agent_host_key"

// LoadOrCreateHostKey reads the ed25519 host key at path, creating it (0600)
// on first use. Several replicas must share one key: agents pin it.
func LoadOrCreateHostKey(path string) (ssh.Signer, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		block, err := ssh.MarshalPrivateKey(priv, "strata controller agent endpoint")
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
			return nil, fmt.Errorf("write host key: %w", err)
		}
		// Link, not rename: a concurrent first start keeps the key that won.
		if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
			os.Remove(tmp)
			return nil, fmt.Errorf("write host key: %w", err)
		}
		os.Remove(tmp)
		data, err = os.ReadFile(path)
		if err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("host key %s: %w", path, err)
	}
	return signer, nil
}

// AuthorizedKey renders a host key's public half as the one
// authorized_keys line a bootstrap carries.
func AuthorizedKey(s ssh.Signer) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey()))) + " strata-controller"
}

// Config configures an Endpoint.
type Config struct {
	HostKey ssh.Signer
	DB      *store.DB
	Logger  *slog.Logger
	// OnSession is told when an agent's session starts and ends.
	OnSession func(instanceID string, connected bool)
	// OnRefused is told when an agent is refused for its protocol
	// version (ServerConfig.OnRefused).
	OnRefused func(instanceID, message string)
	// Timings holds the Server's durations (zero values: NewServer's
	// defaults); its HostKey, Store, Logger, OnSession and OnRefused are
	// ignored.
	Timings ServerConfig
}

// Endpoint is the running agent endpoint.
type Endpoint struct {
	Server *Server
	Store  *SQLStore
	key    ssh.Signer
}

// New builds the endpoint over the SQL store.
func New(cfg Config) (*Endpoint, error) {
	st := &SQLStore{DB: cfg.DB}
	wc := cfg.Timings
	wc.HostKey, wc.Store, wc.Logger, wc.OnSession, wc.OnRefused = cfg.HostKey, st, cfg.Logger, cfg.OnSession, cfg.OnRefused
	srv, err := NewServer(wc)
	if err != nil {
		return nil, err
	}
	return &Endpoint{Server: srv, Store: st, key: cfg.HostKey}, nil
}

// HostKeyLine is the host key as a bootstrap's controller_host_key.
func (e *Endpoint) HostKeyLine() string { return AuthorizedKey(e.key) }

// Serve accepts agents on ln until ctx ends.
func (e *Endpoint) Serve(ctx context.Context, ln net.Listener) error {
	return e.Server.Serve(ctx, ln)
}

// Call queues op for the instance and waits up to timeout for its result.
// On timeout the op stays queued and is delivered when the agent next
// connects (until opts.Expires); the error then wraps
// context.DeadlineExceeded.
func (e *Endpoint) Call(ctx context.Context, instanceID string, op wire.Operation, opts QueueOptions, timeout time.Duration) (wire.Result, error) {
	if err := e.Server.Queue(ctx, instanceID, op, opts); err != nil {
		return wire.Result{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return e.Server.Await(wctx, instanceID, op.ID)
}

// Queue queues an operation for the instance.
func (e *Endpoint) Queue(ctx context.Context, instanceID string, op wire.Operation, opts QueueOptions) error {
	return e.Server.Queue(ctx, instanceID, op, opts)
}

// Result returns an operation's stored result, if any.
func (e *Endpoint) Result(ctx context.Context, instanceID, opID string) (wire.Result, bool, error) {
	return e.Store.OpResult(ctx, instanceID, opID)
}

// ExpectStream registers a data channel the instance's agent will open
// for an operation (Server.ExpectStream).
func (e *Endpoint) ExpectStream(instanceID, opID string, index int) (*StreamWait, error) {
	return e.Server.ExpectStream(instanceID, opID, index)
}

// Disconnect closes the instance's session (after its key was revoked).
func (e *Endpoint) Disconnect(instanceID string) { e.Server.Disconnect(instanceID) }

// ForgetPayload blanks a stored result's payload.
func (e *Endpoint) ForgetPayload(ctx context.Context, instanceID, opID string) error {
	return e.Store.ForgetPayload(ctx, instanceID, opID)
}

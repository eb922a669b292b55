package agentendpoint_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/transport"
	"strata/agent/wire"
	"strata/agent/wire/wiretest"
	"strata/controller/agentendpoint"
)

// syncBuffer is a log sink the server's goroutines may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type server struct {
	addr    string
	hostKey ssh.Signer
	store   *agentendpoint.MemStore
	log     *syncBuffer
	srv     *agentendpoint.Server
}

// startServer runs a Server over a MemStore (wrapped if wrap is set) with
// cfg's limits, logging into a buffer.
func startServer(t *testing.T, cfg agentendpoint.ServerConfig, wrap func(*agentendpoint.MemStore) agentendpoint.Store) *server {
	t.Helper()
	s := &server{hostKey: wiretest.NewSigner(t), store: agentendpoint.NewMemStore(), log: &syncBuffer{}}
	cfg.HostKey = s.hostKey
	cfg.Store = s.store
	if wrap != nil {
		cfg.Store = wrap(s.store)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(s.log, nil))
	srv, err := agentendpoint.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// dialFrom opens an SSH connection from a given loopback address.
func (s *server) dialFrom(from string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", s.addr)
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c, chans, reqs, err := ssh.NewClientConn(nc, s.addr, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

func (s *server) clientConfig(user string, key ssh.Signer, token string) *ssh.ClientConfig {
	auth := []ssh.AuthMethod{ssh.PublicKeys(key)}
	if token != "" {
		auth = append(auth, ssh.Password(token))
	}
	return &ssh.ClientConfig{User: user, Auth: auth, HostKeyCallback: ssh.FixedHostKey(s.hostKey.PublicKey()), Timeout: 5 * time.Second}
}

// A client chooses its SSH user name: however long, it reaches the log
// cut short (one 200 kB name grew the log by 200 kB).
func TestALongSSHUserNameIsLoggedTruncated(t *testing.T) {
	s := startServer(t, agentendpoint.ServerConfig{}, nil)
	long := strings.Repeat("u", 200<<10)
	if c, err := s.dialFrom("127.0.0.1", s.clientConfig(long, wiretest.NewSigner(t), "")); err == nil {
		c.Close()
		t.Fatal("a wrong user name was let in")
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(s.log.String()); n > 4096 {
		t.Fatalf("one connection with a 200 kB user name wrote %d bytes of log", n)
	}
	if !strings.Contains(s.log.String(), "uuuu") {
		t.Fatalf("the rejected user is not named in the log:\n%s", s.log.String())
	}
}

// Enrolment attempts are limited per source address: after the burst,
// further ones are refused without reaching the store, while another
// address still enrols.
func TestEnrolmentAttemptsAreRateLimitedPerSource(t *testing.T) {
	var cs *countingStore
	s := startServer(t, agentendpoint.ServerConfig{EnrollBurst: 3, EnrollInterval: time.Hour}, func(m *agentendpoint.MemStore) agentendpoint.Store {
		cs = &countingStore{MemStore: m}
		return cs
	})
	good := wire.NewEnrollmentToken()
	s.store.AddInstance("inst-1", good)
	for i := range 6 {
		if c, err := s.dialFrom("127.0.0.7", s.clientConfig(wire.SSHUser, wiretest.NewSigner(t), wire.NewEnrollmentToken())); err == nil {
			c.Close()
			t.Fatalf("attempt %d with an unknown token was let in", i+1)
		}
	}
	if n := cs.redeemCalls.Load(); n != 3 {
		t.Fatalf("the store was asked %d times for 6 attempts from one address, want 3 (the burst)", n)
	}
	if c, err := s.dialFrom("127.0.0.7", s.clientConfig(wire.SSHUser, wiretest.NewSigner(t), good)); err == nil {
		c.Close()
		t.Fatal("an enrolment from a limited address got through")
	}
	c, err := s.dialFrom("127.0.0.8", s.clientConfig(wire.SSHUser, wiretest.NewSigner(t), good))
	if err != nil {
		t.Fatalf("an enrolment from another address: %v", err)
	}
	c.Close()
	if !strings.Contains(s.log.String(), "enrolment attempts limited") {
		t.Errorf("the limit is not logged:\n%s", s.log.String())
	}
}

// Connections that have not authenticated are capped (more are closed at
// once) and closed at the handshake timeout.
func TestUnauthenticatedConnectionsAreCappedAndTimedOut(t *testing.T) {
	s := startServer(t, agentendpoint.ServerConfig{MaxUnauthenticated: 2, HandshakeTimeout: 2 * time.Second}, nil)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	time.Sleep(200 * time.Millisecond)
	extra, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(time.Second))
	data, err := io.ReadAll(extra)
	if err != nil || len(data) != 0 {
		t.Fatalf("a third unauthenticated connection was served: read %q, %v", data, err)
	}
	start := time.Now()
	held[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(held[0]); err != nil {
		t.Fatalf("a connection that never authenticated was kept past the handshake timeout: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed after %s", d)
	}
}

// One enrolled key holds one session: a new connection with the key ends
// the previous one, hello or not.
func TestOneEnrolledKeyHoldsOneSession(t *testing.T) {
	s := startServer(t, agentendpoint.ServerConfig{}, nil)
	key := wiretest.NewSigner(t)
	token := wire.NewEnrollmentToken()
	s.store.AddInstance("inst-1", token)
	first, err := s.dialFrom("127.0.0.1", s.clientConfig(wire.SSHUser, key, token))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	ended := make(chan error, 1)
	go func() { ended <- first.Wait() }()
	second, err := s.dialFrom("127.0.0.1", s.clientConfig(wire.SSHUser, key, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("two connections hold sessions with one key")
	}
	// The newer one is alive.
	if _, _, err := second.SendRequest(wire.RequestKeepalive, true, nil); err != nil {
		t.Fatalf("the newer connection was closed: %v", err)
	}
}

// Neither end offers SHA-1 key exchanges or MACs, nor ssh-rsa/ssh-dss
// signatures: a peer that only has those is refused.
func TestWeakAlgorithmsAreRefusedByTheServer(t *testing.T) {
	s := startServer(t, agentendpoint.ServerConfig{}, nil)
	for name, conf := range map[string]ssh.Config{
		"sha1 key exchange": {KeyExchanges: []string{ssh.InsecureKeyExchangeDH14SHA1, ssh.InsecureKeyExchangeDH1SHA1}},
		"sha1 mac":          {Ciphers: []string{ssh.CipherAES128CTR}, MACs: []string{ssh.HMACSHA1, ssh.InsecureHMACSHA196}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := s.clientConfig(wire.SSHUser, wiretest.NewSigner(t), "")
			cfg.Config = conf
			c, err := s.dialFrom("127.0.0.1", cfg)
			if err == nil {
				c.Close()
				t.Fatal("the handshake succeeded")
			}
			if strings.Contains(err.Error(), "unable to authenticate") {
				t.Fatalf("the algorithms were accepted (authentication failed afterwards): %v", err)
			}
		})
	}
	// An RSA key signing with SHA-1 (ssh-rsa) is not offered a way in.
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaSigner, _ := ssh.NewSignerFromKey(priv)
	sha1Only, err := ssh.NewSignerWithAlgorithms(rsaSigner.(ssh.AlgorithmSigner), []string{ssh.KeyAlgoRSA})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := s.dialFrom("127.0.0.1", s.clientConfig(wire.SSHUser, sha1Only, "")); err == nil {
		c.Close()
		t.Fatal("an ssh-rsa (SHA-1) signature was accepted")
	}
}

// The agent refuses a controller that offers only SHA-1 algorithms.
func TestWeakAlgorithmsAreRefusedByTheAgent(t *testing.T) {
	hostKey := wiretest.NewSigner(t)
	for name, conf := range map[string]ssh.Config{
		"sha1 key exchange": {KeyExchanges: []string{ssh.InsecureKeyExchangeDH14SHA1}},
		"sha1 mac":          {Ciphers: []string{ssh.CipherAES128CTR}, MACs: []string{ssh.HMACSHA1}},
	} {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			handshook := make(chan bool, 1)
			go func() {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				defer nc.Close()
				sc := &ssh.ServerConfig{Config: conf, NoClientAuth: true}
				sc.AddHostKey(hostKey)
				_, _, _, err = ssh.NewServerConn(nc, sc)
				handshook <- err == nil || !strings.Contains(err.Error(), "no common algorithm")
			}()
			c, err := transport.NewClient(transport.ClientConfig{Controllers: []string{ln.Addr().String()}, HostKey: hostKey.PublicKey(),
				Key: wiretest.NewSigner(t), InstanceID: "inst-1", AgentVersion: "test", Enrolled: true, Handler: okHandler(),
				Heartbeats: wiretest.StaticHeartbeat{Status: wire.StatusRunning}, DialTimeout: 2 * time.Second, Logger: wiretest.QuietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			err = c.RunOnce(timeout(t))
			if err == nil {
				t.Fatal("the agent connected")
			}
			select {
			case agreed := <-handshook:
				if agreed {
					t.Fatalf("the agent agreed on the controller's SHA-1 algorithms (then: %v)", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no handshake")
			}
		})
	}
}

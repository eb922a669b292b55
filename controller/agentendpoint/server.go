package agentendpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/wire"
	"strata/controller/ratelimit"
)

// ServerConfig configures the controller's agent endpoint. HostKey and
// Store are required; zero durations take the defaults shown.
type ServerConfig struct {
	HostKey ssh.Signer
	Store   Store
	Logger  *slog.Logger

	HandshakeTimeout  time.Duration // 20s: TCP accept to authenticated
	KeepaliveInterval time.Duration // 5s
	KeepaliveTimeout  time.Duration // 10s: no answer → connection closed
	AckTimeout        time.Duration // 30s: op sent, no ack → channel closed, op resent later
	PollInterval      time.Duration // 5s: pending ops re-read from the store this often
	StoreTimeout      time.Duration // 10s: per Store call
	MaxMessage        int           // MaxMessageSize
	// MinHeartbeatInterval: heartbeats arriving faster on one session are
	// refused without touching the store (1s).
	MinHeartbeatInterval time.Duration
	// MaxUnauthenticated caps the connections not authenticated yet
	// (64): more are closed at once. Each is closed at HandshakeTimeout.
	MaxUnauthenticated int
	// EnrollBurst and EnrollInterval limit enrolment attempts per source
	// address (10 at once, then one every 6s): beyond them an attempt is
	// refused before the store is asked. A successful one gives its
	// attempt back, so only failures count.
	EnrollBurst    int
	EnrollInterval time.Duration

	// OnSession, if set, is called when an agent's session starts
	// (connected=true, after hello) and ends.
	OnSession func(instanceID string, connected bool)
	// OnRefused, if set, is told when an authenticated agent is refused
	// at hello for its protocol version (wire.CheckProtocol's message),
	// so the controller can record it as the instance's fault. The key
	// stays enrolled: a rebuild onto a right image fixes it.
	OnRefused func(instanceID, message string)
}

// Server is the controller's agent endpoint: it authenticates agents,
// records their heartbeats and delivers queued operations, resending each
// until its result is stored.
//
// To push an operation the controller calls Submit (which queues it in the
// Store and wakes the instance's session) and then Await for its result.
type Server struct {
	cfg    ServerConfig
	log    *slog.Logger
	sshCfg *ssh.ServerConfig

	mu       sync.Mutex
	sessions map[string]*session
	waiters  map[opKey]chan struct{}
	streams  map[streamKey]*StreamWait
	// byKey is the one connection each enrolled key may hold.
	byKey map[string]*ssh.ServerConn

	unauthenticated chan struct{}
	enrollLimit     *ratelimit.Limiter
	// logLimited keeps a flood from growing the log: one line per kind
	// and source address a minute.
	logLimited *ratelimit.Limiter
}

type opKey struct{ instance, op string }

type session struct {
	instanceID  string
	fingerprint string
	remote      string
	conn        *ssh.ServerConn
	kick        chan struct{}
	ready       chan struct{}
	helloDone   bool
	bootID      string
	lastBeat    time.Time
	// protocol is the protocol version the agent's hello stated.
	protocol int

	mu       sync.Mutex
	inflight map[string]bool
	// finished: ops whose result (of that attempt) this session stored; a
	// pending list read before that must not send them again.
	finished map[string]int
	// datastoreUp: the latest heartbeat of this session said the
	// datastore runs (and no operation since found it unavailable). Ops
	// that need the datastore wait for it.
	datastoreUp bool
}

func (sess *session) setDatastoreUp(up bool) (changed bool) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	changed = sess.datastoreUp != up
	sess.datastoreUp = up
	return changed
}

func (sess *session) isDatastoreUp() bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.datastoreUp
}

// running reports whether a status says the datastore answers.
func running(st wire.DatastoreStatus) bool {
	return st == wire.StatusRunning || st == wire.StatusRestartRequired
}

// Permission extensions carrying what authentication established.
const (
	extInstance    = "strata-instance"
	extFingerprint = "strata-key-fingerprint"
	extEnrolled    = "strata-enrolled-now"
)

// NewServer checks cfg and returns a server; call Serve to accept agents.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.HostKey == nil {
		return nil, errors.New("wire server: HostKey is required")
	}
	if cfg.Store == nil {
		return nil, errors.New("wire server: Store is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.HandshakeTimeout, 20*time.Second)
	def(&cfg.KeepaliveInterval, 5*time.Second)
	def(&cfg.KeepaliveTimeout, 10*time.Second)
	def(&cfg.MinHeartbeatInterval, time.Second)
	def(&cfg.AckTimeout, 30*time.Second)
	def(&cfg.PollInterval, 5*time.Second)
	def(&cfg.StoreTimeout, 10*time.Second)
	def(&cfg.EnrollInterval, 6*time.Second)
	if cfg.EnrollBurst <= 0 {
		cfg.EnrollBurst = 10
	}
	if cfg.MaxUnauthenticated <= 0 {
		cfg.MaxUnauthenticated = 64
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = wire.MaxMessageSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "agent-endpoint"),
		sessions: map[string]*session{},
		waiters:  map[opKey]chan struct{}{},
		streams:  map[streamKey]*StreamWait{},
		byKey:    map[string]*ssh.ServerConn{},

		unauthenticated: make(chan struct{}, cfg.MaxUnauthenticated),
		enrollLimit:     ratelimit.New(cfg.EnrollBurst, cfg.EnrollInterval, 100_000),
		logLimited:      ratelimit.New(1, time.Minute, 10_000),
	}
	s.sshCfg = &ssh.ServerConfig{
		Config:                  wire.SSHConfig(),
		PublicKeyAuthAlgorithms: wire.SSHPublicKeyAlgorithms,
		MaxAuthTries:            4,
		PublicKeyCallback:       s.publicKeyAuth,
		ServerVersion:           "SSH-2.0-strata-controller",
	}
	s.sshCfg.AddHostKey(cfg.HostKey)
	return s, nil
}

// Serve accepts agent connections on ln until ctx is cancelled, then closes
// ln and every session and returns nil. Meanwhile it gives up on ops whose
// expiry passes (Store.ExpireOps).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.expireOps(ctx) })
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return fmt.Errorf("agent endpoint: accept: %w", err)
		}
		wg.Go(func() { s.handleConn(ctx, nc) })
	}
}

// Submit queues op for instanceID and, if the agent is connected, sends it
// now; otherwise it is sent when the agent next connects. Submitting the
// same op again is harmless. It never expires: Queue sets options.
func (s *Server) Submit(ctx context.Context, instanceID string, op wire.Operation) error {
	return s.Queue(ctx, instanceID, op, QueueOptions{})
}

// Queue is Submit with options: an expiry, a watch on the result.
func (s *Server) Queue(ctx context.Context, instanceID string, op wire.Operation, opts QueueOptions) error {
	op.Attempt = 0
	if err := op.Validate(); err != nil {
		return err
	}
	if err := s.cfg.Store.EnqueueOp(ctx, instanceID, op, opts); err != nil {
		return fmt.Errorf("queue %s for %s: %w", op.ID, instanceID, err)
	}
	s.kick(instanceID)
	return nil
}

// expireOps gives up on expired ops every poll interval and wakes whoever
// waits for them.
func (s *Server) expireOps(ctx context.Context) {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := s.storeCtx(ctx)
		refs, err := s.cfg.Store.ExpireOps(sctx, time.Now())
		cancel()
		if err != nil && ctx.Err() == nil {
			s.log.Error("expiring operations failed", "err", err)
		}
		for _, r := range refs {
			s.log.Warn("operation expired before the agent ran it", "instance", r.InstanceID, "op", r.OpID)
			s.notify(r.InstanceID, r.OpID)
		}
	}
}

// Await blocks until the result of instanceID's op opID is stored (by this
// server or, with a shared store, another replica) or ctx ends.
func (s *Server) Await(ctx context.Context, instanceID, opID string) (wire.Result, error) {
	key := opKey{instanceID, opID}
	for {
		s.mu.Lock()
		ch, ok := s.waiters[key]
		if !ok {
			ch = make(chan struct{})
			s.waiters[key] = ch
		}
		s.mu.Unlock()

		res, done, err := s.cfg.Store.OpResult(ctx, instanceID, opID)
		if err != nil {
			return wire.Result{}, err
		}
		if done {
			return res, nil
		}
		t := time.NewTimer(s.cfg.PollInterval)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return wire.Result{}, ctx.Err()
		}
		t.Stop()
	}
}

// Connected reports whether instanceID's agent has a live session.
func (s *Server) Connected(instanceID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sessions[instanceID]
	return ok
}

// Disconnect closes instanceID's session, if any (e.g. after revoking its
// key in the store).
func (s *Server) Disconnect(instanceID string) {
	s.mu.Lock()
	sess := s.sessions[instanceID]
	s.mu.Unlock()
	if sess != nil {
		sess.conn.Close()
	}
}

func (s *Server) kick(instanceID string) {
	s.mu.Lock()
	sess := s.sessions[instanceID]
	s.mu.Unlock()
	if sess != nil {
		select {
		case sess.kick <- struct{}{}:
		default:
		}
	}
}

func (s *Server) notify(instanceID, opID string) {
	key := opKey{instanceID, opID}
	s.mu.Lock()
	if ch, ok := s.waiters[key]; ok {
		close(ch)
		delete(s.waiters, key)
	}
	s.mu.Unlock()
}

func (s *Server) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.StoreTimeout)
}

// publicKeyAuth admits enrolled keys and gives unknown ed25519 keys a
// partial success that only a valid enrollment token completes. It runs
// before the client proves it holds the key; the x/crypto server applies
// the result (and the enrollment step it opens) only after the signature
// checks out.
func (s *Server) publicKeyAuth(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	remote := meta.RemoteAddr().String()
	if meta.User() != wire.SSHUser {
		// The name is the client's: it is cut short wherever it goes,
		// this error included (the handshake's failure is logged).
		s.log.Warn("agent auth rejected: wrong user", "remote", remote, "user", truncate(meta.User(), 64))
		return nil, fmt.Errorf("user %q not accepted", truncate(meta.User(), 64))
	}
	if key.Type() != ssh.KeyAlgoED25519 {
		s.log.Warn("agent auth rejected: key type", "remote", remote, "type", key.Type())
		return nil, fmt.Errorf("key type %s not accepted", key.Type())
	}
	fp := ssh.FingerprintSHA256(key)
	ctx, cancel := s.storeCtx(context.Background())
	defer cancel()
	inst, err := s.cfg.Store.InstanceForKey(ctx, fp)
	switch {
	case err == nil:
		return &ssh.Permissions{Extensions: map[string]string{extInstance: inst, extFingerprint: fp}}, nil
	case errors.Is(err, ErrUnknownKey):
		s.log.Info("agent key not enrolled; an enrollment token is required", "remote", remote, "key", fp)
		return nil, &ssh.PartialSuccessError{Next: ssh.ServerAuthCallbacks{
			PasswordCallback: func(meta ssh.ConnMetadata, token []byte) (*ssh.Permissions, error) {
				return s.enroll(meta, key, string(token))
			},
		}}
	default:
		s.log.Error("agent auth: store lookup failed", "remote", remote, "key", fp, "err", err)
		return nil, fmt.Errorf("key lookup failed")
	}
}

func (s *Server) enroll(meta ssh.ConnMetadata, key ssh.PublicKey, token string) (*ssh.Permissions, error) {
	remote := meta.RemoteAddr().String()
	source := hostOf(meta.RemoteAddr())
	ak := wire.NewAgentKey(key)
	if ok, wait := s.enrollLimit.Take(source); !ok {
		if first, _ := s.logLimited.Take("enroll " + source); first {
			s.log.Warn("enrolment attempts limited: too many failed ones from this address", "remote", remote, "retry_after", wait.Round(time.Second))
		}
		return nil, ErrTokenRejected
	}
	if !wire.ValidEnrollmentToken(token) {
		s.log.Warn("enrollment rejected: malformed token", "remote", remote, "key", ak.Fingerprint)
		return nil, ErrTokenRejected
	}
	ctx, cancel := s.storeCtx(context.Background())
	defer cancel()
	inst, err := s.cfg.Store.RedeemEnrollment(ctx, wire.HashToken(token), ak)
	if err != nil {
		s.log.Warn("enrollment rejected", "remote", remote, "key", ak.Fingerprint, "reason", err)
		return nil, ErrTokenRejected
	}
	s.enrollLimit.Give(source)
	s.log.Info("agent enrolled", "instance", inst, "key", ak.Fingerprint, "remote", remote)
	return &ssh.Permissions{Extensions: map[string]string{extInstance: inst, extFingerprint: ak.Fingerprint, extEnrolled: "1"}}, nil
}

func (s *Server) handleConn(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	remote := nc.RemoteAddr().String()
	// Until it authenticates, a connection holds one of a few slots, for
	// HandshakeTimeout at most.
	select {
	case s.unauthenticated <- struct{}{}:
	default:
		if first, _ := s.logLimited.Take("unauthenticated " + hostOf(nc.RemoteAddr())); first {
			s.log.Warn("too many connections not authenticated yet; closing new ones", "remote", remote, "max", s.cfg.MaxUnauthenticated)
		}
		return
	}
	_ = nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(nc, s.sshCfg)
	<-s.unauthenticated
	if err != nil {
		if first, _ := s.logLimited.Take("rejected " + hostOf(nc.RemoteAddr())); first {
			s.log.Warn("agent connection rejected", "remote", remote, "err", truncate(err.Error(), 512))
		}
		return
	}
	_ = nc.SetDeadline(time.Time{})
	// One enrolled key holds one connection: a new one ends the previous
	// one (a restarted agent, or a copied key).
	fp := sc.Permissions.Extensions[extFingerprint]
	s.mu.Lock()
	previous := s.byKey[fp]
	s.byKey[fp] = sc
	s.mu.Unlock()
	if previous != nil {
		s.log.Info("agent key connected again; closing its previous connection", "remote", remote, "previous_remote", previous.RemoteAddr().String(), "key", fp)
		previous.Close()
	}
	defer func() {
		s.mu.Lock()
		if s.byKey[fp] == sc {
			delete(s.byKey, fp)
		}
		s.mu.Unlock()
	}()
	sess := &session{
		instanceID:  sc.Permissions.Extensions[extInstance],
		fingerprint: sc.Permissions.Extensions[extFingerprint],
		remote:      remote,
		conn:        sc,
		kick:        make(chan struct{}, 1),
		ready:       make(chan struct{}),
		inflight:    map[string]bool{},
		finished:    map[string]int{},
	}
	log := s.log.With("instance", sess.instanceID, "remote", remote)
	log.Info("agent authenticated", "key", sess.fingerprint, "enrolled_now", sc.Permissions.Extensions[extEnrolled] == "1")

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		sc.Close()
	}()
	go func() {
		for nch := range chans {
			if nch.ChannelType() == wire.ChannelStream {
				s.acceptStream(sess, nch, log)
				continue
			}
			log.Warn("agent tried to open a channel; rejected", "type", truncate(nch.ChannelType(), 64))
			nch.Reject(ssh.Prohibited, "the controller accepts no channels of this type")
		}
	}()
	var wg sync.WaitGroup
	wg.Go(func() { s.keepalive(ctx, sess, log) })
	wg.Go(func() { s.dispatch(ctx, sess, log) })

	for req := range reqs {
		s.handleRequest(ctx, sess, req, log)
	}
	cancel()
	wg.Wait()
	if sess.helloDone {
		s.mu.Lock()
		current := s.sessions[sess.instanceID] == sess
		if current {
			delete(s.sessions, sess.instanceID)
		}
		s.mu.Unlock()
		if current && s.cfg.OnSession != nil {
			s.cfg.OnSession(sess.instanceID, false)
		}
	}
	log.Info("agent session ended", "err", sc.Wait())
}

func (s *Server) handleRequest(ctx context.Context, sess *session, req *ssh.Request, log *slog.Logger) {
	switch req.Type {
	case wire.RequestKeepalive:
		req.Reply(true, nil)
	case wire.RequestHello:
		if sess.helloDone {
			req.Reply(false, []byte("hello already received"))
			return
		}
		var h wire.Hello
		if len(req.Payload) > 64<<10 {
			req.Reply(false, []byte("hello too large"))
			sess.conn.Close()
			return
		}
		if err := wire.DecodeStrict(req.Payload, &h); err != nil {
			log.Warn("garbled hello; closing", "err", err)
			req.Reply(false, []byte("garbled hello: "+err.Error()))
			sess.conn.Close()
			return
		}
		if h.InstanceID != sess.instanceID {
			// The key decides; a different claim means a misconfigured
			// guest, so neither side carries on.
			log.Warn("agent claims another instance; closing", "claimed", truncate(h.InstanceID, 70))
			req.Reply(false, fmt.Appendf(nil, "this key belongs to instance %s, not %s", sess.instanceID, truncate(h.InstanceID, 70)))
			sess.conn.Close()
			return
		}
		proto := h.Protocol()
		if msg := wire.CheckProtocol(proto); msg != "" {
			// Refused, not revoked: the agent retries slowly and a
			// rebuild onto a right image (a new agent) gets in.
			log.Error("agent refused: protocol version not served", "agent_version", truncate(h.AgentVersion, 64),
				"agent_protocol", proto, "min_protocol", wire.MinProtocolVersion, "max_protocol", wire.ProtocolVersion)
			if s.cfg.OnRefused != nil {
				s.cfg.OnRefused(sess.instanceID, fmt.Sprintf("agent %s refused: %s", truncate(h.AgentVersion, 64), msg))
			}
			req.Reply(false, []byte(msg))
			sess.conn.Close()
			return
		}
		w := wire.Welcome{InstanceID: sess.instanceID, ServerTime: time.Now().UTC()}
		if proto > 1 {
			w.ProtocolVersion = proto // a protocol 1 agent refuses fields it does not know
		}
		welcome, _ := json.Marshal(w)
		s.mu.Lock()
		old := s.sessions[sess.instanceID]
		s.sessions[sess.instanceID] = sess
		s.mu.Unlock()
		if old != nil {
			log.Info("agent reconnected; closing its previous session", "previous_remote", old.remote)
			old.conn.Close()
		}
		sess.helloDone = true
		sess.bootID = h.BootID
		sess.protocol = proto
		req.Reply(true, welcome)
		log.Info("agent session started", "agent_version", truncate(h.AgentVersion, 64), "protocol", proto, "boot_id", truncate(h.BootID, 70))
		if s.cfg.OnSession != nil {
			s.cfg.OnSession(sess.instanceID, true)
		}
		close(sess.ready)
	case wire.RequestHeartbeat:
		if !sess.helloDone {
			req.Reply(false, []byte("hello first"))
			return
		}
		var hb wire.Heartbeat
		err := error(nil)
		if len(req.Payload) > 64<<10 {
			err = errors.New("heartbeat too large")
		} else if err = wire.DecodeStrict(req.Payload, &hb); err == nil {
			err = hb.Validate()
		}
		if err != nil {
			log.Warn("bad heartbeat dropped", "err", err)
			req.Reply(false, []byte(err.Error()))
			return
		}
		now := time.Now()
		if now.Sub(sess.lastBeat) < s.cfg.MinHeartbeatInterval {
			req.Reply(false, []byte("heartbeats too frequent"))
			return
		}
		sess.lastBeat = now
		// The agent's keepalives wait behind this reply (global requests
		// are answered in order, and the agent sends one at a time, so a
		// keepalive may wait out two heartbeats): a store slower than the
		// keepalive timeout would end the session and cut its streams.
		// The write is bounded by a quarter of it; a heartbeat lost to a
		// slow store costs nothing, the next one comes.
		sctx, cancel := context.WithTimeout(ctx, min(s.cfg.StoreTimeout, s.cfg.KeepaliveTimeout/4))
		ok, err := s.cfg.Store.RecordHeartbeat(sctx, sess.instanceID, hb, now.UTC())
		cancel()
		if err != nil {
			log.Error("recording heartbeat failed", "err", err)
			req.Reply(false, []byte("store error"))
			return
		}
		if !ok {
			log.Debug("stale heartbeat dropped", "boot_id", hb.BootID, "seq", hb.Seq)
			req.Reply(false, nil)
			return
		}
		if sess.setDatastoreUp(running(hb.Status)) && running(hb.Status) {
			s.kick(sess.instanceID) // held ops may go now
		}
		req.Reply(true, heartbeatReply)
	default:
		req.Reply(false, nil)
	}
}

// heartbeatReply tells the agent which optional heartbeat fields this
// controller takes (wire.HeartbeatReply).
var heartbeatReply, _ = json.Marshal(wire.HeartbeatReply{UsersDigest: true})

func (s *Server) keepalive(ctx context.Context, sess *session, log *slog.Logger) {
	t := time.NewTicker(s.cfg.KeepaliveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, _, err := wire.Request(ctx, sess.conn, wire.RequestKeepalive, nil, s.cfg.KeepaliveTimeout); err != nil {
			if ctx.Err() == nil {
				log.Warn("agent unresponsive; closing connection", "err", err)
			}
			sess.conn.Close()
			return
		}
	}
}

func (s *Server) dispatch(ctx context.Context, sess *session, log *slog.Logger) {
	select {
	case <-sess.ready:
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		sctx, cancel := s.storeCtx(ctx)
		ops, err := s.cfg.Store.PendingOps(sctx, sess.instanceID)
		cancel()
		if err != nil && ctx.Err() == nil {
			log.Error("listing pending operations failed", "err", err)
		}
		sess.mu.Lock()
		listed := map[string]bool{}
		for _, op := range ops {
			listed[op.ID] = true
		}
		for id := range sess.finished {
			if !listed[id] {
				delete(sess.finished, id)
			}
		}
		sess.mu.Unlock()
		for _, op := range ops {
			if ctx.Err() != nil {
				return
			}
			sess.mu.Lock()
			a, fin := sess.finished[op.ID]
			busy := sess.inflight[op.ID] || (fin && a >= op.Attempt)
			sess.mu.Unlock()
			if busy {
				continue
			}
			// A kind newer than the agent's protocol is not sent: the
			// agent would not know it. It ends not_supported here, at
			// once, not held until the datastore runs.
			if need := wire.KindProtocol(op.Kind); need > sess.protocol {
				res := wire.Result{OpID: op.ID, FinishedAt: time.Now().UTC(), Error: wire.Errorf(wire.CodeNotSupported,
					"operation %s needs agent protocol %d; the agent of instance %s speaks protocol %d: rebuild the instance onto a newer image",
					op.Kind, need, sess.instanceID, sess.protocol)}
				log.Warn("operation not sent: the agent's protocol predates its kind", "op", op.ID, "kind", op.Kind,
					"kind_protocol", need, "agent_protocol", sess.protocol)
				s.finish(ctx, sess, op, res, log)
				continue
			}
			// An op that needs the datastore waits until the agent
			// reports it running: sent earlier (a guest still starting
			// after a reboot) it would fail for nothing. Others go.
			if wire.ClassOf(op.Kind).NeedsDatastore && !sess.isDatastoreUp() {
				continue
			}
			if err := s.sendOp(ctx, sess, op, log); err != nil {
				if ctx.Err() == nil {
					log.Warn("sending operation failed; will resend", "op", op.ID, "kind", op.Kind, "err", err)
				}
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-sess.kick:
		case <-t.C:
		}
	}
}

// sendOp opens a channel for op, writes it and waits for the agent's
// acknowledgement; the result is awaited in the background.
func (s *Server) sendOp(ctx context.Context, sess *session, op wire.Operation, log *slog.Logger) error {
	ch, reqs, err := sess.conn.OpenChannel(wire.ChannelOperation, nil)
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	go ssh.DiscardRequests(reqs)
	if err := wire.WriteFrame(ch, op, s.cfg.MaxMessage); err != nil {
		ch.Close()
		return err
	}
	first := make(chan wire.OpReply, 1)
	firstErr := make(chan error, 1)
	go func() {
		r, err := s.readReply(ch)
		if err != nil {
			firstErr <- err
			return
		}
		first <- r
	}()
	t := time.NewTimer(s.cfg.AckTimeout)
	defer t.Stop()
	var r wire.OpReply
	select {
	case r = <-first:
	case err := <-firstErr:
		ch.Close()
		return fmt.Errorf("waiting for ack: %w", err)
	case <-t.C:
		ch.Close()
		return fmt.Errorf("no ack within %s", s.cfg.AckTimeout)
	case <-ctx.Done():
		ch.Close()
		return ctx.Err()
	}
	if r.Result != nil {
		// Refused without an ack (bad message): that is its result.
		if s.finish(ctx, sess, op, *r.Result, log) == rerun {
			s.kick(sess.instanceID)
		}
		ch.Close()
		return nil
	}
	if r.Ack == nil || r.Ack.OpID != op.ID {
		ch.Close()
		return fmt.Errorf("agent sent no valid ack for %s", op.ID)
	}
	sctx, cancel := s.storeCtx(ctx)
	err = s.cfg.Store.MarkAcked(sctx, sess.instanceID, op.ID, r.Ack.State, time.Now().UTC())
	cancel()
	if err != nil {
		log.Error("recording ack failed", "op", op.ID, "err", err)
	}
	sess.mu.Lock()
	sess.inflight[op.ID] = true
	sess.mu.Unlock()
	go func() {
		defer ch.Close()
		r, err := s.readReply(ch)
		out := notStored
		if err == nil && r.Result != nil {
			out = s.finish(ctx, sess, op, *r.Result, log)
		} else if ctx.Err() == nil {
			log.Warn("operation channel ended without a result; will resend", "op", op.ID, "err", err)
		}
		// Out of flight only once its result is stored: a resend in
		// between would only fetch the same result again.
		sess.mu.Lock()
		delete(sess.inflight, op.ID)
		if out == stored {
			sess.finished[op.ID] = op.Attempt
		}
		sess.mu.Unlock()
		if out == rerun {
			s.kick(sess.instanceID)
		}
	}()
	return nil
}

func (s *Server) readReply(ch ssh.Channel) (wire.OpReply, error) {
	var r wire.OpReply
	data, err := wire.ReadFrame(ch, s.cfg.MaxMessage)
	if err != nil {
		return r, err
	}
	if err := wire.DecodeStrict(data, &r); err != nil {
		return r, fmt.Errorf("garbled reply: %w", err)
	}
	if (r.Ack == nil) == (r.Result == nil) {
		return r, errors.New("reply must carry exactly one of ack and result")
	}
	return r, nil
}

// outcome is what finish did with a result.
type outcome int

const (
	notStored outcome = iota // ignored or failed: the op is resent as it is
	stored                   // the op's result is stored
	rerun                    // the op is queued to run again
)

// finish stores an op's result, or queues its re-run.
func (s *Server) finish(ctx context.Context, sess *session, op wire.Operation, res wire.Result, log *slog.Logger) outcome {
	if res.OpID == "" {
		res.OpID = op.ID
	}
	if res.OpID != op.ID {
		log.Error("agent answered with another operation's id; ignored", "op", op.ID, "answered", truncate(res.OpID, 140))
		return notStored
	}
	if res.Datastore != nil {
		// The status the op left, not the last heartbeat's.
		sctx, cancel := s.storeCtx(ctx)
		err := s.cfg.Store.RecordOpStatus(sctx, sess.instanceID, sess.bootID, *res.Datastore, res.FinishedAt, time.Now().UTC())
		cancel()
		if err != nil {
			log.Error("recording the status an operation reported failed", "op", op.ID, "err", err)
		}
		sess.setDatastoreUp(running(res.Datastore.Status))
	}
	if res.Error != nil && res.Error.Code == wire.CodeUnavailable {
		sess.setDatastoreUp(false) // wait for a heartbeat that says otherwise
	}
	if wire.Rerunnable(op.Kind, res) {
		sctx, cancel := s.storeCtx(ctx)
		again, err := s.cfg.Store.RetryOp(sctx, sess.instanceID, op.ID, op.Attempt, time.Now())
		cancel()
		if err != nil {
			log.Error("queuing an operation's re-run failed", "op", op.ID, "err", err)
			return notStored // resent as it is; the agent answers with the same result
		}
		if again {
			log.Info("operation cut short; running it again", "op", op.ID, "kind", op.Kind, "attempt", op.Attempt+1,
				"code", res.Error.Code, "message", res.Error.Message)
			return rerun
		}
	}
	res.Attempt = op.Attempt
	sctx, cancel := s.storeCtx(ctx)
	err := s.cfg.Store.StoreResult(sctx, sess.instanceID, res)
	cancel()
	if err != nil {
		log.Error("storing result failed", "op", op.ID, "err", err)
		return notStored
	}
	if res.Error != nil {
		log.Info("operation failed", "op", op.ID, "kind", op.Kind, "code", res.Error.Code, "message", res.Error.Message)
	} else {
		log.Info("operation done", "op", op.ID, "kind", op.Kind)
	}
	s.notify(sess.instanceID, op.ID)
	return stored
}

// hostOf is an address without its port: the source limits count by it.
func hostOf(a net.Addr) string {
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

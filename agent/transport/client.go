package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/wire"
)

// OperationHandler executes operations received from the controller. It
// must call ack once it has taken the operation in (before running it) and
// return the result; if ctx ends first (connection lost) it may return
// early while the operation carries on, and answer the resend later.
type OperationHandler interface {
	HandleOperation(ctx context.Context, op wire.Operation, ack func(wire.AckState) error) wire.Result
}

// HeartbeatSource supplies the datastore facts of a heartbeat; the client
// fills in AgentVersion, BootID, Seq and SentAt.
type HeartbeatSource interface {
	Heartbeat(ctx context.Context) wire.Heartbeat
}

// ClientConfig configures the agent's side of the transport. Controllers,
// HostKey, Key, InstanceID, Handler and Heartbeats are required.
type ClientConfig struct {
	Controllers []string
	// HostKey is the pinned controller host key; any other key is refused
	// before a byte of authentication is sent.
	HostKey ssh.PublicKey
	// Key is the agent's own key; it never leaves the guest.
	Key ssh.Signer
	// EnrollmentToken is offered only while Enrolled is false.
	EnrollmentToken string
	// Enrolled says Key was accepted before; the token is then never sent.
	Enrolled bool
	// OnEnrolled is called after the first successful authentication when
	// Enrolled was false, so the agent can record it.
	OnEnrolled func() error
	// OnConnected is called with the controller address when a session
	// starts and with "" when it ends.
	OnConnected func(controller string)

	InstanceID   string
	AgentVersion string
	// ProtocolVersion is the protocol the agent states in its hello (0:
	// wire.ProtocolVersion, or the build's protocolStamp). 1 sends no
	// version, as agents before protocol 2 did. Only tests of version
	// skew set it.
	ProtocolVersion int
	Handler         OperationHandler
	Heartbeats      HeartbeatSource

	HeartbeatInterval time.Duration // 10s
	// Until the datastore reports running (or restart_required), for
	// HeartbeatFastFor after a session begins (2 min), heartbeats go every
	// HeartbeatFastInterval (1s): a guest that has just booted — a
	// rebuild rolled back, a resize, a restart — is seen running within a
	// second of its server answering, not up to a whole interval later.
	HeartbeatFastInterval time.Duration
	HeartbeatFastFor      time.Duration
	KeepaliveInterval     time.Duration // 5s
	KeepaliveTimeout      time.Duration // 10s: no answer → reconnect
	DialTimeout           time.Duration // 10s, also bounds the SSH handshake
	MinBackoff            time.Duration // 1s
	MaxBackoff            time.Duration // 60s
	MaxMessage            int           // wire.MaxMessageSize
	// MaxConcurrentOps bounds open operation channels (64).
	MaxConcurrentOps int
	Logger           *slog.Logger
	// Dial replaces net.Dialer.DialContext (tests).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// protocolStamp, stamped by the linker (-X
// strata/agent/transport.protocolStamp=N), makes a build speak protocol N
// whatever its wire package says: only the version-skew test builds such
// agents (controller/agentendpoint/skew_test.go). Empty in every shipped
// build.
var protocolStamp = ""

// Client errors: why a connection attempt ended.
var (
	ErrHostKeyMismatch    = errors.New("controller host key does not match the pinned key")
	ErrEnrollmentRejected = errors.New("enrollment token rejected by the controller")
	ErrNotEnrolled        = errors.New("agent key is not enrolled and no enrollment token is available")
	ErrAuthRejected       = errors.New("controller rejected the agent key")
	ErrInstanceMismatch   = errors.New("controller names a different instance than the bootstrap")
	ErrHelloRejected      = errors.New("controller rejected the session")
	// ErrProtocolRefused: the controller does not serve this agent's
	// protocol version. Retrying soon cannot help; a rebuild onto an
	// image of the controller's release (or a controller upgrade) does.
	ErrProtocolRefused = errors.New("controller refused the agent's protocol version")
)

// Client is the agent's outbound connection to the controller. Run keeps
// one session up, reconnecting with backoff and jitter.
type Client struct {
	cfg      ClientConfig
	log      *slog.Logger
	bootID   string
	seq      atomic.Uint64
	enrolled atomic.Bool
	attempt  atomic.Uint64
	opSlots  chan struct{}

	// conn is the live session's connection (nil between sessions);
	// connected is closed and replaced whenever a session starts, so
	// OpenStream can wait for one.
	connMu    sync.Mutex
	conn      ssh.Conn
	connected chan struct{}
}

// NewClient checks cfg and returns a client.
func NewClient(cfg ClientConfig) (*Client, error) {
	var missing []string
	if len(cfg.Controllers) == 0 {
		missing = append(missing, "Controllers")
	}
	if cfg.HostKey == nil {
		missing = append(missing, "HostKey")
	}
	if cfg.Key == nil {
		missing = append(missing, "Key")
	}
	if cfg.InstanceID == "" {
		missing = append(missing, "InstanceID")
	}
	if cfg.Handler == nil {
		missing = append(missing, "Handler")
	}
	if cfg.Heartbeats == nil {
		missing = append(missing, "Heartbeats")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("wire client: missing %s", strings.Join(missing, ", "))
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.HeartbeatInterval, wire.DefaultHeartbeatSeconds*time.Second)
	def(&cfg.HeartbeatFastInterval, time.Second)
	def(&cfg.HeartbeatFastFor, 2*time.Minute)
	def(&cfg.KeepaliveInterval, 5*time.Second)
	def(&cfg.KeepaliveTimeout, 10*time.Second)
	def(&cfg.DialTimeout, 10*time.Second)
	def(&cfg.MinBackoff, time.Second)
	def(&cfg.MaxBackoff, 60*time.Second)
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = wire.MaxMessageSize
	}
	if cfg.ProtocolVersion == 0 {
		cfg.ProtocolVersion = wire.ProtocolVersion
		if protocolStamp != "" {
			v, err := strconv.Atoi(protocolStamp)
			if err != nil {
				return nil, fmt.Errorf("wire client: this build's protocol stamp %q is not a number", protocolStamp)
			}
			cfg.ProtocolVersion = v
		}
	}
	if cfg.MaxConcurrentOps <= 0 {
		cfg.MaxConcurrentOps = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ProtocolVersion != wire.ProtocolVersion {
		cfg.Logger.Warn("this agent speaks a protocol version other than its build's, for version-skew tests", "protocol", cfg.ProtocolVersion, "built_for", wire.ProtocolVersion)
	}
	if cfg.Dial == nil {
		d := &net.Dialer{KeepAlive: 15 * time.Second}
		cfg.Dial = d.DialContext
	}
	c := &Client{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "transport"),
		bootID:    newBootID(),
		opSlots:   make(chan struct{}, cfg.MaxConcurrentOps),
		connected: make(chan struct{}),
	}
	c.enrolled.Store(cfg.Enrolled)
	return c, nil
}

// BootID is the random id of this client's lifetime, sent in every
// heartbeat.
func (c *Client) BootID() string { return c.bootID }

// Enrolled reports whether the key is known to be enrolled.
func (c *Client) Enrolled() bool { return c.enrolled.Load() }

// Run connects, serves the session, and reconnects after any failure with
// exponential backoff (MinBackoff doubling to MaxBackoff) and jitter, until
// ctx ends. It returns nil then.
func (c *Client) Run(ctx context.Context) error {
	backoff := c.cfg.MinBackoff
	for {
		start := time.Now()
		err := c.RunOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		// A session that lived a while resets the backoff; flapping ones
		// do not.
		if time.Since(start) > 2*c.cfg.KeepaliveTimeout {
			backoff = c.cfg.MinBackoff
		}
		// A refused protocol stays refused until someone rebuilds the
		// instance or upgrades the controller: ask at the slowest pace.
		if errors.Is(err, ErrProtocolRefused) {
			backoff = c.cfg.MaxBackoff
		}
		wait := backoff/2 + mrand.N(backoff/2+1)
		level := slog.LevelWarn
		if errors.Is(err, ErrHostKeyMismatch) || errors.Is(err, ErrEnrollmentRejected) ||
			errors.Is(err, ErrNotEnrolled) || errors.Is(err, ErrInstanceMismatch) || errors.Is(err, ErrAuthRejected) ||
			errors.Is(err, ErrProtocolRefused) {
			level = slog.LevelError
		}
		c.log.Log(ctx, level, "controller connection ended; reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, c.cfg.MaxBackoff)
	}
}

// RunOnce makes one connection attempt to the next controller in turn and
// serves the session until it ends. It returns why it ended (nil if ctx
// was cancelled).
func (c *Client) RunOnce(ctx context.Context) error {
	addr := c.cfg.Controllers[int(c.attempt.Add(1)-1)%len(c.cfg.Controllers)]
	log := c.log.With("controller", addr)

	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	nc, err := c.cfg.Dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	_ = nc.SetDeadline(time.Now().Add(c.cfg.DialTimeout))

	var hostKeyErr atomic.Pointer[error]
	var tokenSent atomic.Bool
	methods := []ssh.AuthMethod{ssh.PublicKeys(c.cfg.Key)}
	offerToken := !c.enrolled.Load() && c.cfg.EnrollmentToken != ""
	if offerToken {
		methods = append(methods, ssh.PasswordCallback(func() (string, error) {
			tokenSent.Store(true)
			return c.cfg.EnrollmentToken, nil
		}))
	}
	sshCfg := &ssh.ClientConfig{
		User: wire.SSHUser,
		Auth: methods,
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if !bytes.Equal(key.Marshal(), c.cfg.HostKey.Marshal()) {
				err := fmt.Errorf("%w: %s presented %s, bootstrap pins %s", ErrHostKeyMismatch,
					addr, ssh.FingerprintSHA256(key), ssh.FingerprintSHA256(c.cfg.HostKey))
				hostKeyErr.Store(&err)
				return err
			}
			return nil
		},
		HostKeyAlgorithms: hostKeyAlgorithms(c.cfg.HostKey),
		// No SHA-1 key exchange or MAC, whatever the controller offers.
		Config:        wire.SSHConfig(),
		ClientVersion: "SSH-2.0-strata-agent",
	}
	conn, chans, reqs, err := ssh.NewClientConn(nc, addr, sshCfg)
	if err != nil {
		nc.Close()
		switch {
		case hostKeyErr.Load() != nil:
			return *hostKeyErr.Load()
		case !strings.Contains(err.Error(), "unable to authenticate"):
			return fmt.Errorf("ssh handshake with %s: %w", addr, err)
		case tokenSent.Load():
			return fmt.Errorf("%w (%s)", ErrEnrollmentRejected, addr)
		case !c.enrolled.Load() && !offerToken:
			return fmt.Errorf("%w (%s)", ErrNotEnrolled, addr)
		default:
			return fmt.Errorf("%w (%s)", ErrAuthRejected, addr)
		}
	}
	_ = nc.SetDeadline(time.Time{})
	defer conn.Close()

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-sctx.Done()
		conn.Close()
	}()
	go func() {
		for req := range reqs {
			req.Reply(req.Type == wire.RequestKeepalive, nil)
		}
	}()

	if err := c.hello(sctx, conn); err != nil {
		// Serve (reject) channel opens so the connection can wind down.
		go func() {
			for nch := range chans {
				nch.Reject(ssh.ConnectionFailed, "no session")
			}
		}()
		return err
	}
	if !c.enrolled.Load() {
		c.enrolled.Store(true)
		log.Info("enrolled with the controller; the token is spent and will not be used again")
		if c.cfg.OnEnrolled != nil {
			if err := c.cfg.OnEnrolled(); err != nil {
				log.Error("recording enrollment failed", "err", err)
			}
		}
	}
	log.Info("connected to controller", "boot_id", c.bootID)
	c.setConn(conn)
	defer c.setConn(nil)
	if c.cfg.OnConnected != nil {
		c.cfg.OnConnected(addr)
		defer c.cfg.OnConnected("")
	}

	var endErr atomic.Value
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := c.keepalive(sctx, conn); err != nil {
			endErr.Store(err)
			conn.Close()
		}
	})
	wg.Go(func() { c.heartbeats(sctx, conn, log) })
	for nch := range chans {
		if nch.ChannelType() != wire.ChannelOperation {
			nch.Reject(ssh.UnknownChannelType, "unknown channel type")
			continue
		}
		select {
		case c.opSlots <- struct{}{}:
		default:
			nch.Reject(ssh.ResourceShortage, "too many operations in flight")
			continue
		}
		wg.Go(func() {
			defer func() { <-c.opSlots }()
			c.serveOp(sctx, nch, log)
		})
	}
	cancel()
	wg.Wait()
	if e, ok := endErr.Load().(error); ok {
		return e
	}
	if err := conn.Wait(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("connection to %s closed: %w", addr, err)
	}
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("connection to %s closed", addr)
}

func (c *Client) hello(ctx context.Context, conn ssh.Conn) error {
	h := wire.Hello{InstanceID: c.cfg.InstanceID, AgentVersion: c.cfg.AgentVersion, BootID: c.bootID}
	if v := c.cfg.ProtocolVersion; v != 1 {
		h.ProtocolVersion = &v
	}
	payload, _ := json.Marshal(h)
	ok, reply, err := wire.Request(ctx, conn, wire.RequestHello, payload, c.cfg.KeepaliveTimeout)
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if !ok {
		return helloRefusal(string(reply), c.cfg.ProtocolVersion)
	}
	var w wire.Welcome
	if err := wire.DecodeStrict(reply, &w); err != nil {
		return fmt.Errorf("hello: garbled welcome: %w", err)
	}
	if w.InstanceID != c.cfg.InstanceID {
		return fmt.Errorf("%w: controller says %q, bootstrap says %q", ErrInstanceMismatch, truncate(w.InstanceID, 70), c.cfg.InstanceID)
	}
	if want := c.cfg.ProtocolVersion; want > 1 && w.ProtocolVersion != want {
		return fmt.Errorf("%w: controller chose protocol %d, this agent speaks protocol %d", ErrProtocolRefused, w.ProtocolVersion, want)
	}
	return nil
}

// helloRefusal is the error a refused hello ends the attempt with: a
// refused protocol version (ErrProtocolRefused, retried slowly) or any
// other refusal (ErrHelloRejected).
func helloRefusal(reply string, protocol int) error {
	switch {
	case wire.IsProtocolRefusal(reply):
		return fmt.Errorf("%w: %s", ErrProtocolRefused, truncate(reply, 400))
	case strings.Contains(reply, `unknown field "protocol_version"`):
		// A controller of protocol 1 knows no versions and calls the
		// hello garbled.
		return fmt.Errorf("%w: the controller predates protocol versions (serves protocol 1 only), this agent speaks protocol %d: upgrade the controller (%s)",
			ErrProtocolRefused, protocol, truncate(reply, 200))
	}
	return fmt.Errorf("%w: %s", ErrHelloRejected, truncate(reply, 200))
}

func (c *Client) keepalive(ctx context.Context, conn ssh.Conn) error {
	t := time.NewTicker(c.cfg.KeepaliveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, _, err := wire.Request(ctx, conn, wire.RequestKeepalive, nil, c.cfg.KeepaliveTimeout); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("controller unresponsive: %w", err)
		}
	}
}

func (c *Client) heartbeats(ctx context.Context, conn ssh.Conn, log *slog.Logger) {
	began := time.Now()
	// What this session's controller takes of the optional fields
	// (wire.HeartbeatReply): nothing until it says so.
	var takes wire.HeartbeatReply
	t := time.NewTimer(time.Hour) // reset after each heartbeat
	defer t.Stop()
	for {
		hctx, cancel := context.WithTimeout(ctx, c.cfg.HeartbeatInterval)
		hb := c.cfg.Heartbeats.Heartbeat(hctx)
		cancel()
		hb.AgentVersion = c.cfg.AgentVersion
		hb.BootID = c.bootID
		hb.Seq = c.seq.Add(1)
		hb.SentAt = time.Now().UTC()
		payload, err := json.Marshal(takenOf(hb, takes))
		if err == nil {
			var ok bool
			var reply []byte
			ok, reply, err = wire.Request(ctx, conn, wire.RequestHeartbeat, payload, c.cfg.KeepaliveTimeout)
			if err == nil && !ok {
				log.Warn("controller did not take the heartbeat", "seq", hb.Seq, "reason", truncate(string(reply), 200))
			}
			if err == nil && ok {
				takes = takesOf(reply, takes)
			}
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("sending heartbeat failed", "err", err)
		}
		next := c.cfg.HeartbeatInterval
		settled := hb.Status == wire.StatusRunning || hb.Status == wire.StatusRestartRequired
		if !settled && time.Since(began) < c.cfg.HeartbeatFastFor && c.cfg.HeartbeatFastInterval < next {
			next = c.cfg.HeartbeatFastInterval
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// takenOf is hb without the optional fields the controller has not said
// it takes (a controller from before a field refuses the heartbeat).
func takenOf(hb wire.Heartbeat, takes wire.HeartbeatReply) wire.Heartbeat {
	if !takes.UsersDigest {
		hb.UsersDigest = ""
	}
	return hb
}

// takesOf reads what an accepted heartbeat's reply says the controller
// takes; an empty reply (a controller from before HeartbeatReply) takes
// nothing new, one this agent cannot read changes nothing. Lenient: a
// newer controller may name fields this agent does not know.
func takesOf(reply []byte, was wire.HeartbeatReply) wire.HeartbeatReply {
	if len(reply) == 0 {
		return wire.HeartbeatReply{}
	}
	var r wire.HeartbeatReply
	if json.Unmarshal(reply, &r) != nil {
		return was
	}
	return r
}

// serveOp reads one operation from its channel, hands it to the handler and
// writes the ack and the result. Anything unreadable ends the channel with
// a bad_message result; it never ends the session.
func (c *Client) serveOp(ctx context.Context, nch ssh.NewChannel, log *slog.Logger) {
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	defer ch.Close()

	// A controller that opens a channel and sends nothing must not pin a
	// goroutine for the life of the connection.
	readTimer := time.AfterFunc(c.cfg.KeepaliveTimeout*2, func() { ch.Close() })
	data, err := wire.ReadFrame(ch, c.cfg.MaxMessage)
	readTimer.Stop()
	if err != nil {
		if errors.Is(err, wire.ErrMessageTooLarge) {
			log.Warn("oversized operation message refused", "err", err)
			c.reply(ch, wire.OpReply{Result: badMessage("", err.Error())})
		} else if !errors.Is(err, io.EOF) {
			log.Warn("unreadable operation message", "err", err)
		}
		return
	}
	var op wire.Operation
	if err := wire.DecodeStrict(data, &op); err != nil {
		log.Warn("garbled operation message refused", "err", err)
		c.reply(ch, wire.OpReply{Result: badMessage("", "garbled operation: "+err.Error())})
		return
	}
	if err := op.Validate(); err != nil {
		id := ""
		if wire.ValidOpID(op.ID) {
			id = op.ID
		}
		log.Warn("invalid operation refused", "err", err)
		c.reply(ch, wire.OpReply{Result: badMessage(id, err.Error())})
		return
	}
	var acked atomic.Bool
	res := c.cfg.Handler.HandleOperation(ctx, op, func(st wire.AckState) error {
		acked.Store(true)
		return c.reply(ch, wire.OpReply{Ack: &wire.Ack{OpID: op.ID, State: st}})
	})
	if ctx.Err() != nil {
		return
	}
	if !acked.Load() {
		res.Error = &wire.OpError{Code: wire.CodeInternal, Message: "handler returned without acknowledging"}
	}
	res.OpID = op.ID
	if err := c.reply(ch, wire.OpReply{Result: &res}); errors.Is(err, wire.ErrMessageTooLarge) {
		c.reply(ch, wire.OpReply{Result: &wire.Result{OpID: op.ID, StartedAt: res.StartedAt, FinishedAt: res.FinishedAt,
			Error: wire.Errorf(wire.CodeInternal, "result exceeds %d bytes", c.cfg.MaxMessage)}})
	}
	ch.CloseWrite()
}

func (c *Client) reply(ch ssh.Channel, r wire.OpReply) error {
	return wire.WriteFrame(ch, r, c.cfg.MaxMessage)
}

func badMessage(opID, msg string) *wire.Result {
	now := time.Now().UTC()
	return &wire.Result{OpID: opID, Error: &wire.OpError{Code: wire.CodeBadMessage, Message: msg}, FinishedAt: now}
}

func hostKeyAlgorithms(k ssh.PublicKey) []string {
	if k.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	}
	return []string{k.Type()}
}

func newBootID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

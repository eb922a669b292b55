package agentendpoint_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/wire"
	"strata/agent/wire/wiretest"
	"strata/controller/agentendpoint"
	"strata/controller/agentendpoint/endpointtest"
)

// ownProtocol builds an agent speaking its wire package's protocol.
const ownProtocol = -1

// buildAgent builds the real strata-agent binary, speaking protocol
// (ownProtocol: no stamp) and reporting version.
func buildAgent(t *testing.T, dir string, protocol int, version string) string {
	t.Helper()
	bin := filepath.Join(dir, "strata-agent-"+version)
	ldflags := "-X main.version=" + version
	if protocol != ownProtocol {
		ldflags += fmt.Sprintf(" -X strata/agent/transport.protocolStamp=%d", protocol)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	// No -trimpath: the build then reuses what `go test -race ./agent/...`
	// compiled (the flag changes every package's cache key).
	args := []string{"build", "-ldflags", ldflags, "-o", bin}
	env := append(os.Environ(), "CGO_ENABLED=0")
	if raceEnabled {
		args = append(args, "-race")
		env = append(os.Environ(), "CGO_ENABLED=1")
	}
	cmd := exec.Command(goBin, append(args, "strata/agent/cmd/strata-agent")...)
	cmd.Env = env
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build agent %s: %v\n%s", version, err, out)
	}
	t.Logf("built agent %s (protocol %d) in %s", version, protocol, time.Since(start).Round(time.Millisecond))
	return bin
}

// skewRig is a controller endpoint whose log and refusals the test reads.
type skewRig struct {
	store   *agentendpoint.MemStore
	server  *agentendpoint.Server
	hostKey ssh.Signer
	addr    string
	log     *syncBuffer

	mu      sync.Mutex
	refusal map[string][]string // by instance
}

func newSkewRig(t *testing.T) *skewRig {
	r := &skewRig{store: agentendpoint.NewMemStore(), hostKey: wiretest.NewSigner(t), log: &syncBuffer{}, refusal: map[string][]string{}}
	srv, err := agentendpoint.NewServer(agentendpoint.ServerConfig{
		HostKey: r.hostKey, Store: r.store,
		Logger:            slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelInfo})),
		KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: 2 * time.Second,
		AckTimeout: 5 * time.Second, PollInterval: 200 * time.Millisecond, MinHeartbeatInterval: 50 * time.Millisecond,
		OnRefused: func(instanceID, message string) {
			r.mu.Lock()
			r.refusal[instanceID] = append(r.refusal[instanceID], message)
			r.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.server = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func (r *skewRig) refusals(instanceID string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.refusal[instanceID]...)
}

// agentProc is a strata-agent process on this host.
type agentProc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
}

// startAgent runs bin for instanceID with a fresh enrolment token and
// state directory: a MariaDB guest whose data volume was never prepared,
// so the agent touches nothing of the host (its status is read-only).
func (r *skewRig) startAgent(t *testing.T, bin, instanceID string) *agentProc {
	t.Helper()
	token := wire.NewEnrollmentToken()
	r.store.AddInstance(instanceID, token)
	dir := t.TempDir()
	boot := wire.Bootstrap{
		Format: 1, InstanceID: instanceID, Controllers: []string{r.addr},
		ControllerHostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(r.hostKey.PublicKey()))),
		EnrollmentToken:   token, HeartbeatSeconds: 1,
		MountPoint: filepath.Join(dir, "data"),
		Datastore:  wire.DatastoreRef{Manager: "mariadb", Version: "10.11"},
	}
	if err := boot.Validate(); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(boot)
	bootFile := filepath.Join(dir, "bootstrap.json")
	if err := os.WriteFile(bootFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "drive"), 0o700)
	cmd := exec.Command(bin, "--bootstrap", bootFile, "--state-dir", filepath.Join(dir, "state"), "--config-drive", filepath.Join(dir, "drive"))
	// Not under systemd: no notifications to the host's, no journal.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); name != "NOTIFY_SOCKET" && name != "JOURNAL_STREAM" && name != "INVOCATION_ID" && name != "WATCHDOG_USEC" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	p := &agentProc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *agentProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("agent pid %d did not stop on SIGTERM; killed", p.cmd.Process.Pid)
	}
	if t.Failed() {
		t.Logf("agent output:\n%s", p.stderr.String())
	}
}

// Two agent builds besides the current one, each a real strata-agent
// process dialing a real endpoint: one speaking the previous protocol
// (as last release's images do) keeps working, with every kind of its
// protocol and none newer; one too old and one too new are refused at
// hello, in the controller's log and as the instance's refusal, and back
// off rather than spin; their keys stay enrolled, and an agent of the
// right protocol (a rebuild) gets in.
func TestAgentsOfOtherProtocolVersions(t *testing.T) {
	// A kind of the current protocol that the older agent does not know:
	// no real kind is newer than protocol 1 yet, so the test adds one
	// (before any server runs; removed after they stop). It needs the
	// datastore, which these agents never run: it must fail at once, not
	// wait for it.
	const newKind wire.Kind = "skew_probe"
	wire.Classes[newKind] = wire.Class{Idempotent: true, NeedsDatastore: true, Since: wire.ProtocolVersion}
	t.Cleanup(func() { delete(wire.Classes, newKind) })

	bins := t.TempDir()
	older := buildAgent(t, bins, wire.MinProtocolVersion, "skew-older")
	tooOld := buildAgent(t, bins, wire.MinProtocolVersion-1, "skew-too-old")
	tooNew := buildAgent(t, bins, wire.ProtocolVersion+1, "skew-too-new")
	current := buildAgent(t, bins, ownProtocol, "skew-current")

	r := newSkewRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("an agent one protocol older works", func(t *testing.T) {
		const inst = "inst-older"
		a := r.startAgent(t, older, inst)
		waitFor(t, "older agent connected", time.Minute, func() bool { return r.server.Connected(inst) })
		if n := len(r.store.Keys(inst)); n != 1 {
			t.Fatalf("%d keys enrolled, want 1", n)
		}
		waitFor(t, "older agent's heartbeats", 30*time.Second, func() bool {
			hbs := r.store.Heartbeats(inst)
			return len(hbs) >= 2 && hbs[len(hbs)-1].AgentVersion == "skew-older"
		})
		if !strings.Contains(r.log.String(), fmt.Sprintf(`msg="agent session started" component=agent-endpoint instance=%s`, inst)) ||
			!strings.Contains(r.log.String(), fmt.Sprintf("agent_version=skew-older protocol=%d", wire.MinProtocolVersion)) {
			t.Fatalf("no session start at protocol %d in the controller's log:\n%s", wire.MinProtocolVersion, r.log.String())
		}
		res, err := r.call(ctx, inst, wire.Operation{ID: "status-1", Kind: wire.KindStatus})
		if err != nil {
			t.Fatal(err)
		}
		var st wire.StatusResult
		if err := res.Decode(&st); err != nil || st.Status == "" {
			t.Fatalf("status operation on the older agent: %+v %v", st, err)
		}

		pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
		res, err = r.call(pctx, inst, wire.Operation{ID: "probe-1", Kind: newKind})
		pcancel()
		if err != nil {
			t.Fatalf("a kind newer than the agent, needing the datastore the agent does not run: %v", err)
		}
		want := fmt.Sprintf("operation %s needs agent protocol %d; the agent of instance %s speaks protocol %d", newKind, wire.ProtocolVersion, inst, wire.MinProtocolVersion)
		if res.Error == nil || res.Error.Code != wire.CodeNotSupported || !strings.Contains(res.Error.Message, want) {
			t.Fatalf("a kind newer than the agent: %+v, want not_supported %q", res.Error, want)
		}
		if rec, _ := r.store.Op(inst, "probe-1"); rec.AckState != "" {
			t.Fatalf("the newer kind reached the older agent (ack %q)", rec.AckState)
		}
		if strings.Contains(a.stderr.String(), string(newKind)) {
			t.Fatalf("the older agent saw the newer kind:\n%s", a.stderr.String())
		}
	})

	for _, tc := range []struct {
		name, bin, version string
		protocol           int
		why                string
	}{
		{"too old", tooOld, "skew-too-old", wire.MinProtocolVersion - 1, "the agent is too old for this controller"},
		{"too new", tooNew, "skew-too-new", wire.ProtocolVersion + 1, "the agent is newer than this controller"},
	} {
		t.Run("an agent "+tc.name+" is refused", func(t *testing.T) {
			inst := "inst-" + strings.ReplaceAll(tc.name, " ", "-")
			a := r.startAgent(t, tc.bin, inst)
			waitFor(t, "refusal", time.Minute, func() bool { return len(r.refusals(inst)) > 0 })
			msg := r.refusals(inst)[0]
			t.Logf("refusal recorded: %s", msg)
			want := fmt.Sprintf("agent %s refused: protocol version refused: agent speaks protocol %d, this controller serves protocols %d to %d; %s",
				tc.version, tc.protocol, wire.MinProtocolVersion, wire.ProtocolVersion, tc.why)
			if !strings.HasPrefix(msg, want) {
				t.Fatalf("refusal %q, want it to start %q", msg, want)
			}
			logLine := fmt.Sprintf(`level=ERROR msg="agent refused: protocol version not served" component=agent-endpoint instance=%s`, inst)
			fields := fmt.Sprintf("agent_version=%s agent_protocol=%d min_protocol=%d max_protocol=%d", tc.version, tc.protocol, wire.MinProtocolVersion, wire.ProtocolVersion)
			waitFor(t, "the agent logs the refusal", 30*time.Second, func() bool {
				return strings.Contains(a.stderr.String(), "controller refused the agent's protocol version")
			})
			clog := r.log.String()
			if !strings.Contains(clog, logLine) || !strings.Contains(clog, fields) {
				t.Fatalf("controller log lacks %q ... %q:\n%s", logLine, fields, clog)
			}
			out := a.stderr.String()
			if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, tc.why) {
				t.Fatalf("agent log does not say why at error level:\n%s", out)
			}
			// Slow retries: the next attempt waits half the longest
			// backoff (60s) at least, so none comes in the next 3s.
			time.Sleep(3 * time.Second)
			if n := len(r.refusals(inst)); n != 1 {
				t.Fatalf("%d hellos refused within 3s: the agent spins", n)
			}
			if r.server.Connected(inst) {
				t.Fatal("a refused agent holds a session")
			}
			if n := len(r.store.Keys(inst)); n != 1 {
				t.Fatalf("%d keys enrolled after the refusal, want the one kept", n)
			}
			a.stop(t)

			// A rebuild onto a right image: a new agent (new key, new
			// token) of the controller's protocol gets in.
			r.store.RevokeKeys(inst)
			r.startAgent(t, current, inst)
			waitFor(t, "the rebuilt agent connected", time.Minute, func() bool { return r.server.Connected(inst) })
			res, err := r.call(ctx, inst, wire.Operation{ID: "status-after-rebuild", Kind: wire.KindStatus})
			if err != nil || res.Error != nil {
				t.Fatalf("status after the rebuild: %v %+v", err, res.Error)
			}
		})
	}
}

func (r *skewRig) call(ctx context.Context, inst string, op wire.Operation) (wire.Result, error) {
	if err := r.server.Submit(ctx, inst, op); err != nil {
		return wire.Result{}, err
	}
	return r.server.Await(ctx, inst, op.ID)
}

// The Welcome a protocol 1 agent gets is one its strict decoder reads:
// no field it does not know. A protocol 2 agent's names the protocol.
func TestWelcomeFitsTheAgentsProtocol(t *testing.T) {
	rig := endpointtest.NewRig(t)
	for _, tc := range []struct {
		name, hello string
		want        int
	}{
		{"protocol 1, as today's images send it", `{"instance_id":"inst-v1","agent_version":"old","boot_id":"b"}`, 0},
		{"current protocol", fmt.Sprintf(`{"instance_id":"inst-v2","agent_version":"new","boot_id":"b","protocol_version":%d}`, wire.ProtocolVersion), wire.ProtocolVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h wire.Hello
			if err := wire.DecodeStrict([]byte(tc.hello), &h); err != nil {
				t.Fatal(err)
			}
			token := wire.NewEnrollmentToken()
			rig.Store.AddInstance(h.InstanceID, token)
			conn, err := ssh.Dial("tcp", rig.Addr, &ssh.ClientConfig{
				User:            wire.SSHUser,
				Auth:            []ssh.AuthMethod{ssh.PublicKeys(wiretest.NewSigner(t)), ssh.Password(token)},
				HostKeyCallback: ssh.FixedHostKey(rig.HostKey.PublicKey()),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ok, reply, err := conn.SendRequest(wire.RequestHello, true, []byte(tc.hello))
			if !ok || err != nil {
				t.Fatalf("hello refused: %v %s", err, reply)
			}
			if tc.want == 0 {
				var w struct {
					InstanceID string    `json:"instance_id"`
					ServerTime time.Time `json:"server_time"`
				}
				if err := wire.DecodeStrict(reply, &w); err != nil || w.InstanceID != h.InstanceID {
					t.Fatalf("a protocol 1 agent cannot read the welcome %s: %v", reply, err)
				}
				return
			}
			var w wire.Welcome
			if err := wire.DecodeStrict(reply, &w); err != nil || w.ProtocolVersion != tc.want {
				t.Fatalf("welcome %s: %v, want protocol %d", reply, err, tc.want)
			}
		})
	}
}

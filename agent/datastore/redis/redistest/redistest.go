// Package redistest runs a private Redis server for tests: Debian's real
// redis-server with its own configuration, data directory, ACL file,
// socket and log under a temporary directory, no TCP port, prepared
// through the manager's own Prepare and stopped when the test (or test
// binary) ends.
//
// It is for tests only and must never be imported by the agent binary.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"strata/agent/datastore/redis"
	"strata/agent/wire"
)

// Binary returns the path of redis-server, or an error that says how to
// install it.
func Binary() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/bin/redis-server", "/usr/sbin/redis-server"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", errors.New("redis-server not found: these tests run a real Redis server; " +
		"install Debian's redis-server with `ci/deps.sh test` (as root) or `make test`")
}

// Instance is one private server and its manager.
type Instance struct {
	Dir     string
	Config  redis.Config
	Process *Process
	Manager *redis.Manager
	cleanup []func()
}

// New lays out a private server under dir (the socket goes to a short
// directory of its own if dir's path is too long for a unix socket) and
// returns an unprepared manager for it.
func New(dir string, log *slog.Logger) (*Instance, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	inst := &Instance{Dir: dir}
	sockDir := filepath.Join(dir, "run")
	if len(sockDir) > 80 {
		short, err := os.MkdirTemp("", "rds")
		if err != nil {
			return nil, err
		}
		sockDir = short
		inst.cleanup = append(inst.cleanup, func() { os.RemoveAll(short) })
	}
	// The unit's RuntimeDirectory in the guest.
	if err := os.MkdirAll(sockDir, 0o755); err != nil {
		return nil, err
	}
	me, err := user.Current()
	if err != nil {
		return nil, err
	}
	cfg := redis.Config{
		MountPoint:    dir,
		DataDir:       filepath.Join(dir, "data"),
		Socket:        filepath.Join(sockDir, "redis.sock"),
		ConfigFile:    filepath.Join(dir, "etc", "redis.conf"),
		OverridesFile: filepath.Join(dir, "etc", "strata-overrides.conf"),
		ACLFile:       filepath.Join(dir, "data", "users.acl"),
		PidFile:       filepath.Join(sockDir, "redis.pid"),
		LogFile:       filepath.Join(dir, "log", "redis.log"),
		StateFile:     filepath.Join(dir, "state", "redis.json"),
		SecretFile:    filepath.Join(dir, "state", "redis-admin.secret"),
		OSUser:        me.Username,
		StartTimeout:  30 * time.Second,
		Logger:        log,
	}
	inst.Process = &Process{Binary: bin, ConfigFile: cfg.ConfigFile, Output: filepath.Join(dir, "redis-server.out")}
	cfg.Service = inst.Process
	inst.Config = cfg
	inst.Manager, err = redis.New(cfg)
	if err != nil {
		return nil, err
	}
	return inst, nil
}

// Close stops the server and releases everything.
func (i *Instance) Close() {
	i.Manager.Close()
	i.Process.Stop(context.Background())
	for _, f := range i.cleanup {
		f()
	}
}

// NewT is New in t.TempDir(), closed when t ends; a missing server binary
// fails the test with installation instructions.
func NewT(t testing.TB) *Instance {
	t.Helper()
	inst, err := New(t.TempDir(), Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		inst.Close()
		if t.Failed() {
			inst.LogTail(t)
		}
	})
	return inst
}

// LogTail writes the end of the server's log and output to the test log:
// what a failed test needs to say why.
func (i *Instance) LogTail(t testing.TB) {
	for _, f := range []string{i.Config.LogFile, i.Process.Output} {
		data, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		t.Logf("%s ends:\n%s", f, strings.Join(lines, "\n"))
	}
}

// PreparedT is NewT followed by a successful Prepare(args).
func PreparedT(t testing.TB, args wire.PrepareArgs) (*Instance, wire.PrepareResult) {
	t.Helper()
	inst := NewT(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := inst.Manager.Prepare(ctx, args)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	return inst, res
}

// Logger logs to stderr under go test -v, else nowhere.
func Logger() *slog.Logger {
	var w io.Writer = io.Discard
	if testing.Verbose() {
		w = os.Stderr
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Process runs redis-server directly: the tests' stand-in for the systemd
// unit.
type Process struct {
	Binary     string
	ConfigFile string
	Output     string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start launches redis-server unless it runs already.
func (p *Process) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return nil
	}
	out, err := os.OpenFile(p.Output, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	raiseFileLimit()
	cmd := exec.Command(p.Binary, p.ConfigFile, "--daemonize", "no")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

// guestFileLimit is the open-files limit Debian's redis-server.service
// gives the server (LimitNOFILE=65535); maxclients depends on it.
const guestFileLimit = 65535

var raiseOnce sync.Once

// raiseFileLimit gives this process, and so the servers it starts, the
// guest's open-files limit where the test may (as root); elsewhere the
// limit stays as it is.
func raiseFileLimit() {
	raiseOnce.Do(func() {
		var lim syscall.Rlimit
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil || lim.Cur >= guestFileLimit {
			return
		}
		want := syscall.Rlimit{Cur: guestFileLimit, Max: max(lim.Max, guestFileLimit)}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
			want.Max = lim.Max
			want.Cur = lim.Max
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
		}
	})
}

// Stop sends SIGTERM (Redis saves a snapshot if save points are set, then
// exits) and waits (SIGKILL after 60 s).
func (p *Process) Stop(ctx context.Context) error {
	return p.signal(syscall.SIGTERM, 60*time.Second)
}

// Kill ends the server with SIGKILL: a crash, for status tests.
func (p *Process) Kill() error { return p.signal(syscall.SIGKILL, 10*time.Second) }

func (p *Process) signal(sig syscall.Signal, wait time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(wait):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd, p.done = nil, nil
	return nil
}

// Restart stops and starts.
func (p *Process) Restart(ctx context.Context) error {
	if err := p.Stop(ctx); err != nil {
		return err
	}
	return p.Start(ctx)
}

// Enable is a no-op: there is no boot to start at.
func (p *Process) Enable(context.Context) error { return nil }

// Running reports whether the process is up.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// Package postgresqltest runs a private PostgreSQL server for tests:
// Debian's real postgres binary with its own data directory, socket,
// configuration and log under a temporary directory, no TCP port, prepared
// through the manager's own Prepare and stopped when the test (or test
// binary) ends. PostgreSQL refuses to run as root, so a root test run
// starts it as Debian's "postgres" account.
//
// It is for tests only and must never be imported by the agent binary.
package postgresqltest

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
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"strata/agent/datastore"
	"strata/agent/datastore/postgresql"
	"strata/agent/wire"
)

// Binaries returns the paths of postgres and initdb from Debian's newest
// installed PostgreSQL, or an error that says how to install them.
func Binaries() (postgres, initdb string, err error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		return len(dirs[i]) > len(dirs[j]) || (len(dirs[i]) == len(dirs[j]) && dirs[i] > dirs[j])
	})
	for _, d := range dirs {
		p, i := filepath.Join(d, "postgres"), filepath.Join(d, "initdb")
		if isFile(p) && isFile(i) {
			return p, i, nil
		}
	}
	return "", "", errors.New("postgres / initdb not found under /usr/lib/postgresql/*/bin: these tests run a real PostgreSQL server; " +
		"install Debian's postgresql with `ci/deps.sh test` (as root) or `make test`")
}

// Instance is one private server and its manager.
type Instance struct {
	Dir     string
	Config  postgresql.Config
	Process *Process
	Manager *postgresql.Manager
}

// New lays out a private server under dir, which must be reachable by the
// server's account, and returns an unprepared manager for it.
func New(dir string, log *slog.Logger) (*Instance, error) {
	postgres, initdb, err := Binaries()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	me, err := user.Current()
	if err != nil {
		return nil, err
	}
	osUser := me.Username
	if os.Getuid() == 0 {
		osUser = "postgres"
		if _, err := user.Lookup(osUser); err != nil {
			return nil, fmt.Errorf("the tests run as root, so the server runs as %q, which does not exist (Debian's postgresql package creates it: `ci/deps.sh test`): %w", osUser, err)
		}
	}
	cfg := postgresql.Config{
		MountPoint:    dir,
		DataDir:       filepath.Join(dir, "pgdata"),
		SocketDir:     filepath.Join(dir, "run"),
		Port:          5432,
		ConfigFile:    filepath.Join(dir, "etc", "postgresql.conf"),
		HBAFile:       filepath.Join(dir, "etc", "pg_hba.conf"),
		IdentFile:     filepath.Join(dir, "etc", "pg_ident.conf"),
		OverridesFile: filepath.Join(dir, "etc", "strata-overrides.conf"),
		PidFile:       filepath.Join(dir, "run", "postgres.pid"),
		LogFile:       filepath.Join(dir, "log", "postgresql.log"),
		StateFile:     filepath.Join(dir, "state", "postgresql.json"),
		OSUser:        osUser,
		AgentOSUser:   me.Username,
		InitDB:        initdb,
		StartTimeout:  60 * time.Second,
		Logger:        log,
	}
	runAs, err := datastore.LookupOSUser(osUser)
	if err != nil {
		return nil, err
	}
	inst := &Instance{Dir: dir}
	inst.Process = &Process{Binary: postgres, ConfigFile: cfg.ConfigFile, Output: cfg.LogFile, User: runAs}
	cfg.Service = inst.Process
	inst.Config = cfg
	inst.Manager, err = postgresql.New(cfg)
	if err != nil {
		return nil, err
	}
	return inst, nil
}

// Close stops the server and releases the manager's connections.
func (i *Instance) Close() {
	i.Manager.Close()
	i.Process.Stop(context.Background())
}

// TempDir makes a directory the server's account can reach (t.TempDir's
// parents are private to the test's user) and removes it when t ends.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "strata-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// NewT is New in a TempDir, closed when t ends; a missing server binary
// fails the test with installation instructions.
func NewT(t testing.TB) *Instance {
	t.Helper()
	inst, err := New(TempDir(t), Logger())
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

// LogTail writes the end of the server's log to the test log: what a
// failed test needs to say why.
func (i *Instance) LogTail(t testing.TB) {
	data, _ := os.ReadFile(i.Config.LogFile)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	t.Logf("%s ends:\n%s", i.Config.LogFile, strings.Join(lines, "\n"))
}

// PreparedT is NewT followed by a successful Prepare(args).
func PreparedT(t testing.TB, args wire.PrepareArgs) (*Instance, wire.PrepareResult) {
	t.Helper()
	inst := NewT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
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

// Process runs postgres directly: the tests' stand-in for the systemd unit.
type Process struct {
	Binary     string
	ConfigFile string
	Output     string
	User       datastore.OSUser

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start launches postgres unless it runs already.
func (p *Process) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p.Output), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(p.Output, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.Binary, "-c", "config_file="+p.ConfigFile)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: p.User.Credential()}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

// Stop asks for a fast shutdown (SIGINT: sessions are ended, as
// pg_ctlcluster -m fast does) and waits for it (SIGKILL after 60 s).
func (p *Process) Stop(ctx context.Context) error {
	return p.signal(syscall.SIGINT, 60*time.Second)
}

// Kill ends the postmaster with SIGKILL: a crash, for status tests.
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

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

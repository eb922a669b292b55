// Package mariadbtest runs a private MariaDB server for tests: Debian's
// real mariadbd with its own data directory, socket and logs under a
// temporary directory, no TCP port, prepared through the manager's own
// Prepare and stopped when the test (or test binary) ends.
//
// It is for tests only and must never be imported by the agent binary.
package mariadbtest

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

	"strata/agent/datastore/mariadb"
	"strata/agent/wire"
)

// Binaries returns the paths of mariadbd and mariadb-install-db, or an
// error that says how to install them.
func Binaries() (mariadbd, installDB string, err error) {
	find := func(name string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
			if p := filepath.Join(dir, name); fileExists(p) {
				return p
			}
		}
		return ""
	}
	mariadbd, installDB = find("mariadbd"), find("mariadb-install-db")
	if mariadbd == "" || installDB == "" {
		return "", "", errors.New("mariadbd / mariadb-install-db not found: these tests run a real MariaDB server; " +
			"install Debian's mariadb-server with `ci/deps.sh test` (as root) or `make test`")
	}
	return mariadbd, installDB, nil
}

// Instance is one private server and its manager.
type Instance struct {
	Dir     string
	Config  mariadb.Config
	Process *Process
	Manager *mariadb.Manager
	cleanup []func()
}

// New lays out a private server under dir (the socket goes to a short
// directory of its own if dir's path is too long for a unix socket) and
// returns an unprepared manager for it.
func New(dir string, log *slog.Logger) (*Instance, error) {
	mariadbd, installDB, err := Binaries()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	inst := &Instance{Dir: dir}
	sockDir := dir
	if len(dir) > 80 {
		short, err := os.MkdirTemp("", "mdb")
		if err != nil {
			return nil, err
		}
		sockDir = short
		inst.cleanup = append(inst.cleanup, func() { os.RemoveAll(short) })
	}
	me, err := user.Current()
	if err != nil {
		return nil, err
	}
	defaults := filepath.Join(dir, "my.cnf")
	cfg := mariadb.Config{
		MountPoint:     dir,
		DataDir:        filepath.Join(dir, "data"),
		Socket:         filepath.Join(sockDir, "mysqld.sock"),
		PidFile:        filepath.Join(dir, "mysqld.pid"),
		ConfigFile:     filepath.Join(dir, "conf.d", "90-strata.cnf"),
		OverridesFile:  filepath.Join(dir, "conf.d", "95-strata-overrides.cnf"),
		ErrorLog:       filepath.Join(dir, "log", "error.log"),
		SlowQueryLog:   filepath.Join(dir, "log", "slow.log"),
		TmpDir:         filepath.Join(dir, "tmp"),
		StateFile:      filepath.Join(dir, "state", "mariadb.json"),
		OSUser:         me.Username,
		AdminUser:      me.Username,
		SkipNetworking: true,
		InstallDB:      installDB,
		DefaultsFile:   defaults,
		StartTimeout:   60 * time.Second,
		Logger:         log,
	}
	for _, d := range []string{"log", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	// The server reads exactly the two files the manager writes.
	root := fmt.Sprintf("!include %s\n!include %s\n", cfg.ConfigFile, cfg.OverridesFile)
	if err := os.WriteFile(defaults, []byte(root), 0o644); err != nil {
		return nil, err
	}
	inst.Process = &Process{Binary: mariadbd, DefaultsFile: defaults, Output: filepath.Join(dir, "log", "mariadbd.out")}
	cfg.Service = inst.Process
	inst.Config = cfg
	inst.Manager, err = mariadb.New(cfg)
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
	t.Cleanup(inst.Close)
	return inst
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

// Process runs mariadbd directly: the tests' stand-in for the systemd unit.
type Process struct {
	Binary       string
	DefaultsFile string
	Output       string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start launches mariadbd unless it runs already.
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
	args := []string{"--defaults-file=" + p.DefaultsFile}
	if os.Getuid() == 0 {
		args = append(args, "--user=root")
	}
	cmd := exec.Command(p.Binary, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start mariadbd: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

// Stop sends SIGTERM and waits for a clean shutdown (SIGKILL after 60 s).
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

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && !strings.HasSuffix(p, "/")
}

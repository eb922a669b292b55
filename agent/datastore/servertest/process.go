// Package servertest is what the datastore managers' tests share: a real
// server process run in the foreground as the stand-in for its systemd
// unit, the one prepared server a test package shares, and the checks
// every manager's tests make (error codes, "a rejected operation changed
// nothing", rule bounds, log tail limits, a failed prepare that sticks).
//
// It is for tests only and must never be imported by the agent binary. It
// knows no datastore: each manager's <name>test package lays out its own
// server and says how to run it, and each manager's tests say what to
// check. It is the agent room's one crossing into builder/ (recipe, to
// read what an image recipe registers and check it against a real
// server), allowed because it is test-only; ci/imports_test.go names it.
package servertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"strata/agent/datastore"
)

// Process runs a server in the foreground: the tests' stand-in for its
// systemd unit.
type Process struct {
	// Command makes the command that runs the server. It is called at
	// every start, so it sees what a test changed since.
	Command func() *exec.Cmd
	// Output is the file the server's stdout and stderr are appended to.
	Output string
	// StopSignal asks for a clean shutdown (default SIGTERM).
	StopSignal syscall.Signal

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

var _ datastore.Service = (*Process)(nil)

// Start launches the server unless it runs already. The server is killed
// if the test binary dies.
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
	cmd := p.Command()
	cmd.Stdout, cmd.Stderr = out, out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", filepath.Base(cmd.Path), err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

// Stop sends StopSignal and waits for a clean shutdown (SIGKILL after
// 60 s).
func (p *Process) Stop(ctx context.Context) error {
	sig := p.StopSignal
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	return p.signal(sig, 60*time.Second)
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

// Logger logs to stderr under go test -v, else nowhere.
func Logger() *slog.Logger {
	var w io.Writer = io.Discard
	if testing.Verbose() {
		w = os.Stderr
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// LogTail writes the last 30 lines of each file (a server's log, its
// output) to the test log: what a failed test needs to say why.
func LogTail(t testing.TB, files ...string) {
	for _, f := range files {
		data, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		t.Logf("%s ends:\n%s", f, strings.Join(lines, "\n"))
	}
}

// ShortDir returns dir, or a new short temporary directory (named after
// prefix) when dir's path is too long for a unix socket in it, with what
// removes it.
func ShortDir(dir, prefix string) (short string, remove func(), err error) {
	if len(dir) <= 80 {
		return dir, func() {}, nil
	}
	short, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	return short, func() { os.RemoveAll(short) }, nil
}

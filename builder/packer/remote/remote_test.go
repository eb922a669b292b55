package remote

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"strata/builder/executor"
	"strata/builder/packer/internal/localcomm"
)

func newExecutor(t *testing.T) *Executor {
	if os.Geteuid() != 0 {
		t.Fatal("the remote executor tests run commands as root on this host: run them as root (make test does)")
	}
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Fatal("setsid missing: apt-get install util-linux")
	}
	return &Executor{Comm: localcomm.Comm{}, Name: "test machine", StopTimeout: 20 * time.Second}
}

func TestRunPassesTheExactEnvironmentArgumentsAndDirectory(t *testing.T) {
	e := newExecutor(t)
	dir := t.TempDir()
	var out bytes.Buffer
	nasty := "it's \"quoted\" $HOME `id` \\ ; & | * \n second line"
	err := e.Run(context.Background(), executor.Command{
		Path: "/bin/bash",
		Args: []string{"-c", `printf '%s|' "$1" "$VAR" "$PWD" "${HOME:-unset}" "$(env | wc -l)"; echo err >&2`, "argv0", nasty},
		Env:  []string{"VAR=" + nasty, "PATH=/usr/bin:/bin"},
		Dir:  dir, Stdout: &out, Stderr: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := nasty + "|" + nasty + "|" + dir + "|unset|"
	// env counts VAR (two lines), PATH and bash's own PWD, SHLVL, _.
	if got := out.String(); !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "err\n") {
		t.Fatalf("output %q\nwant prefix %q and stderr", got, want)
	}
}

func TestRunReportsExitStatusAndKillsWhatTheCommandLeftBehind(t *testing.T) {
	e := newExecutor(t)
	sleep, marker := markedSleep(t)
	start := time.Now()
	err := e.Run(context.Background(), executor.Command{
		Path: "/bin/sh", Args: []string{"-c", sleep + " 300 & exit 7"},
		Env: []string{"PATH=/usr/bin:/bin"},
	})
	var ee *executor.ExitError
	if !errors.As(err, &ee) || ee.Code != 7 {
		t.Fatalf("err = %v, want exit status 7", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Run waited %s for the background process", d)
	}
	assertGone(t, marker)
}

func TestCancelStopsTheCommandAndWhatItStarted(t *testing.T) {
	e := newExecutor(t)
	sleep, marker := markedSleep(t)
	started := filepath.Join(t.TempDir(), "started")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.Run(ctx, executor.Command{
			Path: "/bin/sh",
			Args: []string{"-c", fmt.Sprintf("%[1]s 300 & touch %[2]s; %[1]s 301", sleep, started)},
			Env:  []string{"PATH=/usr/bin:/bin"},
		})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("command never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	assertGone(t, marker)
}

// markedSleep copies sleep to a file whose name holds a unique marker, so
// the processes a test starts can be found in /proc.
func markedSleep(t *testing.T) (path, marker string) {
	b := make([]byte, 8)
	rand.Read(b)
	marker = "strata-remote-test-" + hex.EncodeToString(b)
	path = filepath.Join(t.TempDir(), marker)
	b, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return path, marker
}

// assertGone fails if a process whose command line holds marker runs.
func assertGone(t *testing.T, marker string) {
	t.Helper()
	time.Sleep(200 * time.Millisecond)
	entries, _ := os.ReadDir("/proc")
	for _, en := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", en.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(marker)) && !bytes.Contains(b, []byte("go test")) {
			var pid int
			fmt.Sscan(en.Name(), &pid)
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("process left running: %q", bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

func TestUploadDirKeepsModesAndSymlinksAndLeavesNoStaging(t *testing.T) {
	e := newExecutor(t)
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "install.d"), 0o755)
	os.WriteFile(filepath.Join(src, "install.d", "10-hook"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(src, "secret"), []byte("s"), 0o600)
	os.Symlink("install.d/10-hook", filepath.Join(src, "link"))
	dst, release, err := e.PrivateDir(context.Background(), filepath.Join(t.TempDir(), "in_target.d"))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	staged := func() []string { m, _ := filepath.Glob("/tmp/strata-upload.*"); return m }
	before := staged()
	if err := e.UploadDir(context.Background(), src, dst); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "install.d", "10-hook")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("hook: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "secret")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret: %v %v", fi, err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "link")); err != nil || l != "install.d/10-hook" {
		t.Errorf("link: %q %v", l, err)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the hooks directory: %v %v, want mode 0700", fi, err)
	}
	if after := staged(); len(after) > len(before) {
		t.Errorf("staging directories left on the machine: %v (before: %v)", after, before)
	}
	for _, bad := range []string{"/", "relative"} {
		if err := e.UploadDir(context.Background(), src, bad); err == nil {
			t.Errorf("UploadDir to %q was accepted", bad)
		}
		if _, _, err := e.PrivateDir(context.Background(), bad); err == nil {
			t.Errorf("PrivateDir(%q) was accepted", bad)
		}
	}
	if err := e.UploadDir(context.Background(), src, filepath.Join(t.TempDir(), "not-made")); err == nil {
		t.Error("UploadDir into a directory PrivateDir did not make was accepted")
	}
}

func TestPrivateDirIsNewAndRefusesAnExistingOne(t *testing.T) {
	e := newExecutor(t)
	a, ra, err := e.PrivateDir(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	b, rb, err := e.PrivateDir(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if a == b || !strings.HasPrefix(a, "/tmp/strata-hooks.") {
		t.Errorf("PrivateDir made %s and %s", a, b)
	}
	for _, d := range []string{a, b} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 || !fi.IsDir() {
			t.Errorf("%s: %v %v, want a directory with mode 0700", d, fi, err)
		}
	}
	for _, r := range []func() error{ra, rb} {
		if err := r(); err != nil {
			t.Fatal(err)
		}
	}
	exists := t.TempDir()
	if _, _, err := e.PrivateDir(context.Background(), exists); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("PrivateDir(%s), which exists: err = %v", exists, err)
	}
	if _, err := os.Stat(exists); err != nil {
		t.Errorf("the existing directory was removed: %v", err)
	}
}

// droppingComm is localcomm whose sessions' stdin can be cut, as when the
// connection drops because Packer killed the plugin.
type droppingComm struct {
	localcomm.Comm
	drop chan struct{}
}

func (c droppingComm) Start(ctx context.Context, rc *packersdk.RemoteCmd) error {
	if rc.Stdin != nil {
		pr, pw := io.Pipe()
		orig := rc.Stdin
		go func() {
			go io.Copy(pw, orig)
			<-c.drop
			pw.Close()
		}()
		rc.Stdin = pr
	}
	return c.Comm.Start(ctx, rc)
}

func TestADroppedConnectionStopsTheCommandAndRunsTheGuard(t *testing.T) {
	e := newExecutor(t)
	comm := droppingComm{drop: make(chan struct{})}
	e.Comm = comm
	sleep, marker := markedSleep(t)
	started := filepath.Join(t.TempDir(), "started")
	guarded, _, err := e.PrivateDir(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(guarded, "install.d"), 0o755)
	done := make(chan error, 1)
	go func() {
		done <- e.Run(context.Background(), executor.Command{
			Path: "/bin/sh", Args: []string{"-c", fmt.Sprintf("%[1]s 300 & touch %[2]s; %[1]s 301", sleep, started)},
		})
	}()
	waitFor(t, started)
	close(comm.drop)
	select {
	case err := <-done:
		var ee *executor.ExitError
		if !errors.As(err, &ee) {
			t.Errorf("err = %v, want the command to have been killed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the command did not stop when the connection dropped")
	}
	assertGone(t, marker)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(guarded); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the guard did not remove the hooks directory when the connection dropped")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPrivateDirIsRemovedOnRelease(t *testing.T) {
	e := newExecutor(t)
	dir, release, err := e.PrivateDir(context.Background(), filepath.Join(t.TempDir(), "in_target.d"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755)
	time.Sleep(200 * time.Millisecond)
	if _, err := os.Stat(dir); err != nil {
		t.Fatal("the directory was removed before it was released")
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left: %v", dir, err)
	}
}

func TestRunRefusesStdin(t *testing.T) {
	e := newExecutor(t)
	if err := e.Run(context.Background(), executor.Command{Path: "/bin/cat", Stdin: strings.NewReader("x")}); err == nil {
		t.Fatal("a command with stdin was run")
	}
}

func waitFor(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSudoPrefixesEveryCommand(t *testing.T) {
	e := newExecutor(t)
	// A "sudo" that records it was used and runs its arguments.
	bin := t.TempDir()
	log := filepath.Join(bin, "log")
	os.WriteFile(filepath.Join(bin, "fakesudo"), []byte("#!/bin/sh\nprintf '%s\\n' \"$1\" >>"+log+"\nshift\nexec \"$@\"\n"), 0o755)
	e.Sudo = filepath.Join(bin, "fakesudo") + " -n"
	if err := e.Run(context.Background(), executor.Command{Path: "/bin/true"}); err != nil {
		t.Fatal(err)
	}
	_, release, err := e.PrivateDir(context.Background(), filepath.Join(bin, "nothing"))
	if err != nil {
		t.Fatal(err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(log)
	if string(b) != "-n\n-n\n" {
		t.Fatalf("sudo saw %q", b)
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain/path-1.2": "plain/path-1.2", "": "''", "a b": "'a b'", "it's": `'it'\''s'`, "K=V": "'K=V'", "~": "'~'",
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
}

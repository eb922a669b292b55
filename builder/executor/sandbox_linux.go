package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The sandbox helper is this same binary re-executed with the spec in this
// variable; init below turns such a process into the helper before main (or
// a test) starts.
const helperEnv = "_STRATA_SANDBOX_SPEC"

func init() {
	if raw, ok := os.LookupEnv(helperEnv); ok {
		os.Exit(runHelper(raw))
	}
}

// MountKind is what to mount at a target.
type MountKind string

const (
	bindMount  MountKind = "bind"  // Source onto Target
	rbindMount MountKind = "rbind" // Source and its submounts onto Target
	procMount  MountKind = "proc"  // a procfs for the new PID namespace
	sysfsMount MountKind = "sysfs"
	tmpfsMount MountKind = "tmpfs"
)

// Mount is one mount made inside the sandbox's private namespace.
type Mount struct {
	Kind   MountKind `json:"kind"`
	Source string    `json:"source,omitempty"`
	// Target is a path inside the root (absolute, e.g. "/proc"); symlinks
	// in it are resolved inside the root, never on the host.
	Target   string `json:"target"`
	ReadOnly bool   `json:"ro,omitempty"`
	// File marks a bind of a single file; a missing target file is created.
	File bool `json:"file,omitempty"`
	// Optional mounts are skipped when the target does not exist.
	Optional bool `json:"optional,omitempty"`
	// NoSuid, NoDev and NoExec are set on a bind mount, as ReadOnly is.
	NoSuid bool `json:"nosuid,omitempty"`
	NoDev  bool `json:"nodev,omitempty"`
	NoExec bool `json:"noexec,omitempty"`
}

// Bind returns a bind mount of a host directory at target inside the root.
func Bind(source, target string, readOnly bool) Mount {
	return Mount{Kind: bindMount, Source: source, Target: target, ReadOnly: readOnly}
}

// BindFile returns a bind mount of a single host file; a missing target
// file is created.
func BindFile(source, target string, readOnly bool) Mount {
	return Mount{Kind: bindMount, Source: source, Target: target, ReadOnly: readOnly, File: true}
}

type sandboxSpec struct {
	// Hold makes the helper a mount-namespace holder (see
	// MountNamespace): it makes its mounts private and waits for stdin to
	// close.
	Hold bool `json:"hold,omitempty"`
	// JoinNS: fd 4 is a mount namespace to run in. A host command runs in
	// it (its mounts stay there); a chroot gets a private copy of it.
	JoinNS bool `json:"join_ns,omitempty"`
	// MountOnly: unmount Unmounts, make Mounts, and exit without running
	// a command (MountNamespace.Apply: with JoinNS and no Root, they stay
	// in the build's namespace).
	MountOnly bool     `json:"mount_only,omitempty"`
	Unmounts  []string `json:"unmounts,omitempty"`
	Root      string   `json:"root,omitempty"`
	Mounts    []Mount  `json:"mounts,omitempty"`
	Path      string   `json:"path"`
	Args      []string `json:"args,omitempty"`
	Env       []string `json:"env"`
	Dir       string   `json:"dir,omitempty"`
}

// stopGrace is how long a cancelled command gets after SIGTERM before the
// whole namespace is killed.
var stopGrace = 10 * time.Second

// runSandboxed starts the helper in new mount and PID namespaces and waits.
// With ns, the helper joins that mount namespace first.
func runSandboxed(ctx context.Context, sp sandboxSpec, cmd Command, ns *MountNamespace) error {
	if ns != nil {
		sp.JoinNS = true
	}
	raw, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("sandbox: finding own executable: %w", err)
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer statusR.Close()
	c := exec.CommandContext(ctx, self)
	c.Args = []string{"strata-sandbox"}
	c.Env = []string{helperEnv + "=" + string(raw)}
	c.Stdin, c.Stdout, c.Stderr = cmd.Stdin, cmd.Stdout, cmd.Stderr
	c.ExtraFiles = []*os.File{statusW}
	if ns != nil {
		c.ExtraFiles = append(c.ExtraFiles, ns.fd)
	}
	c.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID,
		Pdeathsig:  syscall.SIGKILL,
		Setpgid:    true,
	}
	// On cancel: SIGTERM to the helper, which forwards it to the command's
	// process group; if that is not enough, SIGKILL to the helper ends the
	// PID namespace and with it every process in it.
	c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
	c.WaitDelay = stopGrace
	if err := c.Start(); err != nil {
		statusW.Close()
		if errors.Is(err, syscall.EPERM) {
			return fmt.Errorf("sandbox: creating mount and PID namespaces needs root (CAP_SYS_ADMIN): %w", err)
		}
		return fmt.Errorf("sandbox: %w", err)
	}
	statusW.Close()
	waitErr := c.Wait()
	status, _ := io.ReadAll(statusR)
	if len(status) > 0 {
		return fmt.Errorf("sandbox: %s", bytes.TrimSpace(status))
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), waitErr)
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			return &ExitError{Code: 128 + int(ws.Signal()), Signal: unix.SignalName(ws.Signal())}
		}
		return &ExitError{Code: ws.ExitStatus()}
	}
	return waitErr
}

// runHelper is the sandbox's PID 1: it mounts, chroots, starts the command,
// forwards termination signals to it, reaps orphans, and exits with the
// command's status. Its exit kills whatever the command left running.
func runHelper(raw string) int {
	status := os.NewFile(3, "status")
	fail := func(format string, args ...any) int {
		fmt.Fprintf(status, format, args...)
		return 125
	}
	var sp sandboxSpec
	if err := json.Unmarshal([]byte(raw), &sp); err != nil {
		return fail("bad spec: %v", err)
	}
	unix.CloseOnExec(3)
	if sp.Hold {
		return hold(status)
	}
	private := true
	if sp.JoinNS {
		// Namespaces belong to threads: this goroutine keeps its thread,
		// which leaves the process's shared filesystem context, enters the
		// build's mount namespace, and starts the command (a child
		// inherits the namespaces of the thread that forks it).
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fail("unshare CLONE_FS: %v", err)
		}
		if err := unix.Setns(4, unix.CLONE_NEWNS); err != nil {
			return fail("joining the build's mount namespace: %v", err)
		}
		unix.Close(4)
		if sp.Root != "" {
			// A chroot's mounts are its own: a copy of the build's.
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fail("unshare CLONE_NEWNS: %v", err)
			}
		} else {
			private = false // mounts made on the host last for the build
		}
	}
	if private {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fail("making mounts private: %v", err)
		}
	}
	for _, p := range sp.Unmounts {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
			return fail("unmount %s: %v", p, err)
		}
	}
	for _, m := range sp.Mounts {
		if err := doMount(sp.Root, m); err != nil {
			return fail("mount %s on %s: %v", m.Kind, m.Target, err)
		}
	}
	if sp.MountOnly {
		status.Close()
		return 0
	}
	if sp.Root != "" {
		if err := unix.Chroot(sp.Root); err != nil {
			return fail("chroot %s: %v", sp.Root, err)
		}
		if err := os.Chdir("/"); err != nil {
			return fail("chdir /: %v", err)
		}
	}
	path, err := lookPath(sp.Path, sp.Env)
	if err != nil {
		return fail("%v", err)
	}
	c := &exec.Cmd{
		Path:        path,
		Args:        append([]string{sp.Path}, sp.Args...),
		Env:         sp.Env,
		Dir:         sp.Dir,
		Stdin:       os.Stdin,
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if c.Dir == "" && sp.Root != "" {
		c.Dir = "/"
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if err := c.Start(); err != nil {
		return fail("starting %s: %v", sp.Path, err)
	}
	status.Close()
	pid := c.Process.Pid
	go func() {
		for s := range sigs {
			_ = unix.Kill(-pid, s.(syscall.Signal))
		}
	}()
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 125
		}
		if got != pid {
			continue // an orphan reparented to us
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

// hold is the mount-namespace holder's life: private mounts, then wait
// until the builder closes stdin (or dies: Pdeathsig).
func hold(status *os.File) int {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fmt.Fprintf(status, "making mounts private: %v", err)
		return 125
	}
	status.Close()
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// MountNamespace is a mount namespace that lives as long as a build:
// commands run on the host through an executor given it share it, so a
// mount one hook makes (DIB's pip-cache bind-mounts its cache into the
// tree in root.d) is there for the next, and chroots see it; when it is
// closed, or the builder dies, the kernel drops every mount in it.
type MountNamespace struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	fd    *os.File
}

// NewMountNamespace starts a holder process in a new mount namespace.
func NewMountNamespace(ctx context.Context) (*MountNamespace, error) {
	raw, _ := json.Marshal(sandboxSpec{Hold: true})
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("mount namespace: finding own executable: %w", err)
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer statusR.Close()
	c := exec.Command(self)
	c.Args = []string{"strata-mount-namespace"}
	c.Env = []string{helperEnv + "=" + string(raw)}
	stdin, err := c.StdinPipe()
	if err != nil {
		statusW.Close()
		return nil, err
	}
	c.ExtraFiles = []*os.File{statusW}
	c.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := c.Start(); err != nil {
		statusW.Close()
		if errors.Is(err, syscall.EPERM) {
			return nil, fmt.Errorf("mount namespace: needs root (CAP_SYS_ADMIN): %w", err)
		}
		return nil, fmt.Errorf("mount namespace: %w", err)
	}
	statusW.Close()
	msg, _ := io.ReadAll(statusR)
	m := &MountNamespace{cmd: c, stdin: stdin}
	if len(msg) > 0 {
		m.Close()
		return nil, fmt.Errorf("mount namespace: %s", bytes.TrimSpace(msg))
	}
	if m.fd, err = os.Open(fmt.Sprintf("/proc/%d/ns/mnt", c.Process.Pid)); err != nil {
		m.Close()
		return nil, fmt.Errorf("mount namespace: %w", err)
	}
	return m, nil
}

// MountEntry is one mount of a namespace, as its mountinfo lists it.
type MountEntry struct {
	ID  int
	Dev string // major:minor of the mounted filesystem
	// Root is the directory of that filesystem mounted here ("/" for a
	// whole filesystem, the source directory's path in it for a bind).
	Root  string
	Point string   // the mount point
	Opts  []string // per-mount options: ro or rw, nosuid, nodev, noexec...
	// FSType and Source are the filesystem's type and source ("tmpfs",
	// "/dev/vda").
	FSType string
	Source string
}

// Has reports whether the per-mount options include opt.
func (e MountEntry) Has(opt string) bool {
	for _, o := range e.Opts {
		if o == opt {
			return true
		}
	}
	return false
}

// Mounts lists the namespace's mounts, in the order it made them.
func (m *MountNamespace) Mounts() ([]MountEntry, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", m.cmd.Process.Pid))
	if err != nil {
		return nil, err
	}
	return parseMountInfo(string(data)), nil
}

// parseMountInfo reads proc(5)'s mountinfo format: ID, parent ID,
// major:minor, root, mount point, options, optional fields, "-", type,
// source, superblock options.
func parseMountInfo(data string) []MountEntry {
	var out []MountEntry
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		e := MountEntry{Dev: f[2], Root: unescapeMountInfo(f[3]), Point: unescapeMountInfo(f[4]), Opts: strings.Split(f[5], ",")}
		e.ID, _ = strconv.Atoi(f[0])
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				if i+1 < len(f) {
					e.FSType = f[i+1]
				}
				if i+2 < len(f) {
					e.Source = unescapeMountInfo(f[i+2])
				}
				break
			}
		}
		out = append(out, e)
	}
	return out
}

// unescapeMountInfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountInfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountPoints lists the namespace's mount points.
func (m *MountNamespace) MountPoints() ([]string, error) {
	ms, err := m.Mounts()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ms))
	for i, e := range ms {
		out[i] = e.Point
	}
	return out, nil
}

// Path is p as seen from inside the namespace (through its holder's
// /proc/PID/root), for reading what is mounted there.
func (m *MountNamespace) Path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s", m.cmd.Process.Pid, filepath.Clean("/"+p))
}

// BindSource finds the path a bind mount e shows, among the namespace's
// other mounts (those it had before e was made): a mount of the same
// filesystem whose root holds e's root. The path is checked to be the
// very directory (or file) mounted at e. It reports false for a mount
// that is not a bind of a path the namespace can reach (a fresh tmpfs, a
// procfs), or when the path no longer shows what e shows.
func (m *MountNamespace) BindSource(e MountEntry, among []MountEntry) (string, bool) {
	var want unix.Stat_t
	if err := unix.Stat(m.Path(e.Point), &want); err != nil {
		return "", false
	}
	for i := len(among) - 1; i >= 0; i-- { // the latest mount of a path is the one seen
		c := among[i]
		if c.ID == e.ID || c.Dev != e.Dev {
			continue
		}
		rel, ok := strings.CutPrefix(e.Root, c.Root)
		if !ok || (c.Root != "/" && rel != "" && !strings.HasPrefix(rel, "/")) {
			continue
		}
		p := filepath.Join(c.Point, rel)
		var got unix.Stat_t
		if err := unix.Stat(m.Path(p), &got); err == nil && got.Dev == want.Dev && got.Ino == want.Ino {
			return p, true
		}
	}
	return "", false
}

// Apply unmounts unmounts and then makes mounts in the namespace (host
// paths: no Root), where they stay until it ends, as if a host command
// run in it had made them.
func (m *MountNamespace) Apply(ctx context.Context, unmounts []string, mounts []Mount) error {
	return runSandboxed(ctx, sandboxSpec{MountOnly: true, Unmounts: unmounts, Mounts: mounts}, Command{}, m)
}

// Close ends the namespace and every mount in it.
func (m *MountNamespace) Close() error {
	if m.fd != nil {
		m.fd.Close()
	}
	m.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- m.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		return <-done
	}
}

// lookPath resolves a command name with the command's own PATH (inside the
// root, after chroot).
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH %s", name, path)
}

func doMount(root string, m Mount) error {
	target, err := resolveIn(root, m.Target)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
		if m.Optional {
			return nil
		}
		if m.File {
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			f.Close()
		} else if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
	}
	const common = unix.MS_NOSUID | unix.MS_NODEV
	switch m.Kind {
	case procMount:
		return unix.Mount("proc", target, "proc", common|unix.MS_NOEXEC, "")
	case sysfsMount:
		return unix.Mount("sysfs", target, "sysfs", common|unix.MS_NOEXEC|unix.MS_RDONLY, "")
	case tmpfsMount:
		return unix.Mount("tmpfs", target, "tmpfs", common, "mode=0755")
	case bindMount, rbindMount:
		flags := uintptr(unix.MS_BIND)
		if m.Kind == rbindMount {
			flags |= unix.MS_REC
		}
		if err := unix.Mount(m.Source, target, "", flags, ""); err != nil {
			return err
		}
		// A bind mount takes its flags only when remounted.
		var extra uintptr
		for _, f := range []struct {
			set  bool
			flag uintptr
		}{{m.ReadOnly, unix.MS_RDONLY}, {m.NoSuid, unix.MS_NOSUID}, {m.NoDev, unix.MS_NODEV}, {m.NoExec, unix.MS_NOEXEC}} {
			if f.set {
				extra |= f.flag
			}
		}
		if extra != 0 {
			return unix.Mount("", target, "", flags|unix.MS_REMOUNT|extra, "")
		}
		return nil
	}
	return fmt.Errorf("unknown mount kind %q", m.Kind)
}

// resolveIn returns the host path of p inside root, following symlinks as
// if root were /, so that a link like /etc/resolv.conf ->
// /run/systemd/resolve/stub-resolv.conf stays inside the root.
func resolveIn(root, p string) (string, error) {
	if root == "" {
		return p, nil
	}
	parts := strings.Split(strings.Trim(filepath.Clean("/"+p), "/"), "/")
	cur := "/"
	for hops := 0; len(parts) > 0; {
		part := parts[0]
		parts = parts[1:]
		if part == "" || part == "." {
			continue
		}
		if part == ".." {
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, part)
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		link, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(link) {
			cur = "/"
		}
		parts = append(strings.Split(strings.Trim(link, "/"), "/"), parts...)
	}
	return filepath.Join(root, cur), nil
}

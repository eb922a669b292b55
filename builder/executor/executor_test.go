package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// probe is a static binary built once from testdata/probe.
var probe string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "probe")
	if err != nil {
		panic(err)
	}
	probe = filepath.Join(dir, "probe")
	build := exec.Command("go", "build", "-o", probe, "./testdata/probe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		panic("building probe: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the executor tests create mount and PID namespaces and need root; run them as root (make test does)")
	}
}

// fakeRoot makes a tiny image root holding the probe at /bin/probe.
func fakeRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"bin", "proc", "sys", "dev", "run", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/probe"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// mountsUnder lists host mount points at or below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// processesIn lists PIDs whose root directory is dir.
func processesIn(dir string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		if l, err := os.Readlink(filepath.Join("/proc", e.Name(), "root")); err == nil && l == dir {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestChrootRunsInsideRootWithMountsAndExactEnv(t *testing.T) {
	requireRoot(t)
	root := fakeRoot(t)
	hooks := t.TempDir()
	os.WriteFile(filepath.Join(hooks, "marker"), []byte("hooks-visible"), 0o644)
	cache := t.TempDir()
	os.MkdirAll(filepath.Join(root, "var/cache/apt/archives"), 0o755)
	// resolv.conf as a link into /run, as systemd-resolved leaves it.
	os.Symlink("../run/systemd/resolve/stub-resolv.conf", filepath.Join(root, "etc/resolv.conf"))
	hostResolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(hostResolv, []byte("nameserver 192.0.2.53\n"), 0o644)

	ex := &Chroot{Root: root, HooksDir: hooks, Binds: []Mount{
		Bind(cache, "/var/cache/apt/archives", false),
		{Kind: bindMount, Source: hostResolv, Target: "/etc/resolv.conf", File: true, ReadOnly: true},
	}}
	var out bytes.Buffer
	err := ex.Run(context.Background(), Command{
		Path: "/bin/probe", Args: []string{"report"},
		Env: []string{"PATH=/bin", "DIB_TEST=1"}, Stdout: &out, Stderr: os.Stderr,
	})
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Pid           int
		Init          string
		Cwd           string
		Env           []string
		Marker        string
		Mounts        []string
		HooksWritable bool `json:"hooks_writable"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if rep.Cwd != "/" || rep.Marker != "hooks-visible" {
		t.Errorf("cwd=%q marker=%q: not inside the root with hooks at %s", rep.Cwd, rep.Marker, HooksMountPoint)
	}
	if rep.HooksWritable {
		t.Error("hooks dir is writable from the chroot; it must be read-only")
	}
	// In a fresh PID namespace the sandbox helper is PID 1 (its Go runtime
	// threads take the next few IDs).
	if rep.Init != "strata-sandbox" || rep.Pid > 64 {
		t.Errorf("pid = %d, pid 1 = %q: not in a fresh PID namespace under the helper", rep.Pid, rep.Init)
	}
	if !slices.Equal(rep.Env, []string{"PATH=/bin", "DIB_TEST=1"}) {
		t.Errorf("env = %v: the command must get exactly the given environment", rep.Env)
	}
	for _, m := range []string{"/proc", "/sys", "/dev", "/run", "/tmp/in_target.d", "/var/cache/apt/archives", "/run/systemd/resolve/stub-resolv.conf"} {
		if !slices.Contains(rep.Mounts, m) {
			t.Errorf("%s not mounted inside the chroot (mounts: %v)", m, rep.Mounts)
		}
	}
	if got := mountsUnder(t, root); len(got) > 0 {
		t.Errorf("mounts left on the host under the root: %v", got)
	}
	if _, err := os.Lstat(filepath.Join(root, "tmp/in_target.d")); err == nil {
		t.Error("/tmp/in_target.d left behind in the root")
	}
	if _, err := os.Lstat(filepath.Join(root, "run/systemd")); err == nil {
		t.Error("files created under the private /run leaked into the root")
	}
}

func TestFailingCommandReportsExitStatus(t *testing.T) {
	requireRoot(t)
	root := fakeRoot(t)
	var stderr bytes.Buffer
	err := (&Chroot{Root: root}).Run(context.Background(), Command{Path: "/bin/probe", Args: []string{"exit", "3"}, Stderr: &stderr})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 3 {
		t.Fatalf("err = %v, want exit status 3", err)
	}
	if !strings.Contains(stderr.String(), "probe exiting with 3") {
		t.Errorf("stderr not passed through: %q", stderr.String())
	}
	if got := mountsUnder(t, root); len(got) > 0 {
		t.Errorf("mounts left after a failing command: %v", got)
	}
}

func TestMissingProgramIsASetupError(t *testing.T) {
	requireRoot(t)
	root := fakeRoot(t)
	err := (&Chroot{Root: root}).Run(context.Background(), Command{Path: "nonexistent-tool", Env: []string{"PATH=/bin"}})
	if err == nil || !strings.Contains(err.Error(), "nonexistent-tool: not found") {
		t.Fatalf("err = %v", err)
	}
}

func TestCancelKillsEveryProcessAndLeavesNoMount(t *testing.T) {
	requireRoot(t)
	old := stopGrace
	stopGrace = 2 * time.Second
	defer func() { stopGrace = old }()
	root := fakeRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw, _ := os.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- (&Chroot{Root: root, HooksDir: t.TempDir()}).Run(ctx, Command{
			Path: "/bin/probe", Args: []string{"spawn-and-sleep", "/tmp/daemon.pid"}, Stdout: pw,
		})
		pw.Close()
	}()
	buf := make([]byte, 64)
	n, _ := pr.Read(buf)
	if !strings.Contains(string(buf[:n]), "spawned") {
		t.Fatalf("probe did not start: %q", buf[:n])
	}
	if procs := processesIn(root); len(procs) < 2 {
		t.Fatalf("expected the probe and its daemon in the root, found %v", procs)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	t.Logf("stopped in %v", time.Since(start))
	// The kernel reaps a dead namespace asynchronously; give it a moment.
	deadline := time.Now().Add(5 * time.Second)
	for len(processesIn(root)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if procs := processesIn(root); len(procs) > 0 {
		t.Errorf("processes still running in the root after cancel: %v", procs)
	}
	if got := mountsUnder(t, root); len(got) > 0 {
		t.Errorf("mounts left after cancel: %v", got)
	}
}

func TestHostMountsVanishWithTheCommand(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	target := filepath.Join(dir, "mnt")
	os.Mkdir(target, 0o755)
	err := (&Host{}).Run(context.Background(), Command{Path: probe, Args: []string{"mount-tmpfs", target}, Stderr: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	if got := mountsUnder(t, dir); len(got) > 0 {
		t.Errorf("a host command's mount outlived it: %v", got)
	}
}

func TestResolveInStaysInsideRoot(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.MkdirAll(filepath.Join(root, "real/dir"), 0o755)
	os.Symlink("/real", filepath.Join(root, "abs"))
	os.Symlink("../../../../../../etc", filepath.Join(root, "real/escape"))
	cases := map[string]string{
		"/abs/dir/x":          "/real/dir/x",
		"/real/escape/passwd": "/etc/passwd",
		"/etc/../real":        "/real",
	}
	for in, want := range cases {
		got, err := resolveIn(root, in)
		if err != nil || got != filepath.Join(root, want) {
			t.Errorf("resolveIn(%s) = %s, %v; want %s", in, got, err, filepath.Join(root, want))
		}
	}
	os.Symlink("loop", filepath.Join(root, "loop"))
	if _, err := resolveIn(root, "/loop/x"); err == nil {
		t.Error("symlink loop not detected")
	}
}

func TestMountInfoIsReadWithItsEscapesAndOptionalFields(t *testing.T) {
	got := parseMountInfo("" +
		"22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n" +
		"36 22 254:0 /srv/my\\040cache /tmp/dib\\040build/mnt/tmp/pip ro,nosuid,nodev master:1 shared:5 - ext4 /dev/vda rw\n" +
		"40 22 0:51 / /run/x rw - tmpfs tmpfs rw,mode=755\n")
	if len(got) != 3 {
		t.Fatalf("%d entries, want 3: %+v", len(got), got)
	}
	b := got[1]
	if b.ID != 36 || b.Dev != "254:0" || b.Root != "/srv/my cache" || b.Point != "/tmp/dib build/mnt/tmp/pip" ||
		b.FSType != "ext4" || b.Source != "/dev/vda" || !b.Has("ro") || !b.Has("nosuid") || !b.Has("nodev") || b.Has("noexec") {
		t.Errorf("bind entry = %+v", b)
	}
	if got[2].FSType != "tmpfs" || got[2].Source != "tmpfs" || got[2].Has("ro") {
		t.Errorf("tmpfs entry = %+v", got[2])
	}
}

func TestMountsAppliedToANamespaceStayInItUntilItEnds(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	src, target := filepath.Join(dir, "src"), filepath.Join(dir, "target")
	os.Mkdir(src, 0o755)
	os.Mkdir(target, 0o755)
	os.WriteFile(filepath.Join(src, "file"), []byte("from src"), 0o644)
	ns, err := NewMountNamespace(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	before, err := ns.Mounts()
	if err != nil {
		t.Fatal(err)
	}
	m := Bind(src, target, true)
	m.NoExec = true
	if err := ns.Apply(context.Background(), nil, []Mount{m}); err != nil {
		t.Fatal(err)
	}
	if got := mountsUnder(t, dir); len(got) > 0 {
		t.Errorf("the namespace's mount shows on the host: %v", got)
	}
	after, err := ns.Mounts()
	if err != nil {
		t.Fatal(err)
	}
	var made *MountEntry
	for i, e := range after {
		if e.Point == target {
			made = &after[i]
		}
	}
	if made == nil {
		t.Fatalf("no mount on %s in the namespace: %+v", target, after)
	}
	if !made.Has("ro") || !made.Has("noexec") || made.Has("nosuid") {
		t.Errorf("flags %v, want ro and noexec, not nosuid", made.Opts)
	}
	if b, err := os.ReadFile(ns.Path(filepath.Join(target, "file"))); err != nil || string(b) != "from src" {
		t.Errorf("through the mount: %q, %v", b, err)
	}
	if got, ok := ns.BindSource(*made, before); !ok || got != src {
		t.Errorf("BindSource = %q, %v; want %s", got, ok, src)
	}
	// A fresh tmpfs is no bind of anything.
	if err := (&Host{Namespace: ns}).Run(context.Background(), Command{Path: probe, Args: []string{"mount-tmpfs", target}, Stderr: os.Stderr}); err != nil {
		t.Fatal(err)
	}
	now, _ := ns.Mounts()
	if top := now[len(now)-1]; top.Point != target || top.FSType != "tmpfs" {
		t.Fatalf("last mount %+v, want the tmpfs on %s", top, target)
	} else if got, ok := ns.BindSource(top, after); ok {
		t.Errorf("BindSource of a tmpfs = %q", got)
	}
	if err := ns.Apply(context.Background(), []string{target, target}, nil); err != nil {
		t.Fatal(err)
	}
	if now, _ := ns.Mounts(); len(now) != len(before) {
		t.Errorf("after unmounting both: %d mounts, want %d", len(now), len(before))
	}
	if err := ns.Apply(context.Background(), nil, []Mount{Bind(src, target, false)}); err != nil {
		t.Fatal(err)
	}
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mountsUnder(t, dir); len(got) > 0 {
		t.Errorf("mounts left after the namespace ended: %v", got)
	}
}

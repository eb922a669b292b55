package build

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests check diskimage-builder's element contracts on tiny images
// (see tinyOS): DIB's global variables and shell library in hooks, hooks
// and environment files added while the build runs, bin/ helpers and
// pkg-map files in the image, dib-run-parts, mounts made by host hooks,
// and the refusals where strata differs on purpose.

// toolsOS is tinyOS plus the tools strata's own helpers and these tests'
// hooks use inside the image root.
var toolsOS = elems(tinyOS, map[string]string{
	"tiny-os/root.d/20-tools*": `#!/bin/bash
set -eu
for f in /usr/bin/install /usr/bin/dirname /bin/ln /bin/ls /bin/grep /usr/bin/sort /usr/bin/find /bin/date /usr/bin/mawk /bin/rm /bin/cp /usr/bin/basename /usr/bin/truncate /bin/mountpoint /bin/chmod; do
	cp --parents -L "$f" "$TARGET_ROOT"
	for lib in $(ldd "$f" | grep -o '/[^ ]*'); do cp --parents -L "$lib" "$TARGET_ROOT"; done
done
ln -sf mawk "$TARGET_ROOT/usr/bin/awk"
mkdir -p "$TARGET_ROOT/usr/sbin" "$TARGET_ROOT/var/tmp" "$TARGET_ROOT/var/log"
`,
})

// strataElements is the repository's elements directory (install-types).
func strataElements(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "elements")
}

func readOut(t *testing.T, f *fixture, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.out, name))
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, f.log.String())
	}
	return string(b)
}

func TestDIBGlobalsShellLibraryAndLayoutReachHooksThatUseSetU(t *testing.T) {
	probe := `set -eu
{
source "$_LIB/die"
source "$_LIB/img-functions"
eval declare -A els=($(get_image_element_array))
echo "installtype=$DIB_DEFAULT_INSTALLTYPE offline=[$DIB_OFFLINE] checksum=$DIB_CHECKSUM notmpfs=$DIB_NO_TMPFS mintmpfs=$DIB_MIN_TMPFS"
echo "args=$DIB_ARGS"
echo "env=$DIB_ENV"
echo "die=$(type -t die) probe-dir=${els[probe]}"
echo "rootlabel=$DIB_ROOT_LABEL fstype=$DIB_ROOT_FSTYPE caller=${CALLER_ONLY:-unset}"
`
	f := newFixture(t, elems(toolsOS, map[string]string{
		"probe/extra-data.d/10-probe*": "#!/bin/bash\n" + probe + `
[ "$TMP_MOUNT_PATH" = "$TMP_BUILD_DIR/mnt" ] && [ "$TARGET_ROOT" = "$TMP_MOUNT_PATH" ] && echo layout=dib
[ "$TMP_HOOKS_PATH" = "$TMP_BUILD_DIR/hooks" ] && echo hooks=dib
case $TMP_BUILD_DIR in */dib_build.*) echo builddir=dib ;; esac
echo "image_name=$IMAGE_NAME"
` + "} >\"$DIB_TEST_OUT/host.txt\"\n",
		"probe/install.d/10-probe*": "#!/bin/bash\n" + probe + "} >/chroot.txt\n",
	}))
	cfg := f.config("tiny-os", "probe")
	cfg.HostEnv = append(cfg.HostEnv, "CALLER_ONLY=passed", "DIB_FROM_CALLER=a \"quoted\" $value")
	cfg.Args = []string{"-o", "img", "tiny-os", "probe"}
	cfg.InstallType, cfg.Checksum = "package", true
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	host := readOut(t, f, "host.txt")
	for _, want := range []string{
		"installtype=package offline=[] checksum=1 notmpfs=0 mintmpfs=2",
		"args=-o img tiny-os probe",
		`declare -x DIB_ARGS="-o img tiny-os probe"`,
		`declare -x DIB_FROM_CALLER="a \"quoted\" \$value"`,
		"die=function probe-dir=" + filepath.Join(f.elements, "probe"),
		"rootlabel=cloudimg-rootfs fstype=ext4 caller=passed",
		"layout=dib", "hooks=dib", "builddir=dib",
		"image_name=" + cfg.Output,
	} {
		if !strings.Contains(host, want) {
			t.Errorf("host hook output lacks %q:\n%s", want, host)
		}
	}
	chroot, ok := tarFile(t, cfg.OutputPath("tar"), "chroot.txt")
	if !ok || !strings.Contains(chroot, "installtype=package") || !strings.Contains(chroot, "die=function") || !strings.Contains(chroot, "caller=passed") {
		t.Errorf("chroot hook output:\n%s", chroot)
	}
	if _, err := os.Stat(cfg.OutputPath("tar") + ".md5"); err != nil {
		t.Errorf("--checksum wrote no .md5: %v", err)
	}

	// -c: the caller's environment is not passed.
	clear := f.config("tiny-os", "probe")
	clear.HostEnv = append(clear.HostEnv, "CALLER_ONLY=passed")
	clear.ClearEnv, clear.NoCache = true, true
	clear.Env = map[string]string{"DIB_TEST_OUT": f.out} // as a recipe would
	if _, err := Run(context.Background(), clear); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if host := readOut(t, f, "host.txt"); !strings.Contains(host, "caller=unset") {
		t.Errorf("with ClearEnv the caller's variable reached the hook:\n%s", host)
	}
}

func TestHooksAndEnvironmentFilesAddedWhileTheBuildRunsRunAndAreCached(t *testing.T) {
	f := newFixture(t, elems(toolsOS, map[string]string{
		// As Trove's guest-agent: install.d hooks in a -source-install
		// directory, linked by install-types in extra-data.d.
		"agent/install.d/agent-source-install/31-agent-install*":  "#!/bin/bash\necho \"agent source ADDED=$ADDED\" >>/runs.log\n",
		"agent/install.d/agent-package-install/31-agent-install*": "#!/bin/bash\necho agent package >>/runs.log\n",
		"agent/extra-data.d/50-leave-files*": `#!/bin/bash
set -eu
echo made-on-host >"$TMP_HOOKS_PATH/left-by-extra-data"
echo 'export ADDED=yes' >"$TMP_HOOKS_PATH/environment.d/60-added.bash"
`,
		"late/post-install.d/10-late*": "#!/bin/bash\necho \"late-v1 $(cat /tmp/in_target.d/left-by-extra-data)\" >>/runs.log\n",
	}))
	f.elements2 = strataElements(t)
	cfg := f.config("tiny-os", "install-types", "agent", "late")
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	runs, _ := tarFile(t, cfg.OutputPath("tar"), "runs.log")
	if runs != "agent source ADDED=yes\nlate-v1 made-on-host\n" {
		t.Fatalf("runs.log = %q\n%s", runs, f.log.String())
	}
	var found bool
	for _, h := range res.Manifest.Hooks {
		if h.Phase == "install.d" && h.Name == "31-agent-install" && h.Element == "agent" && h.Status == "ok" {
			found = true
		}
	}
	if !found {
		t.Errorf("manifest does not list install.d/31-agent-install of agent: %+v", res.Manifest.Hooks)
	}
	if !strings.Contains(f.log.String(), "hooks added while the build ran: 31-agent-install (agent)") {
		t.Errorf("the added hook was not reported:\n%s", f.log.String())
	}

	// Change only the late element: the build restarts after install.d,
	// with the hooks directory as the extra-data.d hooks left it.
	writeElements(t, f.elements, map[string]string{"late/post-install.d/10-late*": "#!/bin/bash\necho \"late-v2 $(cat /tmp/in_target.d/left-by-extra-data) ADDED=$ADDED\" >>/runs.log\n"})
	res, err = Run(context.Background(), f.config("tiny-os", "install-types", "agent", "late"))
	if err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if res.Manifest.CachedFrom != "install.d/31-agent-install" {
		t.Errorf("cached_from = %q, want install.d/31-agent-install\n%s", res.Manifest.CachedFrom, f.log.String())
	}
	if runs, _ := tarFile(t, cfg.OutputPath("tar"), "runs.log"); runs != "agent source ADDED=yes\nlate-v2 made-on-host ADDED=yes\n" {
		t.Fatalf("runs.log after a restart = %q\n%s", runs, f.log.String())
	}

	// The package type instead: a different hook, so a different tree.
	pkg := f.config("tiny-os", "install-types", "agent", "late")
	pkg.HostEnv = append(pkg.HostEnv, "DIB_INSTALLTYPE_agent=package")
	if _, err := Run(context.Background(), pkg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if runs, _ := tarFile(t, cfg.OutputPath("tar"), "runs.log"); !strings.HasPrefix(runs, "agent package\n") {
		t.Fatalf("with DIB_INSTALLTYPE_agent=package runs.log = %q", runs)
	}
}

func TestBinHelpersPkgMapsAndDibRunPartsReachTheImage(t *testing.T) {
	f := newFixture(t, elems(toolsOS, map[string]string{
		"helper/bin/say-hello*": "#!/bin/sh\necho hello\n",
		"helper/pkg-map":        `{"default": {"thing": "thing-pkg"}}`,
		"helper/install.d/10-use-helper*": `#!/bin/bash
set -eu
say-hello >/helper.out
`,
		"helper/extra-data.d/10-run-parts*": `#!/bin/bash
set -eu
dib-run-parts "$TMP_HOOKS_PATH/custom.d" >"$DIB_TEST_OUT/run-parts.out"
`,
		"helper/custom.d/20-second*":     "#!/bin/bash\necho \"second $CUSTOM\"\n",
		"helper/custom.d/5-first*":       "#!/bin/bash\necho \"first $CUSTOM\"\n",
		"helper/custom.d/not-run":        "#!/bin/bash\necho never\n",
		"helper/environment.d/50-x.bash": "export CUSTOM=from-envd\n",
	}))
	cfg := f.config("tiny-os", "helper", "dib-run-parts", "package-installs", "pkg-map")
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	tarball := cfg.OutputPath("tar")
	if b, ok := tarFile(t, tarball, "usr/local/bin/say-hello"); !ok || !strings.Contains(b, "echo hello") {
		t.Errorf("bin/say-hello not in /usr/local/bin: %q", b)
	}
	if b, ok := tarFile(t, tarball, "usr/share/pkg-map/helper"); !ok || !strings.Contains(b, "thing-pkg") {
		t.Errorf("pkg-map not in /usr/share/pkg-map/helper: %q", b)
	}
	if b, ok := tarFile(t, tarball, "usr/local/bin/dib-run-parts"); !ok || !strings.Contains(b, "dib-run-parts") {
		t.Errorf("the dib-run-parts element did not put dib-run-parts in the image")
	}
	if b, _ := tarFile(t, tarball, "helper.out"); b != "hello\n" {
		t.Errorf("helper.out = %q", b)
	}
	if got := readOut(t, f, "run-parts.out"); got != "first from-envd\nsecond from-envd\n" {
		t.Errorf("dib-run-parts ran %q", got)
	}
}

func TestMountsHostHooksMakeLastForTheBuildAndVanishWithIt(t *testing.T) {
	f := newFixture(t, elems(toolsOS, map[string]string{
		// As DIB's pip-cache: a root.d hook bind-mounts a host cache
		// into the tree for the chroot phases.
		"cachey/root.d/50-mount-cache*": `#!/bin/bash
set -eu
mkdir -p "$DIB_TEST_OUT/cache" "$TMP_MOUNT_PATH/tmp/cache"
echo cached-content >"$DIB_TEST_OUT/cache/file"
mount --bind "$DIB_TEST_OUT/cache" "$TMP_MOUNT_PATH/tmp/cache"
`,
		"cachey/install.d/10-use-cache*": `#!/bin/bash
set -eu
cat /tmp/cache/file >/seen
echo written-in-chroot >/tmp/cache/back
`,
		"later/post-install.d/10-later*": "#!/bin/bash\nset -eu\n{ echo v1; cat /tmp/cache/file; } >/later\n",
	}))
	cfg := f.config("tiny-os", "cachey", "later")
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	// A change after the mounting hook: the build restarts from the
	// latest cached tree, and the hook's bind mount is made again.
	writeElements(t, f.elements, map[string]string{"later/post-install.d/10-later*": "#!/bin/bash\nset -eu\n{ echo v2; cat /tmp/cache/file; } >/later\n"})
	res, err := Run(context.Background(), f.config("tiny-os", "cachey", "later"))
	if err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if b, _ := tarFile(t, cfg.OutputPath("tar"), "later"); b != "v2\ncached-content\n" {
		t.Errorf("after a restart /later = %q: the mount was missing\n%s", b, f.log.String())
	}
	if res.Manifest.CachedFrom != "install.d/10-use-cache" || !strings.Contains(f.log.String(), "mounted again what root.d/50-mount-cache (cachey) mounted: "+f.out+"/cache on $TMP_BUILD_DIR/mnt/tmp/cache") {
		t.Errorf("cached_from = %q, want install.d/10-use-cache, the latest cached tree, with the mount made again\n%s", res.Manifest.CachedFrom, f.log.String())
	}
	if b, _ := tarFile(t, cfg.OutputPath("tar"), "seen"); b != "cached-content\n" {
		t.Errorf("the chroot did not see the host hook's mount: /seen = %q", b)
	}
	if b := readOut(t, f, "cache/back"); b != "written-in-chroot\n" {
		t.Errorf("cache/back = %q", b)
	}
	if _, ok := tarFile(t, cfg.OutputPath("tar"), "tmp/cache/file"); ok {
		t.Error("the mounted cache's content went into the image")
	}
	checkNothingLeft(t, f)
}

// mountHooks are root.d hooks leaving mounts in the build's namespace:
// a bind of a host directory (as DIB's pip-cache), a read-only bind of a
// host file, and a bind of a directory of the tree onto another.
var mountHooks = map[string]string{
	"cachey/root.d/50-mount-cache*": `#!/bin/bash
set -eu
mkdir -p "$DIB_TEST_OUT/cache" "$TMP_MOUNT_PATH/tmp/cache" "$TMP_MOUNT_PATH/srv/a" "$TMP_MOUNT_PATH/srv/b"
echo cached-content >"$DIB_TEST_OUT/cache/file"
echo host-file >"$DIB_TEST_OUT/ro-file"
echo in-tree >"$TMP_MOUNT_PATH/srv/a/file"
touch "$TMP_MOUNT_PATH/etc/ro-file"
mount --bind "$DIB_TEST_OUT/cache" "$TMP_MOUNT_PATH/tmp/cache"
mount --bind "$DIB_TEST_OUT/ro-file" "$TMP_MOUNT_PATH/etc/ro-file"
mount -o remount,bind,ro,nosuid "$TMP_MOUNT_PATH/etc/ro-file"
mount --bind "$TMP_MOUNT_PATH/srv/a" "$TMP_MOUNT_PATH/srv/b"
`,
	"later/post-install.d/10-later*": `#!/bin/bash
set -eu
{ echo "$LATER_VERSION"; cat /tmp/cache/file /etc/ro-file /srv/b/file; } >/later
if (echo x >/etc/ro-file) 2>/dev/null; then echo writable; else echo read-only; fi >>/later
echo "$LATER_VERSION" >/tmp/cache/back
`,
}

// checkNothingLeft: no mount below the fixture's directories, no build
// directory in the cache, no mount namespace holder of this process.
func checkNothingLeft(t *testing.T, f *fixture) {
	t.Helper()
	for _, d := range []string{f.cache, f.out} {
		if m := mountsBelow(d); len(m) > 0 {
			t.Errorf("mounts left below %s: %v", d, m)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(f.cache, "tmp", buildDirPrefix+"*")); len(left) > 0 {
		t.Errorf("build directories left: %v", left)
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		c, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.HasPrefix(string(c), "strata-mount-namespace") {
			continue
		}
		// Only this process's: other builds may run on the machine.
		st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if strings.Contains(string(st), fmt.Sprintf("\nPPid:\t%d\n", os.Getpid())) {
			t.Errorf("the build's mount namespace holder (pid %s) still runs", e.Name())
		}
	}
}

func TestABuildRestartedAfterAMountingHookHasItsMountsMadeAgain(t *testing.T) {
	f := newFixture(t, elems(toolsOS, mountHooks))
	cfg := f.config("tiny-os", "cachey", "later")
	cfg.HostEnv = append(cfg.HostEnv, "LATER_VERSION=v1")
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	first, _ := tarFile(t, cfg.OutputPath("tar"), "later")
	want := "v1\ncached-content\nhost-file\nin-tree\nread-only\n"
	if first != want {
		t.Fatalf("first build: /later = %q, want %q", first, want)
	}
	// later's variable changed: its hook runs again, from the cached tree
	// before it, with the three mounts the root.d hook made, as it made
	// them (the file read-only).
	cfg.HostEnv[len(cfg.HostEnv)-1] = "LATER_VERSION=v2"
	cfg.Output = filepath.Join(f.out, "img2")
	f.log.Reset()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if res.Manifest.CachedFrom != "root.d/50-mount-cache" {
		t.Errorf("cached_from = %q, want root.d/50-mount-cache, the latest cached tree\n%s", res.Manifest.CachedFrom, f.log.String())
	}
	for _, h := range res.Manifest.Hooks {
		if h.Phase == "root.d" && h.Status != "cached" {
			t.Errorf("root.d/%s ran again (%s): the build restarted before the mounting hook\n%s", h.Name, h.Status, f.log.String())
		}
	}
	if got, _ := tarFile(t, cfg.OutputPath("tar"), "later"); got != strings.Replace(want, "v1", "v2", 1) {
		t.Errorf("after the restart /later = %q: a mount was missing or not as the hook made it\n%s", got, f.log.String())
	}
	if b := readOut(t, f, "cache/back"); b != "v2\n" {
		t.Errorf("what the chroot wrote through the replayed mount: host cache/back = %q", b)
	}
	if !strings.Contains(f.log.String(), "mounted again what root.d/50-mount-cache (cachey) mounted") {
		t.Errorf("the log does not say the mounts were made again\n%s", f.log.String())
	}
	if _, ok := tarFile(t, cfg.OutputPath("tar"), "tmp/cache/file"); ok {
		t.Error("the mounted cache's content went into the image")
	}
	checkNothingLeft(t, f)
}

func TestARestartNeedingAMountWhoseSourceIsGoneIsRefusedLeavingNothing(t *testing.T) {
	f := newFixture(t, elems(toolsOS, mountHooks))
	cfg := f.config("tiny-os", "cachey", "later")
	cfg.HostEnv = append(cfg.HostEnv, "LATER_VERSION=v1")
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if err := os.RemoveAll(filepath.Join(f.out, "cache")); err != nil {
		t.Fatal(err)
	}
	cfg.HostEnv[len(cfg.HostEnv)-1] = "LATER_VERSION=v2"
	cfg.Output = filepath.Join(f.out, "img2")
	f.log.Reset()
	_, err := Run(context.Background(), cfg)
	if err == nil {
		t.Fatalf("the build restarted without the mount's source\n%s", f.log.String())
	}
	for _, want := range []string{"root.d/50-mount-cache (element cachey)", f.out + "/cache on $TMP_BUILD_DIR/mnt/tmp/cache", "is gone", "--no-cache"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	if strings.Contains(f.log.String(), "-->") {
		t.Errorf("hooks ran before the refusal\n%s", f.log.String())
	}
	if m, _ := filepath.Glob(cfg.Output + "*"); len(m) > 0 {
		t.Errorf("outputs written: %v", m)
	}
	if _, err := os.Stat(filepath.Join(f.out, "cache")); err == nil {
		t.Error("the refused build made the source again")
	}
	checkNothingLeft(t, f)
}

// A build killed outright (SIGKILL) while a replayed mount is in use
// leaves it nowhere: the mount lived only in the build's namespace, which
// dies with its holder; the next build removes the dead build's directory.
func TestABuildKilledWithAReplayedMountLeavesNoMount(t *testing.T) {
	hooks := elems(toolsOS, mountHooks, map[string]string{
		"later/post-install.d/10-later*": `#!/bin/bash
set -eu
echo "$LATER_VERSION" >/tmp/cache/started
if [ "$LATER_VERSION" = hang ]; then sleep 300; fi
echo "$LATER_VERSION" >/later
`,
	})
	if dir := os.Getenv("STRATA_TEST_KILL_DIR"); dir != "" {
		// The child: the build that restarts with the mount and hangs.
		f := &fixture{elements: filepath.Join(dir, "elements"), cache: filepath.Join(dir, "cache"), out: filepath.Join(dir, "out")}
		cfg := f.config("tiny-os", "cachey", "later")
		cfg.HostEnv = append(cfg.HostEnv, "LATER_VERSION=hang")
		cfg.Output = filepath.Join(f.out, "killed")
		_, err := Run(context.Background(), cfg)
		fmt.Fprintln(os.Stderr, "child build returned:", err)
		os.Exit(3)
	}
	requireRoot(t)
	dir := t.TempDir()
	f := &fixture{elements: filepath.Join(dir, "elements"), cache: filepath.Join(dir, "cache"), out: filepath.Join(dir, "out")}
	writeElements(t, f.elements, hooks)
	cfg := f.config("tiny-os", "cachey", "later")
	cfg.HostEnv = append(cfg.HostEnv, "LATER_VERSION=v1")
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	os.Remove(filepath.Join(f.out, "cache", "started"))
	cmd := exec.Command(os.Args[0], "-test.run=^TestABuildKilledWithAReplayedMountLeavesNoMount$")
	cmd.Env = append(os.Environ(), "STRATA_TEST_KILL_DIR="+dir)
	var childOut strings.Builder
	cmd.Stdout, cmd.Stderr = &childOut, &childOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The hanging hook writes through the replayed mount onto the host.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, _ := os.ReadFile(filepath.Join(f.out, "cache", "started")); string(b) == "hang\n" {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the restarted build's hook never wrote through the replayed mount\n%s", childOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// No process on the machine may still see a mount below the cache:
	// the holder and the hook's sandbox die with the build (Pdeathsig).
	deadline = time.Now().Add(10 * time.Second)
	for {
		var seen []string
		procs, _ := os.ReadDir("/proc")
		for _, p := range procs {
			mi, err := os.ReadFile(filepath.Join("/proc", p.Name(), "mountinfo"))
			if err != nil {
				continue
			}
			for _, l := range strings.Split(string(mi), "\n") {
				if fl := strings.Fields(l); len(fl) > 4 && strings.HasPrefix(fl[4], f.cache+"/") {
					seen = append(seen, p.Name()+": "+fl[4])
				}
			}
		}
		if len(seen) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mounts below the cache outlived the killed build: %v", seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The next build removes the dead build's directory and restarts with
	// the mount again.
	cfg.HostEnv[len(cfg.HostEnv)-1] = "LATER_VERSION=v3"
	f.log.Reset()
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if !strings.Contains(f.log.String(), "removed the stale build directory") || !strings.Contains(f.log.String(), "mounted again what root.d/50-mount-cache") {
		t.Errorf("the next build did not clean up after the killed one, or did not mount again\n%s", f.log.String())
	}
	if b, _ := os.ReadFile(filepath.Join(f.out, "cache", "started")); string(b) != "v3\n" {
		t.Errorf("host cache/started = %q after the next build", b)
	}
	checkNothingLeft(t, f)
}

// A mount that cannot be made again (a tmpfs: its content is gone with
// the build) keeps the build from restarting at or after its hook.
func TestABuildRestartsBeforeAHookWhoseMountCannotBeMadeAgain(t *testing.T) {
	f := newFixture(t, elems(toolsOS, map[string]string{
		"scratchy/root.d/50-mount-tmpfs*": `#!/bin/bash
set -eu
mkdir -p "$TMP_MOUNT_PATH/tmp/scratch"
mount -t tmpfs scratch "$TMP_MOUNT_PATH/tmp/scratch"
echo in-tmpfs >"$TMP_MOUNT_PATH/tmp/scratch/file"
`,
		"later/post-install.d/10-later*": "#!/bin/bash\nset -eu\n{ echo \"$LATER_VERSION\"; cat /tmp/scratch/file; } >/later\n",
	}))
	cfg := f.config("tiny-os", "scratchy", "later")
	cfg.HostEnv = append(cfg.HostEnv, "LATER_VERSION=v1")
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	cfg.HostEnv[len(cfg.HostEnv)-1] = "LATER_VERSION=v2"
	f.log.Reset()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if got, _ := tarFile(t, cfg.OutputPath("tar"), "later"); got != "v2\nin-tmpfs\n" {
		t.Errorf("/later = %q: the tmpfs was missing\n%s", got, f.log.String())
	}
	if res.Manifest.CachedFrom != "root.d/20-tools" || !strings.Contains(f.log.String(), "left a mount a cached tree cannot bring back") {
		t.Errorf("cached_from = %q, want root.d/20-tools, the checkpoint before the tmpfs\n%s", res.Manifest.CachedFrom, f.log.String())
	}
	if !strings.Contains(f.log.String(), "is not a bind mount of a path strata can mount again") {
		t.Errorf("the log does not say why the mount cannot be made again\n%s", f.log.String())
	}
	checkNothingLeft(t, f)
}

// strata's base empties /tmp at finalise.d, but never through a mount a
// host hook left there: the build host's files behind it stay.
func TestBaseHygieneDoesNotDeleteThroughAHostHooksMount(t *testing.T) {
	f := newFixture(t, elems(toolsOS, map[string]string{
		"cachey/root.d/50-mount-cache*": `#!/bin/bash
set -eu
mkdir -p "$DIB_TEST_OUT/cache" "$TMP_MOUNT_PATH/tmp/cache"
echo keep-me >"$DIB_TEST_OUT/cache/file"
mount --bind "$DIB_TEST_OUT/cache" "$TMP_MOUNT_PATH/tmp/cache"
`,
		"cachey/install.d/10-litter*": "#!/bin/bash\necho litter >/tmp/litter\n",
	}))
	f.elements2 = strataElements(t)
	cfg := f.config("tiny-os", "base", "cachey")
	cfg.SkipBase = false
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if b := readOut(t, f, "cache/file"); b != "keep-me\n" {
		t.Fatalf("the host's file behind the mount: %q", b)
	}
	if _, ok := tarFile(t, cfg.OutputPath("tar"), "tmp/litter"); ok {
		t.Error("base left /tmp/litter in the image")
	}
}

func TestBuildsRemoveDeadBuildsDirectoriesButNotLiveOnes(t *testing.T) {
	f := newFixture(t, toolsOS)
	cfg := f.config("tiny-os")
	cfg.NoCache = true
	tmp := filepath.Join(f.cache, "tmp")
	os.MkdirAll(tmp, 0o755)
	dead := filepath.Join(tmp, "dib_build.111")
	live := filepath.Join(tmp, "dib_build.222")
	for _, d := range []string{dead, live} {
		os.MkdirAll(filepath.Join(d, "mnt/etc"), 0o755)
		os.WriteFile(filepath.Join(d, lockName), nil, 0o644)
	}
	lf, err := os.Open(filepath.Join(live, lockName))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("the dead build's directory is still there (%v)\n%s", err, f.log.String())
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the live build's directory was removed: %v", err)
	}
	os.RemoveAll(live)
}

func TestConsoleThatGoesAwayDoesNotStopTheBuild(t *testing.T) {
	f := newFixture(t, toolsOS)
	cfg := f.config("tiny-os")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // as `strata build | head -3` after head exits
	cfg.Out = w
	defer w.Close()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("build failed after its console went away: %v", err)
	}
	log, _ := os.ReadFile(res.Log)
	if !strings.Contains(string(log), "PROFILING") {
		t.Error("the build log is incomplete")
	}
}

func TestRootDIsNotRerunForAnElementRootDCannotSee(t *testing.T) {
	files := elems(toolsOS, map[string]string{
		"tiny-os/environment.d/20-flavour.bash": "export TINY_FLAVOUR=${TINY_FLAVOUR:-plain}\n",
		"tiny-os/root.d/30-flavour*":            "#!/bin/bash\necho \"$TINY_FLAVOUR\" >\"$TARGET_ROOT/flavour\"\n",
		"app/install.d/10-app*":                 "#!/bin/bash\ntrue\n",
		// devuser-like: its own variables, an install.d hook.
		"user/environment.d/10-user.bash": "export DIB_USER_NAME=${DIB_USER_NAME:-dev}\n",
		"user/install.d/50-user*":         "#!/bin/bash\necho \"$DIB_USER_NAME\" >/user\n",
		// An element setting a variable root.d reads.
		"fancy/environment.d/30-fancy.bash": "export TINY_FLAVOUR=fancy\n",
		"static-only/static/etc/motd":       "hi\n",
	})
	f := newFixture(t, files)
	rootStatus := func(elements ...string) string {
		t.Helper()
		res, err := Run(context.Background(), f.config(elements...))
		if err != nil {
			t.Fatalf("%v\n%s", err, f.log.String())
		}
		for _, h := range res.Manifest.Hooks {
			if h.Name == "10-tiny-os" {
				return h.Status
			}
		}
		t.Fatal("no root.d hook in the manifest")
		return ""
	}
	if s := rootStatus("tiny-os", "app"); s != "ok" {
		t.Fatalf("cold build: root.d %s", s)
	}
	if s := rootStatus("tiny-os", "app", "user"); s != "cached" {
		t.Errorf("adding an element with an environment.d file and an install.d hook re-ran root.d (%s)", s)
	}
	if s := rootStatus("tiny-os", "app", "user", "static-only"); s != "cached" {
		t.Errorf("adding an element with only static files re-ran root.d (%s)", s)
	}
	if s := rootStatus("tiny-os", "app", "fancy"); s != "ok" {
		t.Errorf("an element changing a variable root.d reads did not re-run root.d (%s)", s)
	}
	last := f.config("tiny-os")
	if b, _ := tarFile(t, last.OutputPath("tar"), "flavour"); b != "fancy\n" {
		t.Errorf("flavour = %q", b)
	}
}

func TestElementsNeedingALoopDeviceAreRefusedBeforeAnythingRuns(t *testing.T) {
	f := newFixture(t, elems(toolsOS, map[string]string{
		"bootloader/finalise.d/50-bootloader*": "#!/bin/bash\ngrub-install $IMAGE_BLOCK_DEVICE\n",
		"marker/root.d/05-marker*":             "#!/bin/bash\ntouch \"$DIB_TEST_OUT/ran\"\n",
	}))
	_, err := Run(context.Background(), f.config("tiny-os", "marker", "bootloader"))
	if err == nil || !strings.Contains(err.Error(), "element bootloader: finalise.d/50-bootloader uses IMAGE_BLOCK_DEVICE") ||
		!strings.Contains(err.Error(), "strata's vm") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.out, "ran")); err == nil {
		t.Error("a hook ran before the refusal")
	}
}

func TestHooksWritingBesideTheImageKeepTheirFilesOnReuse(t *testing.T) {
	f := newFixture(t, elems(toolsOS, map[string]string{
		// As DIB's manifests element: cleanup.d saves a copy beside the
		// image.
		"saver/cleanup.d/10-save*": "#!/bin/bash\nset -eu\nmkdir -p \"$IMAGE_NAME.d\"\necho saved >\"$IMAGE_NAME.d/manifest\"\n",
	}))
	cfg := f.config("tiny-os", "saver")
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if b := readOut(t, f, "img.d/manifest"); b != "saved\n" {
		t.Fatalf("img.d/manifest = %q", b)
	}
	os.RemoveAll(filepath.Join(f.out, "img.d"))
	res, err := Run(context.Background(), f.config("tiny-os", "saver"))
	if err != nil || !res.Manifest.Reused {
		t.Fatalf("second build: %v (reused %v)", err, res != nil && res.Manifest.Reused)
	}
	if b := readOut(t, f, "img.d/manifest"); b != "saved\n" {
		t.Fatalf("after a reused build img.d/manifest = %q", b)
	}
}

func TestDIBsOtherFormatsAreWrittenOrRefusedUpFront(t *testing.T) {
	f := newFixture(t, toolsOS)
	cfg := f.config("tiny-os")
	cfg.Formats = []string{"tgz", "squashfs", "vhd"}
	cfg.Checksum = true
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	for _, c := range []struct{ file, magic string }{
		{"img.tgz", "\x1f\x8b"},
		{"img.squash", "hsqs"},
		{"img.vhd", "conectix"},
	} {
		b, err := os.ReadFile(filepath.Join(f.out, c.file))
		if err != nil || !strings.HasPrefix(string(b), c.magic) {
			t.Errorf("%s: %v (starts %q)", c.file, err, string(b[:min(len(b), 8)]))
		}
		for _, sum := range []string{".sha256", ".md5"} {
			if _, err := os.Stat(filepath.Join(f.out, c.file+sum)); err != nil {
				t.Errorf("%s%s: %v", c.file, sum, err)
			}
		}
	}
	out, err := exec.Command("unsquashfs", "-cat", filepath.Join(f.out, "img.squash"), "etc/tiny-release").Output()
	if err != nil || string(out) != "root-made\n" {
		t.Errorf("squashfs content: %q %v", out, err)
	}

	for format, want := range map[string]string{
		"aci":    "appc) was retired",
		"docker": "docker",
	} {
		c := f.config("tiny-os")
		c.Formats = []string{format}
		if _, err := Run(context.Background(), c); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("-t %s: err = %v, want a refusal saying %q", format, err, want)
		}
	}
}

// TestBuildWritingToAClosedStdoutIsNotKilledBySIGPIPE runs a build in a
// child process whose stdout is a pipe the test closes after three lines,
// as `strata build ... | head -3` does: the build must finish (exit 0)
// and leave no build directory.
func TestBuildWritingToAClosedStdoutIsNotKilledBySIGPIPE(t *testing.T) {
	if dir := os.Getenv("STRATA_TEST_SIGPIPE_DIR"); dir != "" {
		// The child: build, writing progress to fd 1.
		f := &fixture{elements: filepath.Join(dir, "elements"), cache: filepath.Join(dir, "cache"), out: filepath.Join(dir, "out")}
		cfg := f.config("tiny-os")
		cfg.Out = os.Stdout
		if _, err := Run(context.Background(), cfg); err != nil {
			fmt.Fprintln(os.Stderr, "child build:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	requireRoot(t)
	dir := t.TempDir()
	writeElements(t, filepath.Join(dir, "elements"), toolsOS)
	cmd := exec.Command(os.Args[0], "-test.run=^TestBuildWritingToAClosedStdoutIsNotKilledBySIGPIPE$")
	cmd.Env = append(os.Environ(), "STRATA_TEST_SIGPIPE_DIR="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	for lines := 0; lines < 3; {
		if _, err := stdout.Read(buf); err != nil {
			t.Fatal(err)
		}
		if buf[0] == '\n' {
			lines++
		}
	}
	stdout.Close() // head exits
	err = cmd.Wait()
	if err != nil {
		t.Fatalf("the build died after its stdout closed: %v\n%s", err, stderr.String())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "cache", "tmp", "*build*")); len(left) > 0 {
		t.Errorf("build directories left: %v", left)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "img.tar")); err != nil {
		t.Errorf("the build did not finish: %v", err)
	}
}

func TestSudoInHooksRunsTheCommandAsRootWithoutTheHostsSudo(t *testing.T) {
	f := newFixture(t, elems(toolsOS, map[string]string{
		"sudoer/extra-data.d/10-sudo*": `#!/bin/bash
set -eu
sudo mkdir -p "$TMP_MOUNT_PATH/etc/sudo-made"
sudo -E sh -c 'echo "$DIB_PASSED" >"$TMP_MOUNT_PATH/etc/sudo-made/env"'
echo "$(sudo -Hiu root id -un) $(sudo -u nobody id -un) $(command -v sudo)" >"$DIB_TEST_OUT/sudo.out"
`,
	}))
	cfg := f.config("tiny-os", "sudoer")
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if b, _ := tarFile(t, cfg.OutputPath("tar"), "etc/sudo-made/env"); b != "yes\n" {
		t.Errorf("sudo -E sh -c: %q", b)
	}
	got := readOut(t, f, "sudo.out")
	if !strings.HasPrefix(got, "root nobody ") || !strings.Contains(got, "/.strata/bin/sudo") {
		t.Errorf("sudo.out = %q", got)
	}
}

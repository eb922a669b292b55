package build

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"strata/builder/executor"
)

// These tests build real (tiny) images: a root.d hook copies bash and a few
// tools from the host into TARGET_ROOT, so chroot hooks really run inside an
// image root, without downloading a distribution. They need root.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("build tests chroot and create namespaces: run them as root (make test does)")
	}
}

// tinyOS is an operating-system element whose root.d copies host binaries
// and their libraries into the image root.
var tinyOS = map[string]string{
	"tiny-os/element-provides": "operating-system\n",
	"tiny-os/environment.d/10-tiny.bash": `export DISTRO_NAME=debian
export DIB_RELEASE=${DIB_RELEASE:-bookworm}
`,
	"tiny-os/root.d/10-tiny-os*": `#!/bin/bash
set -eu
mkdir -p "$TARGET_ROOT"/{tmp,proc,sys,dev,run,etc,root,var/cache/apt/archives}
for f in /bin/bash /bin/sh /usr/bin/env /bin/cat /bin/sleep /bin/mkdir /bin/touch /bin/sync; do
	cp --parents -L "$f" "$TARGET_ROOT"
	for lib in $(ldd "$f" | grep -o '/[^ ]*'); do cp --parents -L "$lib" "$TARGET_ROOT"; done
done
echo root-made >"$TARGET_ROOT/etc/tiny-release"
`,
}

func writeElements(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(p, "*") {
			p, mode = strings.TrimSuffix(p, "*"), 0o755
		}
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
}

func elems(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

type fixture struct {
	elements, cache, out string
	// elements2 is searched after elements when set.
	elements2 string
	log       bytes.Buffer
}

func newFixture(t *testing.T, files map[string]string) *fixture {
	requireRoot(t)
	f := &fixture{elements: t.TempDir(), cache: t.TempDir(), out: t.TempDir()}
	writeElements(t, f.elements, files)
	return f
}

func (f *fixture) config(elements ...string) Config {
	f.log.Reset()
	path := []string{f.elements}
	if f.elements2 != "" {
		path = append(path, f.elements2)
	}
	return Config{
		Elements: elements, SkipBase: true, ElementsPath: path,
		Output: filepath.Join(f.out, "img"), Formats: []string{"tar"}, CacheDir: f.cache,
		HostEnv: []string{"PATH=" + os.Getenv("PATH"), "HOME=/root", "DIB_TEST_OUT=" + f.out, "DIB_PASSED=yes", "UNRELATED=no"},
		Out:     &f.log, Version: "test",
	}
}

// tarFile returns a file's content from the built tar image.
func tarFile(t *testing.T, path, name string) (string, bool) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	tr := tar.NewReader(fh)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return "", false
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimPrefix(h.Name, "./") == name {
			b, _ := io.ReadAll(tr)
			return string(b), true
		}
	}
}

func TestHooksRunInDIBOrderWhereDIBRunsThemWithDIBsEnvironment(t *testing.T) {
	f := newFixture(t, elems(tinyOS, map[string]string{
		"a/element-deps":          "b\n",
		"a/environment.d/20-a.sh": "export A_VAR=from-a-envd\n",
		"a/install.d/20-b*": `#!/bin/bash
echo "install 20-b A_VAR=$A_VAR ARCH=$ARCH IMAGE_NAME=$IMAGE_NAME DIB_PASSED=$DIB_PASSED UNRELATED=${UNRELATED:-unset} HOOKS=$(cat /tmp/in_target.d/static/b-file)" >>/order.log
`,
		"b/install.d/10-a*": "#!/bin/bash\necho \"install 10-a root=$(cat /etc/tiny-release)\" >>/order.log\n",
		"b/static/b-file":   "b-static",
		"b/extra-data.d/50-host*": `#!/bin/bash
set -eu
test -d "$TMP_HOOKS_PATH/install.d"
echo "extra-data on host TARGET_ROOT=$([ -f "$TARGET_ROOT/etc/tiny-release" ] && echo ok)" >"$DIB_TEST_OUT/host.log"
echo "IMAGE_ELEMENT=$IMAGE_ELEMENT" >>"$DIB_TEST_OUT/host.log"
`,
		"b/finalise.d/10-fin*":      "#!/bin/bash\necho finalise >>/order.log\n",
		"b/post-install.d/05-post*": "#!/bin/bash\necho post-install >>/order.log\n",
	}))
	cfg := f.config("tiny-os", "a")
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	order, ok := tarFile(t, cfg.OutputPath("tar"), "order.log")
	if !ok {
		t.Fatal("order.log missing from the image")
	}
	want := "install 10-a root=root-made\n" +
		"install 20-b A_VAR=from-a-envd ARCH=amd64 IMAGE_NAME=" + cfg.Output + " DIB_PASSED=yes UNRELATED=no HOOKS=b-static\n" +
		"post-install\nfinalise\n"
	if order != want {
		t.Fatalf("order.log =\n%s\nwant\n%s", order, want)
	}
	host, err := os.ReadFile(filepath.Join(f.out, "host.log"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(host); got != "extra-data on host TARGET_ROOT=ok\nIMAGE_ELEMENT=a b tiny-os\n" {
		t.Fatalf("host hook saw %q", got)
	}
	for _, p := range []string{cfg.OutputPath("tar"), cfg.OutputPath("tar") + ".sha256", cfg.ManifestPath(), cfg.SBOMPath()} {
		if !slices.Contains(res.Files, p) {
			t.Errorf("result lacks %s (files: %v)", p, res.Files)
		}
	}
	var names []string
	for _, h := range res.Manifest.Hooks {
		names = append(names, h.Phase+"/"+h.Name+":"+h.Where+":"+h.Status)
	}
	wantHooks := []string{"root.d/10-tiny-os:host:ok", "extra-data.d/50-host:host:ok", "install.d/10-a:chroot:ok",
		"install.d/20-b:chroot:ok", "post-install.d/05-post:chroot:ok", "finalise.d/10-fin:chroot:ok"}
	if !slices.Equal(names, wantHooks) {
		t.Fatalf("manifest hooks = %v\nwant %v", names, wantHooks)
	}
	if !strings.Contains(f.log.String(), "PROFILING") {
		t.Error("no timing table printed")
	}
}

// assertNothingLeft checks that a failed or interrupted build left no
// mount below the cache, no process in a build root, no output file and no
// build directory.
func assertNothingLeft(t *testing.T, f *fixture) {
	t.Helper()
	if m := mountsBelow(f.cache); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	builds, _ := filepath.Glob(filepath.Join(f.cache, "tmp", "*build*"))
	if len(builds) > 0 {
		t.Errorf("build directories left: %v", builds)
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if l, err := os.Readlink(filepath.Join("/proc", e.Name(), "root")); err == nil && strings.HasPrefix(l, f.cache) {
			t.Errorf("process %s still runs in %s", e.Name(), l)
		}
	}
	outs, _ := os.ReadDir(f.out)
	for _, o := range outs {
		if strings.HasPrefix(o.Name(), "img") || strings.HasPrefix(o.Name(), ".img") {
			t.Errorf("output file left: %s", o.Name())
		}
	}
}

func TestFailingInstallHookLeavesNothingBehind(t *testing.T) {
	f := newFixture(t, elems(tinyOS, map[string]string{
		"bad/install.d/10-ok*":    "#!/bin/bash\ntouch /ok\n",
		"bad/install.d/50-fail*":  "#!/bin/bash\necho about to fail\nsleep 300 &\nexit 3\n",
		"bad/install.d/90-never*": "#!/bin/bash\ntouch /never\n",
	}))
	_, err := Run(context.Background(), f.config("tiny-os", "bad"))
	var he *HookError
	if !errors.As(err, &he) || he.Hook.Name != "50-fail" || he.Hook.Element != "bad" {
		t.Fatalf("err = %v, want a HookError for install.d/50-fail of bad", err)
	}
	var ee *executor.ExitError
	if !errors.As(err, &ee) || ee.Code != 3 {
		t.Errorf("exit status not reported: %v", err)
	}
	if !strings.Contains(err.Error(), "install.d/50-fail") || !strings.Contains(err.Error(), "element bad") {
		t.Errorf("message does not say where: %v", err)
	}
	if strings.Contains(f.log.String(), "90-never") {
		t.Error("a hook after the failing one ran")
	}
	assertNothingLeft(t, f)
}

func TestInterruptedInstallHookLeavesNothingBehind(t *testing.T) {
	f := newFixture(t, elems(tinyOS, map[string]string{
		"slow/install.d/50-slow*": "#!/bin/bash\ntouch \"/started\"\nsleep 300 &\nsleep 300\n",
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := Run(ctx, f.config("tiny-os", "slow")); done <- err }()
	// Wait until the hook is running inside a build root.
	deadline := time.Now().Add(60 * time.Second)
	for {
		started, _ := filepath.Glob(filepath.Join(f.cache, "tmp", "dib_build.*", "mnt", "started"))
		if len(started) > 0 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("hook never started:\n%s", f.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "50-slow") {
			t.Fatalf("err = %v, want cancellation naming the hook", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("build did not stop after cancel")
	}
	assertNothingLeft(t, f)
}

// TestChangingALateElementRerunsFromWhereItFirstTakesPart: the tree is
// cached just before each element's first hook, so changing an element
// restarts the build there, even in the middle of a phase.
func TestChangingALateElementRerunsFromWhereItFirstTakesPart(t *testing.T) {
	files := elems(tinyOS, map[string]string{
		"early/install.d/10-early*":    "#!/bin/bash\necho early >>/runs.log\n",
		"mid/install.d/50-mid*":        "#!/bin/bash\necho mid-v1 >>/runs.log\n",
		"late/post-install.d/10-late*": "#!/bin/bash\necho late-v1 >>/runs.log\n",
	})
	f := newFixture(t, files)
	cfg := f.config("tiny-os", "early", "mid", "late")
	statuses := func(res *Result) map[string]string {
		m := map[string]string{}
		for _, h := range res.Manifest.Hooks {
			m[h.Name] = h.Status
		}
		return m
	}

	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("cold build: %v\n%s", err, f.log.String())
	}
	if s := statuses(res); s["10-tiny-os"] != "ok" || s["10-early"] != "ok" || s["10-late"] != "ok" {
		t.Fatalf("cold build statuses = %v", s)
	}

	// Change only the late element.
	writeElements(t, f.elements, map[string]string{"late/post-install.d/10-late*": "#!/bin/bash\necho late-v2 >>/runs.log\n"})
	res, err = Run(context.Background(), f.config("tiny-os", "early", "mid", "late"))
	if err != nil {
		t.Fatalf("warm build: %v\n%s", err, f.log.String())
	}
	if s := statuses(res); s["10-tiny-os"] != "cached" || s["10-early"] != "cached" || s["50-mid"] != "cached" || s["10-late"] != "ok" {
		t.Fatalf("warm build statuses = %v, want root.d and install.d cached and the late hook re-run", s)
	}
	if res.Manifest.CachedFrom != "install.d/50-mid" {
		t.Errorf("cached_from = %q, want install.d/50-mid", res.Manifest.CachedFrom)
	}
	runs, _ := tarFile(t, cfg.OutputPath("tar"), "runs.log")
	if runs != "early\nmid-v1\nlate-v2\n" {
		t.Fatalf("runs.log = %q: the cached tree must be the one from before the late element ran", runs)
	}

	// Change the element in the middle of install.d: the hook before it
	// comes from the cache, it and everything after run again.
	writeElements(t, f.elements, map[string]string{"mid/install.d/50-mid*": "#!/bin/bash\necho mid-v2 >>/runs.log\n"})
	res, err = Run(context.Background(), f.config("tiny-os", "early", "mid", "late"))
	if err != nil {
		t.Fatalf("warm build: %v\n%s", err, f.log.String())
	}
	if s := statuses(res); s["10-early"] != "cached" || s["50-mid"] != "ok" || s["10-late"] != "ok" {
		t.Fatalf("statuses = %v, want 10-early cached, 50-mid and 10-late re-run", s)
	}
	if res.Manifest.CachedFrom != "install.d/10-early" {
		t.Errorf("cached_from = %q, want install.d/10-early", res.Manifest.CachedFrom)
	}
	if runs, _ := tarFile(t, cfg.OutputPath("tar"), "runs.log"); runs != "early\nmid-v2\nlate-v2\n" {
		t.Fatalf("runs.log = %q", runs)
	}

	// Nothing changed: the finished outputs are reused as they are.
	before, _ := os.ReadFile(cfg.OutputPath("tar") + ".sha256")
	res, err = Run(context.Background(), f.config("tiny-os", "early", "mid", "late"))
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(cfg.OutputPath("tar") + ".sha256")
	if !res.Manifest.Reused || !bytes.Equal(before, after) {
		t.Fatalf("unchanged build did not reuse outputs (reused=%v)", res.Manifest.Reused)
	}

	// Offline works from the cache; a change in the first phase cannot.
	off := f.config("tiny-os", "early", "mid", "late")
	off.Offline, off.NoCache = true, false
	writeElements(t, f.elements, map[string]string{"late/post-install.d/10-late*": "#!/bin/bash\necho late-v3 >>/runs.log\n"})
	if _, err := Run(context.Background(), off); err != nil {
		t.Fatalf("offline build from cache: %v", err)
	}
	writeElements(t, f.elements, map[string]string{"tiny-os/root.d/20-more*": "#!/bin/bash\ntrue\n"})
	if _, err := Run(context.Background(), off); err == nil || !strings.Contains(err.Error(), "offline") {
		t.Fatalf("offline build without a cached root: err = %v", err)
	}
}

func TestBadElementSetFailsBeforeAnythingRuns(t *testing.T) {
	f := newFixture(t, elems(tinyOS, map[string]string{
		"x/install.d/10-dup*": "#!/bin/bash\n",
		"y/install.d/10-dup*": "#!/bin/bash\n",
		"y/element-deps":      "ghost\n",
	}))
	for _, c := range []struct {
		elements []string
		want     string
	}{
		{[]string{"tiny-os", "x", "y"}, "ghost"},
		{[]string{"x"}, "operating-system"},
		{[]string{"tiny-os", "nope"}, "element nope not found"},
	} {
		_, err := Run(context.Background(), f.config(c.elements...))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want %q", c.elements, err, c.want)
		}
		if strings.Contains(f.log.String(), "-->") {
			t.Errorf("%v: a hook ran before the element set was validated", c.elements)
		}
	}
	writeElements(t, f.elements, map[string]string{"y/element-deps": ""})
	_, err := Run(context.Background(), f.config("tiny-os", "x", "y"))
	if err == nil || !strings.Contains(err.Error(), "install.d/10-dup is shipped by more than one element: x and y") {
		t.Errorf("duplicate hook: err = %v", err)
	}
	assertNothingLeft(t, f)
}

func TestAnIdenticalBuildUnderAnotherNameGetsItsOwnFileNames(t *testing.T) {
	f := newFixture(t, elems(tinyOS, map[string]string{"a/install.d/10-a*": "#!/bin/bash\necho a >/a\n"}))
	first := f.config("tiny-os", "a")
	if _, err := Run(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	second := f.config("tiny-os", "a")
	second.Output = filepath.Join(f.out, "other")
	res, err := Run(context.Background(), second)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Manifest.Reused || res.Manifest.Image != "other" || res.Manifest.Outputs[0].File != "other.tar" {
		t.Fatalf("manifest = reused %v, image %q, outputs %+v", res.Manifest.Reused, res.Manifest.Image, res.Manifest.Outputs)
	}
	sum, err := os.ReadFile(second.OutputPath("tar") + ".sha256")
	if err != nil || !strings.HasSuffix(string(sum), "  other.tar\n") {
		t.Fatalf("checksum file = %q, %v", sum, err)
	}
	if a, _ := tarFile(t, second.OutputPath("tar"), "a"); a != "a\n" {
		t.Fatalf("the reused image lacks the element's file: %q", a)
	}
	for _, p := range []string{second.ManifestPath(), second.SBOMPath()} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
}

// DIB's manifests element derives DIB_MANIFEST_SAVE_DIR from IMAGE_NAME
// (the -o path): a value made from this build's paths is keyed with the
// path's variable in its place, so another output path changes no key.
func TestAVariableDerivedFromTheOutputPathChangesNoKey(t *testing.T) {
	f := newFixture(t, elems(tinyOS, map[string]string{
		"saver/environment.d/14-saver.bash": "export SAVER_DIR=${SAVER_DIR:-${IMAGE_NAME}.d/}\nexport SAVER_TREE=$TMP_MOUNT_PATH/saver\n",
		"saver/root.d/20-saver*":            "#!/bin/bash\nset -eu\necho \"$SAVER_DIR $SAVER_TREE\" >/dev/null\n",
		"saver/install.d/10-saver*":         "#!/bin/bash\necho saved >/saved\n",
	}))
	first := f.config("tiny-os", "saver")
	if _, err := Run(context.Background(), first); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	second := f.config("tiny-os", "saver")
	second.Output = filepath.Join(t.TempDir(), "elsewhere")
	res, err := Run(context.Background(), second)
	if err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if !res.Manifest.Reused {
		t.Errorf("the build under another path was not served from the cache\n%s", f.log.String())
	}
	// A value the caller sets is keyed as it is.
	third := f.config("tiny-os", "saver")
	third.HostEnv = append(third.HostEnv, "SAVER_DIR=/srv/saved")
	res, err = Run(context.Background(), third)
	if err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if res.Manifest.Reused || res.Manifest.CachedFrom != "root.d/10-tiny-os" {
		t.Errorf("with SAVER_DIR set: reused %v, cached_from %q, want a restart before saver's root.d hook\n%s", res.Manifest.Reused, res.Manifest.CachedFrom, f.log.String())
	}
}

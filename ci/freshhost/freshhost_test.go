//go:build freshhost

package freshhost

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"strata/builder/aptsource"
	"strata/builder/cache"
	"strata/builder/executor"
)

// dockerPolicy is a policy-rc.d as Debian's container images carry one: no
// service starts from a package's maintainer scripts.
const dockerPolicy = "#!/bin/sh\n\n# As in Docker's Debian images: services do not start from apt.\nexit 101\n"

const policyPath = "usr/sbin/policy-rc.d"

// A name no Debian release has, to see apt fail; and a small package of
// the archive that no group wants, to see an install without a
// pre-existing policy-rc.d.
const (
	noSuchPackage = "strata-no-such-package"
	smallPackage  = "hello"
)

// The README's set-up, on a fresh Debian 12 root, the first time: exit 0,
// every package of every group installed, Docker's policy-rc.d untouched,
// `make build` builds; a second run installs nothing; an apt failure is a
// non-zero exit whose last word names the package, with or without a
// policy-rc.d, and leaves no policy-rc.d of its own behind.
func TestReadmeSetUpPassesItsFirstRunOnAFreshDebian12(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: mmdebstrap --mode=root, chroot and mount namespaces")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	h := newFreshHost(t, ctx)
	t.Cleanup(h.report)

	// The lines of ci/deps.sh the README's commands run, in make's order.
	targets := strings.Fields(os.Getenv("STRATA_FRESH_HOST_TARGETS"))
	if len(targets) == 0 {
		targets = []string{"image", "test"}
	}
	steps := depsSteps(t, h.repo, targets)
	var groups []string
	for _, s := range steps {
		for _, g := range strings.Fields(strings.TrimPrefix(s, "ci/deps.sh ")) {
			if !slices.Contains(groups, g) {
				groups = append(groups, g)
			}
		}
	}
	packages := listPackages(t, h.repo, groups)
	t.Logf("make %s runs %q: %d packages in groups %v", strings.Join(targets, " "), steps, len(packages), groups)

	h.makeRoot(t)
	policy := h.snapshotPolicy(t)
	installedBefore := h.installedCount(t)

	// First run, as CI runs it.
	for _, s := range steps {
		out, err := h.run(t, "first run: "+s, s, nil)
		if err != nil {
			t.Fatalf("first run of %s on a fresh Debian 12: %v\n%s", s, err, tail(out, 40))
		}
	}
	h.keepLog(t, "var/log/dpkg.log", "first-run-dpkg.log")
	h.requireInstalled(t, packages)
	h.requirePolicy(t, policy, "after the first run")
	h.installed = h.installedCount(t) - installedBefore
	if out, err := h.run(t, "make build", "make build", nil); err != nil {
		t.Fatalf("make build after the set-up: %v\n%s", err, tail(out, 40))
	}
	for _, bin := range []string{"bin/strata", "bin/strata-agent", "bin/packer-plugin-strata"} {
		if fi, err := os.Stat(filepath.Join(h.root, "src", bin)); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("make build did not write an executable %s: %v", bin, err)
		}
	}
	if out, err := h.run(t, "strata-agent --version", "bin/strata-agent --version", nil); err != nil {
		t.Errorf("bin/strata-agent --version in the fresh root: %v\n%s", err, out)
	}

	// Second run: nothing to install, so no apt at all.
	status := h.dpkgStatus(t)
	for _, s := range steps {
		out, err := h.run(t, "second run: "+s, s, nil)
		if err != nil {
			t.Fatalf("second run of %s: %v\n%s", s, err, tail(out, 40))
		}
		if strings.Contains(out, "installing") {
			t.Errorf("second run of %s installed something:\n%s", s, out)
		}
	}
	if !bytes.Equal(status, h.dpkgStatus(t)) {
		t.Error("the second run changed dpkg's status file: it installed or removed packages")
	}
	h.requirePolicy(t, policy, "after the second run")

	// apt fails, with Docker's policy-rc.d: named, nothing installed (not
	// even the package that exists), the policy-rc.d as it was.
	extra := func(names string) []string { return []string{"STRATA_DEPS_EXTRA=" + names} }
	h.requireNamedFailure(t, "unknown package, Docker's policy-rc.d", extra(smallPackage+" "+noSuchPackage))
	if !bytes.Equal(status, h.dpkgStatus(t)) {
		t.Error("a failed ci/deps.sh changed dpkg's status file")
	}
	h.requirePolicy(t, policy, "after a failed run")

	// Without a policy-rc.d: ci/deps.sh makes its own for the install and
	// removes it again, after a failure and after a success.
	if err := os.Remove(filepath.Join(h.root, policyPath)); err != nil {
		t.Fatal(err)
	}
	h.requireNamedFailure(t, "unknown package, no policy-rc.d", extra(noSuchPackage))
	h.requireNoPolicy(t, "after a failed run")
	if out, err := h.run(t, "install "+smallPackage+", no policy-rc.d", "ci/deps.sh build", extra(smallPackage)); err != nil {
		t.Fatalf("ci/deps.sh with %s and no policy-rc.d: %v\n%s", smallPackage, err, tail(out, 40))
	}
	h.requireInstalled(t, []string{smallPackage})
	h.requireNoPolicy(t, "after a successful install")
}

// freshHost is one fresh Debian 12 root and the way to run commands in it.
type freshHost struct {
	ctx      context.Context
	repo     string
	cacheDir string
	root     string
	archives string
	logs     string
	chroot   *executor.Chroot
	env      []string
	n        int
	timings  []timing
	// installed counts the packages the first run installed.
	installed int
}

type timing struct {
	step string
	secs float64
}

func newFreshHost(t *testing.T, ctx context.Context) *freshHost {
	t.Helper()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cache := os.Getenv("STRATA_CACHE_DIR")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(home, ".cache/strata")
	}
	cache, err = filepath.Abs(cache)
	if err != nil {
		t.Fatal(err)
	}
	h := &freshHost{ctx: ctx, repo: repo, cacheDir: cache, archives: filepath.Join(cache, "apt/fresh-host")}
	if err := os.MkdirAll(h.archives, 0o755); err != nil {
		t.Fatal(err)
	}
	h.logs = os.Getenv("STRATA_FRESH_HOST_LOGS")
	if h.logs == "" {
		h.logs = t.TempDir()
	} else {
		// This run's logs only.
		if err := os.RemoveAll(h.logs); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(h.logs, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h.root = filepath.Join(t.TempDir(), "root")
	// Registered after the temporary directory, so it runs before its
	// removal: nothing of the root may be mounted on the host, ever.
	t.Cleanup(func() { requireNoMountUnder(t, h.root) })
	return h
}

// makeRoot builds a minimal bookworm root with mmdebstrap, from the mirror
// the builder would use, and makes it what a golang:1.26-bookworm job
// container is for strata: make and Go (the host's, bind-mounted at
// /usr/local/go), Docker's policy-rc.d, and the checkout at /src.
func (h *freshHost) makeRoot(t *testing.T) {
	t.Helper()
	debian, security, components := builderMirrors(t, h.repo)
	sources := []string{"deb " + debian + " bookworm " + components, "deb " + debian + " bookworm-updates " + components}
	if security != "" {
		sources = append(sources, "deb "+security+" bookworm-security "+components)
	}
	include := "make"
	if strings.HasPrefix(debian, "https:") || strings.HasPrefix(security, "https:") {
		include += ",ca-certificates" // apt needs it to reach such a mirror at all
	}
	tree := []string{
		"--variant=minbase", "--mode=root", "--format=directory",
		"--components=" + strings.ReplaceAll(components, " ", ","), "--include=" + include,
		// As Docker's Debian images: no translations, dpkg without fsync.
		`--aptopt=Acquire::Languages "none"`, "--dpkgopt=force-unsafe-io",
		`--aptopt=Acquire::Retries "3"`,
	}
	tree = append(append(tree, "bookworm"), sources...)
	h.baseRoot(t, tree)

	if err := os.WriteFile(filepath.Join(h.root, policyPath), []byte(dockerPolicy), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(h.root, policyPath), 0o755); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	copyCheckout(t, h.repo, filepath.Join(h.root, "src"), h.cacheDir)
	h.record("copy the checkout to /src", time.Since(t0))

	goEnv := func(k string) string {
		v, err := exec.Command("go", "env", k).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", k, err)
		}
		return strings.TrimSpace(string(v))
	}
	binds := []executor.Mount{
		executor.Bind(h.archives, "/var/cache/apt/archives", false),
		executor.Bind(goEnv("GOROOT"), "/usr/local/go", true),
		// Go's own caches, shared with the host as a CI cache would be:
		// they save downloads and compiles, not set-up.
		executor.Bind(goEnv("GOMODCACHE"), "/go/pkg/mod", false),
		executor.Bind(goEnv("GOCACHE"), "/root/.cache/go-build", false),
	}
	if _, err := os.Stat("/etc/resolv.conf"); err == nil {
		binds = append(binds, executor.BindFile("/etc/resolv.conf", "/etc/resolv.conf", true))
	}
	for _, d := range []string{"go/pkg/mod", "root/.cache/go-build"} {
		if err := os.MkdirAll(filepath.Join(h.root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h.chroot = &executor.Chroot{Root: h.root, Binds: binds}
	// The golang image's environment, and CI's.
	h.env = []string{
		"PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "GOPATH=/go", "GOTOOLCHAIN=local", "CI=true",
	}
	h.env = append(h.env, passThrough("GOPROXY", "GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GONOPROXY", "GOINSECURE", "GOFLAGS",
		"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")...)
}

// baseRoot puts the minimal root that mmdebstrap makes with the options
// and sources in tree at h.root: from the builder's phase cache when a
// base of the same inputs was made in the last week (it holds only
// Debian's minbase and make, none of strata's packages, so the first run
// stays a first run), else with mmdebstrap, then saved there.
func (h *freshHost) baseRoot(t *testing.T, tree []string) {
	t.Helper()
	c, err := cache.Open(h.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("strata fresh-host base root v1\x00" + strings.Join(tree, "\x00")))
	key := "fresh-host-" + hex.EncodeToString(sum[:16])
	if meta, ok := c.Snapshot(key); ok && time.Since(meta.Saved) < baseMaxAge {
		t0 := time.Now()
		if err := c.RestoreSnapshot(h.ctx, key, h.root); err != nil {
			t.Fatal(err)
		}
		h.record(fmt.Sprintf("base root from the cache (made %s ago)", time.Since(meta.Saved).Round(time.Minute)), time.Since(t0))
		return
	}
	args := append([]string{
		// The .debs are kept for the next run.
		"--skip=download/empty",
		`--setup-hook=mkdir -p "$1/var/cache/apt/archives" && mount --bind '` + h.archives + `' "$1/var/cache/apt/archives"`,
		`--customize-hook=umount "$1/var/cache/apt/archives"`,
	}, tree...)
	// mmdebstrap's SUITE TARGET MIRROR... : the target after the suite.
	i := slices.Index(args, "bookworm")
	args = slices.Insert(args, i+1, h.root)
	host := &executor.Host{Dir: "/"}
	var out bytes.Buffer
	log := h.openLog(t, "mmdebstrap")
	defer log.Close()
	w := io.MultiWriter(&out, log)
	t0 := time.Now()
	err = host.Run(h.ctx, executor.Command{
		Path: "mmdebstrap", Args: args, Env: hostEnv(),
		Stdout: w, Stderr: w,
	})
	h.record("mmdebstrap: minbase bookworm root", time.Since(t0))
	if err != nil {
		t.Fatalf("mmdebstrap %s: %v\n%s", strings.Join(args, " "), err, tail(out.String(), 40))
	}
	t0 = time.Now()
	if err := c.SaveSnapshot(h.ctx, key, h.root, cache.SnapshotMeta{Phase: "fresh-host base", Image: "bookworm minbase + make"}); err != nil {
		t.Fatal(err)
	}
	h.record("base root saved to the cache", time.Since(t0))
}

// baseMaxAge is how long a cached base root is used: a week, as a job
// image is rebuilt now and then, so that the base follows the mirror.
const baseMaxAge = 7 * 24 * time.Hour

// run runs a shell command line in /src inside the root, as root, with no
// stdin, and returns its output (also kept in the logs directory).
func (h *freshHost) run(t *testing.T, step, line string, env []string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	log := h.openLog(t, step)
	defer log.Close()
	w := io.MultiWriter(&out, log)
	t0 := time.Now()
	err := h.chroot.Run(h.ctx, executor.Command{
		Path: "/bin/bash", Args: []string{"-c", line},
		Env: append(slices.Clone(h.env), env...), Dir: "/src",
		Stdout: w, Stderr: w,
	})
	h.record(step, time.Since(t0))
	if h.ctx.Err() != nil {
		t.Fatalf("%s: interrupted", step)
	}
	return out.String(), err
}

func (h *freshHost) record(step string, d time.Duration) {
	h.timings = append(h.timings, timing{step, d.Seconds()})
}

// keepLog copies a log of the root (dpkg's, with its timestamps) to the
// logs directory.
func (h *freshHost) keepLog(t *testing.T, inRoot, name string) {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(h.root, inRoot)); err == nil {
		_ = os.WriteFile(filepath.Join(h.logs, name), b, 0o644)
	}
}

// openLog creates the numbered log file of a step, written while it runs.
func (h *freshHost) openLog(t *testing.T, step string) *os.File {
	t.Helper()
	h.n++
	name := fmt.Sprintf("%02d-%s.log", h.n, strings.NewReplacer(" ", "-", "/", "-", ":", "").Replace(step))
	f, err := os.Create(filepath.Join(h.logs, name))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// report logs what each step cost and what the cache holds.
func (h *freshHost) report() {
	var total float64
	var b strings.Builder
	for _, s := range h.timings {
		fmt.Fprintf(&b, "\n  %-55s %7.1f s", s.step, s.secs)
		total += s.secs
	}
	var debs int
	var size int64
	entries, _ := os.ReadDir(h.archives)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".deb") {
			debs++
			if fi, err := e.Info(); err == nil {
				size += fi.Size()
			}
		}
	}
	fmt.Printf("fresh-host: steps (logs in %s):%s\n  %-55s %7.1f s\n  first run installed %d packages; %s holds %d .debs, %.0f MB\n",
		h.logs, b.String(), "total", total, h.installed, h.archives, debs, float64(size)/1e6)
}

func (h *freshHost) dpkgStatus(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.root, "var/lib/dpkg/status"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (h *freshHost) installedCount(t *testing.T) int {
	return bytes.Count(h.dpkgStatus(t), []byte("\nStatus: install ok installed\n"))
}

// requireInstalled: dpkg in the root says every package is installed.
func (h *freshHost) requireInstalled(t *testing.T, packages []string) {
	t.Helper()
	var args bytes.Buffer
	err := h.chroot.Run(h.ctx, executor.Command{
		Path: "dpkg-query", Args: append([]string{"-W", "-f=${Package} ${db:Status-Status}\n"}, packages...),
		Env: h.env, Stdout: &args, Stderr: io.Discard,
	})
	var ee *executor.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("dpkg-query in the root: %v", err)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(&args)
	for sc.Scan() {
		if p, st, ok := strings.Cut(sc.Text(), " "); ok {
			got[p] = st
		}
	}
	var missing []string
	for _, p := range packages {
		if got[p] != "installed" {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		t.Errorf("not installed in the fresh root: %v", missing)
	}
}

type policyState struct {
	data []byte
	mode fs.FileMode
}

func (h *freshHost) snapshotPolicy(t *testing.T) policyState {
	t.Helper()
	p := filepath.Join(h.root, policyPath)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return policyState{data, fi.Mode()}
}

func (h *freshHost) requirePolicy(t *testing.T, want policyState, when string) {
	t.Helper()
	p := filepath.Join(h.root, policyPath)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("Docker's policy-rc.d %s: %v", when, err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, want.data) || fi.Mode() != want.mode {
		t.Errorf("Docker's policy-rc.d changed %s: %s %x, was %s %x", when, fi.Mode(), sha256.Sum256(data), want.mode, sha256.Sum256(want.data))
	}
}

func (h *freshHost) requireNoPolicy(t *testing.T, when string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(h.root, policyPath)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ci/deps.sh left a policy-rc.d behind %s (%v)", when, err)
	}
}

// requireNamedFailure runs ci/deps.sh build with a package name that does
// not exist: a non-zero exit whose last line names it.
func (h *freshHost) requireNamedFailure(t *testing.T, step string, env []string) {
	t.Helper()
	out, err := h.run(t, step, "ci/deps.sh build", env)
	var ee *executor.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("%s: ci/deps.sh did not fail (%v):\n%s", step, err, tail(out, 20))
	}
	last := strings.TrimSpace(tail(out, 1))
	if !strings.HasPrefix(last, "ci/deps.sh:") || !strings.Contains(last, noSuchPackage) {
		t.Errorf("%s: ci/deps.sh exited %d, but its last line does not name %s: %q", step, ee.Code, noSuchPackage, last)
	}
}

// builderMirrors is the mirror logic of a strata build: the host's apt
// sources (builder/aptsource, as builder/build does), then the
// debian-minimal element's environment.d (DIB_DISTRIBUTION_MIRROR and
// friends override).
func builderMirrors(t *testing.T, repo string) (debian, security, components string) {
	t.Helper()
	env := []string{"PATH=" + os.Getenv("PATH"), "DIB_RELEASE=bookworm"}
	m, err := aptsource.Find("/")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("reading the host's apt sources: %v", err)
	}
	if m.Debian != "" {
		env = append(env, "STRATA_HOST_DEBIAN_MIRROR="+m.Debian)
	}
	if m.Security != "" {
		env = append(env, "STRATA_HOST_DEBIAN_SECURITY_MIRROR="+m.Security)
	}
	env = append(env, passThrough("DIB_DISTRIBUTION_MIRROR", "DIB_DEBIAN_DISTRIBUTION_MIRROR", "DIB_DEBIAN_SECURITY_MIRROR", "DIB_DEBIAN_COMPONENTS")...)
	cmd := exec.Command("bash", "-c", `set -eu; source "$1"; printf '%s\n' "$DIB_DISTRIBUTION_MIRROR" "$DIB_DEBIAN_SECURITY_MIRROR" "$DIB_DEBIAN_COMPONENTS"`,
		"freshhost", filepath.Join(repo, "elements/debian-minimal/environment.d/10-debian-minimal.bash"))
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the debian-minimal element's environment.d: %v", err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != 3 || lines[0] == "" {
		t.Fatal("no Debian mirror: the host's apt sources name none; set DIB_DISTRIBUTION_MIRROR")
	}
	return lines[0], lines[1], strings.ReplaceAll(lines[2], ",", " ")
}

// depsSteps are the ci/deps.sh lines `make TARGET...` runs, in order, each
// once.
func depsSteps(t *testing.T, repo string, targets []string) []string {
	t.Helper()
	cmd := exec.Command("make", append([]string{"--no-print-directory", "-n"}, targets...)...)
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("make -n %s: %v", strings.Join(targets, " "), err)
	}
	var steps []string
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "ci/deps.sh ") && !slices.Contains(steps, l) {
			steps = append(steps, l)
		}
	}
	if len(steps) == 0 {
		t.Fatalf("make -n %s runs no ci/deps.sh:\n%s", strings.Join(targets, " "), out)
	}
	return steps
}

func listPackages(t *testing.T, repo string, groups []string) []string {
	t.Helper()
	cmd := exec.Command(filepath.Join(repo, "ci/deps.sh"), append([]string{"--list"}, groups...)...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ci/deps.sh --list %v: %v", groups, err)
	}
	return strings.Fields(string(out))
}

// copyCheckout copies the checkout's files as git sees them (tracked and
// new, not ignored: no bin/ or out/) to dst, less a CACHE_DIR inside the
// checkout (GitLab's pipeline keeps one there).
func copyCheckout(t *testing.T, repo, dst, cacheDir string) {
	t.Helper()
	out, err := exec.Command("git", "-C", repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("listing the checkout with git ls-files: %v", err)
	}
	skip, err := filepath.Rel(repo, cacheDir)
	if err != nil || skip == "." || strings.HasPrefix(skip, "..") {
		skip = ""
	}
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		if skip != "" && (f == skip || strings.HasPrefix(f, skip+"/")) {
			continue
		}
		src := filepath.Join(repo, f)
		fi, err := os.Lstat(src)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the work tree
		}
		if err != nil {
			t.Fatal(err)
		}
		to := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(link, to); err != nil {
				t.Fatal(err)
			}
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(to, b, fi.Mode().Perm()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func hostEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=/root", "LC_ALL=C.UTF-8"}
	return append(env, passThrough("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")...)
}

func passThrough(names ...string) []string {
	var env []string
	for _, k := range names {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// requireNoMountUnder fails the test when the host has anything mounted
// at or below dir.
func requireNoMountUnder(t *testing.T, dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Error(err)
		return
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			t.Errorf("left mounted on the host: %s", l)
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

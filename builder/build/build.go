package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"strata/builder/blockdevice"
	"strata/builder/cache"
	"strata/builder/element"
	"strata/builder/executor"
	"strata/builder/manifest"
	"strata/builder/steps"

	"golang.org/x/sys/unix"
)

// Result is what a finished build produced.
type Result struct {
	Manifest *manifest.Manifest
	// Files are the paths written, images first.
	Files []string
	// Log is the full build log.
	Log string
}

// buildDirs are the working directories of one build, all below build,
// laid out as disk-image-create lays out its dib_build.XXXXXXXX directory
// (elements derive names from that path: source-repositories takes the
// part after the last dot).
type buildDirs struct {
	build string // the build's private directory (TMP_BUILD_DIR)
	root  string // the image tree: TMP_BUILD_DIR/mnt (TARGET_ROOT, TMP_MOUNT_PATH)
	hooks string // merged hooks: TMP_BUILD_DIR/hooks (TMP_HOOKS_PATH)
	image string // TMP_IMAGE_DIR
	out   string // outputs before they are moved into place
	apt   string // this build's view of the package cache
}

// builder is the state one build's steps share.
type builder struct {
	cfg   *Config
	log   *slog.Logger
	rep   *reporter
	cache *cache.Cache
	dirs  buildDirs
	plan  *plan
	start time.Time
	// restored is the index (in the whole build's hook order) of the hook
	// whose cached tree the build started from, -1 when it started from
	// nothing.
	restored int
	// reused is set when finished outputs came from the cache.
	reused bool
	epoch  int64
	hooks  []manifest.Hook
	files  []string
	man    *manifest.Manifest
	// placed are final output paths already renamed into place, removed
	// again if a later step fails.
	placed  []string
	logFile *os.File
	// lock is held (flock) on the build directory's .lock while the build
	// runs, so a later build can tell a dead build's directory.
	lock *os.File
	// ns is the build's mount namespace: mounts host hooks make last
	// until the build ends, and chroot hooks see them, as in DIB.
	ns *executor.MountNamespace
	// extras are files host hooks wrote beside the image (IMAGE_NAME.*:
	// DIB's manifests and baremetal elements do), kept with the outputs.
	extras []string
	before map[string]bool
	layout *blockdevice.Layout
}

// Run builds the image cfg describes. Cancelling ctx (SIGINT, SIGTERM)
// stops the running hook and unwinds every step: no mount, no process, no
// partial output is left behind.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c, err := cache.Open(cfg.CacheDir)
	if err != nil {
		return nil, err
	}
	b := &builder{cfg: &cfg, cache: c, start: time.Now(), restored: -1}
	if err := b.openLog(); err != nil {
		return nil, err
	}
	defer b.logFile.Close()
	// A reader that goes away (strata build | head) must not kill the
	// build half-way: with SIGPIPE caught, writes to a closed stdout fail
	// with EPIPE, which the reporter ignores (the log file keeps it all).
	sigpipe := make(chan os.Signal, 1)
	signal.Notify(sigpipe, syscall.SIGPIPE)
	defer signal.Stop(sigpipe)
	console := cfg.Out
	if cfg.Quiet {
		console = io.Discard
	}
	var extraLog io.Writer
	if cfg.LogFile != "" {
		lf, err := os.OpenFile(cfg.LogFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("--logfile: %w", err)
		}
		defer lf.Close()
		extraLog = lf
	}
	b.rep = newReporter(console, b.logFile, extraLog)
	b.log = slog.New(slog.NewTextHandler(b.rep.out, &slog.HandlerOptions{Level: slog.LevelInfo}))

	var all []steps.Step
	all = append(all,
		steps.Func{StepName: "prepare build directory", RunFunc: b.prepare, CleanFunc: b.removeBuildDir},
		steps.Func{StepName: "mount namespace", RunFunc: b.enterNamespace, CleanFunc: b.leaveNamespace},
		steps.Func{StepName: "plan", RunFunc: b.makePlan},
		steps.Func{StepName: "reuse finished outputs", RunFunc: b.reuseOutputs},
		steps.Func{StepName: "restore cached tree", RunFunc: b.restore},
		steps.Func{StepName: "package cache", RunFunc: b.linkPackages, CleanFunc: b.savePackages},
	)
	for i := range element.Phases {
		i := i
		all = append(all, steps.Func{
			StepName: "phase " + string(element.Phases[i]),
			RunFunc:  func(ctx context.Context) error { return b.runPhase(ctx, i) },
		})
	}
	all = append(all,
		steps.Func{StepName: "write images", RunFunc: b.writeOutputs, CleanFunc: b.removeExtrasOnFailure},
		steps.Func{StepName: "place outputs", RunFunc: b.placeOutputs, CleanFunc: b.unplaceOnFailure},
	)
	runErr := (&steps.Runner{Log: b.log}).Run(ctx, all)
	b.rep.table(b.hooks, time.Since(b.start))
	b.trimCache()
	if runErr != nil {
		b.rep.printf("strata: build failed after %.1fs: %v\n", time.Since(b.start).Seconds(), runErr)
		b.rep.printf("strata: full log: %s\n", b.logFile.Name())
		return nil, runErr
	}
	b.rep.printf("strata: built %s in %.1fs\n", strings.Join(b.files, ", "), time.Since(b.start).Seconds())
	return &Result{Manifest: b.man, Files: b.files, Log: b.logFile.Name()}, nil
}

// trimCache keeps the cache within --cache-max-size, sparing what this
// build and builds beside it used in the last hour.
func (b *builder) trimCache() {
	if b.cfg.CacheMaxSize <= 0 {
		return
	}
	keep := time.Now().Add(-time.Hour)
	if b.start.Before(keep) {
		keep = b.start
	}
	if freed := b.cache.Trim(b.cfg.CacheMaxSize, keep); freed > 0 {
		b.rep.printf("strata: cache over --cache-max-size %.1f GiB: removed %.1f MiB of least recently used trees and images from %s\n",
			float64(b.cfg.CacheMaxSize)/(1<<30), float64(freed)/(1<<20), b.cache.Dir)
	}
}

func (b *builder) openLog() error {
	name := fmt.Sprintf("%s-%s.log", filepath.Base(b.cfg.Output), time.Now().UTC().Format("20060102T150405"))
	f, err := os.Create(filepath.Join(b.cache.Logs(), name))
	if err != nil {
		return err
	}
	b.logFile = f
	return nil
}

func (b *builder) prepare(ctx context.Context) error {
	b.removeStaleBuildDirs()
	dir, err := b.cache.TempDir(buildDirPrefix)
	if err != nil {
		return err
	}
	b.dirs = buildDirs{
		build: dir,
		root:  filepath.Join(dir, "mnt"),
		hooks: filepath.Join(dir, "hooks"),
		image: filepath.Join(dir, "image"),
		out:   filepath.Join(dir, "out"),
		apt:   filepath.Join(dir, "apt-archives"),
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	b.lock = lock
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("locking %s: %w", dir, err)
	}
	for _, d := range []string{b.dirs.root, b.dirs.hooks, b.dirs.image, b.dirs.out, b.dirs.apt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(b.cfg.Output), 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	b.before = b.outputSiblings()
	return nil
}

// The build directory is named as DIB names its own; a build holds an
// exclusive flock on lockName inside it while it runs.
const (
	buildDirPrefix = "dib_build."
	lockName       = ".strata-build.lock"
	// legacyPrefix is how builds named their directory before they were
	// locked; such a directory untouched for legacyAge is a dead build's.
	legacyPrefix = "build-"
	legacyAge    = 24 * time.Hour
)

// removeStaleBuildDirs deletes build directories that no running build
// owns: a build killed outright (SIGKILL, or a kernel OOM kill) cannot
// clean up, so the next build does. A directory is stale when its lock is
// free; one with a mount below it is left alone (and reported).
func (b *builder) removeStaleBuildDirs() {
	dirs, _ := filepath.Glob(filepath.Join(b.cache.Dir, "tmp", buildDirPrefix+"*"))
	legacy, _ := filepath.Glob(filepath.Join(b.cache.Dir, "tmp", legacyPrefix+"*"))
	for _, d := range append(dirs, legacy...) {
		if !staleBuildDir(d) {
			continue
		}
		if m := mountsBelow(d); len(m) > 0 {
			b.rep.printf("strata: not removing the stale build directory %s: still mounted below it: %s\n", d, strings.Join(m, ", "))
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			b.rep.printf("strata: could not remove the stale build directory %s: %v\n", d, err)
			continue
		}
		b.rep.printf("strata: removed the stale build directory %s (its build is gone)\n", d)
	}
}

func staleBuildDir(d string) bool {
	f, err := os.Open(filepath.Join(d, lockName))
	if err != nil {
		if !strings.HasPrefix(filepath.Base(d), legacyPrefix) {
			return false // being created, or not ours
		}
		fi, err := os.Stat(d)
		return err == nil && time.Since(fi.ModTime()) > legacyAge
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return false // its build holds it
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return true
}

// removeBuildDir deletes the build directory, but never through a mount:
// hooks run in private namespaces so none should exist, and if one does,
// deleting below it could reach the host's files.
func (b *builder) removeBuildDir(ctx context.Context) error {
	if b.dirs.build == "" {
		return nil
	}
	defer func() {
		if b.lock != nil {
			b.lock.Close()
		}
	}()
	if m := mountsBelow(b.dirs.build); len(m) > 0 {
		return fmt.Errorf("not removing %s: still mounted below it: %s", b.dirs.build, strings.Join(m, ", "))
	}
	return os.RemoveAll(b.dirs.build)
}

// enterNamespace starts the build's mount namespace.
func (b *builder) enterNamespace(ctx context.Context) error {
	ns, err := executor.NewMountNamespace(ctx)
	if err != nil {
		return err
	}
	b.ns = ns
	return nil
}

// leaveNamespace ends it: the kernel unmounts whatever hooks mounted.
func (b *builder) leaveNamespace(ctx context.Context) error {
	if b.ns == nil {
		return nil
	}
	return b.ns.Close()
}

// mountsBelow lists mount points at or below dir in this mount namespace.
func mountsBelow(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// makePlan expands the elements, merges the hooks directory and plans
// every phase, replaying the changes earlier builds' root.d and
// extra-data.d hooks made to the hooks directory (cached by key) so that
// hooks they add are known before the build decides where to restart.
func (b *builder) makePlan(ctx context.Context) error {
	env, err := hookEnv(b.cfg, b.dirs, b.dirs.apt)
	if err != nil {
		return err
	}
	p, err := makePlan(ctx, b.cfg.planRequest(), env, b.dirs.hooks, b.log)
	if err != nil {
		return err
	}
	b.plan = p
	if b.layout, err = blockDeviceLayout(p, b.cfg); err != nil {
		return err
	}
	for _, n := range b.layout.Notes {
		b.rep.printf("strata: block-device configuration: %s\n", n)
	}
	if b.cfg.NoCache {
		err = p.planFrom(ctx, 0, b.dirs.hooks)
	} else {
		err = p.simulate(ctx, b.dirs.hooks, filepath.Join(b.dirs.build, "plan-hooks"), b.cache.HooksDelta)
	}
	if err != nil {
		return err
	}
	b.rep.printf("strata: building %s (%s) from elements: %s\n", b.cfg.Output, strings.Join(b.cfg.Formats, ","), strings.Join(p.set.Names(), " "))
	return nil
}

// restore finds the latest saved tree this build can start from.
func (b *builder) restore(ctx context.Context) error {
	if b.reused {
		return nil
	}
	all := b.plan.hooks()
	if !b.cfg.NoCache {
		limit, why := b.firstUnreplayableMount()
		told := false
		for i := len(all) - 1; i >= 0; i-- {
			hk := all[i]
			if !hk.checkpoint {
				continue
			}
			meta, ok := b.cache.Snapshot(hk.key)
			if !ok {
				continue
			}
			if limit >= 0 && i >= limit {
				if !told {
					b.rep.printf("strata: not restarting after %s or later: it left a mount a cached tree cannot bring back: %s\n", all[limit].Path(), why)
					told = true
				}
				continue
			}
			mounts, err := b.recordedMounts(i)
			if err != nil {
				return err
			}
			t0 := time.Now()
			b.rep.printf("strata: reusing the cached tree after %s (%s); restarting after it\n", hk.Path(), hk.key[:12])
			if err := b.cache.RestoreSnapshot(ctx, hk.key, b.dirs.root); err != nil {
				return err
			}
			if err := b.replayHooksDeltas(i); err != nil {
				return err
			}
			if err := b.replayMounts(ctx, i, mounts); err != nil {
				return err
			}
			b.rep.printf("strata: restored in %.1fs\n", time.Since(t0).Seconds())
			b.restored = i
			b.epoch = b.defaultEpoch(meta.SourceDateEpoch)
			return nil
		}
	}
	if b.cfg.Offline && len(b.plan.phases[0].hooks) > 0 {
		return errors.New("offline build: no cached root filesystem for these elements; run once online first")
	}
	b.epoch = b.defaultEpoch(0)
	return nil
}

// defaultEpoch is SOURCE_DATE_EPOCH from the caller, else the time the
// base tree was first made (so rebuilds from cache keep it), else now.
func (b *builder) defaultEpoch(saved int64) int64 {
	if v, ok := b.plan.env["SOURCE_DATE_EPOCH"]; ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	}
	for _, kv := range b.cfg.HostEnv {
		if v, ok := strings.CutPrefix(kv, "SOURCE_DATE_EPOCH="); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				return n
			}
		}
	}
	if saved > 0 {
		return saved
	}
	return time.Now().Unix()
}

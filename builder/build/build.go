package build

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"strata/builder/cache"
	"strata/builder/element"
	"strata/builder/manifest"
	"strata/builder/steps"
)

// Result is what a finished build produced.
type Result struct {
	Manifest *manifest.Manifest
	// Files are the paths written, images first.
	Files []string
	// Log is the full build log.
	Log string
}

// buildDirs are the working directories of one build, all below build.
type buildDirs struct {
	build string // the build's private directory
	root  string // the image tree (TARGET_ROOT)
	hooks string // merged hooks (TMP_HOOKS_PATH)
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
	b.rep = newReporter(cfg.Out, b.logFile)
	b.log = slog.New(slog.NewTextHandler(b.rep.out, &slog.HandlerOptions{Level: slog.LevelInfo}))

	var all []steps.Step
	all = append(all,
		steps.Func{StepName: "prepare build directory", RunFunc: b.prepare, CleanFunc: b.removeBuildDir},
		steps.Func{StepName: "plan", RunFunc: b.makePlan},
		steps.Func{StepName: "merge hooks", RunFunc: b.mergeHooks},
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
		steps.Func{StepName: "write images", RunFunc: b.writeOutputs},
		steps.Func{StepName: "place outputs", RunFunc: b.placeOutputs, CleanFunc: b.unplaceOnFailure},
	)
	runErr := (&steps.Runner{Log: b.log}).Run(ctx, all)
	b.rep.table(b.hooks, time.Since(b.start))
	if runErr != nil {
		b.rep.printf("strata: build failed after %.1fs: %v\n", time.Since(b.start).Seconds(), runErr)
		b.rep.printf("strata: full log: %s\n", b.logFile.Name())
		return nil, runErr
	}
	b.rep.printf("strata: built %s in %.1fs\n", strings.Join(b.files, ", "), time.Since(b.start).Seconds())
	return &Result{Manifest: b.man, Files: b.files, Log: b.logFile.Name()}, nil
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
	dir, err := b.cache.TempDir("build-")
	if err != nil {
		return err
	}
	b.dirs = buildDirs{
		build: dir,
		root:  filepath.Join(dir, "root"),
		hooks: filepath.Join(dir, "hooks"),
		out:   filepath.Join(dir, "out"),
		apt:   filepath.Join(dir, "apt-archives"),
	}
	for _, d := range []string{b.dirs.root, b.dirs.hooks, b.dirs.out, b.dirs.apt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(b.cfg.Output), 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	return nil
}

// removeBuildDir deletes the build directory, but never through a mount:
// hooks run in private namespaces so none should exist, and if one does,
// deleting below it could reach the host's files.
func (b *builder) removeBuildDir(ctx context.Context) error {
	if b.dirs.build == "" {
		return nil
	}
	if m := mountsBelow(b.dirs.build); len(m) > 0 {
		return fmt.Errorf("not removing %s: still mounted below it: %s", b.dirs.build, strings.Join(m, ", "))
	}
	return os.RemoveAll(b.dirs.build)
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

func (b *builder) makePlan(ctx context.Context) error {
	env, err := hookEnv(b.cfg, b.dirs, b.dirs.apt)
	if err != nil {
		return err
	}
	p, err := makePlan(ctx, b.cfg.planRequest(), env, b.log)
	if err != nil {
		return err
	}
	b.plan = p
	b.rep.printf("strata: building %s (%s) from elements: %s\n", b.cfg.Output, strings.Join(b.cfg.Formats, ","), strings.Join(p.set.Names(), " "))
	return nil
}

func (b *builder) mergeHooks(ctx context.Context) error {
	return b.plan.writeHooksDir(b.dirs.hooks)
}

// restore finds the latest saved tree this build can start from.
func (b *builder) restore(ctx context.Context) error {
	if b.reused {
		return nil
	}
	all := b.plan.hooks()
	if !b.cfg.NoCache {
		for i := len(all) - 1; i >= 0; i-- {
			hk := all[i]
			if !hk.checkpoint {
				continue
			}
			meta, ok := b.cache.Snapshot(hk.key)
			if !ok {
				continue
			}
			t0 := time.Now()
			b.rep.printf("strata: reusing the cached tree after %s (%s); restarting after it\n", hk.Path(), hk.key[:12])
			if err := b.cache.RestoreSnapshot(ctx, hk.key, b.dirs.root); err != nil {
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

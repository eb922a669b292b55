package build

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"strata/builder/cache"
	"strata/builder/disk"
	"strata/builder/element"
	"strata/builder/executor"
	"strata/builder/manifest"

	"golang.org/x/sys/unix"
)

// linkPackages gives the build its own package directory, hard-linked from
// the shared pool: concurrent builds never fight over apt's lock, and
// .deb files (immutable, uniquely named) are shared without copying.
func (b *builder) linkPackages(ctx context.Context) error {
	if b.reused {
		return nil
	}
	return linkDebs(b.cache.AptArchives(), b.dirs.apt)
}

// savePackages links whatever the build downloaded back into the shared
// pool, whether or not the build succeeded: a download is never wasted.
func (b *builder) savePackages(ctx context.Context) error {
	if b.dirs.apt == "" {
		return nil
	}
	return linkDebs(b.dirs.apt, b.cache.AptArchives())
}

func linkDebs(from, to string) error {
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".deb") {
			continue
		}
		dst := filepath.Join(to, e.Name())
		if _, err := os.Lstat(dst); err == nil {
			continue
		}
		if err := os.Link(filepath.Join(from, e.Name()), dst); err != nil {
			return fmt.Errorf("package cache: %w", err)
		}
	}
	return nil
}

func (b *builder) runPhase(ctx context.Context, i int) error {
	if !b.reused && b.phaseStartsFresh(i) {
		if err := b.rescan(ctx, i); err != nil {
			return err
		}
	}
	pp := b.plan.phases[i]
	var todo []*hookPlan
	for _, h := range pp.hooks {
		if b.reused || h.index <= b.restored {
			b.hooks = append(b.hooks, manifest.Hook{Phase: string(pp.phase), Name: h.Name, Element: h.Element, Where: where(pp.phase), Status: "cached"})
		} else {
			todo = append(todo, h)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	b.rep.phase(pp.phase, len(todo), len(pp.hooks)-len(todo))
	env := b.phaseEnv(pp.phase)
	r := &hookRunner{hooksDir: b.dirs.hooks, envFiles: pp.envFiles, where: where(pp.phase), rep: b.rep}
	if pp.phase.InTarget() {
		if _, err := os.Stat(filepath.Join(b.dirs.root, "bin/bash")); err != nil {
			return fmt.Errorf("%s runs inside the image root, but %s has no /bin/bash: did a root.d hook build a root filesystem? (is an operating-system element such as debian-minimal in the set?)", pp.phase, b.dirs.root)
		}
		r.ex = &executor.Chroot{Root: b.dirs.root, HooksDir: b.dirs.hooks, Binds: b.chrootBinds(), Namespace: b.ns}
		env = inTargetEnv(env, executor.HooksMountPoint)
		r.hooksDir = executor.HooksMountPoint
	} else {
		r.ex = &executor.Host{Dir: b.cfg.WorkDir, Namespace: b.ns}
	}
	r.env = envList(env)
	for _, h := range todo {
		var before map[string]fileState
		var mountsBefore []executor.MountEntry
		record := deltaPhase(pp.phase) && !b.cfg.NoCache
		if record {
			var err error
			if before, err = snapshotHooks(b.dirs.hooks); err != nil {
				return err
			}
			if b.ns != nil {
				if mountsBefore, err = b.ns.Mounts(); err != nil {
					return err
				}
			}
		}
		if h.fstab {
			if err := b.writeFstab(); err != nil {
				return err
			}
		} else {
			rec, err := r.run(ctx, h)
			b.hooks = append(b.hooks, rec)
			if err != nil {
				return err
			}
		}
		if record {
			if err := b.recordHooksDelta(h, before, mountsBefore); err != nil {
				return err
			}
		}
		if h.checkpoint && !b.cfg.NoCache {
			t0 := time.Now()
			err := b.cache.SaveSnapshot(ctx, h.key, b.dirs.root, cache.SnapshotMeta{
				Phase: h.Path(), Image: filepath.Base(b.cfg.Output), SourceDateEpoch: b.epoch,
			})
			if err != nil {
				return fmt.Errorf("caching the tree after %s: %w", h.Path(), err)
			}
			b.rep.printf("strata: cached the tree after %s in %.1fs\n", h.Path(), time.Since(t0).Seconds())
		}
	}
	return nil
}

// phaseStartsFresh reports whether phase i starts in this build, rather
// than inside or before the cached tree it restarted from (whose hooks
// directory is as the hooks before the restart point left it).
func (b *builder) phaseStartsFresh(i int) bool {
	for _, h := range b.plan.phases[i].hooks {
		if h.index <= b.restored {
			return false
		}
	}
	return true
}

// rescan plans phase i again from the hooks directory as it is now, as
// dib-run-parts lists a phase's hooks when the phase starts: hooks (and
// environment.d files) that earlier hooks added run, and those they
// removed do not. If that changes the plan, every later key changes with
// it.
func (b *builder) rescan(ctx context.Context, i int) error {
	old := b.plan.phases[i]
	fresh, err := b.plan.planPhase(ctx, old.phase, b.dirs.hooks)
	if err != nil {
		return err
	}
	if samePhase(old, fresh) {
		return nil
	}
	known := map[string]bool{}
	for _, pp := range b.plan.phases[i:] {
		for _, h := range pp.hooks {
			known[h.Path()+" "+h.digest] = true
		}
	}
	if err := b.plan.planFrom(ctx, i, b.dirs.hooks); err != nil {
		return err
	}
	for _, pp := range b.plan.phases[i:] {
		var added []string
		for _, h := range pp.hooks {
			if h.dynamic && !known[h.Path()+" "+h.digest] {
				added = append(added, h.Name+" ("+h.Element+")")
			}
		}
		if len(added) > 0 {
			b.rep.printf("strata: %s: hooks added while the build ran: %s\n", pp.phase, strings.Join(added, ", "))
		}
	}
	for _, e := range fresh.dynamicEnv {
		b.rep.printf("strata: %s: environment file added while the build ran: environment.d/%s\n", old.phase, strings.Fields(e)[0])
	}
	return nil
}

func samePhase(a, b *phasePlan) bool {
	if len(a.hooks) != len(b.hooks) || strings.Join(a.envFiles, "\n") != strings.Join(b.envFiles, "\n") ||
		strings.Join(a.dynamicEnv, "\n") != strings.Join(b.dynamicEnv, "\n") {
		return false
	}
	for i := range a.hooks {
		x, y := a.hooks[i], b.hooks[i]
		if x.Hook != y.Hook || x.digest != y.digest || strings.Join(x.args, "\x00") != strings.Join(y.args, "\x00") {
			return false
		}
	}
	return true
}

func where(p element.Phase) string {
	if p.InTarget() {
		return "chroot"
	}
	return "host"
}

// phaseEnv adds what a phase may see beyond the planned environment: the
// build's timestamp, and from block-device.d on, the disk's identifiers.
func (b *builder) phaseEnv(p element.Phase) map[string]string {
	env := make(map[string]string, len(b.plan.env)+4)
	for k, v := range b.plan.env {
		env[k] = v
	}
	env["SOURCE_DATE_EPOCH"] = strconv.FormatInt(b.epoch, 10)
	if p.Index() >= element.BlockDevicePhase.Index() && b.plan.bootable {
		ids := b.ids()
		env["STRATA_ROOT_UUID"] = ids.RootFS.String()
		env["STRATA_ESP_UUID"] = ids.ESPVolumeIDString()
		env["STRATA_KERNEL_ROOT"] = disk.KernelRoot(ids)
	}
	return env
}

func (b *builder) ids() disk.IDs { return disk.DeriveIDs([]byte(b.plan.idSeed())) }

// chrootBinds are the extra mounts of in-image hooks: the package cache at
// apt's archive directory and the host's resolver configuration.
func (b *builder) chrootBinds() []executor.Mount {
	apt := executor.Bind(b.dirs.apt, "/var/cache/apt/archives", false)
	apt.Optional = true // not every image root is Debian
	binds := []executor.Mount{apt}
	if _, err := os.Stat("/etc/resolv.conf"); err == nil {
		binds = append(binds, executor.BindFile("/etc/resolv.conf", "/etc/resolv.conf", true))
	}
	return binds
}

// writeFstab records the root and EFI filesystems by UUID, before
// pre-finalise.d and finalise.d run, as DIB has the image's fstab in place
// by then.
func (b *builder) writeFstab() error {
	fstab := disk.Fstab(b.ids(), b.plan.bootable)
	if err := os.MkdirAll(filepath.Join(b.dirs.root, "etc"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.dirs.root, "etc/fstab"), []byte(fstab), 0o644); err != nil {
		return err
	}
	if b.plan.bootable {
		return os.MkdirAll(filepath.Join(b.dirs.root, "boot/efi"), 0o755)
	}
	return nil
}

// clampTimes sets every file time later than epoch to epoch, so the
// filesystem images do not carry the build's wall-clock time.
func clampTimes(root string, epoch int64) error {
	t := time.Unix(epoch, 0)
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.ModTime().After(t) {
			ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
			return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		return nil
	})
}

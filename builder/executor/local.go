package executor

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Host runs commands on the build host, each in its own mount and PID
// namespace: mounts a hook makes (mmdebstrap mounts /proc in the tree it
// builds, for instance) vanish when it exits, and so do the processes it
// started.
type Host struct {
	// Dir is the default working directory.
	Dir string
	// Namespace, when set, is the mount namespace commands run in (and
	// leave their mounts in) instead of a private one each.
	Namespace *MountNamespace
}

func (h *Host) Where() string { return "host" }

func (h *Host) Run(ctx context.Context, cmd Command) error {
	dir := cmd.Dir
	if dir == "" {
		dir = h.Dir
	}
	return runSandboxed(ctx, sandboxSpec{Path: cmd.Path, Args: cmd.Args, Env: cmd.Env, Dir: dir}, cmd, h.Namespace)
}

// HooksMountPoint is where the merged hooks directory appears inside the
// image root, as in DIB.
const HooksMountPoint = "/tmp/in_target.d"

// Chroot runs commands inside an image root with /proc, /sys, /dev, a
// private /run and the hooks directory mounted, plus any extra binds (the
// shared package cache, the host's resolv.conf). Every mount exists only in
// the namespace of the one command.
type Chroot struct {
	Root string
	// HooksDir is bind-mounted read-only at /tmp/in_target.d.
	HooksDir string
	// Binds are further mounts, made after the standard ones.
	Binds []Mount
	// Namespace, when set, is the mount namespace each command gets a
	// private copy of (with whatever host commands mounted in it),
	// instead of a copy of the caller's.
	Namespace *MountNamespace
}

func (c *Chroot) Where() string { return "chroot " + c.Root }

func (c *Chroot) Run(ctx context.Context, cmd Command) error {
	mounts := []Mount{
		{Kind: procMount, Target: "/proc"},
		{Kind: sysfsMount, Target: "/sys"},
		{Kind: rbindMount, Source: "/dev", Target: "/dev"},
		{Kind: tmpfsMount, Target: "/run"},
	}
	if c.HooksDir != "" {
		created, err := ensureDir(filepath.Join(c.Root, HooksMountPoint))
		if err != nil {
			return err
		}
		if created {
			defer os.Remove(filepath.Join(c.Root, HooksMountPoint))
		}
		mounts = append(mounts, Mount{Kind: bindMount, Source: c.HooksDir, Target: HooksMountPoint, ReadOnly: true})
	}
	mounts = append(mounts, c.Binds...)
	return runSandboxed(ctx, sandboxSpec{
		Root: c.Root, Mounts: mounts,
		Path: cmd.Path, Args: cmd.Args, Env: cmd.Env, Dir: cmd.Dir,
	}, cmd, c.Namespace)
}

// ensureDir makes dir if it is missing and says whether it did.
func ensureDir(dir string) (bool, error) {
	if _, err := os.Lstat(dir); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, os.MkdirAll(dir, 0o755)
}

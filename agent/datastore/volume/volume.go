// Package volume prepares a guest's data volume for any datastore: it
// formats the device only if it carries no filesystem (a rebuilt instance
// keeps its data), and has systemd mount it through a mount unit so the
// mount lives in the host's namespace, comes back at every boot, and the
// database unit waits for it.
//
// volume must never format a device that has a filesystem, and must not
// know which datastore uses the mount.
package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"strata/agent/wire"
)

// Volume is a data device and where it goes.
type Volume struct {
	Device     string
	MountPoint string
	// UnitDir receives the mount unit and drop-in (default
	// /etc/systemd/system).
	UnitDir string
	// Run executes a command and returns its combined output (default:
	// os/exec). blkid, mkfs.ext4 and systemctl go through it.
	Run func(ctx context.Context, name string, args ...string) ([]byte, error)
	// AllowRegularFile lets Device be a plain file (tests: mkfs.ext4 and
	// blkid work on files).
	AllowRegularFile bool
	// MountInfo is read to see whether MountPoint is mounted already
	// (default /proc/self/mountinfo).
	MountInfo string
}

// Filesystems a data volume may carry already; anything else is refused
// rather than formatted over.
var keepFS = map[string]bool{"ext4": true, "xfs": true}

// Prepare formats the device if it is blank, then mounts it at MountPoint
// via a systemd mount unit, and makes dependentUnit (e.g. mariadb.service)
// require the mount. It reports whether it formatted.
func (v Volume) Prepare(ctx context.Context, dependentUnit string) (formatted bool, err error) {
	if v.Run == nil {
		v.Run = execRun
	}
	if v.UnitDir == "" {
		v.UnitDir = "/etc/systemd/system"
	}
	if v.MountInfo == "" {
		v.MountInfo = "/proc/self/mountinfo"
	}
	st, err := os.Stat(v.Device)
	if err != nil {
		return false, wire.Errorf(wire.CodeFailedPrecondition, "data device %s: %v", v.Device, err)
	}
	isBlock := st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
	if !isBlock && !(v.AllowRegularFile && st.Mode().IsRegular()) {
		return false, wire.Errorf(wire.CodeFailedPrecondition, "data device %s is not a block device", v.Device)
	}
	fstype, err := v.probe(ctx, "TYPE")
	if err != nil {
		return false, err
	}
	switch {
	case fstype == "":
		if out, err := v.Run(ctx, "mkfs.ext4", "-q", "-F", "-L", "strata-data", "-m", "1", v.Device); err != nil {
			return false, fmt.Errorf("format %s: %w: %s", v.Device, err, strings.TrimSpace(string(out)))
		}
		formatted, fstype = true, "ext4"
	case !keepFS[fstype]:
		return false, wire.Errorf(wire.CodeFailedPrecondition,
			"data device %s holds a %s filesystem; refusing to use or format it (want ext4, xfs or a blank device)", v.Device, fstype)
	}
	uuid, err := v.probe(ctx, "UUID")
	if err != nil || uuid == "" {
		return formatted, fmt.Errorf("data device %s: no filesystem UUID: %v", v.Device, err)
	}
	if v.mounted() {
		return formatted, nil
	}
	if err := os.MkdirAll(v.MountPoint, 0o755); err != nil {
		return formatted, fmt.Errorf("mount point: %w", err)
	}
	unit := EscapePath(v.MountPoint) + ".mount"
	mountUnit := fmt.Sprintf(`# Written by strata-agent (prepare): the instance's data volume.
[Unit]
Description=strata data volume at %[1]s
Before=%[2]s

[Mount]
What=/dev/disk/by-uuid/%[3]s
Where=%[1]s
Type=%[4]s
Options=defaults,noatime,nodev,nosuid

[Install]
WantedBy=local-fs.target
`, v.MountPoint, dependentUnit, uuid, fstype)
	if err := writeFile(filepath.Join(v.UnitDir, unit), mountUnit); err != nil {
		return formatted, err
	}
	if dependentUnit != "" {
		dropIn := fmt.Sprintf("# Written by strata-agent (prepare).\n[Unit]\nRequiresMountsFor=%s\n", v.MountPoint)
		if err := writeFile(filepath.Join(v.UnitDir, dependentUnit+".d", "strata-data-volume.conf"), dropIn); err != nil {
			return formatted, err
		}
	}
	for _, args := range [][]string{{"daemon-reload"}, {"enable", "--now", unit}} {
		if out, err := v.Run(ctx, "systemctl", args...); err != nil {
			return formatted, fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	if !v.mounted() {
		return formatted, fmt.Errorf("data volume: %s is not mounted after starting %s", v.MountPoint, unit)
	}
	return formatted, nil
}

// Grow makes the filesystem on the device fill it, after the controller
// extended the volume: online while mounted (resize2fs on ext4, xfs_growfs
// on the mount point for xfs), after a forced check when not mounted
// (ext4 only). A filesystem that fills the device already is left alone.
func (v Volume) Grow(ctx context.Context) error {
	if v.Run == nil {
		v.Run = execRun
	}
	if v.MountInfo == "" {
		v.MountInfo = "/proc/self/mountinfo"
	}
	fstype, err := v.probe(ctx, "TYPE")
	if err != nil {
		return err
	}
	var cmds [][]string
	switch {
	case fstype == "ext4" && v.mounted():
		cmds = [][]string{{"resize2fs", v.Device}}
	case fstype == "ext4":
		// -p repairs only what is safe unattended; resize2fs insists on a
		// checked filesystem when it is not mounted.
		cmds = [][]string{{"e2fsck", "-f", "-p", v.Device}, {"resize2fs", v.Device}}
	case fstype == "xfs" && v.mounted():
		cmds = [][]string{{"xfs_growfs", v.MountPoint}}
	case fstype == "":
		return wire.Errorf(wire.CodeFailedPrecondition, "data device %s has no filesystem yet (not prepared)", v.Device)
	default:
		return wire.Errorf(wire.CodeFailedPrecondition, "cannot grow the %s filesystem on %s (ext4, or mounted xfs, only)", fstype, v.Device)
	}
	for _, c := range cmds {
		if out, err := v.Run(ctx, c[0], c[1:]...); err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(c, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// probe returns one blkid tag of the device; "" when blkid finds no
// filesystem (exit status 2).
func (v Volume) probe(ctx context.Context, tag string) (string, error) {
	out, err := v.Run(ctx, "blkid", "-p", "-o", "value", "-s", tag, v.Device)
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("blkid %s: %w: %s", v.Device, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// mounted reports whether the device itself is mounted at MountPoint. A
// mount of something else there does not count: the agent's own sandbox
// bind-mounts its ReadWritePaths (the mount point among them) from the
// root filesystem, and that must not pass for the data volume.
func (v Volume) mounted() bool {
	data, err := os.ReadFile(v.MountInfo)
	if err != nil {
		return false
	}
	want := ""
	if st, err := os.Stat(v.Device); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && st.Mode()&os.ModeDevice != 0 {
			want = fmt.Sprintf("%d:%d", unix.Major(uint64(sys.Rdev)), unix.Minor(uint64(sys.Rdev)))
		}
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		// A plain file (tests) has no device number to compare.
		if len(f) > 4 && f[4] == v.MountPoint && (want == "" || f[2] == want) {
			return true
		}
	}
	return false
}

// EscapePath turns an absolute path into a systemd unit name stem the way
// systemd-escape --path does ("/var/lib/mysql" → "var-lib-mysql").
func EscapePath(p string) string {
	p = strings.Trim(filepath.Clean(p), "/")
	if p == "" {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '/':
			b.WriteByte('-')
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == ':', c == '_', c == '.' && i > 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	return b.String()
}

func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func execRun(ctx context.Context, name string, args ...string) ([]byte, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

package volume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"strata/agent/wire"
)

// The real mkfs.ext4 and blkid work on a plain file; systemctl is recorded
// and "mounts" by writing a mountinfo line.
type rig struct {
	v        Volume
	calls    []string
	dir      string
	mountinf string
}

func newRig(t *testing.T) *rig {
	for _, bin := range []string{"mkfs.ext4", "blkid", "mkswap"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: install e2fsprogs and util-linux (ci/deps.sh build)", bin)
		}
	}
	dir := t.TempDir()
	r := &rig{dir: dir, mountinf: filepath.Join(dir, "mountinfo")}
	dev := filepath.Join(dir, "disk.img")
	f, _ := os.Create(dev)
	f.Truncate(32 << 20)
	f.Close()
	os.WriteFile(r.mountinf, []byte("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"), 0o644)
	r.v = Volume{
		Device: dev, MountPoint: filepath.Join(dir, "var/lib/mysql"), UnitDir: filepath.Join(dir, "units"),
		AllowRegularFile: true, MountInfo: r.mountinf,
		Run: func(ctx context.Context, name string, args ...string) ([]byte, error) {
			if name == "systemctl" {
				r.calls = append(r.calls, strings.Join(args, " "))
				if args[0] == "enable" {
					f, _ := os.OpenFile(r.mountinf, os.O_APPEND|os.O_WRONLY, 0)
					f.WriteString("99 22 7:0 / " + r.v.MountPoint + " rw - ext4 /dev/loop0 rw\n")
					f.Close()
				}
				return nil, nil
			}
			return execRun(ctx, name, args...)
		},
	}
	return r
}

func (r *rig) blkid(t *testing.T, tag string) string {
	out, _ := exec.Command("blkid", "-p", "-o", "value", "-s", tag, r.v.Device).Output()
	return strings.TrimSpace(string(out))
}

func TestBlankDeviceIsFormattedAndMountedViaSystemd(t *testing.T) {
	r := newRig(t)
	formatted, err := r.v.Prepare(context.Background(), "mariadb.service")
	if err != nil || !formatted {
		t.Fatalf("formatted=%v err=%v", formatted, err)
	}
	uuid := r.blkid(t, "UUID")
	if r.blkid(t, "TYPE") != "ext4" || uuid == "" {
		t.Fatal("device not ext4 after prepare")
	}
	unitName := EscapePath(r.v.MountPoint) + ".mount"
	unit, err := os.ReadFile(filepath.Join(r.v.UnitDir, unitName))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"What=/dev/disk/by-uuid/" + uuid, "Where=" + r.v.MountPoint, "Type=ext4", "Before=mariadb.service", "WantedBy=local-fs.target"} {
		if !strings.Contains(string(unit), want) {
			t.Fatalf("mount unit lacks %q:\n%s", want, unit)
		}
	}
	dropIn, _ := os.ReadFile(filepath.Join(r.v.UnitDir, "mariadb.service.d", "strata-data-volume.conf"))
	if !strings.Contains(string(dropIn), "RequiresMountsFor="+r.v.MountPoint) {
		t.Fatalf("drop-in: %s", dropIn)
	}
	if strings.Join(r.calls, ";") != "daemon-reload;enable --now "+unitName {
		t.Fatalf("systemctl calls: %v", r.calls)
	}

	// Prepare again (a rebuild onto the same volume): no format.
	os.WriteFile(r.mountinf, []byte(""), 0o644)
	formatted, err = r.v.Prepare(context.Background(), "mariadb.service")
	if err != nil || formatted {
		t.Fatalf("second prepare: formatted=%v err=%v", formatted, err)
	}
	if r.blkid(t, "UUID") != uuid {
		t.Fatal("the filesystem was recreated")
	}
}

func TestForeignFilesystemIsNeverFormatted(t *testing.T) {
	r := newRig(t)
	if out, err := exec.Command("mkswap", r.v.Device).CombinedOutput(); err != nil {
		t.Fatalf("mkswap: %v %s", err, out)
	}
	sum := func() [32]byte { b, _ := os.ReadFile(r.v.Device); return sha256.Sum256(b) }
	before := sum()
	_, err := r.v.Prepare(context.Background(), "mariadb.service")
	if wire.ErrorCodeOf(err) != wire.CodeFailedPrecondition || !strings.Contains(err.Error(), "swap") {
		t.Fatalf("err = %v", err)
	}
	if sum() != before || len(r.calls) != 0 {
		t.Fatal("device or units touched")
	}
}

func TestNonBlockDeviceRefused(t *testing.T) {
	r := newRig(t)
	r.v.AllowRegularFile = false
	_, err := r.v.Prepare(context.Background(), "")
	if wire.ErrorCodeOf(err) != wire.CodeFailedPrecondition || !strings.Contains(err.Error(), "not a block device") {
		t.Fatalf("err = %v", err)
	}
	b, _ := os.ReadFile(r.v.Device)
	if !bytes.Equal(b, make([]byte, len(b))) {
		t.Fatal("device written")
	}
}

func TestEscapePath(t *testing.T) {
	for in, want := range map[string]string{
		"/var/lib/mysql": "var-lib-mysql", "/": "-", "/srv/my-data": `srv-my\x2ddata`, "/a/.b": "a-.b", "/.x": `\x2ex`,
	} {
		if got := EscapePath(in); got != want {
			t.Errorf("EscapePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func blockCount(t *testing.T, dev string) int {
	t.Helper()
	out, err := exec.Command("dumpe2fs", "-h", dev).Output()
	if err != nil {
		t.Fatalf("dumpe2fs: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "Block count:"); ok {
			var n int
			fmt.Sscan(strings.TrimSpace(v), &n)
			return n
		}
	}
	t.Fatalf("no block count in dumpe2fs output:\n%s", out)
	return 0
}

func TestGrowFillsAnExtendedDeviceAndKeepsTheData(t *testing.T) {
	r := newRig(t)
	if _, err := r.v.Prepare(context.Background(), "mariadb.service"); err != nil {
		t.Fatal(err)
	}
	// The rig only pretends to mount: grow it the way an unmounted
	// volume is grown (check, then resize2fs).
	os.WriteFile(r.mountinf, []byte("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"), 0o644)
	uuid := r.blkid(t, "UUID")
	before := blockCount(t, r.v.Device)
	if err := os.Truncate(r.v.Device, 64<<20); err != nil {
		t.Fatal(err)
	}
	if err := r.v.Grow(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := blockCount(t, r.v.Device)
	if after < 2*before-before/10 {
		t.Fatalf("block count %d -> %d after doubling the device", before, after)
	}
	if r.blkid(t, "UUID") != uuid {
		t.Fatal("growing replaced the filesystem")
	}
	// Already full: a second Grow changes nothing and succeeds.
	if err := r.v.Grow(context.Background()); err != nil || blockCount(t, r.v.Device) != after {
		t.Fatalf("second grow: %v", err)
	}
}

func TestGrowRefusesABlankDevice(t *testing.T) {
	r := newRig(t)
	err := r.v.Grow(context.Background())
	if wire.ErrorCodeOf(err) != wire.CodeFailedPrecondition {
		t.Fatalf("grow of a blank device: %v", err)
	}
}

// TestAnotherMountAtTheMountPointIsNotTheVolume: the agent's sandbox
// bind-mounts the mount point from the root filesystem; only a mount of
// the data device itself counts as mounted.
func TestAnotherMountAtTheMountPointIsNotTheVolume(t *testing.T) {
	var dev string
	var st os.FileInfo
	entries, _ := os.ReadDir("/sys/block")
	for _, e := range entries {
		if s, err := os.Stat("/dev/" + e.Name()); err == nil && s.Mode()&os.ModeDevice != 0 && s.Mode()&os.ModeCharDevice == 0 {
			dev, st = "/dev/"+e.Name(), s
			break
		}
	}
	if dev == "" {
		t.Fatal("no block device under /dev to test with")
	}
	sys := st.Sys().(*syscall.Stat_t)
	majmin := fmt.Sprintf("%d:%d", unix.Major(uint64(sys.Rdev)), unix.Minor(uint64(sys.Rdev)))
	mi := filepath.Join(t.TempDir(), "mountinfo")
	v := Volume{Device: dev, MountPoint: "/var/lib/mysql", MountInfo: mi}
	os.WriteFile(mi, []byte("22 1 254:3 / / ro - ext4 /dev/vda3 rw\n77 22 254:3 /var/lib/mysql /var/lib/mysql rw - ext4 /dev/vda3 rw\n"), 0o644)
	if majmin != "254:3" && v.mounted() {
		t.Fatal("the sandbox's bind mount of the root filesystem passed for the data volume")
	}
	os.WriteFile(mi, []byte("22 1 254:3 / / ro - ext4 /dev/vda3 rw\n78 22 "+majmin+" / /var/lib/mysql rw - ext4 "+dev+" rw\n"), 0o644)
	if !v.mounted() {
		t.Fatalf("%s (%s) mounted at the mount point not recognised", dev, majmin)
	}
}

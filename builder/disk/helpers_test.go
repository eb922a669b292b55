package disk

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testEpoch is the SourceDateEpoch of the integration tests.
var testEpoch = time.Unix(1700000000, 0)

// requireTools fails the test (never skips it) when a host tool is missing;
// the message names the command that installs them.
func requireTools(t testing.TB, names ...string) {
	t.Helper()
	if err := CheckTools(names...); err != nil {
		t.Fatal(err)
	}
}

// hostGrubDir is the host's GRUB module directory the tests assemble with.
const hostGrubDir = "/usr/lib/grub"

// tool runs a host program, fails the test if it exits non-zero, and
// returns its standard output.
func tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// writeFile writes a file of the synthetic tree, creating its directory.
func writeFile(t testing.TB, root, rel, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(p, uint32(mode)); err != nil { // umask; numeric setuid bit
		t.Fatal(err)
	}
	return p
}

// Names in the synthetic tree the tests look for.
const (
	treeOddName   = `/srv/we"ird name`
	treeFutureRel = "/var/lib/future"
	treeXattrRel  = "/etc/xattr-file"
	treeBigRel    = "/usr/share/big.bin"
	treeBigSize   = 3 << 20
)

// makeTree builds a small root tree exercising what mkfs.ext4 -d and the
// tar writer must carry: modes with setuid, owners, a symlink, a hard link,
// an extended attribute, a FIFO, a device node, an empty directory, odd
// names, a file dated after the epoch, plus fstab and grub.cfg. It needs
// root (owners and device nodes), as the builder does.
func makeTree(t testing.TB, ids IDs, bootable bool) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the disk integration tests need root (file owners, device nodes), as the builder does")
	}
	root := t.TempDir()
	writeFile(t, root, "/etc/fstab", Fstab(ids, bootable), 0o644)
	writeFile(t, root, "/etc/hello", "hello from strata\n", 0o644)
	writeFile(t, root, "/boot/grub/grub.cfg", "set timeout=0\nmenuentry strata {\n  linux /vmlinuz "+KernelRoot(ids)+" console=ttyS0,115200\n  initrd /initrd.img\n}\n", 0o644)
	writeFile(t, root, "/usr/bin/hello", "#!/bin/sh\necho hello\n", 0o4755)
	owned := writeFile(t, root, "/home/user/notes", "mine\n", 0o600)
	if err := os.Lchown(owned, 1000, 1001); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../usr/bin/hello", filepath.Join(root, "bin-hello")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(root, "usr/bin/hello"), filepath.Join(root, "usr/bin/hello-again")); err != nil {
		t.Fatal(err)
	}
	x := writeFile(t, root, treeXattrRel, "has an xattr\n", 0o644)
	if err := syscall.Setxattr(x, "user.strata", []byte("value-1"), 0); err != nil {
		t.Fatalf("setxattr (the test tree's filesystem must support user xattrs): %v", err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "run-fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mknod(filepath.Join(root, "dev/null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "boot/efi"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "var/empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, root, treeOddName, "odd\n", 0o644)
	future := writeFile(t, root, treeFutureRel, "from the future\n", 0o644)
	later := testEpoch.Add(48 * time.Hour)
	if err := os.Chtimes(future, later, later); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("strata-big-file-"), treeBigSize/16)
	writeFile(t, root, treeBigRel, string(big), 0o644)
	for i := range 50 {
		writeFile(t, root, filepath.Join("/usr/lib/many", strings.Repeat("f", i%7+1)+string(rune('a'+i%26))+strings.Repeat("x", i)), "x\n", 0o644)
	}
	return root
}

// copyTree copies a tree with cp -a and then dates every file and
// directory a week after testEpoch, so the copy differs from the original
// in inode numbers, creation order, ctimes, atimes and (post-epoch) mtimes:
// everything reproducible assembly must not depend on.
func copyTree(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	tool(t, "cp", "-a", src, dst)
	later := testEpoch.Add(7 * 24 * time.Hour)
	err := filepath.Walk(dst, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.Mode()&os.ModeSymlink != 0 {
			return err
		}
		return os.Chtimes(p, later, later)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// extract copies ext of image into a new sparse file, as dd conv=sparse
// would, so a filesystem checker sees the partition alone. Only the data
// regions of the (sparse) image are read.
func extract(t testing.TB, image string, ext Extent) string {
	t.Helper()
	in, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out := filepath.Join(t.TempDir(), "part.img")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const seekData, seekHole = 3, 4
	fd := int(in.Fd())
	end := ext.Offset + ext.Size
	for off := ext.Offset; off < end; {
		data, err := syscall.Seek(fd, off, seekData)
		if err == syscall.ENXIO || (err == nil && data >= end) {
			break // only holes left
		}
		if err != nil {
			t.Fatal(err)
		}
		hole, err := syscall.Seek(fd, data, seekHole)
		if err != nil {
			t.Fatal(err)
		}
		hole = min(hole, end)
		if _, err := io.Copy(io.NewOffsetWriter(f, data-ext.Offset), io.NewSectionReader(in, data, hole-data)); err != nil {
			t.Fatal(err)
		}
		off = hole
	}
	if err := f.Truncate(ext.Size); err != nil {
		t.Fatal(err)
	}
	return out
}

func readAt(t testing.TB, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

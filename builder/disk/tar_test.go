package disk

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestWriteTar(t *testing.T) {
	requireTools(t, "tar")
	ids := DeriveIDs([]byte("tar"))
	tree := makeTree(t, ids, true)
	// A socket left in the tree: tar cannot hold it, WriteTar skips it.
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: filepath.Join(tree, "run-socket")}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	out := filepath.Join(t.TempDir(), "root.tar")
	if err := WriteTar(context.Background(), tree, out, testEpoch); err != nil {
		t.Fatal(err)
	}

	// GNU tar lists what it will extract: names in order, numeric owners,
	// clamped mtimes.
	list := strings.Split(strings.TrimSpace(tool(t, "tar", "--numeric-owner", "--full-time", "-tvf", out)), "\n")
	if !strings.HasSuffix(list[0], " ./") {
		t.Errorf("first entry %q, want ./", list[0])
	}
	var names []string
	for _, l := range list {
		f := strings.Fields(l)
		if len(f) < 6 {
			t.Fatalf("odd listing line %q", l)
		}
		if f[3] != "2023-11-14" || f[4] != "22:13:20" {
			t.Errorf("%s: mtime %s %s, want the epoch", l, f[3], f[4])
		}
		name := strings.Join(f[5:], " ")
		names = append(names, name)
		if name == "./home/user/notes" && f[1] != "1000/1001" {
			t.Errorf("notes owner %s, want 1000/1001", f[1])
		}
		if name == "./usr/bin/hello" && f[0] != "-rwsr-xr-x" {
			t.Errorf("hello mode %s, want -rwsr-xr-x", f[0])
		}
	}
	for _, w := range []string{"./etc/hello", "./usr/bin/hello-again link to ./usr/bin/hello", "./dev/null", "./run-fifo",
		"./var/empty/", "./srv/we\"ird name", "./bin-hello -> ../usr/bin/hello"} {
		if !slices.Contains(names, w) {
			t.Errorf("listing lacks %s", w)
		}
	}
	if slices.ContainsFunc(names, func(n string) bool { return strings.Contains(n, "run-socket") }) {
		t.Error("the socket was archived")
	}
	// Entry order is GNU tar's --sort=name order.
	gnu := filepath.Join(t.TempDir(), "gnu.tar")
	tool(t, "tar", "--sort=name", "-cf", gnu, "-C", tree, ".")
	if got, want := tool(t, "tar", "-tf", out), tool(t, "tar", "-tf", gnu); got != want {
		t.Errorf("entry order differs from GNU tar --sort=name:\n%s\nwant\n%s", got, want)
	}

	x := filepath.Join(t.TempDir(), "x")
	if err := os.Mkdir(x, 0o755); err != nil {
		t.Fatal(err)
	}
	tool(t, "tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", out, "-C", x)
	for _, rel := range []string{"etc/hello", treeBigRel, treeOddName, "etc/fstab"} {
		a, errA := os.ReadFile(filepath.Join(tree, rel))
		b, errB := os.ReadFile(filepath.Join(x, rel))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs after extraction (%v, %v)", rel, errA, errB)
		}
	}
	var st1, st2, st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(x, "usr/bin/hello"), &st1); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Lstat(filepath.Join(x, "usr/bin/hello-again"), &st2); err != nil {
		t.Fatal(err)
	}
	if st1.Ino != st2.Ino || st1.Mode&0o7777 != 0o4755 {
		t.Errorf("hard link: inodes %d/%d, mode %#o", st1.Ino, st2.Ino, st1.Mode&0o7777)
	}
	if err := syscall.Lstat(filepath.Join(x, "dev/null"), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 1<<8|3 {
		t.Errorf("dev/null: %v mode %#o rdev %#x", err, st.Mode, st.Rdev)
	}
	if err := syscall.Lstat(filepath.Join(x, "run-fifo"), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		t.Errorf("fifo: %v mode %#o", err, st.Mode)
	}
	if target, err := os.Readlink(filepath.Join(x, "bin-hello")); err != nil || target != "../usr/bin/hello" {
		t.Errorf("symlink: %q %v", target, err)
	}
	v := make([]byte, 64)
	if n, err := syscall.Getxattr(filepath.Join(x, treeXattrRel), "user.strata", v); err != nil || string(v[:n]) != "value-1" {
		t.Errorf("xattr after extraction: %q %v", v[:max(n, 0)], err)
	}

	// Reproducible: a copy of the tree with other inode numbers and times
	// gives the same bytes.
	out2 := filepath.Join(t.TempDir(), "root.tar")
	if err := WriteTar(context.Background(), copyTree(t, tree), out2, testEpoch); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(out2)
	if !bytes.Equal(a, b) {
		t.Error("tars of two copies of one tree differ")
	}
}

func TestWriteTarFailureRemovesOutput(t *testing.T) {
	out := filepath.Join(t.TempDir(), "root.tar")
	if err := WriteTar(context.Background(), filepath.Join(t.TempDir(), "missing"), out, testEpoch); err == nil {
		t.Fatal("WriteTar of a missing tree succeeded")
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("failed WriteTar left its output")
	}
}

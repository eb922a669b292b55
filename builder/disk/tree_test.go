package disk

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestScanTree(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "/file", strings.Repeat("x", 5000), 0o644) // 2 blocks
	if err := os.Link(filepath.Join(root, "file"), filepath.Join(root, "hardlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("short", filepath.Join(root, "s1")); err != nil { // in the inode
		t.Fatal(err)
	}
	if err := os.Symlink(strings.Repeat("t", 60), filepath.Join(root, "s2")); err != nil { // one block
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	u, err := ScanTree(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	// Inodes: root, file (the hard link shares it), s1, s2, sub.
	// Bytes: file 8192 + s2 4096 + one block per directory (root, sub).
	if want := (TreeUsage{Bytes: 8192 + 4096 + 2*4096, Inodes: 5}); u != want {
		t.Errorf("ScanTree = %+v, want %+v", u, want)
	}
	// A directory whose entries outgrow a block takes more.
	for i := range 300 {
		writeFile(t, root, filepath.Join("/sub", strings.Repeat("n", 20)+string(rune('a'+i%26))+strings.Repeat("m", i%5)+"-"+strconv.Itoa(i)), "", 0o644)
	}
	u2, err := ScanTree(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if u2.Inodes != 305 || u2.Bytes < u.Bytes+4096 {
		t.Errorf("after 300 entries in sub: %+v (before %+v)", u2, u)
	}
	if _, err := ScanTree(context.Background(), filepath.Join(root, "file")); err == nil {
		t.Error("ScanTree of a file succeeded")
	}
}

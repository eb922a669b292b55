package fsstats

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Compared with coreutils' `stat -f`, an independent reader of the same
// numbers: sizes that do not change must match exactly, free space (which
// other processes change meanwhile) closely.
func TestStatMatchesStatF(t *testing.T) {
	dir := t.TempDir()
	got, err := Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("stat", "-f", "-c", "%S %b %a %c", dir).Output()
	if err != nil {
		t.Fatalf("stat -f: %v", err)
	}
	f := strings.Fields(string(out))
	n := make([]uint64, len(f))
	for i, s := range f {
		n[i], _ = strconv.ParseUint(s, 10, 64)
	}
	bsize, blocks, avail, inodes := n[0], n[1], n[2], n[3]
	if got.BlockSize != bsize || got.TotalBytes != blocks*bsize || got.TotalInodes != inodes {
		t.Fatalf("got %+v; stat -f says block %d, blocks %d, inodes %d", got, bsize, blocks, inodes)
	}
	if diff := int64(got.FreeBytes) - int64(avail*bsize); diff > 256<<20 || diff < -256<<20 {
		t.Fatalf("free %d vs stat -f %d", got.FreeBytes, avail*bsize)
	}
	if got.UsedBytes > got.TotalBytes || got.FreeBytes > got.TotalBytes || got.Path != dir {
		t.Fatalf("implausible %+v", got)
	}
	if _, err := Stat(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing path accepted")
	}
}

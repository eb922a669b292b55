package fsstats

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStatSeesSpaceBeingUsed(t *testing.T) {
	dir := t.TempDir()
	before, err := Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if before.TotalBytes == 0 || before.UsedBytes > before.TotalBytes || before.FreeBytes > before.TotalBytes || before.TotalInodes == 0 {
		t.Fatalf("implausible stats %+v", before)
	}
	// Write 8 MiB and sync: free space must drop by about that much
	// (other writers share the filesystem, so allow slack).
	f, _ := os.Create(filepath.Join(dir, "fill"))
	f.Write(make([]byte, 8<<20))
	f.Sync()
	f.Close()
	after, _ := Stat(dir)
	if drop := int64(before.FreeBytes) - int64(after.FreeBytes); drop < 4<<20 {
		t.Fatalf("free space dropped by %d bytes after writing 8 MiB", drop)
	}
	if _, err := Stat(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing path accepted")
	}
}

package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/builder/cache"
)

// TestCachePruneMaxSizeKeepsTheMostRecentlyUsed: `strata cache prune
// --max-size` removes the least recently used images until the rest fit;
// a size that is not one is refused before anything is removed.
func TestCachePruneMaxSizeKeepsTheMostRecentlyUsed(t *testing.T) {
	dir := t.TempDir()
	c, err := cache.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, key := range []string{"old", "new"} {
		out := filepath.Join(t.TempDir(), key)
		os.MkdirAll(out, 0o755)
		os.WriteFile(filepath.Join(out, "disk.qcow2"), make([]byte, 600<<10), 0o644)
		if err := c.SaveOutputs(key, out); err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(-time.Duration(2-i) * time.Hour)
		os.Chtimes(filepath.Join(dir, "outputs", key), at, at)
	}
	run := func(args ...string) (string, error) {
		cmd := NewCacheCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append([]string{"prune", "--image-cache", dir}, args...))
		err := cmd.Execute()
		return out.String(), err
	}
	if out, err := run("--max-size", "lots"); err == nil || !strings.Contains(err.Error(), "not a size") {
		t.Fatalf("--max-size lots: %v\n%s", err, out)
	}
	if _, ok := c.OutputDir("old"); !ok {
		t.Fatal("a refused prune removed an entry")
	}
	if out, err := run("--max-size", "1M"); err != nil || !strings.Contains(out, "freed 0.6 MiB") {
		t.Fatalf("--max-size 1M: %v\n%s", err, out)
	}
	if _, ok := c.OutputDir("old"); ok {
		t.Error("the least recently used image survived")
	}
	if _, ok := c.OutputDir("new"); !ok {
		t.Error("the most recently used image was removed")
	}
}

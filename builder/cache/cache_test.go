package cache

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSnapshotRoundTripKeepsOwnersModesLinksAndCapabilities(t *testing.T) {
	c, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tree := t.TempDir()
	os.MkdirAll(filepath.Join(tree, "usr/bin"), 0o755)
	os.WriteFile(filepath.Join(tree, "usr/bin/ping"), []byte("binary"), 0o755)
	os.Symlink("usr/bin", filepath.Join(tree, "bin"))
	os.WriteFile(filepath.Join(tree, "owned"), []byte("x"), 0o640)
	os.Chown(filepath.Join(tree, "owned"), 123, 456)
	// A file capability, as setcap leaves on ping in real images.
	if out, err := exec.Command("setcap", "cap_net_raw+ep", filepath.Join(tree, "usr/bin/ping")).CombinedOutput(); err != nil {
		t.Fatalf("setcap (libcap2-bin): %v %s", err, out)
	}
	if err := os.Chmod(filepath.Join(tree, "usr/bin/ping"), os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.SaveSnapshot(context.Background(), "k1", tree, SnapshotMeta{Phase: "root.d", SourceDateEpoch: 42}); err != nil {
		t.Fatal(err)
	}
	meta, ok := c.Snapshot("k1")
	if !ok || meta.Phase != "root.d" || meta.SourceDateEpoch != 42 || meta.Bytes == 0 {
		t.Fatalf("meta = %+v, %v", meta, ok)
	}
	if _, ok := c.Snapshot("other"); ok {
		t.Fatal("an unknown key was found")
	}
	back := filepath.Join(t.TempDir(), "restored")
	if err := c.RestoreSnapshot(context.Background(), "k1", back); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(back, "usr/bin/ping"))
	if err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("setuid bit lost: %v %v", fi, err)
	}
	if l, _ := os.Readlink(filepath.Join(back, "bin")); l != "usr/bin" {
		t.Errorf("symlink = %q", l)
	}
	var st unix.Stat_t
	unix.Stat(filepath.Join(back, "owned"), &st)
	if st.Uid != 123 || st.Gid != 456 || st.Mode&0o777 != 0o640 {
		t.Errorf("owner/mode = %d:%d %o", st.Uid, st.Gid, st.Mode&0o777)
	}
	out, _ := exec.Command("getcap", filepath.Join(back, "usr/bin/ping")).Output()
	if !strings.Contains(string(out), "cap_net_raw") {
		t.Errorf("file capability lost: %q", out)
	}
	if tmps, _ := filepath.Glob(filepath.Join(c.Dir, "phases", "*.tmp*")); len(tmps) > 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
}

func TestAHalfWrittenSnapshotIsNotTrusted(t *testing.T) {
	c, _ := Open(t.TempDir())
	// A crash between writing the archive and its metadata leaves no
	// metadata: the entry does not exist.
	os.WriteFile(filepath.Join(c.Dir, "phases", "k.tar.zst"), []byte("partial"), 0o644)
	if _, ok := c.Snapshot("k"); ok {
		t.Fatal("an archive without metadata was trusted")
	}
	// Metadata naming another key is not trusted either.
	os.WriteFile(filepath.Join(c.Dir, "phases", "k.json"), []byte(`{"key":"x"}`), 0o644)
	if _, ok := c.Snapshot("k"); ok {
		t.Fatal("metadata of another key was trusted")
	}
}

func TestOutputsAndPrune(t *testing.T) {
	c, _ := Open(t.TempDir())
	if _, ok := c.OutputDir("o1"); ok {
		t.Fatal("empty cache has outputs")
	}
	dir := filepath.Join(t.TempDir(), "out")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "img.qcow2"), make([]byte, 1000), 0o644)
	if err := c.SaveOutputs("o1", dir); err != nil {
		t.Fatal(err)
	}
	got, ok := c.OutputDir("o1")
	if !ok {
		t.Fatal("saved outputs not found")
	}
	tree := t.TempDir()
	os.WriteFile(filepath.Join(tree, "f"), []byte("f"), 0o644)
	c.SaveSnapshot(context.Background(), "s1", tree, SnapshotMeta{})
	// Fresh entries survive a prune; old ones go, packages stay.
	os.WriteFile(filepath.Join(c.AptArchives(), "x_1_all.deb"), []byte("deb"), 0o644)
	if freed, _ := c.Prune(time.Hour); freed != 0 {
		t.Fatalf("pruned %d bytes of fresh entries", freed)
	}
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(got, old, old)
	os.Chtimes(filepath.Join(c.Dir, "phases", "s1.json"), old, old)
	freed, err := c.Prune(24 * time.Hour)
	if err != nil || freed < 1000 {
		t.Fatalf("freed %d, %v", freed, err)
	}
	if _, ok := c.OutputDir("o1"); ok {
		t.Error("old outputs survived")
	}
	if _, ok := c.Snapshot("s1"); ok {
		t.Error("old snapshot survived")
	}
	if _, err := os.Stat(filepath.Join(c.AptArchives(), "x_1_all.deb")); err != nil {
		t.Error("prune deleted downloaded packages")
	}
}

// TestTrimDeletesTheLeastRecentlyUsedUntilUnderTheBudget: entries go
// oldest first until what is left fits; one used since keepAfter stays
// even over the budget; packages and logs are never counted or touched.
func TestTrimDeletesTheLeastRecentlyUsedUntilUnderTheBudget(t *testing.T) {
	c, _ := Open(t.TempDir())
	now := time.Now()
	mkOut := func(key string, size int, age time.Duration) {
		dir := filepath.Join(t.TempDir(), key)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "img.qcow2"), make([]byte, size), 0o644)
		if err := c.SaveOutputs(key, dir); err != nil {
			t.Fatal(err)
		}
		at := now.Add(-age)
		os.Chtimes(filepath.Join(c.Dir, "outputs", key), at, at)
	}
	mkOut("oldest", 4000, 3*time.Hour)
	mkOut("middle", 3000, 2*time.Hour)
	mkOut("newest", 2000, time.Hour)
	mkOut("running", 5000, 0)
	orphan := filepath.Join(c.Dir, "phases", "dead.tar.zst")
	os.WriteFile(orphan, make([]byte, 1000), 0o644)
	old := now.Add(-4 * time.Hour)
	os.Chtimes(orphan, old, old)
	os.WriteFile(filepath.Join(c.AptArchives(), "x_1_all.deb"), make([]byte, 100000), 0o644)
	if got := c.Size(); got != 15000 {
		t.Fatalf("Size = %d, want 15000 (packages are not counted)", got)
	}
	// Budget 8000: the orphan, then oldest and middle go (15000 → 7000).
	if freed := c.Trim(8000, now.Add(-time.Minute)); freed != 8000 {
		t.Fatalf("Trim freed %d, want 8000", freed)
	}
	for key, want := range map[string]bool{"oldest": false, "middle": false, "newest": true, "running": true} {
		if _, ok := c.OutputDir(key); ok != want {
			t.Errorf("output %s kept = %v, want %v", key, ok, want)
		}
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Error("a tree without metadata survived the trim")
	}
	// Over budget, but the rest is in use since keepAfter: kept.
	if freed := c.Trim(1000, now.Add(-90*time.Minute)); freed != 0 {
		t.Fatalf("Trim freed %d of entries used since keepAfter", freed)
	}
	if _, err := os.Stat(filepath.Join(c.AptArchives(), "x_1_all.deb")); err != nil {
		t.Error("trim deleted downloaded packages")
	}
}

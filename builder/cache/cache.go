// Package cache keeps what a build can reuse, under one directory the user
// names (--image-cache):
//
//	phases/<key>.tar.zst   an image tree as it was after a phase, with
//	phases/<key>.json      the metadata of the build that saved it
//	hooks/<key>.tar        what the hook with that key changed in the
//	                       hooks directory (replayed with later trees)
//	outputs/<key>/         finished images, manifest, checksums
//	apt/archives/          downloaded Debian packages, shared by all builds
//	logs/                  build logs
//
// Keys are content hashes of everything that produced an entry, computed by
// the builder; this package only stores and retrieves. Entries are written
// to a temporary name and renamed, so a crash never leaves a half entry
// that a later build would trust.
package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Cache is a cache directory.
type Cache struct {
	Dir string
}

// Open creates the cache layout under dir if needed.
func Open(dir string) (*Cache, error) {
	if dir == "" {
		return nil, errors.New("no cache directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	for _, sub := range []string{"phases", "hooks", "outputs", "apt/archives", "logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o755); err != nil {
			return nil, fmt.Errorf("image cache %s: %w", abs, err)
		}
	}
	return &Cache{Dir: abs}, nil
}

// AptArchives is the shared pool of downloaded .deb files.
func (c *Cache) AptArchives() string { return filepath.Join(c.Dir, "apt/archives") }

// Logs is where build logs go.
func (c *Cache) Logs() string { return filepath.Join(c.Dir, "logs") }

// TempDir makes a directory on the cache's filesystem (so renames into the
// cache are atomic); the caller removes it.
func (c *Cache) TempDir(pattern string) (string, error) {
	return os.MkdirTemp(filepath.Join(c.Dir, "tmp"), pattern)
}

// SnapshotMeta describes a saved tree.
type SnapshotMeta struct {
	Key             string    `json:"key"`
	Phase           string    `json:"phase"`
	Image           string    `json:"image"`
	Saved           time.Time `json:"saved"`
	SourceDateEpoch int64     `json:"source_date_epoch"`
	Bytes           int64     `json:"bytes"`
}

func (c *Cache) snapshotPath(key string) string {
	return filepath.Join(c.Dir, "phases", key+".tar.zst")
}
func (c *Cache) metaPath(key string) string { return filepath.Join(c.Dir, "phases", key+".json") }

// Snapshot returns the metadata of a saved tree, or false.
func (c *Cache) Snapshot(key string) (SnapshotMeta, bool) {
	var m SnapshotMeta
	b, err := os.ReadFile(c.metaPath(key))
	if err != nil || json.Unmarshal(b, &m) != nil || m.Key != key {
		return m, false
	}
	if _, err := os.Stat(c.snapshotPath(key)); err != nil {
		return m, false
	}
	return m, true
}

// tarFlags keep everything an image tree carries: owners by number,
// permissions, xattrs (file capabilities), ACLs, device nodes, sparse files.
var tarFlags = []string{"--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "--sparse"}

// SaveSnapshot stores tree under key.
func (c *Cache) SaveSnapshot(ctx context.Context, key, tree string, meta SnapshotMeta) error {
	tmp := c.snapshotPath(key) + fmt.Sprintf(".tmp%d", os.Getpid())
	defer os.Remove(tmp)
	args := append([]string{"--create", "--file", tmp, "--use-compress-program", "zstd -1 -T0 -q", "-C", tree}, tarFlags...)
	args = append(args, ".")
	if out, err := exec.CommandContext(ctx, "tar", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("saving %s: tar: %v: %s", tree, err, strings.TrimSpace(string(out)))
	}
	fi, err := os.Stat(tmp)
	if err != nil {
		return err
	}
	meta.Key, meta.Bytes, meta.Saved = key, fi.Size(), time.Now().UTC()
	b, _ := json.MarshalIndent(meta, "", "  ")
	if err := os.Rename(tmp, c.snapshotPath(key)); err != nil {
		return err
	}
	return writeAtomic(c.metaPath(key), b)
}

// RestoreSnapshot unpacks the tree saved under key into an empty dir tree.
func (c *Cache) RestoreSnapshot(ctx context.Context, key, tree string) error {
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return err
	}
	args := append([]string{"--extract", "--file", c.snapshotPath(key), "--use-compress-program", "zstd -d -T0 -q", "-C", tree, "--preserve-permissions"}, tarFlags...)
	if out, err := exec.CommandContext(ctx, "tar", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("restoring cached tree %s: tar: %v: %s", key[:12], err, strings.TrimSpace(string(out)))
	}
	// Touch the metadata so pruning by age keeps what is used.
	now := time.Now()
	_ = os.Chtimes(c.metaPath(key), now, now)
	return nil
}

func (c *Cache) hooksDeltaPath(key string) string {
	return filepath.Join(c.Dir, "hooks", key+".tar")
}

// HooksDelta returns the saved change to the hooks directory made by the
// hook with this key, if there is one.
func (c *Cache) HooksDelta(key string) (string, bool) {
	p := c.hooksDeltaPath(key)
	if _, err := os.Stat(p); err != nil {
		return "", false
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now)
	return p, true
}

// SaveHooksDelta stores the file at src (a tar the builder wrote) as the
// change made by the hook with this key.
func (c *Cache) SaveHooksDelta(key, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return writeAtomic(c.hooksDeltaPath(key), b)
}

// OutputDir is where finished outputs for key live, and whether they are
// complete (a manifest is written last).
func (c *Cache) OutputDir(key string) (string, bool) {
	dir := filepath.Join(c.Dir, "outputs", key)
	_, err := os.Stat(filepath.Join(dir, ".complete"))
	return dir, err == nil
}

// SaveOutputs moves a directory of finished files into the cache under key.
func (c *Cache) SaveOutputs(key, dir string) error {
	if err := os.WriteFile(filepath.Join(dir, ".complete"), nil, 0o644); err != nil {
		return err
	}
	dst := filepath.Join(c.Dir, "outputs", key)
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	return os.Rename(dir, dst)
}

func writeAtomic(path string, b []byte) error {
	tmp := path + fmt.Sprintf(".tmp%d", os.Getpid())
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Prune deletes snapshots and outputs not used for longer than maxAge and
// returns how many bytes it freed. Downloaded packages are kept.
func (c *Cache) Prune(maxAge time.Duration) (int64, error) {
	cutoff := time.Now().Add(-maxAge)
	var freed int64
	for _, e := range c.entries() {
		if e.used.Before(cutoff) {
			freed += e.remove()
		}
	}
	return freed, nil
}

// Trim deletes the least recently used snapshots and outputs until the
// ones left take at most maxBytes, never one used at or after keepAfter
// (the running build's, and those of builds running beside it), and
// returns how many bytes it freed. Downloaded packages are kept. A cache
// that every build fills and none empties fills its disk: the builder
// trims after each build (--cache-max-size).
func (c *Cache) Trim(maxBytes int64, keepAfter time.Time) int64 {
	es := c.entries()
	var total int64
	for _, e := range es {
		total += e.size
	}
	sort.Slice(es, func(i, j int) bool { return es[i].used.Before(es[j].used) })
	var freed int64
	for _, e := range es {
		if total <= maxBytes || !e.used.Before(keepAfter) {
			break
		}
		n := e.remove()
		total -= n
		freed += n
	}
	return freed
}

// Size is how many bytes the cache's snapshots and outputs take.
func (c *Cache) Size() int64 {
	var total int64
	for _, e := range c.entries() {
		total += e.size
	}
	return total
}

// entry is one removable cache entry: a snapshot (tree and metadata), a
// hooks delta, or a directory of outputs; used is when a build last used
// it (entries are touched on use).
type entry struct {
	used   time.Time
	size   int64
	remove func() int64
}

func (c *Cache) entries() []entry {
	var out []entry
	phases, _ := filepath.Glob(filepath.Join(c.Dir, "phases", "*.json"))
	for _, m := range phases {
		fi, err := os.Stat(m)
		if err != nil {
			continue
		}
		snap := c.snapshotPath(strings.TrimSuffix(filepath.Base(m), ".json"))
		size := fi.Size()
		if st, err := os.Stat(snap); err == nil {
			size += st.Size()
		}
		m := m
		out = append(out, entry{used: fi.ModTime(), size: size, remove: func() int64 {
			os.Remove(m)
			os.Remove(snap)
			return size
		}})
	}
	// A tree whose metadata was never written (its build died between
	// the two renames) is no snapshot a build would use.
	trees, _ := filepath.Glob(filepath.Join(c.Dir, "phases", "*.tar.zst"))
	deltas, _ := filepath.Glob(filepath.Join(c.Dir, "hooks", "*.tar"))
	for _, d := range trees {
		if _, err := os.Stat(strings.TrimSuffix(d, ".tar.zst") + ".json"); err == nil {
			continue
		}
		deltas = append(deltas, d)
	}
	for _, d := range deltas {
		if fi, err := os.Stat(d); err == nil {
			d, size := d, fi.Size()
			out = append(out, entry{used: fi.ModTime(), size: size, remove: func() int64 {
				os.Remove(d)
				return size
			}})
		}
	}
	outs, _ := os.ReadDir(filepath.Join(c.Dir, "outputs"))
	for _, o := range outs {
		dir := filepath.Join(c.Dir, "outputs", o.Name())
		fi, err := os.Stat(dir)
		if err != nil {
			continue
		}
		var size int64
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if i, err := d.Info(); err == nil {
					size += i.Size()
				}
			}
			return nil
		})
		out = append(out, entry{used: fi.ModTime(), size: size, remove: func() int64 {
			os.RemoveAll(dir)
			return size
		}})
	}
	return out
}

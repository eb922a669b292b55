package build

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"strata/builder/element"
	"strata/builder/executor"
)

// Hooks on the build host may change the hooks directory: DIB's
// install-types links hooks into install.d during extra-data.d, Trove's
// elements leave files there for later phases. dib-run-parts sees those
// changes because it scans a phase's directory when the phase starts;
// strata does too (runPhase). For the cache, a restored tree must come
// with the hooks directory as the hooks before it left it, so every root.d
// and extra-data.d hook's change to the hooks directory is saved under the
// hook's key (a "hooks delta"), replayed when the build restarts after it,
// and replayed on a scratch copy while planning, so that the phases after
// it are planned with the hooks it added.

// deltaPhases are the phases whose hooks' changes are recorded: the host
// phases before the last phase whose trees are cached.
func deltaPhase(ph element.Phase) bool {
	return !ph.InTarget() && ph.Index() < lastCheckpointPhase.Index()
}

// deltaIndex is the file inside a delta tar that lists what it removes
// and what it adds.
const deltaIndex = ".strata-hooks-delta.json"

type hooksDelta struct {
	Removed []string `json:"removed,omitempty"`
	Added   []string `json:"added,omitempty"`
	// Mounts are mount points the hook left in the build's mount
	// namespace (DIB's pip-cache bind-mounts its cache in root.d). A tree
	// restored after such a hook lacks them: the build makes them again
	// (Replay) or, when it cannot, restarts before the hook.
	Mounts []string `json:"mounts,omitempty"`
	// Replay is how to leave the namespace of a later build as the hook
	// left this one's, when that can be done: every mount it left is a
	// bind of a path that outlives the build (or that a restored tree
	// brings back). Nil when it cannot (a tmpfs the hook made: its
	// content is gone with the build), or in a record from an older
	// strata; NoReplay then says why.
	Replay   *mountReplay `json:"replay,omitempty"`
	NoReplay string       `json:"no_replay,omitempty"`
}

// mountReplay is what a hook did to the build's mount namespace, in
// terms a later build can redo: the mounts it removed, then the bind
// mounts it made, in the order it made them.
type mountReplay struct {
	Unmount []buildPath  `json:"unmount,omitempty"`
	Binds   []replayBind `json:"binds,omitempty"`
}

// buildPath is a path as the build that recorded it saw it: relative to
// its build directory (TMP_BUILD_DIR) when below it, since every build
// has its own, else absolute.
type buildPath struct {
	Path    string `json:"path"`
	InBuild bool   `json:"in_build,omitempty"`
}

func (p buildPath) in(buildDir string) string {
	if p.InBuild {
		return filepath.Join(buildDir, p.Path)
	}
	return p.Path
}

// String names the path for messages: $TMP_BUILD_DIR/... when below the
// build directory.
func (p buildPath) String() string {
	if p.InBuild {
		return "$TMP_BUILD_DIR/" + p.Path
	}
	return p.Path
}

func toBuildPath(buildDir, p string) buildPath {
	if rel, err := filepath.Rel(buildDir, p); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
		return buildPath{Path: rel, InBuild: true}
	}
	return buildPath{Path: p}
}

// replayBind is one bind mount a hook made, with its flags.
type replayBind struct {
	Source   buildPath `json:"source"`
	Target   buildPath `json:"target"`
	File     bool      `json:"file,omitempty"`
	ReadOnly bool      `json:"ro,omitempty"`
	NoSuid   bool      `json:"nosuid,omitempty"`
	NoDev    bool      `json:"nodev,omitempty"`
	NoExec   bool      `json:"noexec,omitempty"`
}

// fileState is what a snapshot of the hooks directory compares.
type fileState struct {
	mode   fs.FileMode
	size   int64
	mtime  int64
	target string
}

// snapshotHooks lists the hooks directory (strata's own .strata/ aside,
// which hooks do not write).
func snapshotHooks(dir string) (map[string]fileState, error) {
	out := map[string]fileState{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		if rel == toolsDir {
			return filepath.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fileState{mode: fi.Mode(), size: fi.Size(), mtime: fi.ModTime().UnixNano()}
		if fi.Mode()&os.ModeSymlink != 0 {
			st.target, _ = os.Readlink(p)
		}
		if fi.IsDir() {
			st.size, st.mtime = 0, 0
		}
		out[filepath.ToSlash(rel)] = st
		return nil
	})
	return out, err
}

// writeHooksDelta writes what changed between before and the directory
// now as a tar at dst, with what the hook did to the build's mounts; it
// returns the paths added or changed.
func writeHooksDelta(dir string, before map[string]fileState, mounts hooksDelta, dst string) ([]string, error) {
	after, err := snapshotHooks(dir)
	if err != nil {
		return nil, err
	}
	d := hooksDelta{Mounts: mounts.Mounts, Replay: mounts.Replay, NoReplay: mounts.NoReplay}
	for p := range before {
		if _, ok := after[p]; !ok {
			d.Removed = append(d.Removed, p)
		}
	}
	for p, st := range after {
		if old, ok := before[p]; !ok || old != st {
			d.Added = append(d.Added, p)
		}
	}
	sort.Strings(d.Removed)
	sort.Strings(d.Added) // parents before children
	f, err := os.Create(dst)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	idx, _ := json.Marshal(d)
	if err := tw.WriteHeader(&tar.Header{Name: deltaIndex, Mode: 0o644, Size: int64(len(idx)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(idx); err != nil {
		return nil, err
	}
	for _, p := range d.Added {
		full := filepath.Join(dir, p)
		fi, err := os.Lstat(full)
		if err != nil {
			return nil, err
		}
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			link, _ = os.Readlink(full)
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return nil, err
		}
		h.Name = p
		h.Uname, h.Gname = "", ""
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if fi.Mode().IsRegular() {
			src, err := os.Open(full)
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(tw, src)
			src.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return d.Added, f.Close()
}

// readHooksDeltaIndex reads what a delta tar says (without applying it).
func readHooksDeltaIndex(path string) (hooksDelta, error) {
	var d hooksDelta
	f, err := os.Open(path)
	if err != nil {
		return d, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	h, err := tr.Next()
	if err != nil || h.Name != deltaIndex {
		return d, fmt.Errorf("hooks delta %s: no index", path)
	}
	err = json.NewDecoder(tr).Decode(&d)
	return d, err
}

// applyHooksDelta replays a delta tar onto dir and returns the paths it
// added.
func applyHooksDelta(path, dir string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var d hooksDelta
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("hooks delta %s: %w", path, err)
		}
		if h.Name == deltaIndex {
			if err := json.NewDecoder(tr).Decode(&d); err != nil {
				return nil, fmt.Errorf("hooks delta %s: %w", path, err)
			}
			for _, r := range d.Removed {
				if err := os.RemoveAll(filepath.Join(dir, filepath.FromSlash(r))); err != nil {
					return nil, err
				}
			}
			continue
		}
		name := filepath.Clean(filepath.FromSlash(h.Name))
		if name == "." || strings.HasPrefix(name, "..") || filepath.IsAbs(name) {
			return nil, fmt.Errorf("hooks delta %s: bad path %q", path, h.Name)
		}
		target := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return nil, err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, fs.FileMode(h.Mode).Perm()); err != nil {
				return nil, err
			}
		case tar.TypeSymlink:
			_ = os.RemoveAll(target)
			if err := os.Symlink(h.Linkname, target); err != nil {
				return nil, err
			}
		case tar.TypeReg:
			_ = os.RemoveAll(target)
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fs.FileMode(h.Mode).Perm())
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return d.Added, nil
}

// copyHooksDir copies the hooks directory (without .strata/) to a scratch
// directory for planning.
func copyHooksDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == toolsDir {
			return filepath.SkipDir
		}
		target := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case fi.IsDir():
			return os.MkdirAll(target, fi.Mode().Perm()|0o700)
		case fi.Mode().IsRegular():
			// Hard links: the scratch copy is only read, and replayed
			// deltas replace files rather than write into them.
			if err := os.Link(p, target); err == nil {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, fi.Mode().Perm())
		}
		return nil
	})
}

// simulate plans the build phase by phase on a scratch copy of the hooks
// directory, replaying after each root.d and extra-data.d hook the change
// it made to the hooks directory when it last ran with the same key. Once
// a hook has no recorded change (it never ran with these inputs), nothing
// after it can be in the cache, and the rest is planned as the directory
// stands.
func (p *plan) simulate(ctx context.Context, dir, scratch string, delta func(key string) (string, bool)) error {
	if err := copyHooksDir(dir, scratch); err != nil {
		return fmt.Errorf("planning: %w", err)
	}
	defer os.RemoveAll(scratch)
	for i, ph := range element.Phases {
		if err := p.planFrom(ctx, i, scratch); err != nil {
			return err
		}
		if !deltaPhase(ph) {
			break
		}
		for _, hk := range p.phases[i].hooks {
			path, ok := delta(hk.key)
			if !ok {
				return p.planFrom(ctx, i+1, scratch)
			}
			added, err := applyHooksDelta(path, scratch)
			if err != nil {
				return err
			}
			p.noteCreated(hk, added)
		}
	}
	// The phases were planned from the scratch copy; hooks run from dir,
	// which is the same tree by the time each phase starts.
	return nil
}

// noteCreated records which element's hook made files in the hooks
// directory, to name them in messages and the manifest.
func (p *plan) noteCreated(hk *hookPlan, added []string) {
	for _, a := range added {
		if _, ok := p.owners[a]; !ok {
			p.created[a] = hk.Element
		}
	}
}

// replayHooksDeltas brings the hooks directory to where the root.d and
// extra-data.d hooks up to index last left it.
func (b *builder) replayHooksDeltas(last int) error {
	for _, hk := range b.plan.hooks() {
		if hk.index > last || !deltaPhase(hk.Phase) {
			continue
		}
		path, ok := b.cache.HooksDelta(hk.key)
		if !ok {
			return fmt.Errorf("the cached tree after %s needs the hooks directory as %s (element %s) left it, and that record is gone from the cache; build again with --no-cache", b.plan.hooks()[last].Path(), hk.Path(), hk.Element)
		}
		added, err := applyHooksDelta(path, b.dirs.hooks)
		if err != nil {
			return err
		}
		b.plan.noteCreated(hk, added)
	}
	return nil
}

// firstUnreplayableMount is the index of the first root.d or
// extra-data.d hook that left a mount in the build's namespace when it
// last ran (its recorded delta says so) which a later build cannot make
// again, and why; or -1: a tree restored at or after it would lack that
// mount, so the build restarts before it.
func (b *builder) firstUnreplayableMount() (int, string) {
	for _, hk := range b.plan.hooks() {
		if !deltaPhase(hk.Phase) {
			continue
		}
		path, ok := b.cache.HooksDelta(hk.key)
		if !ok {
			continue
		}
		d, err := readHooksDeltaIndex(path)
		if err != nil || len(d.Mounts) == 0 || d.Replay != nil {
			continue
		}
		why := d.NoReplay
		if why == "" {
			why = "recorded without what would make it again"
		}
		return hk.index, why
	}
	return -1, ""
}

// mountStep is what one hook before a restored tree did to the build's
// mounts.
type mountStep struct {
	hook   *hookPlan
	replay *mountReplay
}

// recordedMounts lists what the root.d and extra-data.d hooks up to index
// last did to the build's mounts, in order, and refuses, naming the hook
// and its element, when a mount's source outside the build has gone since.
func (b *builder) recordedMounts(last int) ([]mountStep, error) {
	var out []mountStep
	for _, hk := range b.plan.hooks() {
		if hk.index > last || !deltaPhase(hk.Phase) {
			continue
		}
		path, ok := b.cache.HooksDelta(hk.key)
		if !ok {
			continue // replayHooksDeltas says so
		}
		d, err := readHooksDeltaIndex(path)
		if err != nil {
			return nil, err
		}
		if d.Replay == nil {
			continue
		}
		for _, m := range d.Replay.Binds {
			if m.Source.InBuild {
				continue // checked once the tree is back
			}
			if _, err := os.Lstat(m.Source.Path); err != nil {
				return nil, b.goneSource(last, hk, m, err)
			}
		}
		out = append(out, mountStep{hook: hk, replay: d.Replay})
	}
	return out, nil
}

func (b *builder) goneSource(last int, hk *hookPlan, m replayBind, err error) error {
	return fmt.Errorf("the cached tree after %s needs the bind mount %s (element %s) made, %s on %s, and %s is gone (%v): make it again, or build with --no-cache",
		b.plan.hooks()[last].Path(), hk.Path(), hk.Element, m.Source, m.Target, m.Source, err)
}

// replayMounts leaves the build's namespace as the hooks of steps left
// the namespace of the build that cached the tree: their bind mounts are
// made again, with their flags, and what they unmounted is unmounted.
func (b *builder) replayMounts(ctx context.Context, last int, steps []mountStep) error {
	for _, st := range steps {
		var unmounts []string
		for _, u := range st.replay.Unmount {
			unmounts = append(unmounts, u.in(b.dirs.build))
		}
		var mounts []executor.Mount
		var names []string
		for _, m := range st.replay.Binds {
			src := m.Source.in(b.dirs.build)
			if _, err := os.Lstat(src); err != nil {
				return b.goneSource(last, st.hook, m, err)
			}
			mt := executor.Bind(src, m.Target.in(b.dirs.build), m.ReadOnly)
			if m.File {
				mt = executor.BindFile(src, mt.Target, m.ReadOnly)
			}
			mt.NoSuid, mt.NoDev, mt.NoExec = m.NoSuid, m.NoDev, m.NoExec
			mounts = append(mounts, mt)
			names = append(names, m.Source.String()+" on "+m.Target.String())
		}
		if err := b.ns.Apply(ctx, unmounts, mounts); err != nil {
			return fmt.Errorf("making the mounts of %s (element %s) again: %w", st.hook.Path(), st.hook.Element, err)
		}
		if len(names) > 0 {
			b.rep.printf("strata: mounted again what %s (%s) mounted: %s\n", st.hook.Path(), st.hook.Element, strings.Join(names, ", "))
		}
		for _, u := range st.replay.Unmount {
			b.rep.printf("strata: unmounted again what %s (%s) unmounted: %s\n", st.hook.Path(), st.hook.Element, u)
		}
	}
	return nil
}

// mountChanges compares the build's mounts before and after a hook: the
// mount points it left and removed, and how a later build makes the same
// change (or why it cannot).
func (b *builder) mountChanges(before, after []executor.MountEntry) hooksDelta {
	var d hooksDelta
	had := map[int]bool{}
	for _, e := range before {
		had[e.ID] = true
	}
	has := map[int]bool{}
	for _, e := range after {
		has[e.ID] = true
	}
	r := &mountReplay{}
	for _, e := range before {
		if !has[e.ID] {
			r.Unmount = append(r.Unmount, toBuildPath(b.dirs.build, e.Point))
		}
	}
	var known []executor.MountEntry // what a bind's source can be found in
	for _, e := range after {
		if had[e.ID] {
			known = append(known, e)
		}
	}
	for _, e := range after {
		if had[e.ID] {
			continue
		}
		d.Mounts = append(d.Mounts, e.Point)
		if d.NoReplay != "" {
			continue
		}
		src, ok := b.ns.BindSource(e, known)
		if !ok {
			d.NoReplay = fmt.Sprintf("%s (%s %s) is not a bind mount of a path strata can mount again", e.Point, e.FSType, e.Source)
			continue
		}
		sp := toBuildPath(b.dirs.build, src)
		if sp.InBuild && !inRestoredTree(sp.Path) {
			d.NoReplay = fmt.Sprintf("%s shows %s, which a cached tree does not keep", e.Point, src)
			continue
		}
		fi, err := os.Stat(b.ns.Path(src))
		if err != nil {
			d.NoReplay = fmt.Sprintf("%s: %v", e.Point, err)
			continue
		}
		r.Binds = append(r.Binds, replayBind{
			Source: sp, Target: toBuildPath(b.dirs.build, e.Point), File: !fi.IsDir(),
			ReadOnly: e.Has("ro"), NoSuid: e.Has("nosuid"), NoDev: e.Has("nodev"), NoExec: e.Has("noexec"),
		})
		known = append(known, e)
	}
	if d.NoReplay == "" && (len(r.Binds) > 0 || len(r.Unmount) > 0) {
		d.Replay = r
	}
	return d
}

// inRestoredTree reports whether a path relative to the build directory
// is one a restart brings back: the image tree or the hooks directory.
func inRestoredTree(rel string) bool {
	for _, d := range []string{"mnt", "hooks"} {
		if rel == d || strings.HasPrefix(rel, d+"/") {
			return true
		}
	}
	return false
}

// recordHooksDelta saves what hook hk changed in the hooks directory, and
// in the build's mounts (mountsBefore is the namespace before it ran).
func (b *builder) recordHooksDelta(hk *hookPlan, before map[string]fileState, mountsBefore []executor.MountEntry) error {
	tmp := filepath.Join(b.dirs.build, "hooks-delta.tar")
	defer os.Remove(tmp)
	var mounts hooksDelta
	if b.ns != nil {
		now, err := b.ns.Mounts()
		if err != nil {
			return err
		}
		mounts = b.mountChanges(mountsBefore, now)
	}
	added, err := writeHooksDelta(b.dirs.hooks, before, mounts, tmp)
	if err != nil {
		return fmt.Errorf("recording what %s changed in the hooks directory: %w", hk.Path(), err)
	}
	b.plan.noteCreated(hk, added)
	if err := b.cache.SaveHooksDelta(hk.key, tmp); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

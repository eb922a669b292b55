package disk

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Config drive labels the guest's config-drive element looks for.
const (
	LabelConfigDrive = "config-2" // OpenStack config drive
	LabelNoCloud     = "cidata"   // NoCloud seed
)

// WriteConfigDrive writes a small vfat filesystem image labelled label and
// holding files (path inside the drive → content), without mounting
// anything: mkfs.vfat makes it, mtools fills it. The file is written to a
// temporary name and renamed to out. Files are readable by owner only on
// the host side; the drive itself carries no permissions.
func WriteConfigDrive(ctx context.Context, out, label string, files map[string][]byte) error {
	if label == "" || len(label) > 11 {
		return fmt.Errorf("config drive label %q: 1 to 11 characters", label)
	}
	tmpDir, err := os.MkdirTemp(filepath.Dir(out), ".configdrive-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmpDir)
	var size int64
	tree := filepath.Join(tmpDir, "tree")
	var paths []string
	for p, content := range files {
		clean := filepath.Clean("/" + p)
		if clean == "/" || strings.Contains(p, "..") {
			return fmt.Errorf("config drive path %q is not a file path inside the drive", p)
		}
		dst := filepath.Join(tree, clean)
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(dst, content, 0o600); err != nil {
			return err
		}
		size += int64(len(content)) + 4096
		paths = append(paths, clean)
	}
	sort.Strings(paths)
	// FAT12/16 needs a few clusters of headroom; 4 MiB covers typical
	// drives (bootstrap JSON, metadata) many times over.
	size = max(4<<20, (size*2+(1<<20)-1)&^((1<<20)-1))
	img := filepath.Join(tmpDir, "drive.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(img, size); err != nil {
		return err
	}
	if _, err := run(ctx, toolEnv(), "mkfs.vfat", "-n", label, img); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	env := mtoolsEnv(time.Time{})
	// mtools names a drive by -i; :: is its root.
	dirs := map[string]bool{}
	var mk []string
	for _, p := range paths {
		for d := filepath.Dir(p); d != "/"; d = filepath.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				mk = append(mk, d)
			}
		}
	}
	sort.Slice(mk, func(i, j int) bool {
		return strings.Count(mk[i], "/") < strings.Count(mk[j], "/") || (strings.Count(mk[i], "/") == strings.Count(mk[j], "/") && mk[i] < mk[j])
	})
	for _, d := range mk {
		if _, err := run(ctx, env, "mmd", "-i", img, "::"+d); err != nil {
			return fmt.Errorf("config drive: %w", err)
		}
	}
	err = filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(tree, p)
		_, err = run(ctx, env, "mcopy", "-i", img, p, "::/"+filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	return os.Rename(img, out)
}

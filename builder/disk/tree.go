package disk

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
)

// TreeUsage is what a root tree will occupy in ext4.
type TreeUsage struct {
	// Bytes counts data and directory blocks (4 KiB each) and symlink
	// targets too long to live in the inode; hard-linked files once.
	Bytes int64
	// Inodes counts files, directories, links, devices (hard links once).
	Inodes int64
}

// treeEntry is one path of the tree, for the timestamp pass.
type treeEntry struct {
	rel   string // "/" for the root, else "/etc/fstab"
	mtime int64
}

type fileID struct{ dev, ino uint64 }

// ScanTree measures a root tree without following symlinks. It refuses a
// tree with something mounted inside it (a /proc or /dev left mounted by a
// chroot would otherwise be copied into the image).
func ScanTree(ctx context.Context, dir string) (TreeUsage, error) {
	u, _, err := scanTree(ctx, dir)
	return u, err
}

func scanTree(ctx context.Context, dir string) (TreeUsage, []treeEntry, error) {
	var (
		u       TreeUsage
		entries []treeEntry
		seen    = map[fileID]bool{}
		rootDev uint64
		// dirBytes accumulates each directory's entries as ext4 stores
		// them (8-byte header + name, 4-byte aligned).
		dirBytes = map[string]int64{}
	)
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil {
		return u, nil, fmt.Errorf("scan tree %s: %w", dir, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return u, nil, fmt.Errorf("scan tree %s: not a directory", dir)
	}
	rootDev = st.Dev

	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("scan tree: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil {
			return fmt.Errorf("scan tree: %w", err)
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = "/" + filepath.ToSlash(rel)
		if rel == "/." {
			rel = "/"
		}
		if st.Dev != rootDev {
			return fmt.Errorf("scan tree %s: %s is on another filesystem (still mounted?); unmount it before assembling", dir, rel)
		}
		if rel != "/" {
			dirBytes[filepath.Dir(path)] += roundUp(int64(8+len(d.Name())), 4)
		}
		entries = append(entries, treeEntry{rel: rel, mtime: st.Mtim.Sec})

		id := fileID{uint64(st.Dev), st.Ino}
		if st.Nlink > 1 && st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			if seen[id] {
				return nil
			}
			seen[id] = true
		}
		u.Inodes++
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			u.Bytes += roundUp(st.Size, ext4BlockSize)
		case syscall.S_IFLNK:
			if st.Size >= 60 { // shorter targets live in the inode
				u.Bytes += ext4BlockSize
			}
		case syscall.S_IFDIR:
			dirBytes[path] += 24 // "." and ".."
		}
		return nil
	})
	if err != nil {
		return TreeUsage{}, nil, err
	}
	for _, b := range dirBytes {
		u.Bytes += roundUp(b, ext4BlockSize)
	}
	return u, entries, nil
}

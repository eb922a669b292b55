package disk

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// WriteTar writes tree to out as a reproducible POSIX (pax) tar, the way
// DIB's tar output lays it out (entries "./", "./etc", ...): entries in
// name order, numeric owners only, extended attributes as SCHILY.xattr
// records, hard links as links, no atime/ctime, and, when epoch is set,
// mtimes clamped to it. Sockets are skipped (tar cannot hold them). out is
// created or truncated, and removed on failure.
func WriteTar(ctx context.Context, tree, out string, epoch time.Time) (err error) {
	var rootSt syscall.Stat_t
	if err := syscall.Lstat(tree, &rootSt); err != nil {
		return fmt.Errorf("tar %s: %w", tree, err)
	}
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("tar: %w", err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			os.Remove(out)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	links := map[fileID]string{}

	err = filepath.WalkDir(tree, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil {
			return err
		}
		rel, err := filepath.Rel(tree, path)
		if err != nil {
			return err
		}
		name := "./"
		if rel != "." {
			name = "./" + filepath.ToSlash(rel)
		}
		if st.Dev != rootSt.Dev {
			return fmt.Errorf("%s is on another filesystem (still mounted?)", name)
		}
		hdr, err := tarHeader(path, name, &st, epoch)
		if err != nil {
			return err
		}
		if hdr == nil {
			return nil // socket
		}
		if st.Nlink > 1 && hdr.Typeflag != tar.TypeDir {
			id := fileID{uint64(st.Dev), st.Ino}
			if first, ok := links[id]; ok {
				hdr.Typeflag = tar.TypeLink
				hdr.Linkname = first
				hdr.Size = 0
			} else {
				links[id] = name
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
			src, err := os.Open(path)
			if err != nil {
				return err
			}
			n, err := io.Copy(tw, src)
			src.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if n != hdr.Size {
				return fmt.Errorf("%s: size changed while archiving", name)
			}
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Close()
		f = nil
	}
	if err != nil {
		return fmt.Errorf("tar %s: %w", tree, err)
	}
	return nil
}

// tarHeader builds the header of one tree entry; nil for a socket.
func tarHeader(path, name string, st *syscall.Stat_t, epoch time.Time) (*tar.Header, error) {
	mtime := time.Unix(st.Mtim.Sec, 0)
	if !epoch.IsZero() && mtime.After(epoch) {
		mtime = time.Unix(epoch.Unix(), 0)
	}
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: mtime,
		Format:  tar.FormatPAX,
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = st.Size
	case syscall.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		if !strings.HasSuffix(hdr.Name, "/") {
			hdr.Name += "/"
		}
	case syscall.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
		target, err := os.Readlink(path)
		if err != nil {
			return nil, err
		}
		hdr.Linkname = target
		return hdr, nil // no xattrs on symlinks: listxattr would follow it
	case syscall.S_IFCHR, syscall.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = devNumbers(st.Rdev)
	case syscall.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	case syscall.S_IFSOCK:
		return nil, nil
	default:
		return nil, fmt.Errorf("%s: unsupported file type %#o", name, st.Mode&syscall.S_IFMT)
	}
	xattrs, err := readXattrs(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(xattrs) > 0 {
		hdr.PAXRecords = map[string]string{}
		for k, v := range xattrs {
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	return hdr, nil
}

// readXattrs returns the extended attributes of a non-symlink path.
func readXattrs(path string) (map[string]string, error) {
	size, err := syscall.Listxattr(path, nil)
	if err != nil {
		if errors.Is(err, syscall.ENOTSUP) {
			return nil, nil
		}
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size)
	size, err = syscall.Listxattr(path, buf)
	if err != nil {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	out := map[string]string{}
	for _, k := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if k == "" {
			continue
		}
		n, err := syscall.Getxattr(path, k, nil)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", k, err)
		}
		v := make([]byte, n)
		if n > 0 {
			if n, err = syscall.Getxattr(path, k, v); err != nil {
				return nil, fmt.Errorf("getxattr %s: %w", k, err)
			}
		}
		out[k] = string(v[:n])
	}
	return out, nil
}

// devNumbers splits a Linux dev_t as glibc's major()/minor() do.
func devNumbers(rdev uint64) (major, minor int64) {
	major = int64((rdev>>8)&0xfff | (rdev>>32)&0xfffff000)
	minor = int64(rdev&0xff | (rdev>>12)&0xffffff00)
	return major, minor
}

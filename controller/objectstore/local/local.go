// Package local is the embedded object store: each object a file below a
// directory of the controller's state dir, written to a temporary file and
// renamed into place when complete, so a reader sees a whole object or
// none.
//
// It keeps bytes only; it must not interpret them. One limit the remote
// stores do not have: a name cannot be both an object and a directory of
// other objects ("a" and "a/b"), because the file system cannot.
package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"strata/controller/objectstore"
)

// Store keeps objects under Dir: complete objects in Dir/objects, parts
// being written in Dir/parts.
type Store struct {
	Dir string
}

var _ objectstore.Store = (*Store)(nil)

// New returns a store in dir, creating it (mode 0700) if needed.
func New(dir string) (*Store, error) {
	s := &Store{Dir: dir}
	for _, d := range []string{s.objects(), s.parts()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("local object store: %w", err)
		}
	}
	return s, nil
}

func (s *Store) objects() string { return filepath.Join(s.Dir, "objects") }
func (s *Store) parts() string   { return filepath.Join(s.Dir, "parts") }

func (s *Store) path(name string) (string, error) {
	if !objectstore.ValidName(name) {
		return "", fmt.Errorf("local object store: %w: %q", objectstore.ErrInvalid, name)
	}
	return filepath.Join(s.objects(), filepath.FromSlash(name)), nil
}

// partPrefix names the temporary files of one object's Puts, so Delete
// finds the parts a crashed Put left behind.
func partPrefix(name string) string {
	h := sha256.Sum256([]byte(name))
	return hex.EncodeToString(h[:12]) + "."
}

// Put writes r to a temporary file, syncs it and renames it into place.
func (s *Store) Put(ctx context.Context, name string, r io.Reader) (objectstore.Object, error) {
	final, err := s.path(name)
	if err != nil {
		return objectstore.Object{}, err
	}
	if err := os.MkdirAll(s.parts(), 0o700); err != nil {
		return objectstore.Object{}, fmt.Errorf("local object store: put %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(s.parts(), partPrefix(name)+"*")
	if err != nil {
		return objectstore.Object{}, fmt.Errorf("local object store: put %s: %w", name, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, ctxReader{ctx, r}); err != nil {
		return objectstore.Object{}, fmt.Errorf("local object store: put %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return objectstore.Object{}, fmt.Errorf("local object store: put %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return objectstore.Object{}, fmt.Errorf("local object store: put %s: %w", name, err)
	}
	// A concurrent Delete may remove the empty parent directory between
	// MkdirAll and Rename: try again a few times.
	for i := 0; ; i++ {
		if err = os.MkdirAll(filepath.Dir(final), 0o700); err == nil {
			err = os.Rename(tmp.Name(), final)
		}
		if err == nil || i == 3 || !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err != nil {
		if errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.ENOTDIR) {
			err = fmt.Errorf("%w: a name cannot be both an object and a directory of objects in the local store", objectstore.ErrInvalid)
		}
		return objectstore.Object{}, fmt.Errorf("local object store: put %s: %w", name, err)
	}
	done = true
	syncDir(filepath.Dir(final))
	return s.Stat(ctx, name)
}

// Get opens the object's file.
func (s *Store) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	p, err := s.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, s.notFound("get", name, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("local object store: get %s: %w", name, objectstore.ErrNotFound)
	}
	return f, nil
}

// Stat describes the object's file.
func (s *Store) Stat(ctx context.Context, name string) (objectstore.Object, error) {
	p, err := s.path(name)
	if err != nil {
		return objectstore.Object{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return objectstore.Object{}, s.notFound("stat", name, err)
	}
	if !fi.Mode().IsRegular() {
		return objectstore.Object{}, fmt.Errorf("local object store: stat %s: %w", name, objectstore.ErrNotFound)
	}
	return object(name, fi), nil
}

// object describes a file. The ETag is its inode, size and modification
// time: every Put makes a new file, so it changes with the content
// without reading the bytes again.
func object(name string, fi fs.FileInfo) objectstore.Object {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return objectstore.Object{
		Name:     name,
		Size:     fi.Size(),
		ETag:     fmt.Sprintf("%x-%x-%x", ino, fi.Size(), fi.ModTime().UnixNano()),
		Modified: fi.ModTime().UTC(),
	}
}

func (s *Store) notFound(op, name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("local object store: %s %s: %w", op, name, objectstore.ErrNotFound)
	}
	return fmt.Errorf("local object store: %s %s: %w", op, name, err)
}

// Delete removes the object's file, the parts of unfinished Puts of it and
// the directories it leaves empty.
func (s *Store) Delete(ctx context.Context, name string) error {
	p, err := s.path(name)
	if err != nil {
		return err
	}
	parts, _ := filepath.Glob(filepath.Join(s.parts(), partPrefix(name)+"*"))
	for _, part := range parts {
		os.Remove(part)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return fmt.Errorf("local object store: delete %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil // a directory of other objects, not an object
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local object store: delete %s: %w", name, err)
	}
	for dir := filepath.Dir(p); dir != s.objects() && strings.HasPrefix(dir, s.objects()); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break // not empty, or already gone
		}
	}
	return nil
}

// List walks the directory the prefix lies in.
func (s *Store) List(ctx context.Context, prefix string) ([]objectstore.Object, error) {
	if !objectstore.ValidPrefix(prefix) {
		return nil, fmt.Errorf("local object store: list: %w: prefix %q", objectstore.ErrInvalid, prefix)
	}
	// Walk only below the last whole directory of the prefix.
	root := s.objects()
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		root = filepath.Join(root, filepath.FromSlash(prefix[:i]))
	}
	out := []objectstore.Object{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking, or no such directory
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.objects(), p)
		name := filepath.ToSlash(rel)
		if d.IsDir() {
			if p != root && !strings.HasPrefix(name+"/", prefix) && !strings.HasPrefix(prefix, name+"/") {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(name, prefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		out = append(out, object(name, fi))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("local object store: list %q: %w", prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

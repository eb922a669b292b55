// Package local is the embedded image store: image files copied into a
// directory of the controller's state dir (read-only, named by id), their
// records and SHA-256 checksums in the controller's database.
//
// It checks what it stores (checksum; a standalone image of the declared
// format, builder/imagecheck: no backing or external data file) and never
// modifies a stored image: instances boot from qcow2 overlays on top.
package local

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"strata/builder/imagecheck"
	"strata/controller/imagestore"
	"strata/controller/store"
)

// Store keeps images under Dir.
type Store struct {
	DB  *store.DB
	Dir string
	// QemuImg is the qemu-img binary (default "qemu-img").
	QemuImg string
}

var _ imagestore.Store = (*Store)(nil)

var (
	namePattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$`)
	sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
	idPattern     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{7,63}$`)
)

// Register copies src into the store, hashing it on the way, checks the
// checksum and the format, and records the image.
func (s *Store) Register(ctx context.Context, src io.Reader, opts imagestore.RegisterOptions) (imagestore.Image, error) {
	var img imagestore.Image
	if !namePattern.MatchString(opts.Name) {
		return img, fmt.Errorf("%w: name %q: use 1-128 characters of A-Z a-z 0-9 . _ - and spaces", imagestore.ErrInvalid, opts.Name)
	}
	if opts.DiskFormat != "qcow2" && opts.DiskFormat != "raw" {
		return img, fmt.Errorf("%w: disk format %q: want qcow2 or raw", imagestore.ErrInvalid, opts.DiskFormat)
	}
	want := strings.ToLower(opts.SHA256)
	if want != "" && !sha256Pattern.MatchString(want) {
		return img, fmt.Errorf("%w: expected checksum %q is not a SHA-256 in hex", imagestore.ErrInvalid, opts.SHA256)
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return img, err
	}
	id := opts.ID
	if id == "" {
		id = store.NewID()
	} else if !idPattern.MatchString(id) {
		return img, fmt.Errorf("%w: id %q: use 8-64 characters of a-z 0-9 -", imagestore.ErrInvalid, id)
	} else if _, err := s.Get(ctx, id); err == nil {
		return img, fmt.Errorf("%w: an image with id %s exists already", imagestore.ErrInvalid, id)
	}
	final := filepath.Join(s.Dir, id+"."+opts.DiskFormat)
	tmp, err := os.CreateTemp(s.Dir, ".register-*")
	if err != nil {
		return img, err
	}
	defer os.Remove(tmp.Name())
	// SHA-256 is ours; MD5 and SHA-512 are what Glance reports (checksum,
	// os_hash_value), so the Glance API can answer with them.
	h, m5, s512 := sha256.New(), md5.New(), sha512.New()
	n, err := io.Copy(io.MultiWriter(tmp, h, m5, s512), ctxReader{ctx, src})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return img, fmt.Errorf("copy image: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if want != "" && sum != want {
		return img, fmt.Errorf("%w: the image's SHA-256 is %s, expected %s", imagestore.ErrChecksumMismatch, sum, want)
	}
	if err := s.checkFormat(ctx, tmp.Name(), opts.DiskFormat); err != nil {
		return img, err
	}
	if err := os.Chmod(tmp.Name(), 0o444); err != nil {
		return img, err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return img, err
	}
	properties := map[string]string{}
	for k, v := range opts.Properties {
		properties[k] = v
	}
	properties[imagestore.PropertyChecksum] = hex.EncodeToString(m5.Sum(nil))
	properties[imagestore.PropertyHashAlgo] = "sha512"
	properties[imagestore.PropertyHash] = hex.EncodeToString(s512.Sum(nil))
	props, _ := json.Marshal(properties)
	img = imagestore.Image{ID: id, Name: opts.Name, DiskFormat: opts.DiskFormat, ContainerFormat: "bare",
		SHA256: sum, SizeBytes: n, Location: final, Properties: properties, CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}
	_, err = s.DB.Exec(ctx, `INSERT INTO images (id, name, disk_format, container_format, sha256, size_bytes, location, properties, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, img.ID, img.Name, img.DiskFormat, img.ContainerFormat, img.SHA256, img.SizeBytes,
		img.Location, string(props), store.Millis(img.CreatedAt))
	if err != nil {
		os.Remove(final)
		return imagestore.Image{}, fmt.Errorf("record image: %w", err)
	}
	return img, nil
}

// checkFormat refuses an image that is not a standalone image of the
// declared format (builder/imagecheck): a backing file or an external
// data file could name any file on this host.
func (s *Store) checkFormat(ctx context.Context, path, format string) error {
	_, err := imagecheck.File(ctx, path, format, imagecheck.Options{QemuImg: s.QemuImg})
	if errors.Is(err, imagecheck.ErrRefused) {
		return fmt.Errorf("%w: %w", imagestore.ErrInvalid, err)
	}
	return err
}

const columns = `id, name, disk_format, container_format, sha256, size_bytes, location, properties, created_at`

func scan(s store.Scanner) (imagestore.Image, error) {
	var img imagestore.Image
	var props string
	var created int64
	if err := s.Scan(&img.ID, &img.Name, &img.DiskFormat, &img.ContainerFormat, &img.SHA256, &img.SizeBytes,
		&img.Location, &props, &created); err != nil {
		return img, err
	}
	if err := json.Unmarshal([]byte(props), &img.Properties); err != nil {
		return img, fmt.Errorf("image %s: properties: %w", img.ID, err)
	}
	img.CreatedAt = store.FromMillis(created)
	return img, nil
}

// Get finds an image by id, or by name when exactly one image has it.
func (s *Store) Get(ctx context.Context, id string) (imagestore.Image, error) {
	img, err := scan(s.DB.QueryRow(ctx, `SELECT `+columns+` FROM images WHERE id = ?`, id))
	if err == nil {
		return img, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return img, err
	}
	found, err := store.All(ctx, s.DB, scan, `SELECT `+columns+` FROM images WHERE name = ? LIMIT 2`, id)
	if err != nil {
		return img, err
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return img, fmt.Errorf("image %q: %w", id, imagestore.ErrNotFound)
	default:
		return img, fmt.Errorf("%w: several images are named %q; use the id", imagestore.ErrInvalid, id)
	}
}

// List returns every image, newest first.
func (s *Store) List(ctx context.Context) ([]imagestore.Image, error) {
	return store.All(ctx, s.DB, scan, `SELECT `+columns+` FROM images ORDER BY created_at DESC, id`)
}

// Verify re-hashes the stored file.
func (s *Store) Verify(ctx context.Context, id string) error {
	img, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	f, err := os.Open(img.Location)
	if err != nil {
		return fmt.Errorf("image %s: %w", img.ID, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return fmt.Errorf("image %s: %w", img.ID, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != img.SHA256 {
		return fmt.Errorf("image %s (%s): %w: stored file hashes to %s, recorded %s", img.ID, img.Location, imagestore.ErrChecksumMismatch, sum, img.SHA256)
	}
	return nil
}

// Delete removes the record and the file.
func (s *Store) Delete(ctx context.Context, id string) error {
	img, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if _, err := s.DB.Exec(ctx, `DELETE FROM images WHERE id = ?`, img.ID); err != nil {
		return err
	}
	if err := os.Remove(img.Location); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// ctxReader stops a long copy when ctx ends.
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

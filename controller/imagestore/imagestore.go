// Package imagestore is the one interface every image store implements —
// the local store (local/, the embedded default: files in the state
// directory) today, Glance via gophercloud beside it — and the Image they
// return. A compute driver boots Image.Location: a path for the local
// store, an image id for Glance.
//
// An image store keeps image bytes and their checksums; it must not know
// about datastores or instances (the registry refers to images by id).
package imagestore

import (
	"context"
	"errors"
	"io"
	"time"
)

// Store keeps guest images.
type Store interface {
	// Register stores the image read from src under a new id. The SHA-256
	// of the bytes is recorded and, if opts.SHA256 is set, must match.
	Register(ctx context.Context, src io.Reader, opts RegisterOptions) (Image, error)
	// Get returns an image's record.
	Get(ctx context.Context, id string) (Image, error)
	// List returns every image, newest first.
	List(ctx context.Context) ([]Image, error)
	// Verify re-reads the stored bytes and checks them against the
	// recorded checksum.
	Verify(ctx context.Context, id string) error
	// Delete removes an image.
	Delete(ctx context.Context, id string) error
}

// RegisterOptions describe an image being registered.
type RegisterOptions struct {
	// ID, if set, is the new image's id (the Glance API hands an id out
	// before the bytes arrive); otherwise the store makes one.
	ID   string
	Name string
	// DiskFormat is qcow2 or raw.
	DiskFormat string
	// SHA256, if set, is the checksum the bytes must have (from the
	// build's .sha256 file).
	SHA256     string
	Properties map[string]string
}

// Image is a stored image.
type Image struct {
	ID              string
	Name            string
	DiskFormat      string
	ContainerFormat string
	SHA256          string
	SizeBytes       int64
	// Location is what a compute driver boots: a file path (local) or a
	// Glance image id.
	Location   string
	Properties map[string]string
	CreatedAt  time.Time
}

// Properties a store records beside SHA256, with Glance's names: the
// MD5 "checksum" and the "os_hash_value" computed with "os_hash_algo".
const (
	PropertyChecksum = "checksum"
	PropertyHashAlgo = "os_hash_algo"
	PropertyHash     = "os_hash_value"
)

// Errors an image store wraps.
var (
	ErrNotFound         = errors.New("image not found")
	ErrChecksumMismatch = errors.New("image checksum mismatch")
	ErrInvalid          = errors.New("invalid image")
)

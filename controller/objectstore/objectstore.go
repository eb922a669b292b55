// Package objectstore is the one interface every object store implements —
// the local store (local/, the embedded default: files in a directory of
// the controller's state dir), OpenStack Swift (swift/) and S3 (s3/) — and
// the Object they describe. Backups are written to and read from it.
//
// An object store keeps named byte streams. It must not know about
// backups, their format or their keys: it never sees a clear data key, and
// callers never learn which driver they hold (no driver-specific types in
// this package). A capability only some stores have is its own small
// interface beside Store, asked for with a type assertion.
package objectstore

import (
	"context"
	"errors"
	"io"
	"regexp"
	"time"
)

// Store keeps objects by name.
//
// Names are relative paths: segments of [A-Za-z0-9._-] joined by "/",
// neither starting nor ending with "/", no "." or ".." segment, at most
// 512 bytes (ValidName). Every driver refuses other names with ErrInvalid,
// so a name that works on one store works on all of them.
type Store interface {
	// Put stores r under name, streaming: r is never held whole in
	// memory. The object is visible (to Get, Stat, List) only once it is
	// complete; a failed or cancelled Put leaves nothing visible, at most
	// parts that Delete(name) or a later Put of name removes. An existing
	// object of that name is replaced.
	Put(ctx context.Context, name string, r io.Reader) (Object, error)
	// Get opens an object for reading. A missing object is an error
	// wrapping ErrNotFound.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// Stat describes an object. A missing object is an error wrapping
	// ErrNotFound.
	Stat(ctx context.Context, name string) (Object, error)
	// Delete removes an object and any parts of it. A missing object is
	// not an error.
	Delete(ctx context.Context, name string) error
	// List returns the complete objects whose names start with prefix
	// (a plain string prefix, not only whole segments), sorted by name.
	List(ctx context.Context, prefix string) ([]Object, error)
}

// Object describes a stored object.
type Object struct {
	Name string
	Size int64
	// ETag is the store's tag for the content (an MD5 for plain objects
	// on Swift and S3; drivers differ for large objects). It changes when
	// the content does; compare it only with tags from the same store.
	ETag     string
	Modified time.Time
}

// Errors a store wraps.
var (
	ErrNotFound = errors.New("object not found")
	ErrInvalid  = errors.New("invalid object name")
)

// MaxNameLen is the longest object name a Store accepts.
const MaxNameLen = 512

var segmentPattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// ValidName reports whether name is one every store accepts.
func ValidName(name string) bool {
	if name == "" || len(name) > MaxNameLen {
		return false
	}
	start := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '/' {
			continue
		}
		seg := name[start:i]
		if seg == "" || seg == "." || seg == ".." || !segmentPattern.MatchString(seg) {
			return false
		}
		start = i + 1
	}
	return true
}

// ValidPrefix reports whether prefix may be passed to List: empty, or a
// name, or a name followed by "/".
func ValidPrefix(prefix string) bool {
	if prefix == "" {
		return true
	}
	if prefix[len(prefix)-1] == '/' {
		prefix = prefix[:len(prefix)-1]
	}
	return ValidName(prefix)
}

package format

import (
	"bufio"
	"context"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"strata/controller/objectstore"
)

// ErrCorrupt is wrapped by every error that means the stored backup is
// not what its manifest says: a changed, missing, truncated or misplaced
// segment or chunk. Such an error names the segment.
var ErrCorrupt = errors.New("backup is damaged")

// Reader streams a backup's plaintext back, checking every chunk's tag as
// it goes and every segment's size and SHA-256 at its end. Bytes it
// returns have passed their chunk's authentication; a Read error other
// than io.EOF means the stream must be discarded.
type Reader struct {
	ctx   context.Context
	store objectstore.Store
	m     *Manifest
	aead  cipher.AEAD

	seg   int // index of the segment being read
	rc    io.ReadCloser
	br    *bufio.Reader
	h     hash.Hash
	read  int64 // stored bytes read of the current segment
	chunk uint64
	buf   []byte // one stored chunk
	plain []byte // its plaintext (not opened in place: a failed Open clears its output)
	out   []byte // plaintext not yet returned
	done  bool
	err   error
}

// NewReader opens a backup for reading: it checks the manifest and
// unwraps the data key with kek (a wrong key fails here, wrapping
// ErrWrongKey), then reads segments one after the other as Read asks.
func NewReader(ctx context.Context, store objectstore.Store, m *Manifest, kek *KEK) (*Reader, error) {
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("backup %s: %w", m.BackupID, err)
	}
	if kek == nil {
		return nil, errors.New("backup reader: no key-encryption key")
	}
	dataKey, err := kek.unwrap(m.WrappedKey, m.KEKID)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", m.BackupID, err)
	}
	aead, err := newAEAD(dataKey)
	clear(dataKey)
	if err != nil {
		return nil, err
	}
	return &Reader{ctx: ctx, store: store, m: m, aead: aead, seg: -1,
		buf: make([]byte, m.ChunkSize+overhead), plain: make([]byte, 0, m.ChunkSize)}, nil
}

// segErr names segment i in an error about it.
func (r *Reader) segErr(i int, err error) error {
	s := r.m.Segments[i]
	return fmt.Errorf("backup %s: segment %d of %d (%s): %w", r.m.BackupID, i+1, len(r.m.Segments), s.Name, err)
}

// Read returns decrypted bytes.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.out) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.done {
			return 0, io.EOF
		}
		if err := r.next(); err != nil {
			r.err, r.out = err, nil
			r.closeSegment()
		}
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

// next decrypts one chunk into r.out, opening the next segment first
// when the current one is finished.
func (r *Reader) next() error {
	if err := r.ctx.Err(); err != nil {
		return err
	}
	if r.rc == nil {
		if err := r.openSegment(r.seg + 1); err != nil {
			return err
		}
	}
	i := r.seg
	n, err := io.ReadFull(r.br, r.buf)
	r.read += int64(n)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return r.segErr(i, fmt.Errorf("read: %w", err))
	}
	if n == 0 {
		return r.segErr(i, fmt.Errorf("%w: it ends before its first chunk (%d bytes, the manifest says %d)", ErrCorrupt, r.read, r.m.Segments[i].Size))
	}
	// The chunk ends its segment if nothing follows it.
	segEnd := err != nil
	if !segEnd {
		if _, perr := r.br.Peek(1); perr == io.EOF {
			segEnd = true
		} else if perr != nil {
			return r.segErr(i, fmt.Errorf("read: %w", perr))
		}
	}
	last := segEnd && i == len(r.m.Segments)-1
	if n < overhead || (n < len(r.buf) && !last) {
		return r.segErr(i, fmt.Errorf("%w: truncated: it ends in a chunk of %d bytes, after %d bytes (the manifest says %d)", ErrCorrupt, n, r.read, r.m.Segments[i].Size))
	}
	var nb [12]byte
	plain, oerr := r.aead.Open(r.plain[:0], nonce(&nb, r.chunk, last), r.buf[:n], []byte(streamAAD))
	if oerr != nil {
		if last {
			// Sealed as not last: the stream was cut after this chunk.
			if _, e := r.aead.Open(r.plain[:0], nonce(&nb, r.chunk, false), r.buf[:n], []byte(streamAAD)); e == nil {
				return r.segErr(i, fmt.Errorf("%w: the stream ends early: chunk %d is not the last one written (segments missing at the end?)", ErrCorrupt, r.chunk))
			}
		}
		return r.segErr(i, fmt.Errorf("%w: chunk %d (stored bytes %d-%d of the segment) fails authentication: changed, misplaced or from another backup", ErrCorrupt, r.chunk, r.read-int64(n), r.read))
	}
	r.chunk++
	r.out = plain
	if segEnd {
		if err := r.finishSegment(); err != nil {
			return err
		}
		if last {
			r.done = true
		}
	} else if r.read > r.m.Segments[i].Size {
		return r.segErr(i, fmt.Errorf("%w: longer than the %d bytes the manifest says", ErrCorrupt, r.m.Segments[i].Size))
	}
	return nil
}

func (r *Reader) openSegment(i int) error {
	s := r.m.Segments[i]
	rc, err := r.store.Get(r.ctx, s.Name)
	if err != nil {
		if errors.Is(err, objectstore.ErrNotFound) {
			return r.segErr(i, fmt.Errorf("%w: missing from the store: %v", ErrCorrupt, err))
		}
		return r.segErr(i, err)
	}
	r.seg, r.rc, r.h, r.read = i, rc, sha256.New(), 0
	r.br = bufio.NewReaderSize(io.TeeReader(rc, r.h), 256<<10)
	return nil
}

// finishSegment checks the segment's size and digest once it is read.
func (r *Reader) finishSegment() error {
	i, s := r.seg, r.m.Segments[r.seg]
	sum := hex.EncodeToString(r.h.Sum(nil))
	r.closeSegment()
	if r.read != s.Size {
		return r.segErr(i, fmt.Errorf("%w: %d bytes, the manifest says %d", ErrCorrupt, r.read, s.Size))
	}
	if sum != s.SHA256 {
		return r.segErr(i, fmt.Errorf("%w: SHA-256 %s, the manifest says %s", ErrCorrupt, sum, s.SHA256))
	}
	return nil
}

func (r *Reader) closeSegment() {
	if r.rc != nil {
		r.rc.Close()
		r.rc, r.br = nil, nil
	}
}

// Close releases the segment being read.
func (r *Reader) Close() error {
	r.closeSegment()
	if r.err == nil {
		r.err = errors.New("backup reader: closed")
	}
	return nil
}

// Verify reads a whole backup and checks it as a restore would — every
// segment's presence, size and SHA-256, every chunk's tag, the end mark —
// without writing the plaintext anywhere.
func Verify(ctx context.Context, store objectstore.Store, m *Manifest, kek *KEK) error {
	r, err := NewReader(ctx, store, m, kek)
	if err != nil {
		return err
	}
	defer r.Close()
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	return nil
}

// CheckPresent checks, without reading them, that every segment of m is
// in the store with the size the manifest says: what a restore checks
// before it starts.
func CheckPresent(ctx context.Context, store objectstore.Store, m *Manifest) error {
	if err := m.Check(); err != nil {
		return fmt.Errorf("backup %s: %w", m.BackupID, err)
	}
	for i, s := range m.Segments {
		o, err := store.Stat(ctx, s.Name)
		if errors.Is(err, objectstore.ErrNotFound) {
			return fmt.Errorf("backup %s: segment %d of %d (%s): %w: missing from the store", m.BackupID, i+1, len(m.Segments), s.Name, ErrCorrupt)
		}
		if err != nil {
			return fmt.Errorf("backup %s: segment %d of %d (%s): %w", m.BackupID, i+1, len(m.Segments), s.Name, err)
		}
		if o.Size != s.Size {
			return fmt.Errorf("backup %s: segment %d of %d (%s): %w: %d bytes in the store, the manifest says %d", m.BackupID, i+1, len(m.Segments), s.Name, ErrCorrupt, o.Size, s.Size)
		}
	}
	return nil
}

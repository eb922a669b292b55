package format

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"crypto/cipher"

	"strata/controller/objectstore"
)

// WriterOptions tune a Writer; zero values take the defaults.
type WriterOptions struct {
	ChunkSize   int   // plaintext bytes per chunk (DefaultChunkSize)
	SegmentSize int64 // stored bytes per segment, rounded down to whole chunks (DefaultSegmentSize)
}

// Writer encrypts what is written to it and uploads it as segments below
// a prefix. Close finishes the upload; Manifest then describes it. After
// any error (from Write or Close) the caller calls Abort to remove what
// was uploaded.
//
// Write and Close are for one goroutine; Abort may be called from another
// at any time, and unblocks a Write waiting on the store.
type Writer struct {
	store  objectstore.Store
	prefix string
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	aead    cipher.AEAD
	buf     []byte // one chunk: plaintext, sealed in place
	n       int    // plaintext bytes in buf
	chunk   uint64 // index of the next chunk to seal
	perSeg  uint64 // chunks per segment
	m       Manifest
	cur     *segUpload // segment being uploaded
	prev    *segUpload // closed segment whose Put has not returned yet
	started []string   // names of segments whose Put began
	err     error
	closed  bool
}

// segUpload is one segment streaming into store.Put through a pipe.
type segUpload struct {
	name  string
	pw    *io.PipeWriter
	h     hash.Hash
	size  int64
	chunk uint64 // chunks written
	done  chan struct{}
	obj   objectstore.Object
	err   error
}

// NewWriter starts a backup's stream below prefix (segments are
// prefix/data.00000001, ...), with a fresh data key wrapped by kek.
// ctx bounds the whole upload.
func NewWriter(ctx context.Context, store objectstore.Store, prefix string, kek *KEK, opts *WriterOptions) (*Writer, error) {
	if opts == nil {
		opts = &WriterOptions{}
	}
	chunkSize := opts.ChunkSize
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	if chunkSize < 1 || chunkSize > maxChunkSize {
		return nil, fmt.Errorf("backup writer: chunk size %d out of range 1..%d", chunkSize, maxChunkSize)
	}
	segSize := opts.SegmentSize
	if segSize == 0 {
		segSize = DefaultSegmentSize
	}
	perSeg := uint64(segSize / int64(chunkSize+overhead))
	if perSeg < 1 {
		return nil, fmt.Errorf("backup writer: segment size %d holds no whole chunk of %d bytes", segSize, chunkSize+overhead)
	}
	if !objectstore.ValidName(SegmentName(prefix, 1)) {
		return nil, fmt.Errorf("backup writer: %w: prefix %q", objectstore.ErrInvalid, prefix)
	}
	if kek == nil {
		return nil, errors.New("backup writer: no key-encryption key")
	}
	dataKey := make([]byte, KeySize)
	if _, err := rand.Read(dataKey); err != nil {
		return nil, err
	}
	wrapped, err := kek.wrap(dataKey)
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(dataKey)
	clear(dataKey)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	return &Writer{
		store: store, prefix: prefix, ctx: ctx, cancel: cancel,
		aead: aead, buf: make([]byte, chunkSize+overhead), perSeg: perSeg,
		m: Manifest{
			Version: Version, Cipher: Cipher, ChunkSize: chunkSize,
			SegmentSize: int64(perSeg) * int64(chunkSize+overhead),
			KEKID:       kek.ID(), WrappedKey: wrapped, CreatedAt: time.Now().UTC(),
		},
	}, nil
}

// SegmentName is the name of segment i (from 1) below prefix.
func SegmentName(prefix string, i int) string {
	return fmt.Sprintf("%s/data.%08d", prefix, i)
}

// Write encrypts p and uploads it as it goes.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("backup writer: write after close")
	}
	chunkSize := len(w.buf) - overhead
	written := 0
	for len(p) > 0 {
		// A full chunk is sealed only when more data follows, so the
		// last chunk is known at Close.
		if w.n == chunkSize {
			if err := w.seal(false); err != nil {
				return written, w.fail(err)
			}
		}
		k := copy(w.buf[w.n:chunkSize], p)
		w.n += k
		p = p[k:]
		written += k
	}
	return written, nil
}

func (w *Writer) fail(err error) error {
	if w.err == nil {
		if ctxErr := w.ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w (%v)", err, ctxErr)
		}
		w.err = fmt.Errorf("backup %s: %w", w.prefix, err)
	}
	return w.err
}

// seal encrypts the chunk in buf and writes it to the current segment.
func (w *Writer) seal(last bool) error {
	if w.cur == nil {
		if err := w.startSegment(); err != nil {
			return err
		}
	}
	var nb [12]byte
	sealed := w.aead.Seal(w.buf[:0], nonce(&nb, w.chunk, last), w.buf[:w.n], []byte(streamAAD))
	w.m.PlainBytes += int64(w.n)
	w.chunk++
	w.n = 0
	s := w.cur
	s.h.Write(sealed)
	if _, err := s.pw.Write(sealed); err != nil {
		<-s.done
		if s.err != nil {
			return fmt.Errorf("segment %s: %w", s.name, s.err)
		}
		return fmt.Errorf("segment %s: %w", s.name, err)
	}
	s.size += int64(len(sealed))
	s.chunk++
	if s.chunk == w.perSeg || last {
		return w.endSegment()
	}
	return nil
}

func (w *Writer) startSegment() error {
	pr, pw := io.Pipe()
	s := &segUpload{name: SegmentName(w.prefix, len(w.started)+1), pw: pw, h: sha256.New(), done: make(chan struct{})}
	w.started = append(w.started, s.name)
	go func() {
		defer close(s.done)
		s.obj, s.err = w.store.Put(w.ctx, s.name, pr)
		// Unblocks a writer waiting on a Put that gave up.
		pr.CloseWithError(fmt.Errorf("upload ended: %v", s.err))
	}()
	w.cur = s
	return nil
}

// endSegment closes the current segment's stream; its Put's result is
// collected before the next segment ends (so one upload finishes while
// the next one streams).
func (w *Writer) endSegment() error {
	s := w.cur
	w.cur = nil
	s.pw.Close()
	if err := w.collect(); err != nil {
		return err
	}
	w.prev = s
	return nil
}

// collect waits for the previous segment's Put and records it.
func (w *Writer) collect() error {
	s := w.prev
	if s == nil {
		return nil
	}
	w.prev = nil
	<-s.done
	if s.err != nil {
		return fmt.Errorf("segment %s: %w", s.name, s.err)
	}
	if s.obj.Size != s.size {
		return fmt.Errorf("segment %s: the store holds %d bytes, %d were written", s.name, s.obj.Size, s.size)
	}
	w.m.Segments = append(w.m.Segments, Segment{Name: s.name, Size: s.size, SHA256: hex.EncodeToString(s.h.Sum(nil))})
	w.m.StoredBytes += s.size
	return nil
}

// Close seals the last chunk and waits for every segment's upload.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return nil
	}
	w.closed = true
	if err := w.seal(true); err != nil {
		return w.fail(err)
	}
	if err := w.collect(); err != nil {
		return w.fail(err)
	}
	return nil
}

// Manifest describes the stored backup after a successful Close (the
// caller adds its own fields); before that it is incomplete.
func (w *Writer) Manifest() Manifest {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.m
	m.Segments = append([]Segment(nil), w.m.Segments...)
	return m
}

// Abort stops the upload and removes every object below the prefix:
// segments uploaded, the one being uploaded, a manifest stored for it.
// The Writer is unusable after it.
func (w *Writer) Abort(ctx context.Context) error {
	w.cancel()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = fmt.Errorf("backup %s: aborted", w.prefix)
	}
	for _, s := range []*segUpload{w.cur, w.prev} {
		if s != nil {
			s.pw.CloseWithError(w.err)
			<-s.done
		}
	}
	w.cur, w.prev = nil, nil
	// By name first: a failed Put's parts are not listed, and a store's
	// listing may lag behind its writes.
	var errs []error
	for _, name := range w.started {
		if err := w.store.Delete(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("abort backup %s: %w", w.prefix, err)
	}
	return Delete(ctx, w.store, w.prefix)
}

// Delete removes every object of the backup below prefix. Deleting what
// is already gone is not an error.
func Delete(ctx context.Context, store objectstore.Store, prefix string) error {
	objs, err := store.List(ctx, prefix+"/")
	if err != nil {
		return fmt.Errorf("delete backup %s: %w", prefix, err)
	}
	var errs []error
	for _, o := range objs {
		if err := store.Delete(ctx, o.Name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete backup %s: %w", prefix, err)
	}
	return nil
}

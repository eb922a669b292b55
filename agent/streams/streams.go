// Package streams is the agent's half of the backup data path: what a
// datastore's backup tool writes is compressed with zstd (in parallel)
// and counted and digested on its way into the operation's data channel;
// what a restore reads is digested, checked against the digest the
// controller sent, and decompressed.
//
// It knows nothing of datastores or of where the controller keeps the
// data; it must never buffer a stream whole (memory stays bounded by the
// encoder's windows, whatever the dataset's size).
package streams

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"

	"github.com/klauspost/compress/zstd"

	"strata/agent/wire"
)

// Digester counts and hashes the bytes written through it.
type Digester struct {
	w io.Writer
	h hash.Hash
	n int64
}

// NewDigester digests what is written to w.
func NewDigester(w io.Writer) *Digester { return &Digester{w: w, h: sha256.New()} }

func (d *Digester) Write(p []byte) (int, error) {
	n, err := d.w.Write(p)
	d.h.Write(p[:n])
	d.n += int64(n)
	return n, err
}

// Digest is what passed so far.
func (d *Digester) Digest() wire.StreamDigest {
	return wire.StreamDigest{Bytes: d.n, SHA256: wire.SHA256Hex(d.h.Sum(nil))}
}

// Sender compresses a native backup stream into an operation's channel.
type Sender struct {
	out *Digester
	enc *zstd.Encoder
	raw int64
}

// NewSender compresses what is written to it into w. In a stream
// klauspost's encoder overlaps one block's match finding with the
// previous block's entropy coding and write (two goroutines); it does not
// compress blocks in parallel.
func NewSender(w io.Writer) (*Sender, error) {
	out := NewDigester(w)
	enc, err := zstd.NewWriter(out, zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithWindowSize(4<<20))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	return &Sender{out: out, enc: enc}, nil
}

func (s *Sender) Write(p []byte) (int, error) {
	n, err := s.enc.Write(p)
	s.raw += int64(n)
	return n, err
}

// Close flushes the last compressed frame. It does not close the channel.
func (s *Sender) Close() error {
	if err := s.enc.Close(); err != nil {
		return fmt.Errorf("zstd: %w", err)
	}
	return nil
}

// RawBytes is what the tool wrote (before compression).
func (s *Sender) RawBytes() int64 { return s.raw }

// Digest is what went into the channel (after compression).
func (s *Sender) Digest() wire.StreamDigest { return s.out.Digest() }

// ErrDigestMismatch: a restore stream's bytes are not the backup's.
var ErrDigestMismatch = errors.New("stream does not match its backup's digest")

// verifier passes r through, digesting it, and turns the final EOF into
// ErrDigestMismatch unless exactly the expected bytes arrived: the
// reader of a restore stream never sees a clean end of a stream that is
// not the backup.
type verifier struct {
	r    io.Reader
	h    hash.Hash
	n    int64
	want wire.StreamDigest
	done bool
	err  error
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.n > v.want.Bytes {
		v.err = fmt.Errorf("%w: more than the %d bytes recorded", ErrDigestMismatch, v.want.Bytes)
		return 0, v.err
	}
	if err == io.EOF {
		got := wire.StreamDigest{Bytes: v.n, SHA256: wire.SHA256Hex(v.h.Sum(nil))}
		if !got.Equal(v.want) {
			v.err = fmt.Errorf("%w: got %d bytes sha256 %s, want %d bytes sha256 %s", ErrDigestMismatch, got.Bytes, got.SHA256, v.want.Bytes, v.want.SHA256)
			return n, v.err
		}
		v.done = true
	}
	if err != nil {
		v.err = err
	}
	return n, err
}

// Receiver is one restore stream: reading it yields the native backup
// stream, decompressed; the compressed bytes are checked against the
// backup's digest, and a mismatch or a cut stream is an error, never EOF.
type Receiver struct {
	src io.ReadCloser
	ra  *readahead
	v   *verifier
	dec *zstd.Decoder
	raw int64
}

// NewReceiver reads a restore stream from src, which must carry exactly
// the bytes want describes.
func NewReceiver(src io.ReadCloser, want wire.StreamDigest) (*Receiver, error) {
	// The network is read ahead (8 MiB at most) while the decoder and
	// the restore tool work.
	ra := newReadahead(src, 8, 1<<20, false)
	v := &verifier{r: ra, h: sha256.New(), want: want}
	// One goroutine: a concurrent decoder reads ahead of what it hands
	// out, and whether the stream ended at its digest must be known when
	// the decoder says EOF.
	dec, err := zstd.NewReader(v, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return &Receiver{src: src, ra: ra, v: v, dec: dec}, nil
}

func (r *Receiver) Read(p []byte) (int, error) {
	n, err := r.dec.Read(p)
	r.raw += int64(n)
	if err == io.EOF && !r.v.done {
		// The last zstd frame ended: the rest of the stream must be
		// empty and the digest must match.
		if _, derr := io.Copy(io.Discard, r.v); derr != nil {
			return n, derr
		}
		if !r.v.done {
			return n, fmt.Errorf("%w: stream ended early", ErrDigestMismatch)
		}
	}
	if err != nil && err != io.EOF {
		if r.v.err != nil && r.v.err != io.EOF {
			// The digest's or the connection's error says more than zstd's.
			return n, fmt.Errorf("restore stream: %w", r.v.err)
		}
		// What arrived does not decode: damaged before the digest at the
		// end could say so.
		return n, fmt.Errorf("restore stream: corrupt compressed data: %w", err)
	}
	return n, err
}

// Close reads what is left of the stream and reports whether all of it
// matched the digest (nil only then), and closes the source.
func (r *Receiver) Close() error {
	defer r.dec.Close()
	defer r.ra.stop()
	var err error
	if !r.v.done {
		_, err = io.Copy(io.Discard, r)
		if err == nil && !r.v.done {
			err = fmt.Errorf("%w: not read to its end", ErrDigestMismatch)
		}
	}
	if cerr := r.src.Close(); err == nil && cerr != nil && !errors.Is(cerr, io.EOF) {
		err = cerr
	}
	return err
}

// Verified reports whether the whole stream arrived and matched.
func (r *Receiver) Verified() bool { return r.v.done }

// RawBytes is what the reader got so far (decompressed).
func (r *Receiver) RawBytes() int64 { return r.raw }

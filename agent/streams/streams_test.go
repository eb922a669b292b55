package streams

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"
)

// sample mixes incompressible and compressible data, like a database.
func sample(n int) []byte {
	b := make([]byte, n)
	rand.Read(b[:n/2])
	for i := n / 2; i < n; i++ {
		b[i] = byte(i % 7)
	}
	return b
}

func compress(t *testing.T, raw []byte) ([]byte, *Sender) {
	t.Helper()
	var wire bytes.Buffer
	s, err := NewSender(&wire)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return wire.Bytes(), s
}

func TestRoundTripChecksTheDigest(t *testing.T) {
	raw := sample(3<<20 + 17)
	comp, s := compress(t, raw)
	if s.RawBytes() != int64(len(raw)) || s.Digest().Bytes != int64(len(comp)) || len(comp) >= len(raw) {
		t.Fatalf("raw %d (%d), compressed %d (%d)", s.RawBytes(), len(raw), s.Digest().Bytes, len(comp))
	}
	r, err := NewReceiver(io.NopCloser(bytes.NewReader(comp)), s.Digest())
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("round trip: %d bytes, %v", len(got), err)
	}
	if err := r.Close(); err != nil || !r.Verified() {
		t.Fatalf("close: %v verified=%v", err, r.Verified())
	}
}

func TestABadStreamNeverEndsCleanly(t *testing.T) {
	raw := sample(1 << 20)
	comp, s := compress(t, raw)
	flipped := bytes.Clone(comp)
	flipped[len(flipped)/2] ^= 1
	// A flipped bit in the last bytes may still decompress: zstd's frame
	// checksum or our digest must catch it.
	tail := bytes.Clone(comp)
	tail[len(tail)-1] ^= 0x80
	for name, data := range map[string][]byte{
		"flipped":   flipped,
		"tail":      tail,
		"truncated": comp[:len(comp)-100],
		"longer":    append(bytes.Clone(comp), 0),
		"empty":     nil,
	} {
		r, err := NewReceiver(io.NopCloser(bytes.NewReader(data)), s.Digest())
		if err != nil {
			t.Fatal(err)
		}
		_, rerr := io.ReadAll(r)
		cerr := r.Close()
		if rerr == nil || cerr == nil || r.Verified() {
			t.Errorf("%s: read %v, close %v, verified %v", name, rerr, cerr, r.Verified())
		}
		if name != "flipped" && name != "tail" && !errors.Is(cerr, ErrDigestMismatch) {
			t.Errorf("%s: close error %v is not a digest mismatch", name, cerr)
		}
	}
}

func TestCloseDrainsAndVerifiesWhatTheReaderLeft(t *testing.T) {
	raw := sample(1 << 20)
	comp, s := compress(t, raw)
	r, _ := NewReceiver(io.NopCloser(bytes.NewReader(comp)), s.Digest())
	io.CopyN(io.Discard, r, 1000)
	if err := r.Close(); err != nil || !r.Verified() {
		t.Fatalf("close after a partial read: %v", err)
	}
}

func BenchmarkSender(b *testing.B) {
	raw := sample(32 << 20)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		s, _ := NewSender(io.Discard)
		s.Write(raw)
		s.Close()
	}
}

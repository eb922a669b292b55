package streams

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"time"
)

// sizes records the length of every write.
type sizes struct {
	bytes.Buffer
	writes []int
}

func (s *sizes) Write(p []byte) (int, error) {
	s.writes = append(s.writes, len(p))
	return s.Buffer.Write(p)
}

func TestReadAheadHandsOnWholeBuffersFromASourceOfSmallReads(t *testing.T) {
	raw := sample(100_000)
	ra := NewReadAhead(iotest.HalfReader(bytes.NewReader(raw)), 3, 4096)
	defer ra.Stop()
	var got sizes
	n, err := io.Copy(&got, ra)
	if err != nil || n != int64(len(raw)) || !bytes.Equal(got.Bytes(), raw) {
		t.Fatalf("copied %d bytes, err %v; equal %v", n, err, bytes.Equal(got.Bytes(), raw))
	}
	for i, w := range got.writes[:len(got.writes)-1] {
		if w != 4096 {
			t.Fatalf("write %d of %d bytes, want whole 4096-byte buffers: %v", i, w, got.writes)
		}
	}
}

func TestReadAheadReadAndItsSourcesError(t *testing.T) {
	boom := errors.New("boom")
	ra := NewReadAhead(io.MultiReader(bytes.NewReader([]byte("abcdefgh")), iotest.ErrReader(boom)), 2, 3)
	defer ra.Stop()
	got, err := io.ReadAll(iotest.OneByteReader(ra))
	if string(got) != "abcdefgh" || !errors.Is(err, boom) {
		t.Fatalf("read %q, %v; want abcdefgh and the source's error", got, err)
	}
}

func TestReadAheadStopsWhenItsReaderGivesUp(t *testing.T) {
	pr, pw := io.Pipe()
	go func() {
		for {
			if _, err := pw.Write(make([]byte, 1000)); err != nil {
				return
			}
		}
	}()
	ra := NewReadAhead(pr, 2, 4096)
	if _, err := io.CopyN(io.Discard, ra, 10_000); err != nil {
		t.Fatal(err)
	}
	// The consumer stops; closing the source ends a read that waits.
	pr.Close()
	stopped := make(chan struct{})
	go func() { ra.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return after the source was closed")
	}
}

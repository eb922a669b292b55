package swift

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"testing"
	"time"

	"strata/ci/swift/swifttest"
	"strata/controller/objectstore"
	"strata/controller/objectstore/storetest"
)

func TestMain(m *testing.M) { os.Exit(swifttest.Main(m)) }

// newStore is a store in fresh containers of the private Swift, reached
// through relay (so the fault tests can cut it).
func newStore(t *testing.T, relay *storetest.Proxy, opts Options) *Store {
	t.Helper()
	srv := swifttest.Shared(t)
	client, err := TempAuth(t.Context(), "http://"+relay.Addr+"/auth/v1.0", srv.User, srv.Key)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	rand.Read(b)
	opts.Container = "t-" + hex.EncodeToString(b)
	s, err := New(t.Context(), client, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Segments of 1 MiB and plain objects up to 256 KiB, so the suite's large
// objects are SLOs of several segments.
const testSegment = 1 << 20

func TestConformance(t *testing.T) {
	srv := swifttest.Shared(t)
	relay := storetest.NewProxy(t, srv.Proxy)
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) objectstore.Store {
			return newStore(t, relay, Options{SegmentSize: testSegment, SmallSize: 256 << 10})
		},
		PartSize: testSegment,
		Parts: func(t *testing.T, s objectstore.Store) []string {
			segs, err := s.(*Store).AllSegments(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return segs
		},
		Proxy: relay,
	})
}

// A large object is stored as an SLO whose segments sit in the segment
// container; replacing it drops the old segments.
func TestLargeObjectIsSLO(t *testing.T) {
	srv := swifttest.Shared(t)
	relay := storetest.NewProxy(t, srv.Proxy)
	s := newStore(t, relay, Options{SegmentSize: testSegment, SmallSize: 64 << 10})
	ctx := t.Context()
	if _, err := s.Put(ctx, "x/big", storetest.Data(1, 3*testSegment+5)); err != nil {
		t.Fatal(err)
	}
	segs, err := s.SegmentNames(ctx, "x/big")
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) != 4 {
		t.Fatalf("a %d-byte object in %d-byte segments has segments %v, want 4", 3*testSegment+5, testSegment, segs)
	}
	if _, err := s.Put(ctx, "x/big", storetest.Data(2, 2*testSegment)); err != nil {
		t.Fatal(err)
	}
	segs, _ = s.SegmentNames(ctx, "x/big")
	if len(segs) != 2 {
		t.Fatalf("after replacing with a 2-segment object: segments %v, want 2", segs)
	}
	if _, err := s.Put(ctx, "x/big", storetest.Data(3, 10)); err != nil {
		t.Fatal(err)
	}
	segs, _ = s.SegmentNames(ctx, "x/big")
	if len(segs) != 0 {
		t.Fatalf("after replacing with a small object: segments %v, want none", segs)
	}

}

// pausingReader yields n bytes of storetest.Data, pausing once for pause
// after the first at bytes.
type pausingReader struct {
	r      io.Reader
	at     int64
	pause  time.Duration
	read   int64
	paused bool
}

func (p *pausingReader) Read(b []byte) (int, error) {
	if !p.paused && p.read >= p.at {
		p.paused = true
		time.Sleep(p.pause)
	}
	if !p.paused {
		b = b[:min(int64(len(b)), p.at-p.read)]
	}
	n, err := p.r.Read(b)
	p.read += int64(n)
	return n, err
}

func checkContent(t *testing.T, s *Store, name string, seed uint64, n int64) {
	t.Helper()
	rc, err := s.Get(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(storetest.Data(seed, n))
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: read back %d bytes that differ from the %d put", name, len(got), n)
	}
}

// A source that pauses ends the segment being sent: the object is whole,
// in one more segment than its size needs (two without the pause).
func TestPausingSourceEndsTheSegment(t *testing.T) {
	t.Parallel()
	srv := swifttest.Shared(t)
	relay := storetest.NewProxy(t, srv.Proxy)
	s := newStore(t, relay, Options{SegmentSize: testSegment, SmallSize: 64 << 10, StallTimeout: 300 * time.Millisecond})
	const size = 2 * testSegment
	if _, err := s.Put(t.Context(), "p", &pausingReader{r: storetest.Data(7, size), at: testSegment / 2, pause: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	segs, _ := s.SegmentNames(t.Context(), "p")
	if len(segs) != 3 {
		t.Fatalf("a %d-byte object paused once at %d has segments %v, want 3 (the pause ends the first)", size, testSegment/2, segs)
	}
	checkContent(t, s, "p", 7, size)
}

// The private Swift's proxy cuts a request body that sends nothing for its
// client_timeout (60 s, Swift's default): a backup stream that pauses that
// long behind a busy guest is still stored whole.
func TestSourcePausingPastSwiftsClientTimeoutIsStored(t *testing.T) {
	t.Parallel()
	srv := swifttest.Shared(t)
	relay := storetest.NewProxy(t, srv.Proxy)
	s := newStore(t, relay, Options{SegmentSize: 8 * testSegment, SmallSize: 64 << 10})
	const size = 3 * testSegment
	if _, err := s.Put(t.Context(), "slow", &pausingReader{r: storetest.Data(8, size), at: testSegment, pause: 65 * time.Second}); err != nil {
		t.Fatalf("a source pausing 65 s: %v", err)
	}
	checkContent(t, s, "slow", 8, size)
}

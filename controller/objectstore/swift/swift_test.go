package swift

import (
	"crypto/rand"
	"encoding/hex"

	"os"
	"testing"

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

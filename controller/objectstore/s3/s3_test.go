package s3

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"strata/ci/swift/swifttest"
	"strata/controller/objectstore"
	"strata/controller/objectstore/storetest"
)

// The S3 API of the private Swift (s3api in its proxy) is the real
// server here.
func TestMain(m *testing.M) { os.Exit(swifttest.Main(m)) }

const testPart = minPartSize // the smallest S3 allows: several parts stay cheap

func newStore(t *testing.T, relay *storetest.Proxy) *Store {
	t.Helper()
	srv := swifttest.Shared(t)
	b := make([]byte, 4)
	rand.Read(b)
	s, err := New(t.Context(), Options{
		Endpoint: "http://" + relay.Addr, AccessKey: srv.S3AccessKey, SecretKey: srv.S3SecretKey,
		Region: srv.S3Region, Bucket: "t-" + hex.EncodeToString(b), PartSize: testPart,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := swifttest.Shared(t)
	relay := storetest.NewProxy(t, srv.Proxy)
	storetest.Run(t, storetest.Harness{
		New:      func(t *testing.T) objectstore.Store { return newStore(t, relay) },
		PartSize: testPart,
		Parts: func(t *testing.T, s objectstore.Store) []string {
			left, err := s.(*Store).Unfinished(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return left
		},
		Proxy: relay,
	})
}

// A wrong secret is refused with a message that says so, at New.
func TestWrongCredentials(t *testing.T) {
	srv := swifttest.Shared(t)
	_, err := New(t.Context(), Options{Endpoint: srv.S3Endpoint, AccessKey: srv.S3AccessKey, SecretKey: "wrong", Bucket: "never"})
	if err == nil {
		t.Fatal("New with a wrong secret succeeded")
	}
	if !strings.Contains(err.Error(), "AccessDenied") || !strings.Contains(err.Error(), srv.S3Endpoint) {
		t.Fatalf("error %q does not say access was denied, and where", err)
	}
}

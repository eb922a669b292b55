// Package storetest is the conformance suite every object store driver
// passes: the same tests, run by each driver's own test against a real
// store (a directory, a Swift server, Swift's S3 API), so drivers cannot
// drift apart. Fault tests cut the connection to the real server with
// Proxy, a TCP relay the driver is pointed at.
//
// It is test support: only _test files import it.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"

	"strata/controller/objectstore"
)

// Harness is what a driver's test hands the suite.
type Harness struct {
	// New returns a store with an empty namespace of its own (a fresh
	// directory, container or bucket).
	New func(t *testing.T) objectstore.Store
	// PartSize is the size at which the store, as New configures it,
	// cuts an object into parts (segments, multipart parts); 0 if it
	// never does. Large-object tests cross these boundaries.
	PartSize int64
	// Parts lists what the store keeps beside complete objects for the
	// given store (segments, temporary files, unfinished uploads), so the
	// suite can check that a failed Put or a Delete leaves nothing.
	Parts func(t *testing.T, s objectstore.Store) []string
	// Proxy, if set, relays New's stores to the real server; the fault
	// tests switch it off at the start of and in the middle of a Put.
	Proxy *Proxy
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	t.Run("PutGetStat", func(t *testing.T) { testPutGetStat(t, h) })
	t.Run("EmptyAndReplace", func(t *testing.T) { testEmptyAndReplace(t, h) })
	t.Run("LargeAcrossParts", func(t *testing.T) { testLarge(t, h) })
	t.Run("List", func(t *testing.T) { testList(t, h) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, h) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, h) })
	t.Run("InvalidNames", func(t *testing.T) { testInvalid(t, h) })
	t.Run("FailedPutLeavesNothing", func(t *testing.T) { testFailedPut(t, h) })
	t.Run("CancelledPutLeavesNothing", func(t *testing.T) { testCancelledPut(t, h) })
	if h.Proxy != nil {
		t.Run("ServerDownAtStart", func(t *testing.T) { testDownAtStart(t, h) })
		t.Run("ServerDownMidStream", func(t *testing.T) { testDownMidStream(t, h) })
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return c
}

// Data is n reproducible pseudo-random bytes (incompressible, so no layer
// can shortcut them).
func Data(seed uint64, n int64) io.Reader {
	return io.LimitReader(&prng{r: mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}, n)
}

// prng yields the same byte stream however it is read (a word's unused
// bytes are kept for the next Read).
type prng struct {
	r    *mrand.Rand
	word uint64
	left int
}

func (p *prng) Read(b []byte) (int, error) {
	for i := range b {
		if p.left == 0 {
			p.word, p.left = p.r.Uint64(), 8
		}
		b[i] = byte(p.word)
		p.word >>= 8
		p.left--
	}
	return len(b), nil
}

func digest(t *testing.T, r io.Reader) ([32]byte, int64) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n
}

func mustPut(t *testing.T, s objectstore.Store, name string, r io.Reader) objectstore.Object {
	t.Helper()
	o, err := s.Put(ctx(t), name, r)
	if err != nil {
		t.Fatalf("Put(%s): %v", name, err)
	}
	return o
}

func mustGet(t *testing.T, s objectstore.Store, name string) []byte {
	t.Helper()
	rc, err := s.Get(ctx(t), name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%s): read: %v", name, err)
	}
	return b
}

func names(objs []objectstore.Object) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.Name
	}
	return out
}

func testPutGetStat(t *testing.T, h Harness) {
	s := h.New(t)
	before := time.Now().Add(-2 * time.Second)
	body := []byte("hello, object store\n")
	o := mustPut(t, s, "a/b/hello.txt", bytes.NewReader(body))
	if o.Name != "a/b/hello.txt" || o.Size != int64(len(body)) || o.ETag == "" {
		t.Fatalf("Put returned %+v, want name a/b/hello.txt, size %d and an ETag", o, len(body))
	}
	if got := mustGet(t, s, "a/b/hello.txt"); !bytes.Equal(got, body) {
		t.Fatalf("Get returned %q, want %q", got, body)
	}
	st, err := s.Stat(ctx(t), "a/b/hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != o.Name || st.Size != o.Size || st.ETag != o.ETag {
		t.Fatalf("Stat = %+v, Put returned %+v", st, o)
	}
	if st.Modified.Before(before) || st.Modified.After(time.Now().Add(2*time.Second)) {
		t.Fatalf("Stat's Modified %v is not the time of the Put (%v)", st.Modified, time.Now())
	}
}

func testEmptyAndReplace(t *testing.T, h Harness) {
	s := h.New(t)
	o := mustPut(t, s, "empty", strings.NewReader(""))
	if o.Size != 0 {
		t.Fatalf("empty object has size %d", o.Size)
	}
	if got := mustGet(t, s, "empty"); len(got) != 0 {
		t.Fatalf("empty object reads %d bytes", len(got))
	}
	first := mustPut(t, s, "obj", strings.NewReader("first version"))
	second := mustPut(t, s, "obj", strings.NewReader("second, longer version"))
	if got := string(mustGet(t, s, "obj")); got != "second, longer version" {
		t.Fatalf("after replacing, Get returned %q", got)
	}
	if first.ETag == second.ETag {
		t.Fatalf("different contents have the same ETag %q", first.ETag)
	}
	list, err := s.List(ctx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(list), ","); got != "empty,obj" {
		t.Fatalf("List after replace = %s, want empty,obj", got)
	}
}

func largeSize(h Harness) int64 {
	if h.PartSize > 0 {
		return 2*h.PartSize + h.PartSize/2 + 17
	}
	return 40<<20 + 17
}

func testLarge(t *testing.T, h Harness) {
	s := h.New(t)
	n := largeSize(h)
	want, _ := digest(t, Data(1, n))
	o := mustPut(t, s, "big/object", Data(1, n))
	if o.Size != n {
		t.Fatalf("Put returned size %d, want %d", o.Size, n)
	}
	// Exactly one part size, and one byte more: the boundary cases.
	if h.PartSize > 0 {
		for _, m := range []int64{h.PartSize, h.PartSize + 1} {
			name := fmt.Sprintf("big/edge-%d", m)
			mustPut(t, s, name, Data(uint64(m), m))
			wantEdge, _ := digest(t, Data(uint64(m), m))
			rc, err := s.Get(ctx(t), name)
			if err != nil {
				t.Fatal(err)
			}
			got, gn := digest(t, rc)
			rc.Close()
			if got != wantEdge || gn != m {
				t.Fatalf("%s: read %d bytes with another digest than the %d written", name, gn, m)
			}
		}
	}
	st, err := s.Stat(ctx(t), "big/object")
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != n {
		t.Fatalf("Stat size %d, want %d", st.Size, n)
	}
	rc, err := s.Get(ctx(t), "big/object")
	if err != nil {
		t.Fatal(err)
	}
	got, gn := digest(t, rc)
	rc.Close()
	if got != want || gn != n {
		t.Fatalf("read back %d bytes with SHA-256 %x, wrote %d with %x", gn, got, n, want)
	}
	list, err := s.List(ctx(t), "big/")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) == 0 || list[len(list)-1].Name != "big/object" || list[len(list)-1].Size != n {
		t.Fatalf("List(big/) = %+v, want big/object with size %d last", list, n)
	}
	for _, name := range names(list) {
		if err := s.Delete(ctx(t), name); err != nil {
			t.Fatal(err)
		}
	}
	if h.Parts != nil {
		if left := h.Parts(t, s); len(left) > 0 {
			t.Fatalf("Delete of large objects left parts: %v", left)
		}
	}
}

func testList(t *testing.T, h Harness) {
	s := h.New(t)
	all := []string{"backups/1/seg.000001", "backups/1/seg.000002", "backups/10/seg.000001", "backups/2/manifest.json", "other", "backups-x"}
	for _, n := range all {
		mustPut(t, s, n, strings.NewReader(n))
	}
	cases := []struct{ prefix, want string }{
		{"", "backups-x,backups/1/seg.000001,backups/1/seg.000002,backups/10/seg.000001,backups/2/manifest.json,other"},
		{"backups/", "backups/1/seg.000001,backups/1/seg.000002,backups/10/seg.000001,backups/2/manifest.json"},
		{"backups/1/", "backups/1/seg.000001,backups/1/seg.000002"},
		{"backups/1", "backups/1/seg.000001,backups/1/seg.000002,backups/10/seg.000001"},
		{"backups/1/seg.000002", "backups/1/seg.000002"},
		{"backups", "backups-x,backups/1/seg.000001,backups/1/seg.000002,backups/10/seg.000001,backups/2/manifest.json"},
		{"nothing/", ""},
	}
	for _, c := range cases {
		list, err := s.List(ctx(t), c.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", c.prefix, err)
		}
		if got := strings.Join(names(list), ","); got != c.want {
			t.Errorf("List(%q) = %s, want %s", c.prefix, got, c.want)
		}
		for _, o := range list {
			if o.Size != int64(len(o.Name)) {
				t.Errorf("List(%q): %s has size %d, want %d", c.prefix, o.Name, o.Size, len(o.Name))
			}
		}
	}
}

func testDelete(t *testing.T, h Harness) {
	s := h.New(t)
	mustPut(t, s, "d/one", strings.NewReader("1"))
	mustPut(t, s, "d/two", strings.NewReader("2"))
	if err := s.Delete(ctx(t), "d/one"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx(t), "d/one"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("Stat after Delete: %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx(t), "d/one"); err != nil {
		t.Fatalf("deleting a missing object: %v, want no error", err)
	}
	if err := s.Delete(ctx(t), "never/was"); err != nil {
		t.Fatalf("deleting a never-stored object: %v, want no error", err)
	}
	if got := string(mustGet(t, s, "d/two")); got != "2" {
		t.Fatalf("the other object reads %q", got)
	}
	// Deleting a prefix of other objects deletes nothing.
	if err := s.Delete(ctx(t), "d"); err != nil {
		t.Fatal(err)
	}
	if got := string(mustGet(t, s, "d/two")); got != "2" {
		t.Fatalf("after Delete(d), d/two reads %q", got)
	}
}

func testNotFound(t *testing.T, h Harness) {
	s := h.New(t)
	if _, err := s.Get(ctx(t), "no/such/object"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Errorf("Get of a missing object: %v, want ErrNotFound", err)
	} else if !strings.Contains(err.Error(), "no/such/object") {
		t.Errorf("Get's error %q does not name the object", err)
	}
	if _, err := s.Stat(ctx(t), "no/such/object"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Errorf("Stat of a missing object: %v, want ErrNotFound", err)
	} else if !strings.Contains(err.Error(), "no/such/object") {
		t.Errorf("Stat's error %q does not name the object", err)
	}
}

func testInvalid(t *testing.T, h Harness) {
	s := h.New(t)
	for _, name := range []string{"", "/abs", "trailing/", "a//b", "../up", "a/./b", "sp ace", "q?x", strings.Repeat("x", objectstore.MaxNameLen+1)} {
		if _, err := s.Put(ctx(t), name, strings.NewReader("x")); !errors.Is(err, objectstore.ErrInvalid) {
			t.Errorf("Put(%q): %v, want ErrInvalid", name, err)
		}
		if _, err := s.Get(ctx(t), name); !errors.Is(err, objectstore.ErrInvalid) {
			t.Errorf("Get(%q): %v, want ErrInvalid", name, err)
		}
		if err := s.Delete(ctx(t), name); !errors.Is(err, objectstore.ErrInvalid) {
			t.Errorf("Delete(%q): %v, want ErrInvalid", name, err)
		}
	}
	if _, err := s.List(ctx(t), "../"); !errors.Is(err, objectstore.ErrInvalid) {
		t.Errorf("List(../): %v, want ErrInvalid", err)
	}
}

// failingReader yields n bytes of data, then err.
type failingReader struct {
	r     io.Reader
	n     int64
	err   error
	onEnd func()
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		if f.onEnd != nil {
			f.onEnd()
			f.onEnd = nil
		}
		return 0, f.err
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

var errSource = errors.New("source failed on purpose")

// checkNothing asserts that name is not visible and, once deleted, leaves
// no parts.
func checkNothing(t *testing.T, h Harness, s objectstore.Store, name string) {
	t.Helper()
	if _, err := s.Stat(ctx(t), name); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("after a failed Put, Stat(%s): %v, want ErrNotFound", name, err)
	}
	list, err := s.List(ctx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Fatalf("after a failed Put, List shows %v", names(list))
	}
	if h.Parts != nil {
		if err := s.Delete(ctx(t), name); err != nil {
			t.Fatal(err)
		}
		if left := h.Parts(t, s); len(left) > 0 {
			t.Fatalf("after a failed Put and Delete(%s), parts are left: %v", name, left)
		}
	}
}

func testFailedPut(t *testing.T, h Harness) {
	sizes := []int64{1000}
	if h.PartSize > 0 {
		sizes = append(sizes, h.PartSize+h.PartSize/2) // fails in the second part
	} else {
		sizes = append(sizes, 20<<20)
	}
	for _, n := range sizes {
		s := h.New(t)
		name := fmt.Sprintf("failed/%d", n)
		_, err := s.Put(ctx(t), name, &failingReader{r: Data(3, n), n: n, err: errSource})
		if !errors.Is(err, errSource) {
			t.Fatalf("Put from a reader failing after %d bytes: %v, want the reader's error", n, err)
		}
		checkNothing(t, h, s, name)
	}
}

func testCancelledPut(t *testing.T, h Harness) {
	s := h.New(t)
	n := int64(3 << 20)
	if h.PartSize > 0 {
		n = h.PartSize + 1000
	}
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	// Cancel, then keep yielding data: the Put must notice the context.
	r := &failingReader{r: Data(4, n), n: n, err: io.EOF, onEnd: cancel}
	src := io.MultiReader(r, blockUntil(c))
	_, err := s.Put(c, "cancelled", src)
	if err == nil {
		t.Fatal("Put with a cancelled context succeeded")
	}
	checkNothing(t, h, s, "cancelled")
}

// blockUntil is a reader that yields data until ctx is done, then
// context.Canceled.
func blockUntil(c context.Context) io.Reader {
	return readerFunc(func(p []byte) (int, error) {
		select {
		case <-c.Done():
			return 0, c.Err()
		case <-time.After(10 * time.Millisecond):
			return copy(p, make([]byte, min(len(p), 4096))), nil
		}
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func testDownAtStart(t *testing.T, h Harness) {
	s := h.New(t)
	h.Proxy.SetDown(true)
	defer h.Proxy.SetDown(false)
	c, cancel := context.WithTimeout(ctx(t), 2*time.Minute)
	defer cancel()
	if _, err := s.Put(c, "down/put", strings.NewReader("x")); err == nil {
		t.Error("Put with the server down succeeded")
	} else if !strings.Contains(err.Error(), "down/put") {
		t.Errorf("Put's error %q does not name the object", err)
	}
	if _, err := s.Get(c, "down/get"); err == nil || errors.Is(err, objectstore.ErrNotFound) {
		t.Errorf("Get with the server down: %v, want an error that is not ErrNotFound", err)
	}
	if _, err := s.Stat(c, "down/stat"); err == nil || errors.Is(err, objectstore.ErrNotFound) {
		t.Errorf("Stat with the server down: %v, want an error that is not ErrNotFound", err)
	}
	if _, err := s.List(c, ""); err == nil {
		t.Error("List with the server down succeeded")
	}
	if err := s.Delete(c, "down/delete"); err == nil {
		t.Error("Delete with the server down succeeded")
	}
	h.Proxy.SetDown(false)
	mustPut(t, s, "down/after", strings.NewReader("back"))
	if got := string(mustGet(t, s, "down/after")); got != "back" {
		t.Fatalf("after the server came back, Get returned %q", got)
	}
}

func testDownMidStream(t *testing.T, h Harness) {
	s := h.New(t)
	n := int64(8 << 20)
	if h.PartSize > 0 {
		n = 2*h.PartSize + 1000
	}
	cut := n / 2
	r := io.MultiReader(&failingReader{r: Data(5, cut), n: cut, onEnd: func() { h.Proxy.SetDown(true) }, err: io.EOF}, Data(6, n-cut))
	c, cancel := context.WithTimeout(ctx(t), 2*time.Minute)
	defer cancel()
	_, err := s.Put(c, "down/mid", r)
	h.Proxy.SetDown(false)
	if err == nil {
		t.Fatal("Put succeeded although the connection was cut mid-stream")
	}
	if !strings.Contains(err.Error(), "down/mid") {
		t.Errorf("Put's error %q does not name the object", err)
	}
	checkNothing(t, h, s, "down/mid")

	// A Get cut mid-stream fails rather than returning a short object.
	body := make([]byte, 32<<20) // more than loopback socket buffers hold
	rand.Read(body)
	mustPut(t, s, "down/read", bytes.NewReader(body))
	rc, err := s.Get(ctx(t), "down/read")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, 64<<10)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	h.Proxy.SetDown(true)
	_, err = io.Copy(io.Discard, rc)
	h.Proxy.SetDown(false)
	if err == nil {
		t.Fatal("reading an object whose connection was cut ended without an error")
	}
}

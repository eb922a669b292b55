package format

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/controller/objectstore"
	"strata/controller/objectstore/local"
	"strata/controller/objectstore/storetest"
)

// Small chunks and segments, so a few KiB cross every boundary.
var small = &WriterOptions{ChunkSize: 1000, SegmentSize: 3 * (1000 + overhead)}

func testKEK(t testing.TB, b byte) *KEK {
	t.Helper()
	k, err := NewKEK(bytes.Repeat([]byte{b}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newLocal(t testing.TB) *local.Store {
	t.Helper()
	s, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func data(n int) []byte {
	b, _ := io.ReadAll(storetest.Data(uint64(n)+1, int64(n)))
	return b
}

// write stores plain under prefix, in writes of varying sizes.
func write(t testing.TB, s objectstore.Store, prefix string, kek *KEK, opts *WriterOptions, plain []byte) Manifest {
	t.Helper()
	w, err := NewWriter(context.Background(), s, prefix, kek, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i, rest := 0, plain; len(rest) > 0; i++ {
		n := min(len(rest), 1+(i*337)%2500)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	m := w.Manifest()
	m.BackupID = prefix
	return m
}

func read(s objectstore.Store, m *Manifest, kek *KEK) ([]byte, error) {
	r, err := NewReader(context.Background(), s, m, kek)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func TestRoundTrip(t *testing.T) {
	kek := testKEK(t, 1)
	for _, n := range []int{0, 1, 999, 1000, 1001, 3000, 3001, 3 * 1000 * 3, 3*1000*3 + 1, 50_000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := newLocal(t)
			plain := data(n)
			m := write(t, s, "backups/b1", kek, small, plain)
			if err := m.Check(); err != nil {
				t.Fatal(err)
			}
			chunks := max(1, (n+999)/1000)
			if want := (chunks + 2) / 3; len(m.Segments) != want {
				t.Errorf("%d bytes in %d chunks: %d segments, want %d", n, chunks, len(m.Segments), want)
			}
			if m.PlainBytes != int64(n) || m.StoredBytes != int64(n+chunks*overhead) {
				t.Errorf("plain %d stored %d, want %d and %d", m.PlainBytes, m.StoredBytes, n, n+chunks*overhead)
			}
			got, err := read(s, &m, kek)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("read back %d bytes that differ from the %d written", len(got), n)
			}
			if err := Verify(context.Background(), s, &m, kek); err != nil {
				t.Fatal(err)
			}
			if err := CheckPresent(context.Background(), s, &m); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The ciphertext is not the plaintext, and two backups of the same data
// share nothing (a fresh data key each).
func TestEncryptedWithFreshKeys(t *testing.T) {
	s := newLocal(t)
	kek := testKEK(t, 1)
	plain := bytes.Repeat([]byte("secret row; "), 1000)
	m1 := write(t, s, "b/1", kek, nil, plain)
	m2 := write(t, s, "b/2", kek, nil, plain)
	if bytes.Equal(m1.WrappedKey, m2.WrappedKey) || m1.Segments[0].SHA256 == m2.Segments[0].SHA256 {
		t.Fatal("two backups of the same data have the same wrapped key or ciphertext")
	}
	stored := get(t, s, m1.Segments[0].Name)
	if bytes.Contains(stored, []byte("secret row")) {
		t.Fatal("the stored segment contains the plaintext")
	}
}

func get(t testing.TB, s objectstore.Store, name string) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func put(t testing.TB, s objectstore.Store, name string, b []byte) {
	t.Helper()
	if _, err := s.Put(context.Background(), name, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

// wantCorrupt asserts err is ErrCorrupt naming segment i (from 1).
func wantCorrupt(t *testing.T, err error, m *Manifest, i int, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: read without error", what)
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s: %v, want ErrCorrupt", what, err)
	}
	name := m.Segments[i-1].Name
	if !strings.Contains(err.Error(), fmt.Sprintf("segment %d of %d (%s)", i, len(m.Segments), name)) {
		t.Fatalf("%s: error %q does not name segment %d (%s)", what, err, i, name)
	}
}

func TestFlippedByteNamesSegment(t *testing.T) {
	kek := testKEK(t, 1)
	plain := data(20_000)
	s := newLocal(t)
	m := write(t, s, "b/flip", kek, small, plain)
	for i := 1; i <= len(m.Segments); i++ {
		orig := get(t, s, m.Segments[i-1].Name)
		for _, off := range []int{0, len(orig) / 2, len(orig) - 1} {
			bad := bytes.Clone(orig)
			bad[off] ^= 0x40
			put(t, s, m.Segments[i-1].Name, bad)
			_, err := read(s, &m, kek)
			wantCorrupt(t, err, &m, i, fmt.Sprintf("segment %d, byte %d flipped", i, off))
		}
		put(t, s, m.Segments[i-1].Name, orig)
	}
	if _, err := read(s, &m, kek); err != nil {
		t.Fatalf("after restoring every segment: %v", err)
	}
}

func TestDeletedSegment(t *testing.T) {
	kek := testKEK(t, 1)
	s := newLocal(t)
	m := write(t, s, "b/del", kek, small, data(20_000))
	name := m.Segments[2].Name
	if err := s.Delete(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	_, err := read(s, &m, kek)
	wantCorrupt(t, err, &m, 3, "segment 3 deleted")
	if !strings.Contains(err.Error(), "missing") {
		t.Errorf("error %q does not say the segment is missing", err)
	}
	wantCorrupt(t, CheckPresent(context.Background(), s, &m), &m, 3, "CheckPresent with segment 3 deleted")
}

func TestTruncated(t *testing.T) {
	kek := testKEK(t, 1)
	s := newLocal(t)
	m := write(t, s, "b/trunc", kek, small, data(20_000))
	last := len(m.Segments)
	name := m.Segments[last-1].Name
	orig := get(t, s, name)

	// Bytes cut off the last segment: the manifest's size and digest, and
	// the chunk's tag, catch it.
	for _, cut := range []int{1, overhead, len(orig) / 2, len(orig) - 1} {
		put(t, s, name, orig[:len(orig)-cut])
		_, err := read(s, &m, kek)
		wantCorrupt(t, err, &m, last, fmt.Sprintf("last segment short by %d bytes", cut))
	}
	put(t, s, name, orig)
	if err := CheckPresent(context.Background(), s, &m); err != nil {
		t.Fatal(err)
	}

	// The last segment dropped from the store and from the manifest, sizes
	// and all: only the last-chunk mark can tell.
	cut := m
	cut.Segments = m.Segments[:last-1]
	cut.StoredBytes -= m.Segments[last-1].Size
	_, err := read(s, &cut, kek)
	wantCorrupt(t, err, &cut, last-1, "last segment dropped from the manifest")
	if !strings.Contains(err.Error(), "ends early") {
		t.Errorf("error %q does not say the stream ends early", err)
	}
	// The same inside a segment: its last whole chunk cut off, the
	// manifest rewritten to match.
	short := orig[:len(orig)-((len(orig)-1)%(1000+overhead)+1)]
	if len(short) == 0 {
		t.Fatal("test needs a last segment of two chunks or more")
	}
	put(t, s, name, short)
	m2 := m
	m2.Segments = append([]Segment(nil), m.Segments...)
	m2.Segments[last-1] = Segment{Name: name, Size: int64(len(short)), SHA256: sha(short)}
	m2.StoredBytes -= int64(len(orig) - len(short))
	_, err = read(s, &m2, kek)
	wantCorrupt(t, err, &m2, last, "last chunk cut, manifest rewritten")
}

func TestSwappedSegments(t *testing.T) {
	kek := testKEK(t, 1)
	s := newLocal(t)
	m := write(t, s, "b/swap", kek, small, data(20_000))
	a, b := get(t, s, m.Segments[0].Name), get(t, s, m.Segments[1].Name)
	put(t, s, m.Segments[0].Name, b)
	put(t, s, m.Segments[1].Name, a)
	_, err := read(s, &m, kek)
	wantCorrupt(t, err, &m, 1, "segments 1 and 2 swapped in the store")

	// Swapped in the manifest too, digests and all: the chunk counter in
	// the nonce still tells.
	m2 := m
	m2.Segments = append([]Segment(nil), m.Segments...)
	m2.Segments[0].SHA256, m2.Segments[1].SHA256 = m.Segments[1].SHA256, m.Segments[0].SHA256
	_, err = read(s, &m2, kek)
	wantCorrupt(t, err, &m2, 1, "segments swapped, manifest rewritten")
}

func TestSegmentFromAnotherBackup(t *testing.T) {
	kek := testKEK(t, 1)
	s := newLocal(t)
	m1 := write(t, s, "b/one", kek, small, data(10_000))
	m2 := write(t, s, "b/two", kek, small, data(10_000))
	m := m1
	m.Segments = append([]Segment(nil), m1.Segments...)
	m.Segments[1] = m2.Segments[1]
	_, err := read(s, &m, kek)
	wantCorrupt(t, err, &m, 2, "a segment of another backup")
}

func TestWrongKEK(t *testing.T) {
	s := newLocal(t)
	m := write(t, s, "b/key", testKEK(t, 1), small, data(5000))
	other := testKEK(t, 2)
	_, err := NewReader(context.Background(), s, &m, other)
	if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), m.KEKID) || !strings.Contains(err.Error(), other.ID()) {
		t.Fatalf("reading with another KEK: %v, want ErrWrongKey naming both keys", err)
	}
	// A manifest that claims the other key's id does not help.
	m.KEKID = other.ID()
	if _, err := NewReader(context.Background(), s, &m, other); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("with the KEK id rewritten: %v, want ErrWrongKey", err)
	}
	if err := Verify(context.Background(), s, &m, other); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Verify with another KEK: %v, want ErrWrongKey", err)
	}
}

func TestManifestStoredAndChecked(t *testing.T) {
	kek := testKEK(t, 1)
	s := newLocal(t)
	m := write(t, s, "b/man", kek, small, data(7000))
	m.ParentID, m.ChainPosition, m.Datastore, m.DatastoreVersion = "b/parent", 1, "mariadb", "10.11"
	m.Positions = map[string]string{"to_lsn": "123456"}
	if err := PutManifest(context.Background(), s, "b/man", &m); err != nil {
		t.Fatal(err)
	}
	got, err := GetManifest(context.Background(), s, "b/man")
	if err != nil {
		t.Fatal(err)
	}
	if got.ParentID != m.ParentID || got.Positions["to_lsn"] != "123456" || got.KEKID != m.KEKID || len(got.Segments) != len(m.Segments) {
		t.Fatalf("manifest read back %+v, stored %+v", got, m)
	}
	if _, err := read(s, got, kek); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(get(t, s, ManifestName("b/man"))), fmt.Sprintf("%x", bytes.Repeat([]byte{1}, KeySize))) {
		t.Fatal("the stored manifest contains the KEK")
	}
	bad := []func(m *Manifest){
		func(m *Manifest) { m.Version = 2 },
		func(m *Manifest) { m.Cipher = "aes-128-cbc" },
		func(m *Manifest) { m.ChunkSize = 0 },
		func(m *Manifest) { m.Segments = nil },
		func(m *Manifest) { m.Segments[0].SHA256 = "abc" },
		func(m *Manifest) { m.Segments[0].Name = "../x" },
		func(m *Manifest) { m.Segments[0].Size++ },
		func(m *Manifest) { m.StoredBytes++ },
		func(m *Manifest) { m.WrappedKey = nil },
	}
	for i, f := range bad {
		c := *got
		c.Segments = append([]Segment(nil), got.Segments...)
		f(&c)
		if err := c.Check(); err == nil {
			t.Errorf("bad manifest %d passes Check", i)
		}
	}
}

// failingStore fails the Put of one object name after reading part of it.
type failingStore struct {
	objectstore.Store
	name string
}

func (f failingStore) Put(ctx context.Context, name string, r io.Reader) (objectstore.Object, error) {
	if name == f.name {
		io.CopyN(io.Discard, r, 100)
		return objectstore.Object{}, errors.New("store refused on purpose")
	}
	return f.Store.Put(ctx, name, r)
}

func TestFailedUploadAndAbort(t *testing.T) {
	kek := testKEK(t, 1)
	s := newLocal(t)
	fs := failingStore{Store: s, name: SegmentName("b/fail", 3)}
	w, err := NewWriter(context.Background(), fs, "b/fail", kek, small)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(w, bytes.NewReader(data(30_000)))
	if err == nil {
		err = w.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "refused on purpose") || !strings.Contains(err.Error(), SegmentName("b/fail", 3)) {
		t.Fatalf("write with segment 3 refused: %v, want the store's error naming the segment", err)
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close after a failed write succeeded")
	}
	if objs, _ := s.List(context.Background(), "b/fail/"); len(objs) == 0 {
		t.Fatal("test needs uploaded segments before the failure")
	}
	if err := w.Abort(context.Background()); err != nil {
		t.Fatal(err)
	}
	if objs, _ := s.List(context.Background(), "b/fail/"); len(objs) != 0 {
		t.Fatalf("after Abort: %v left", objs)
	}
}

// blockingStore's Puts read nothing until their context ends.
type blockingStore struct{ objectstore.Store }

func (b blockingStore) Put(ctx context.Context, name string, r io.Reader) (objectstore.Object, error) {
	<-ctx.Done()
	return objectstore.Object{}, ctx.Err()
}

// Abort, from another goroutine, unblocks a Write stuck on the store.
func TestAbortUnblocksWrite(t *testing.T) {
	w, err := NewWriter(context.Background(), blockingStore{newLocal(t)}, "b/block", testKEK(t, 1), small)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(data(10_000))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := w.Abort(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a Write stuck on the store returned no error after Abort")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Write still blocked 30 s after Abort")
	}
}

func TestKEKFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", "backup.kek")
	k1, created, err := LoadOrCreateKEK(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreateKEK: created %v, %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("KEK file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	k2, created, err := LoadOrCreateKEK(path)
	if err != nil || created || k2.ID() != k1.ID() {
		t.Fatalf("second LoadOrCreateKEK: created %v, id %s vs %s, %v", created, k2.ID(), k1.ID(), err)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadKEK(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable KEK file: %v, want a refusal that says chmod 600", err)
	}
	os.WriteFile(path, []byte("not hex\n"), 0o600)
	os.Chmod(path, 0o600)
	if _, err := LoadKEK(path); err == nil || !strings.Contains(err.Error(), "64 hex digits") {
		t.Fatalf("a KEK file without a key: %v", err)
	}
}

func TestCollect(t *testing.T) {
	kek := testKEK(t, 1)
	s := newLocal(t)
	for _, id := range []string{"live1", "dead1", "dead2", "running"} {
		m := write(t, s, BackupPrefix("backups", id), kek, small, data(5000))
		if id != "dead2" {
			PutManifest(context.Background(), s, BackupPrefix("backups", id), &m)
		}
	}
	put(t, s, "other/keep", []byte("not a backup"))
	put(t, s, "backups/loose-file", []byte("not in a backup's directory"))
	live := map[string]bool{"live1": true, "running": true}

	// Too young: spared.
	res, err := Collect(context.Background(), s, "backups", live, CollectOptions{MinAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 0 || res.Spared == 0 {
		t.Fatalf("young objects: removed %v, spared %d; want nothing removed", res.Removed, res.Spared)
	}
	res, err = Collect(context.Background(), s, "backups", live, CollectOptions{MinAge: time.Minute, Now: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 2 || len(res.Removed["dead1"]) == 0 || len(res.Removed["dead2"]) == 0 {
		t.Fatalf("removed %v, want the objects of dead1 and dead2", res.Removed)
	}
	for _, p := range []string{"backups/dead1/", "backups/dead2/"} {
		if objs, _ := s.List(context.Background(), p); len(objs) != 0 {
			t.Errorf("%s still holds %d objects", p, len(objs))
		}
	}
	for _, p := range []string{"backups/live1/", "backups/running/", "other/keep", "backups/loose-file"} {
		if objs, _ := s.List(context.Background(), p); len(objs) == 0 {
			t.Errorf("%s was collected", p)
		}
	}
}

func TestDelete(t *testing.T) {
	s := newLocal(t)
	m := write(t, s, "b/gone", testKEK(t, 1), small, data(9000))
	PutManifest(context.Background(), s, "b/gone", &m)
	write(t, s, "b/gone2", testKEK(t, 1), small, data(10))
	if err := Delete(context.Background(), s, "b/gone"); err != nil {
		t.Fatal(err)
	}
	if objs, _ := s.List(context.Background(), "b/gone/"); len(objs) != 0 {
		t.Fatalf("left %v", objs)
	}
	if objs, _ := s.List(context.Background(), "b/gone2/"); len(objs) == 0 {
		t.Fatal("Delete(b/gone) removed b/gone2")
	}
}

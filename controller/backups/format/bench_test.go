package format

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"strata/ci/swift/swifttest"
	"strata/controller/objectstore"
	"strata/controller/objectstore/storetest"
	"strata/controller/objectstore/swift"
)

// memStore keeps objects in memory: the format's own cost, without a
// store's.
type memStore struct {
	mu   sync.Mutex
	objs map[string][]byte
}

func (m *memStore) Put(ctx context.Context, name string, r io.Reader) (objectstore.Object, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return objectstore.Object{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.objs == nil {
		m.objs = map[string][]byte{}
	}
	m.objs[name] = b
	return objectstore.Object{Name: name, Size: int64(len(b))}, nil
}

func (m *memStore) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, objectstore.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m *memStore) Stat(ctx context.Context, name string) (objectstore.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[name]
	if !ok {
		return objectstore.Object{}, fmt.Errorf("%s: %w", name, objectstore.ErrNotFound)
	}
	return objectstore.Object{Name: name, Size: int64(len(b))}, nil
}

func (m *memStore) Delete(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, name)
	return nil
}

func (m *memStore) List(ctx context.Context, prefix string) ([]objectstore.Object, error) {
	return nil, nil
}

// discardStore drops what it is given (for the writer's throughput).
type discardStore struct{ memStore }

func (d *discardStore) Put(ctx context.Context, name string, r io.Reader) (objectstore.Object, error) {
	n, err := io.Copy(io.Discard, r)
	return objectstore.Object{Name: name, Size: n}, err
}

// BenchmarkWrite: encrypt + segment + SHA-256, store excluded.
func BenchmarkWrite(b *testing.B) {
	kek := testKEK(b, 1)
	buf := make([]byte, 1<<20)
	io.ReadFull(storetest.Data(1, int64(len(buf))), buf)
	const size = 256 << 20
	b.SetBytes(size)
	for b.Loop() {
		w, err := NewWriter(context.Background(), &discardStore{}, "bench/w", kek, nil)
		if err != nil {
			b.Fatal(err)
		}
		for n := 0; n < size; n += len(buf) {
			if _, err := w.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRead: SHA-256 + decrypt + authenticate, from memory.
func BenchmarkRead(b *testing.B) {
	kek := testKEK(b, 1)
	s := &memStore{}
	const size = 256 << 20
	w, _ := NewWriter(context.Background(), s, "bench/r", kek, nil)
	io.Copy(w, storetest.Data(2, size))
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	m := w.Manifest()
	b.SetBytes(size)
	for b.Loop() {
		if err := Verify(context.Background(), s, &m, kek); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzReader: whatever is done to a stored segment, the reader returns
// the original plaintext or an error, never other bytes.
func FuzzReader(f *testing.F) {
	kek := testKEK(f, 1)
	plain := data(5000)
	s := &memStore{}
	w, _ := NewWriter(context.Background(), s, "fuzz/b", kek, small)
	w.Write(plain)
	if err := w.Close(); err != nil {
		f.Fatal(err)
	}
	m := w.Manifest()
	orig := map[string][]byte{}
	for k, v := range s.objs {
		orig[k] = v
	}
	f.Add(uint8(0), uint16(0), []byte{1})
	f.Add(uint8(1), uint16(100), []byte{})
	f.Add(uint8(2), uint16(1016), []byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, seg uint8, off uint16, patch []byte) {
		name := m.Segments[int(seg)%len(m.Segments)].Name
		b := bytes.Clone(orig[name])
		o := int(off) % (len(b) + 1)
		// Overwrite at o with patch; an empty patch truncates at o.
		if len(patch) == 0 {
			b = b[:o]
		} else {
			b = append(b[:o], append(patch, b[min(len(b), o+len(patch)):]...)...)
		}
		st := &memStore{objs: map[string][]byte{}}
		for k, v := range orig {
			st.objs[k] = v
		}
		st.objs[name] = b
		got, err := read(st, &m, kek)
		if err == nil && !bytes.Equal(got, plain) {
			t.Fatalf("segment %s changed at %d: read succeeded with other bytes", name, o)
		}
		if err == nil && !bytes.Equal(b, orig[name]) {
			t.Fatalf("segment %s changed at %d: read succeeded", name, o)
		}
	})
}

// BenchmarkSwift2GiB pushes 2 GiB of incompressible data through the
// Writer into the private Swift and back through Verify, and reports
// MB/s each way and the process's peak RSS in each phase (the controller
// must stay under 150 MiB). STRATA_BENCH_BYTES overrides the size.
//
//	go test -run '^$' -bench Swift2GiB -benchtime 1x ./controller/backups/format/
func BenchmarkSwift2GiB(b *testing.B) {
	size := int64(2 << 30)
	if v := os.Getenv("STRATA_BENCH_BYTES"); v != "" {
		size, _ = strconv.ParseInt(v, 10, 64)
	}
	srv := swifttest.Shared(b)
	b.Logf("swift: started in %.1f s, RSS %d MiB", srv.Seconds, srv.RSS()>>20)
	ctx := context.Background()
	client, err := swift.TempAuth(ctx, srv.AuthURL, srv.User, srv.Key)
	if err != nil {
		b.Fatal(err)
	}
	store, err := swift.New(ctx, client, swift.Options{Container: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	kek := testKEK(b, 1)
	for b.Loop() {
		resetPeakRSS()
		t0 := time.Now()
		w, err := NewWriter(ctx, store, "bench/2g", kek, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(w, storetest.Data(7, size)); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		up := time.Since(t0)
		upRSS := peakRSS()
		m := w.Manifest()
		resetPeakRSS()
		t0 = time.Now()
		if err := Verify(ctx, store, &m, kek); err != nil {
			b.Fatal(err)
		}
		down := time.Since(t0)
		downRSS := peakRSS()
		b.ReportMetric(float64(size)/up.Seconds()/1e6, "MB/s-write")
		b.ReportMetric(float64(size)/down.Seconds()/1e6, "MB/s-read")
		b.ReportMetric(float64(upRSS>>20), "MiB-peak-RSS-write")
		b.ReportMetric(float64(downRSS>>20), "MiB-peak-RSS-read")
		b.Logf("%d MiB in %d segments: write %.1f s (%.0f MB/s, peak RSS %d MiB), read+verify %.1f s (%.0f MB/s, peak RSS %d MiB); swift RSS now %d MiB",
			size>>20, len(m.Segments), up.Seconds(), float64(size)/up.Seconds()/1e6, upRSS>>20,
			down.Seconds(), float64(size)/down.Seconds()/1e6, downRSS>>20, srv.RSS()>>20)
		if upRSS > 150<<20 || downRSS > 150<<20 {
			b.Errorf("peak RSS %d MiB writing, %d MiB reading: over the 150 MiB budget", upRSS>>20, downRSS>>20)
		}
		if err := Delete(ctx, store, "bench/2g"); err != nil {
			b.Fatal(err)
		}
	}
}

// resetPeakRSS resets the kernel's high-water mark of this process's RSS.
func resetPeakRSS() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS is this process's RSS high-water mark (VmHWM), in bytes.
func peakRSS() int64 {
	data, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func TestMain(m *testing.M) { os.Exit(swifttest.Main(m)) }

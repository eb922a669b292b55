package disk

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// benchTree is $STRATA_BENCH_TREE (a real root tree, e.g. an mmdebstrap
// minbase; only read) or makeTree plus 64 MiB in 256 files of half random,
// half repetitive bytes.
func benchTree(b *testing.B) (string, IDs) {
	b.Helper()
	ids := DeriveIDs([]byte("bench"))
	if tree := os.Getenv("STRATA_BENCH_TREE"); tree != "" {
		return tree, ids
	}
	tree := makeTree(b, ids, true)
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 256<<10)
	for i := range 256 {
		for j := 0; j < len(buf); j += 8 {
			if j < len(buf)/2 {
				v := r.Uint64()
				for k := range 8 {
					buf[j+k] = byte(v >> (8 * k))
				}
			} else {
				copy(buf[j:], "strata..")
			}
		}
		writeFile(b, tree, fmt.Sprintf("/usr/lib/bench/%03d/data.bin", i), string(buf), 0o644)
	}
	return tree, ids
}

func BenchmarkAssemble(b *testing.B) {
	requireTools(b, assembleTools...)
	tree, ids := benchTree(b)
	u, err := ScanTree(context.Background(), tree)
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(b.TempDir(), "disk.raw")
	b.SetBytes(u.Bytes)
	for b.Loop() {
		if _, err := Assemble(context.Background(), Options{
			Tree: tree, Output: out, Bootable: true, IDs: ids,
			GrubDir: hostGrubDir, SourceDateEpoch: testEpoch,
		}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkConvert(b *testing.B) {
	requireTools(b, append(assembleTools, "qemu-img")...)
	tree, ids := benchTree(b)
	raw := filepath.Join(b.TempDir(), "disk.raw")
	if _, err := Assemble(context.Background(), Options{
		Tree: tree, Output: raw, Bootable: true, IDs: ids,
		GrubDir: hostGrubDir, SourceDateEpoch: testEpoch,
	}); err != nil {
		b.Fatal(err)
	}
	for _, alg := range []string{CompressionZstd, CompressionZlib} {
		b.Run(alg, func(b *testing.B) {
			out := filepath.Join(b.TempDir(), "disk.qcow2")
			for b.Loop() {
				if err := Convert(context.Background(), raw, out, "qcow2", ConvertOptions{Compression: alg}); err != nil {
					b.Fatal(err)
				}
			}
			st, err := os.Stat(out)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(st.Size())/float64(mib), "MiB-qcow2")
		})
	}
}

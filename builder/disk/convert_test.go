package disk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestConvertArgs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format string
		o      ConvertOptions
		want   string
	}{
		{"default zstd", "qcow2", ConvertOptions{}, "convert -f raw -O qcow2 -c -o compression_type=zstd in out"},
		{"zlib", "qcow2", ConvertOptions{Compression: "zlib"}, "convert -f raw -O qcow2 -c -o compression_type=zlib in out"},
		{"uncompressed", "qcow2", ConvertOptions{Uncompressed: true}, "convert -f raw -O qcow2 in out"},
		{"extra", "qcow2", ConvertOptions{Uncompressed: true, Extra: []string{"cluster_size=2M", "preallocation=metadata"}},
			"convert -f raw -O qcow2 -o cluster_size=2M -o preallocation=metadata in out"},
		{"vmdk", "vmdk", ConvertOptions{Extra: []string{"subformat=streamOptimized"}}, "convert -f raw -O vmdk -o subformat=streamOptimized in out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, err := convertArgs("in", "out", tc.format, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(args, " "); got != tc.want {
				t.Errorf("args = %s\nwant   %s", got, tc.want)
			}
		})
	}
}

func TestConvertArgsRejects(t *testing.T) {
	for _, tc := range []struct {
		format string
		o      ConvertOptions
	}{
		{"qed", ConvertOptions{}},
		{"qcow2", ConvertOptions{Compression: "lz4"}},
		{"qcow2", ConvertOptions{Uncompressed: true, Compression: "zlib"}},
		{"vhdx", ConvertOptions{Compression: "zstd"}},
		{"qcow2", ConvertOptions{Extra: []string{"-W"}}},
		{"qcow2", ConvertOptions{Extra: []string{""}}},
	} {
		if args, err := convertArgs("in", "out", tc.format, tc.o); err == nil {
			t.Errorf("convertArgs(%s, %+v) = %v, want an error", tc.format, tc.o, args)
		}
	}
	if !slices.Contains(ConvertFormats, "qcow2") || !slices.Contains(ConvertFormats, "raw") {
		t.Error("qcow2 and raw must be convert formats")
	}
}

type qemuImgInfo struct {
	Format         string `json:"format"`
	VirtualSize    int64  `json:"virtual-size"`
	FormatSpecific struct {
		Data struct {
			CompressionType string `json:"compression-type"`
		} `json:"data"`
	} `json:"format-specific"`
}

func TestConvert(t *testing.T) {
	requireTools(t, "qemu-img")
	raw, l, _, _ := assembleTree(t, "convert", true, 128*mib)
	dir := t.TempDir()
	compressed := regexp.MustCompile(`(\d+\.\d+)% compressed clusters`)
	for _, tc := range []struct {
		name, format string
		o            ConvertOptions
		compression  string // qcow2 header, "" for other formats
		compressed   bool
	}{
		{"qcow2-default", "qcow2", ConvertOptions{}, "zstd", true},
		{"qcow2-zlib", "qcow2", ConvertOptions{Compression: CompressionZlib}, "zlib", true},
		{"qcow2-uncompressed", "qcow2", ConvertOptions{Uncompressed: true, Extra: []string{"cluster_size=2M"}}, "zlib", false},
		{"vmdk", "vmdk", ConvertOptions{Extra: []string{"subformat=streamOptimized"}}, "", false},
		{"vhdx", "vhdx", ConvertOptions{}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name+"."+tc.format)
			if err := Convert(context.Background(), raw, out, tc.format, tc.o); err != nil {
				t.Fatal(err)
			}
			var info qemuImgInfo
			if err := json.Unmarshal([]byte(tool(t, "qemu-img", "info", "--output=json", "-f", tc.format, out)), &info); err != nil {
				t.Fatal(err)
			}
			if info.Format != tc.format || info.VirtualSize < l.Size {
				t.Errorf("qemu-img info: format %s virtual size %d, want %s and >= %d", info.Format, info.VirtualSize, tc.format, l.Size)
			}
			if got := info.FormatSpecific.Data.CompressionType; got != tc.compression {
				t.Errorf("compression-type %q, want %q", got, tc.compression)
			}
			if tc.format == "qcow2" {
				check := tool(t, "qemu-img", "check", "-f", "qcow2", out)
				m := compressed.FindStringSubmatch(check)
				if m == nil {
					t.Fatalf("qemu-img check:\n%s", check)
				}
				if (m[1] != "0.00") != tc.compressed {
					t.Errorf("%s%% compressed clusters, want compressed=%v", m[1], tc.compressed)
				}
			}
			cmp := tool(t, "qemu-img", "compare", "-f", "raw", "-F", tc.format, raw, out)
			if !strings.Contains(cmp, "Images are identical") {
				t.Errorf("qemu-img compare: %s", cmp)
			}
		})
	}
	// Same raw image, same options: same qcow2 bytes.
	a, b := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
	for _, p := range []string{a, b} {
		if err := Convert(context.Background(), raw, p, "qcow2", ConvertOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ab, bb) {
		t.Error("two conversions of one raw image differ")
	}
}

func TestConvertFailureRemovesOutput(t *testing.T) {
	requireTools(t, "qemu-img")
	out := filepath.Join(t.TempDir(), "out.qcow2")
	if err := os.WriteFile(out, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Convert(context.Background(), filepath.Join(t.TempDir(), "missing.raw"), out, "qcow2", ConvertOptions{})
	if err == nil || !strings.Contains(err.Error(), "qemu-img") {
		t.Fatalf("err = %v, want a qemu-img failure", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed Convert left %s behind", out)
	}
}

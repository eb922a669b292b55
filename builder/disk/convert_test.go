package disk

import (
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

package disk

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Compression algorithms for qcow2 clusters.
const (
	// CompressionZstd is the default: about 7x faster than zlib for the
	// same size; qemu >= 5.1 reads it.
	CompressionZstd = "zstd"
	// CompressionZlib is readable by every qemu that reads qcow2 v3.
	CompressionZlib = "zlib"
)

// ConvertFormats lists the formats Convert writes.
var ConvertFormats = []string{"qcow2", "raw", "vmdk", "vhdx", "vpc", "vdi"}

// ConvertOptions tune Convert. The zero value writes zstd-compressed qcow2.
type ConvertOptions struct {
	// Uncompressed writes qcow2 clusters as they are (DIB's -u).
	Uncompressed bool
	// Compression is CompressionZstd ("" too) or CompressionZlib; qcow2
	// only.
	Compression string
	// Extra are qemu-img -o creation options passed through, e.g.
	// "cluster_size=2M" or "subformat=streamOptimized" for vmdk (DIB's
	// --qemu-img-options, split on commas).
	Extra []string
}

// Convert converts the raw image raw into out in format (one of
// ConvertFormats) with qemu-img. out is created or truncated, and removed
// on failure.
func Convert(ctx context.Context, raw, out, format string, o ConvertOptions) (err error) {
	args, err := convertArgs(raw, out, format, o)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(out)
		}
	}()
	if _, err := run(ctx, toolEnv(), "qemu-img", args...); err != nil {
		return fmt.Errorf("convert to %s: %w", format, err)
	}
	return nil
}

func convertArgs(raw, out, format string, o ConvertOptions) ([]string, error) {
	if !slices.Contains(ConvertFormats, format) {
		return nil, fmt.Errorf("convert: format %q not one of %s", format, strings.Join(ConvertFormats, ", "))
	}
	args := []string{"convert", "-f", "raw", "-O", format}
	if format == "qcow2" {
		if !o.Uncompressed {
			alg := o.Compression
			if alg == "" {
				alg = CompressionZstd
			}
			if alg != CompressionZstd && alg != CompressionZlib {
				return nil, fmt.Errorf("convert: compression %q: want %s or %s", alg, CompressionZstd, CompressionZlib)
			}
			args = append(args, "-c", "-o", "compression_type="+alg)
		} else if o.Compression != "" {
			return nil, fmt.Errorf("convert: compression %q with Uncompressed set", o.Compression)
		}
	} else if o.Compression != "" {
		return nil, fmt.Errorf("convert: compression applies to qcow2 only, not %s", format)
	}
	for _, e := range o.Extra {
		if e == "" || strings.HasPrefix(e, "-") {
			return nil, fmt.Errorf("convert: qemu-img option %q is not a -o key=value", e)
		}
		args = append(args, "-o", e)
	}
	return append(args, raw, out), nil
}

// Package imagecheck decides whether a disk image is safe to store and to
// boot: one checker for every path that takes an image (the controller's
// image store and its Glance API, publishing, the Nova path before boot,
// the local qemu driver opening a cached image).
//
// A qcow2 file is not just data: its header may name a backing file or an
// external data file anywhere on the host that opens it, and qemu then
// reads (and, for a guest's writes, writes) that file — the CVE-2024-32498
// class (`qemu-img create -f qcow2 -o data_file=/etc/shadow,data_file_raw=on`).
// A file declared raw may really be a qcow2 or VMDK whose header does the
// same once something probes its format. So an image is refused when it has
// a backing file, an external data file, encryption, or a format other than
// the one declared.
//
// The header is parsed here first, in Go, and qemu-img only sees files
// whose header is clean (qemu-img info opens a data file to describe it);
// then `qemu-img info --output=json` must agree, with the format forced and
// probed. Streams (an upload passing through, a range read of a Glance
// image) get the header check alone, on their first HeaderSize bytes.
//
// It must not modify an image, and it knows nothing of stores or drivers.
package imagecheck

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// ErrRefused is wrapped by every refusal: the image is not one strata
// stores or boots.
var ErrRefused = errors.New("image refused")

// HeaderSize is how much of an image the header check reads: a qcow2
// header and its extensions live in the first cluster (64 KiB by default;
// an extension beyond what was read is refused, never skipped).
const HeaderSize = 64 << 10

// Formats are the disk formats strata stores and boots.
var Formats = []string{"qcow2", "raw"}

// Info is what the check learned about an image.
type Info struct {
	Format      string
	VirtualSize int64
}

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// qcow2 header fields and extensions (qemu's docs/interop/qcow2.txt).
const (
	qcowMagic          = "QFI\xfb"
	extEnd             = 0x00000000
	extBackingFormat   = 0xe2792aca
	extFeatureNames    = 0x6803f857
	extBitmaps         = 0x23852875
	extFullDiskCrypt   = 0x0537be77
	extExternalData    = 0x44415441
	incompatDirty      = 1 << 0
	incompatCorrupt    = 1 << 1
	incompatDataFile   = 1 << 2
	incompatCompress   = 1 << 3
	incompatExtendedL2 = 1 << 4
	incompatKnown      = incompatDirty | incompatCorrupt | incompatDataFile | incompatCompress | incompatExtendedL2
)

// otherFormats are the magic numbers of formats qemu probes, besides
// qcow2: a file declared raw that starts with one is something else.
var otherFormats = []struct {
	name  string
	off   int
	magic string
}{
	{"qcow2 or qcow", 0, qcowMagic},
	{"qed", 0, "QED\x00"},
	{"vmdk", 0, "KDMV"},
	{"vmdk (COWD)", 0, "COWD"},
	{"vmdk (descriptor)", 0, "# Disk DescriptorFile"},
	{"vdi", 0x40, "\x7f\x10\xda\xbe"},
	{"vhd", 0, "conectix"},
	{"vhdx", 0, "vhdxfile"},
	{"luks", 0, "LUKS\xba\xbe"},
	{"parallels", 0, "WithoutFreeSpace"},
	{"parallels", 0, "WithouFreSpacExt"},
	{"bochs", 0, "Bochs Virtual HD Image"},
	{"cloop", 0, "#!/bin/sh\n#V2.0 Format"},
}

// Header checks an image's first bytes (HeaderSize of them, or the whole
// image if it is shorter) against its declared format.
func Header(head []byte, declared string) error {
	switch declared {
	case "raw":
		for _, f := range otherFormats {
			if len(head) >= f.off+len(f.magic) && string(head[f.off:f.off+len(f.magic)]) == f.magic {
				return refuse("declared raw, but its header is %s's", f.name)
			}
		}
		return nil
	case "qcow2":
		return qcow2Header(head)
	default:
		return refuse("disk format %q: want one of %s", declared, strings.Join(Formats, ", "))
	}
}

func qcow2Header(h []byte) error {
	if len(h) < 72 || string(h[:4]) != qcowMagic {
		return refuse("declared qcow2, but it has no qcow2 header")
	}
	be := binary.BigEndian
	version := be.Uint32(h[4:])
	if version != 2 && version != 3 {
		return refuse("qcow2 version %d: want 2 or 3", version)
	}
	if off, size := be.Uint64(h[8:]), be.Uint32(h[16:]); off != 0 || size != 0 {
		name := ""
		if off < uint64(len(h)) && size <= 1023 && off+uint64(size) <= uint64(len(h)) {
			name = " " + fmt.Sprintf("%q", h[off:off+uint64(size)])
		}
		return refuse("it has a backing file%s: register a standalone image (qemu-img convert -O qcow2)", name)
	}
	if be.Uint32(h[32:]) != 0 {
		return refuse("it is encrypted (qcow2 crypt method %d)", be.Uint32(h[32:]))
	}
	extStart := uint64(72)
	if version == 3 {
		if len(h) < 104 {
			return refuse("truncated qcow2 v3 header")
		}
		incompat := be.Uint64(h[72:])
		if incompat&incompatDataFile != 0 {
			return refuse("it keeps its data in an external data file: register a standalone image (qemu-img convert -O qcow2)")
		}
		if incompat&^uint64(incompatKnown) != 0 {
			return refuse("unknown qcow2 incompatible features %#x", incompat&^uint64(incompatKnown))
		}
		extStart = uint64(be.Uint32(h[100:]))
		if extStart < 104 || extStart%8 != 0 {
			return refuse("qcow2 header length %d is not valid", extStart)
		}
	}
	// Header extensions follow the header, each type, length, data padded
	// to 8 bytes, up to an end marker.
	for off := extStart; ; {
		if off+8 > uint64(len(h)) {
			return refuse("the qcow2 header extensions run past the first %d bytes", len(h))
		}
		typ, n := be.Uint32(h[off:]), uint64(be.Uint32(h[off+4:]))
		switch typ {
		case extEnd:
			return nil
		case extExternalData:
			return refuse("it names an external data file: register a standalone image (qemu-img convert -O qcow2)")
		case extFullDiskCrypt:
			return refuse("it is encrypted (qcow2 full disk encryption header)")
		}
		off += 8 + (n+7)/8*8
	}
}

// ReadHeader reads the first HeaderSize bytes of r (fewer only at its
// end).
func ReadHeader(r io.Reader) ([]byte, error) {
	head := make([]byte, HeaderSize)
	n, err := io.ReadFull(r, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return head[:n], nil
}

// Stream checks the header of the image read from r, then returns a reader
// that yields the whole image: nothing reaches the caller before the
// header passed.
func Stream(r io.Reader, declared string) (io.Reader, error) {
	head, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	if err := Header(head, declared); err != nil {
		return nil, err
	}
	return io.MultiReader(bytes.NewReader(head), r), nil
}

// Options tune File.
type Options struct {
	// QemuImg is the qemu-img binary (default "qemu-img").
	QemuImg string
	// Shared opens the image with qemu-img -U: it is in use (a running
	// VM's backing file).
	Shared bool
	// Timeout bounds each qemu-img run (default 60s).
	Timeout time.Duration
}

// File checks the image at path, declared as format: the header, then
// qemu-img info with the format forced and probed.
func File(ctx context.Context, path, declared string, opts Options) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, err
	}
	head, err := ReadHeader(f)
	f.Close()
	if err != nil {
		return Info{}, fmt.Errorf("reading %s: %w", path, err)
	}
	if err := Header(head, declared); err != nil {
		return Info{}, err
	}
	forced, err := qemuInfo(ctx, path, declared, opts)
	if err != nil {
		return Info{}, err
	}
	if err := forced.refusal(declared); err != nil {
		return Info{}, err
	}
	// Every file reads as raw when told so: probing says what it really is.
	probed, err := qemuInfo(ctx, path, "", opts)
	if err != nil {
		return Info{}, err
	}
	if err := probed.refusal(declared); err != nil {
		return Info{}, err
	}
	if forced.VirtualSize <= 0 {
		return Info{}, refuse("qemu-img reports no virtual size")
	}
	return Info{Format: forced.Format, VirtualSize: forced.VirtualSize}, nil
}

type qemuImgInfo struct {
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	BackingFile     string `json:"backing-filename"`
	FullBackingFile string `json:"full-backing-filename"`
	Encrypted       bool   `json:"encrypted"`
	FormatSpecific  *struct {
		Data map[string]json.RawMessage `json:"data"`
	} `json:"format-specific"`
}

func (i qemuImgInfo) refusal(declared string) error {
	switch {
	case i.Format != declared:
		return refuse("declared %s, but qemu-img reads it as %s", declared, i.Format)
	case i.BackingFile != "" || i.FullBackingFile != "":
		return refuse("it has a backing file (%s): register a standalone image (qemu-img convert -O qcow2)", i.BackingFile+i.FullBackingFile)
	case i.Encrypted:
		return refuse("it is encrypted")
	}
	if i.FormatSpecific != nil {
		if df, ok := i.FormatSpecific.Data["data-file"]; ok {
			return refuse("it keeps its data in an external data file (%s): register a standalone image (qemu-img convert -O qcow2)", df)
		}
	}
	return nil
}

func qemuInfo(ctx context.Context, path, format string, opts Options) (qemuImgInfo, error) {
	bin := opts.QemuImg
	if bin == "" {
		bin = "qemu-img"
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := []string{"info", "--output=json"}
	if opts.Shared {
		args = append(args, "-U")
	}
	if format != "" {
		args = append(args, "-f", format)
	}
	cmd := exec.CommandContext(ctx, bin, append(args, "--", path)...)
	// Nothing qemu-img might open relative to its working directory.
	cmd.Dir = "/"
	out, err := cmd.Output()
	var info qemuImgInfo
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if format == "" {
				format = "any format"
			}
			return info, refuse("qemu-img cannot read it as %s: %s", format, strings.TrimSpace(string(ee.Stderr)))
		}
		return info, fmt.Errorf("qemu-img (install qemu-utils with `ci/deps.sh build`): %w", err)
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return info, fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	return info, nil
}

package disk

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// fakeBootImg looks like GRUB's boot.img where patchMBR cares and is
// non-zero everywhere else, so copied and kept regions can be told apart.
func fakeBootImg() []byte {
	b := bytes.Repeat([]byte{0xa5}, 512)
	b[0], b[1], b[2] = 0xeb, 0x63, 0x90
	binary.LittleEndian.PutUint64(b[0x5c:], 1)
	b[0x64] = 0x00
	b[0x66], b[0x67] = 0xeb, 0x05
	b[510], b[511] = 0x55, 0xaa
	return b
}

func TestPatchMBR(t *testing.T) {
	mbr := protectiveMBR(4194304)
	mbr[0x10] = 0x42 // pretend a BPB byte is there: it must survive
	binary.LittleEndian.PutUint32(mbr[0x1b8:], 0x12345678)
	boot := fakeBootImg()
	orig := bytes.Clone(mbr)
	out, err := patchMBR(mbr, boot, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// Code before the BPB and after it (up to the kernel sector) is boot.img's.
	if !bytes.Equal(out[:3], boot[:3]) || !bytes.Equal(out[0x5a:0x5c], boot[0x5a:0x5c]) {
		t.Error("jump or post-BPB bytes not from boot.img")
	}
	if !bytes.Equal(out[3:0x5a], mbr[3:0x5a]) {
		t.Error("BPB area not kept from the disk")
	}
	if got := binary.LittleEndian.Uint64(out[0x5c:]); got != 2048 {
		t.Errorf("kernel sector %d, want 2048", got)
	}
	if out[0x64] != 0xff {
		t.Errorf("boot drive %#x, want 0xff", out[0x64])
	}
	if out[0x66] != 0x90 || out[0x67] != 0x90 {
		t.Errorf("drive check % x, want 90 90", out[0x66:0x68])
	}
	if !bytes.Equal(out[0x68:0x1b8], boot[0x68:0x1b8]) || !bytes.Equal(out[0x64+1:0x66], boot[0x65:0x66]) {
		t.Error("boot code after the patched fields differs from boot.img")
	}
	if !bytes.Equal(out[0x1b8:], mbr[0x1b8:]) {
		t.Error("disk signature, partition table or boot signature not kept")
	}
	if !bytes.Equal(mbr, orig) {
		t.Error("patchMBR modified its input")
	}
}

func TestPatchMBRRejects(t *testing.T) {
	mbr := protectiveMBR(4194304)
	bad := fakeBootImg()
	bad[0x66] = 0x90 // already patched or not GRUB's
	if _, err := patchMBR(mbr, bad, 2048); err == nil || !strings.Contains(err.Error(), "not recognised") {
		t.Errorf("unrecognised boot.img: err = %v", err)
	}
	if _, err := patchMBR(mbr, fakeBootImg()[:446], 2048); err == nil {
		t.Error("short boot.img accepted")
	}
	noSig := fakeBootImg()
	noSig[511] = 0
	if _, err := patchMBR(mbr, noSig, 2048); err == nil {
		t.Error("boot.img without 55aa accepted")
	}
}

// fakeCoreImg is n sectors plus tail bytes long with diskboot.img's
// default blocklist (start 2, len as grub-mkimage fills it, segment 0x820).
func fakeCoreImg(n int, tail int) []byte {
	c := bytes.Repeat([]byte{0x5a}, n*512+tail)
	clear(c[0x1e8:0x200])
	sectors := n
	if tail > 0 {
		sectors++
	}
	binary.LittleEndian.PutUint64(c[0x1f4:], 2)
	binary.LittleEndian.PutUint16(c[0x1fc:], uint16(sectors-1))
	binary.LittleEndian.PutUint16(c[0x1fe:], 0x820)
	binary.LittleEndian.PutUint16(c[512+0x14:], 0x1234) // no-RS length
	return c
}

func TestPatchCoreImg(t *testing.T) {
	core := fakeCoreImg(100, 17) // 101 sectors, last one partial
	orig := bytes.Clone(core)
	out, err := patchCoreImg(core, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 101*512 {
		t.Fatalf("padded to %d bytes, want %d", len(out), 101*512)
	}
	if !bytes.Equal(core, orig) {
		t.Error("patchCoreImg modified its input")
	}
	le := binary.LittleEndian
	if s, n, seg := le.Uint64(out[0x1f4:]), le.Uint16(out[0x1fc:]), le.Uint16(out[0x1fe:]); s != 2049 || n != 100 || seg != 0x820 {
		t.Errorf("blocklist start %d len %d seg %#x, want 2049 100 0x820", s, n, seg)
	}
	if !bytes.Equal(out[0x1e8:0x1f4], make([]byte, 12)) {
		t.Error("terminator entry not zero")
	}
	if !bytes.Equal(out[:0x1e8], orig[:0x1e8]) || !bytes.Equal(out[512:len(orig)], orig[512:]) {
		t.Error("bytes outside the blocklist changed")
	}
	if !bytes.Equal(out[len(orig):], make([]byte, len(out)-len(orig))) {
		t.Error("padding not zero")
	}
}

func TestPatchCoreImgRejects(t *testing.T) {
	badSeg := fakeCoreImg(10, 0)
	binary.LittleEndian.PutUint16(badSeg[0x1fe:], 0x1000)
	if _, err := patchCoreImg(badSeg, 2048); err == nil || !strings.Contains(err.Error(), "segment") {
		t.Errorf("wrong segment: err = %v", err)
	}
	if _, err := patchCoreImg(fakeCoreImg(889, 0), 2048); err == nil || !strings.Contains(err.Error(), "at most 888") {
		t.Errorf("oversized core: err = %v", err)
	}
	if _, err := patchCoreImg(make([]byte, 600), 2048); err == nil {
		t.Error("tiny core accepted")
	}
	noRS := fakeCoreImg(10, 0)
	binary.LittleEndian.PutUint16(noRS[512+0x14:], 0xffff)
	if _, err := patchCoreImg(noRS, 2048); err == nil || !strings.Contains(err.Error(), "mismatch") {
		t.Errorf("version mismatch: err = %v", err)
	}
}

func TestGrubEarlyConfig(t *testing.T) {
	u := mustUUID("0f8e1c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b")
	efi := grubEarlyConfig(u, false)
	for _, want := range []string{
		"search --no-floppy --fs-uuid --set=root 0f8e1c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
		"set prefix=($root)/boot/grub",
		"configfile $prefix/grub.cfg",
	} {
		if !strings.Contains(efi, want) {
			t.Errorf("early config lacks %q:\n%s", want, efi)
		}
	}
	// GRUB runs the embedded config with its rescue parser: plain
	// commands only.
	for _, kw := range []string{"if ", "then", "else", "fi\n", "&&", "||"} {
		if strings.Contains(efi, kw) {
			t.Errorf("early config uses %q, which GRUB's rescue parser does not know:\n%s", kw, efi)
		}
	}
	if strings.Contains(efi, "serial") {
		t.Error("UEFI early config sets up serial (OVMF already mirrors its console)")
	}
	if bios := grubEarlyConfig(u, true); !strings.HasPrefix(bios, "serial --unit=0 --speed=115200\n") {
		t.Errorf("BIOS early config does not start with the serial console:\n%s", bios)
	}
}

package disk

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// UUID is an RFC 4122 UUID in its canonical (big-endian, string-order) byte
// layout. GPT stores GUIDs mixed-endian; see gptBytes.
type UUID [16]byte

// String returns the lower-case 8-4-4-4-12 form used by blkid, fstab and
// the kernel command line.
func (u UUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], u[10:16])
	return string(b[:])
}

// IsZero reports whether u is all zeroes.
func (u UUID) IsZero() bool { return u == UUID{} }

// ParseUUID parses the 8-4-4-4-12 form, in either case.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, fmt.Errorf("parse UUID %q: want 8-4-4-4-12 hex digits", s)
	}
	h := strings.ReplaceAll(s, "-", "")
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return UUID{}, fmt.Errorf("parse UUID %q: %w", s, err)
	}
	return u, nil
}

// gptBytes returns u as GPT stores it: the first three fields little-endian.
func (u UUID) gptBytes() [16]byte {
	var g [16]byte
	g[0], g[1], g[2], g[3] = u[3], u[2], u[1], u[0]
	g[4], g[5] = u[5], u[4]
	g[6], g[7] = u[7], u[6]
	copy(g[8:], u[8:])
	return g
}

func mustUUID(s string) UUID {
	u, err := ParseUUID(s)
	if err != nil {
		panic(err)
	}
	return u
}

// GPT partition type GUIDs.
var (
	// TypeBIOSBoot holds GRUB's core.img on a GPT disk booted by a BIOS.
	TypeBIOSBoot = mustUUID("21686148-6449-6e6f-744e-656564454649")
	// TypeESP is the EFI system partition.
	TypeESP = mustUUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
	// TypeLinuxData is the generic Linux filesystem type (DIB's 8300),
	// chosen over the x86-64 root type of the Discoverable Partitions
	// Specification so systemd-gpt-auto-generator leaves the disk alone:
	// fstab and root= say what is mounted where.
	TypeLinuxData = mustUUID("0fc63daf-8483-4772-8e79-3d69d8477de4")
)

// IDs are the identifiers an image carries. They are derived from a seed so
// that the same build inputs give the same bytes; two images built from the
// same seed share them, so booting both on one machine confuses
// search-by-UUID: use a seed that includes what makes an image distinct
// (e.g. the build-input hash).
type IDs struct {
	Disk         UUID   // GPT disk GUID
	BIOSBootPart UUID   // unique GUID of the BIOS-boot partition
	ESPPart      UUID   // unique GUID of the EFI system partition
	RootPart     UUID   // unique GUID of the root partition (PARTUUID)
	RootFS       UUID   // ext4 filesystem UUID (root=UUID=..., fstab)
	RootHashSeed UUID   // ext4 directory-hash seed
	ESPVolumeID  uint32 // vfat volume serial (fstab UUID=XXXX-XXXX)
}

// DeriveIDs derives every identifier from seed with SHA-256, each under its
// own label; UUIDs get the version-4 and RFC 4122 variant bits so tools that
// check them accept them.
func DeriveIDs(seed []byte) IDs {
	derive := func(label string) [32]byte {
		h := sha256.New()
		h.Write([]byte("strata/builder/disk/v1\x00"))
		h.Write([]byte(label))
		h.Write([]byte{0})
		h.Write(seed)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		return sum
	}
	uuid := func(label string) UUID {
		sum := derive(label)
		var u UUID
		copy(u[:], sum[:16])
		u[6] = u[6]&0x0f | 0x40
		u[8] = u[8]&0x3f | 0x80
		return u
	}
	volSum := derive("esp-volume-id")
	vol := binary.BigEndian.Uint32(volSum[:4])
	if vol == 0 {
		vol = 1 // 0000-0000 reads as "no serial" to some tools
	}
	return IDs{
		Disk:         uuid("disk"),
		BIOSBootPart: uuid("part-bios-boot"),
		ESPPart:      uuid("part-esp"),
		RootPart:     uuid("part-root"),
		RootFS:       uuid("rootfs"),
		RootHashSeed: uuid("rootfs-hash-seed"),
		ESPVolumeID:  vol,
	}
}

// ESPVolumeIDString returns the ESP serial as blkid and fstab spell it,
// "XXXX-XXXX" in upper-case hex.
func (ids IDs) ESPVolumeIDString() string {
	return fmt.Sprintf("%04X-%04X", ids.ESPVolumeID>>16, ids.ESPVolumeID&0xffff)
}

func (ids IDs) validate(bootable bool) error {
	if ids.RootFS.IsZero() || ids.RootHashSeed.IsZero() {
		return fmt.Errorf("IDs: root filesystem UUID and hash seed must be set (use DeriveIDs)")
	}
	if bootable && (ids.Disk.IsZero() || ids.BIOSBootPart.IsZero() || ids.ESPPart.IsZero() || ids.RootPart.IsZero() || ids.ESPVolumeID == 0) {
		return fmt.Errorf("IDs: a bootable image needs disk, partition and ESP ids (use DeriveIDs)")
	}
	return nil
}

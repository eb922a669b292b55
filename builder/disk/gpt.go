package disk

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"unicode/utf16"
)

// SectorSize is the logical sector size of every image this package writes.
const SectorSize = 512

const (
	gptEntryCount   = 128
	gptEntrySize    = 128
	gptArraySectors = gptEntryCount * gptEntrySize / SectorSize // 32
	gptHeaderSize   = 92
	// gptFirstUsable is the first LBA after the protective MBR, the primary
	// header and the primary entry array.
	gptFirstUsable = 2 + gptArraySectors
	// gptTailSectors is what the backup entry array and header take at the
	// end of the disk.
	gptTailSectors = gptArraySectors + 1
)

// Partition is one GPT entry. LBAs are inclusive, in 512-byte sectors.
type Partition struct {
	Number     int // 1-based, as the kernel numbers it (sda1, vda3)
	Name       string
	Type       UUID
	GUID       UUID
	FirstLBA   uint64
	LastLBA    uint64
	Attributes uint64
}

// Offset returns the partition's first byte in the image.
func (p Partition) Offset() int64 { return int64(p.FirstLBA) * SectorSize }

// Size returns the partition's length in bytes.
func (p Partition) Size() int64 { return int64(p.LastLBA-p.FirstLBA+1) * SectorSize }

// gptLastUsable returns the last LBA a partition may use on a disk of
// totalSectors sectors.
func gptLastUsable(totalSectors uint64) uint64 { return totalSectors - gptTailSectors - 1 }

// encodeGPT returns the first 34 sectors of the disk (protective MBR without
// boot code, primary header, primary entry array) and the last 33 sectors
// (backup entry array, backup header), to be written at LBA 0 and at LBA
// totalSectors-33.
func encodeGPT(disk UUID, totalSectors uint64, parts []Partition) (head, tail []byte, err error) {
	if totalSectors < gptFirstUsable+gptTailSectors+1 {
		return nil, nil, fmt.Errorf("gpt: disk of %d sectors is too small", totalSectors)
	}
	if len(parts) > gptEntryCount {
		return nil, nil, fmt.Errorf("gpt: %d partitions, at most %d", len(parts), gptEntryCount)
	}
	lastUsable := gptLastUsable(totalSectors)
	array := make([]byte, gptArraySectors*SectorSize)
	for i, p := range parts {
		if p.Number != i+1 {
			return nil, nil, fmt.Errorf("gpt: partition %q has number %d at index %d", p.Name, p.Number, i)
		}
		if p.FirstLBA < gptFirstUsable || p.LastLBA > lastUsable || p.FirstLBA > p.LastLBA {
			return nil, nil, fmt.Errorf("gpt: partition %d (%s) LBA %d-%d outside usable %d-%d",
				p.Number, p.Name, p.FirstLBA, p.LastLBA, gptFirstUsable, lastUsable)
		}
		for _, q := range parts[:i] {
			if p.FirstLBA <= q.LastLBA && q.FirstLBA <= p.LastLBA {
				return nil, nil, fmt.Errorf("gpt: partitions %d and %d overlap", q.Number, p.Number)
			}
		}
		if p.Type.IsZero() || p.GUID.IsZero() {
			return nil, nil, fmt.Errorf("gpt: partition %d (%s) needs a type and a unique GUID", p.Number, p.Name)
		}
		name := utf16.Encode([]rune(p.Name))
		if len(name) > 36 {
			return nil, nil, fmt.Errorf("gpt: partition name %q longer than 36 UTF-16 units", p.Name)
		}
		e := array[i*gptEntrySize : (i+1)*gptEntrySize]
		t, g := p.Type.gptBytes(), p.GUID.gptBytes()
		copy(e[0:16], t[:])
		copy(e[16:32], g[:])
		binary.LittleEndian.PutUint64(e[32:], p.FirstLBA)
		binary.LittleEndian.PutUint64(e[40:], p.LastLBA)
		binary.LittleEndian.PutUint64(e[48:], p.Attributes)
		for j, c := range name {
			binary.LittleEndian.PutUint16(e[56+2*j:], c)
		}
	}
	arrayCRC := crc32.ChecksumIEEE(array)

	header := func(my, alternate, entries uint64) []byte {
		h := make([]byte, SectorSize)
		copy(h[0:8], "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000) // revision 1.0
		binary.LittleEndian.PutUint32(h[12:], gptHeaderSize)
		binary.LittleEndian.PutUint64(h[24:], my)
		binary.LittleEndian.PutUint64(h[32:], alternate)
		binary.LittleEndian.PutUint64(h[40:], gptFirstUsable)
		binary.LittleEndian.PutUint64(h[48:], lastUsable)
		d := disk.gptBytes()
		copy(h[56:72], d[:])
		binary.LittleEndian.PutUint64(h[72:], entries)
		binary.LittleEndian.PutUint32(h[80:], gptEntryCount)
		binary.LittleEndian.PutUint32(h[84:], gptEntrySize)
		binary.LittleEndian.PutUint32(h[88:], arrayCRC)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:gptHeaderSize]))
		return h
	}

	last := totalSectors - 1
	head = make([]byte, 0, gptFirstUsable*SectorSize)
	head = append(head, protectiveMBR(totalSectors)...)
	head = append(head, header(1, last, 2)...)
	head = append(head, array...)

	tail = make([]byte, 0, gptTailSectors*SectorSize)
	tail = append(tail, array...)
	tail = append(tail, header(last, 1, last-gptArraySectors)...)
	return head, tail, nil
}

// protectiveMBR returns the UEFI protective MBR: one partition of type 0xEE
// from LBA 1 covering the disk (or 2^32-1 sectors), not marked active, a
// zero disk signature and no boot code.
func protectiveMBR(totalSectors uint64) []byte {
	m := make([]byte, SectorSize)
	p := m[mbrPartitionTable:]
	p[0] = 0x00                      // not bootable
	p[1], p[2], p[3] = 0x00, 0x02, 0 // CHS of LBA 1
	p[4] = 0xee
	p[5], p[6], p[7] = 0xff, 0xff, 0xff // CHS "beyond 1024 cylinders"
	binary.LittleEndian.PutUint32(p[8:], 1)
	size := totalSectors - 1
	if size > 0xffffffff {
		size = 0xffffffff
	}
	binary.LittleEndian.PutUint32(p[12:], uint32(size))
	m[510], m[511] = 0x55, 0xaa
	return m
}

// MBR field offsets.
const (
	mbrDiskSignature  = 0x1b8
	mbrPartitionTable = 0x1be
)

package disk

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"
)

func testParts(ids IDs) []Partition {
	return []Partition{
		{Number: 1, Name: "BSP", Type: TypeBIOSBoot, GUID: ids.BIOSBootPart, FirstLBA: 2048, LastLBA: 4095},
		{Number: 2, Name: "ESP", Type: TypeESP, GUID: ids.ESPPart, FirstLBA: 4096, LastLBA: 135167},
		{Number: 3, Name: "root", Type: TypeLinuxData, GUID: ids.RootPart, FirstLBA: 135168, LastLBA: 4194270},
	}
}

func TestProtectiveMBR(t *testing.T) {
	m := protectiveMBR(4194304)
	if len(m) != 512 || m[510] != 0x55 || m[511] != 0xaa {
		t.Fatal("no boot signature")
	}
	if !bytes.Equal(m[:mbrPartitionTable], make([]byte, mbrPartitionTable)) {
		t.Error("protective MBR has boot code or a disk signature")
	}
	p := m[0x1be:]
	if p[0] != 0 || p[4] != 0xee {
		t.Errorf("entry 0: status %#x type %#x, want 0 and 0xee", p[0], p[4])
	}
	if lba := binary.LittleEndian.Uint32(p[8:]); lba != 1 {
		t.Errorf("start LBA %d, want 1", lba)
	}
	if n := binary.LittleEndian.Uint32(p[12:]); n != 4194303 {
		t.Errorf("size %d, want 4194303", n)
	}
	if !bytes.Equal(m[0x1ce:0x1fe], make([]byte, 48)) {
		t.Error("entries 1-3 not empty")
	}
	// Disks beyond 2 TiB: the size saturates.
	big := protectiveMBR(1 << 40)
	if n := binary.LittleEndian.Uint32(big[0x1be+12:]); n != 0xffffffff {
		t.Errorf("huge disk size %#x, want 0xffffffff", n)
	}
}

func TestEncodeGPT(t *testing.T) {
	ids := DeriveIDs([]byte("gpt"))
	const total = 4194304 // 2 GiB
	parts := testParts(ids)
	head, tail, err := encodeGPT(ids.Disk, total, parts)
	if err != nil {
		t.Fatal(err)
	}
	if len(head) != 34*512 || len(tail) != 33*512 {
		t.Fatalf("head %d bytes, tail %d bytes", len(head), len(tail))
	}
	array := head[1024:]
	if !bytes.Equal(tail[:32*512], array) {
		t.Error("backup entry array differs from the primary")
	}
	check := func(name string, h []byte, my, alt, entries uint64) {
		t.Helper()
		le := binary.LittleEndian
		if string(h[:8]) != "EFI PART" || le.Uint32(h[8:]) != 0x10000 || le.Uint32(h[12:]) != 92 {
			t.Errorf("%s: bad signature/revision/size", name)
		}
		c := make([]byte, 92)
		copy(c, h[:92])
		copy(c[16:20], []byte{0, 0, 0, 0})
		if got, want := le.Uint32(h[16:]), crc32.ChecksumIEEE(c); got != want {
			t.Errorf("%s: header CRC %#x, want %#x", name, got, want)
		}
		if got := [...]uint64{le.Uint64(h[24:]), le.Uint64(h[32:]), le.Uint64(h[40:]), le.Uint64(h[48:]), le.Uint64(h[72:])}; got != [...]uint64{my, alt, 34, total - 34, entries} {
			t.Errorf("%s: my/alt/first/last/entries = %v", name, got)
		}
		d := ids.Disk.gptBytes()
		if !bytes.Equal(h[56:72], d[:]) {
			t.Errorf("%s: disk GUID differs", name)
		}
		if le.Uint32(h[80:]) != 128 || le.Uint32(h[84:]) != 128 {
			t.Errorf("%s: entry count/size", name)
		}
		if got, want := le.Uint32(h[88:]), crc32.ChecksumIEEE(array); got != want {
			t.Errorf("%s: array CRC %#x, want %#x", name, got, want)
		}
		if !bytes.Equal(h[92:], make([]byte, 512-92)) {
			t.Errorf("%s: reserved bytes not zero", name)
		}
	}
	check("primary", head[512:1024], 1, total-1, 2)
	check("backup", tail[32*512:], total-1, 1, total-33)

	for i, p := range parts {
		e := array[i*128 : (i+1)*128]
		ty, g := p.Type.gptBytes(), p.GUID.gptBytes()
		if !bytes.Equal(e[:16], ty[:]) || !bytes.Equal(e[16:32], g[:]) {
			t.Errorf("entry %d: type/GUID differ", i)
		}
		if binary.LittleEndian.Uint64(e[32:]) != p.FirstLBA || binary.LittleEndian.Uint64(e[40:]) != p.LastLBA {
			t.Errorf("entry %d: LBAs differ", i)
		}
		var name []byte
		for _, r := range p.Name {
			name = append(name, byte(r), 0)
		}
		if !bytes.Equal(e[56:56+len(name)], name) || !bytes.Equal(e[56+len(name):], make([]byte, 72-len(name))) {
			t.Errorf("entry %d: name bytes % x", i, e[56:])
		}
	}
	if !bytes.Equal(array[3*128:], make([]byte, 125*128)) {
		t.Error("unused entries not zero")
	}
}

func TestEncodeGPTRejects(t *testing.T) {
	ids := DeriveIDs([]byte("gpt"))
	const total = 4194304
	for _, tc := range []struct {
		name   string
		mutate func([]Partition) []Partition
		want   string
	}{
		{"overlap", func(p []Partition) []Partition { p[1].FirstLBA = 4000; return p }, "overlap"},
		{"before first usable", func(p []Partition) []Partition { p[0].FirstLBA = 33; return p }, "outside usable"},
		{"over backup GPT", func(p []Partition) []Partition { p[2].LastLBA = total - 33; return p }, "outside usable"},
		{"inverted", func(p []Partition) []Partition { p[0].LastLBA = 2000; return p }, "outside usable"},
		{"numbering", func(p []Partition) []Partition { p[2].Number = 4; return p }, "number"},
		{"no type", func(p []Partition) []Partition { p[0].Type = UUID{}; return p }, "type"},
		{"long name", func(p []Partition) []Partition { p[0].Name = strings.Repeat("x", 37); return p }, "36"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := encodeGPT(ids.Disk, total, tc.mutate(testParts(ids)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

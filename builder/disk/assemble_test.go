package disk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var assembleTools = []string{"mkfs.ext4", "debugfs", "e2fsck", "dumpe2fs", "mkfs.vfat", "fsck.vfat",
	"mmd", "mcopy", "mdir", "grub-mkimage", "sfdisk", "blkid"}

// assembleTree assembles a synthetic tree into a temp dir.
func assembleTree(t *testing.T, seed string, bootable bool, size int64) (string, *Layout, IDs, string) {
	t.Helper()
	requireTools(t, assembleTools...)
	ids := DeriveIDs([]byte(seed))
	tree := makeTree(t, ids, bootable)
	out := filepath.Join(t.TempDir(), "disk.raw")
	l, err := Assemble(context.Background(), Options{
		Tree: tree, Output: out, Size: size, Bootable: bootable, IDs: ids,
		GrubDir: hostGrubDir, SourceDateEpoch: testEpoch,
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, l, ids, tree
}

type sfdiskJSON struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		FirstLBA   uint64 `json:"firstlba"`
		LastLBA    uint64 `json:"lastlba"`
		SectorSize int    `json:"sectorsize"`
		Partitions []struct {
			Start uint64 `json:"start"`
			Size  uint64 `json:"size"`
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func TestAssembleBootablePartitionTable(t *testing.T) {
	img, l, ids, _ := assembleTree(t, "bootable", true, 0)
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != MinAutoSize || l.Size != MinAutoSize {
		t.Errorf("auto size: file %d, layout %d, want %d", st.Size(), l.Size, MinAutoSize)
	}
	verify := tool(t, "sfdisk", "--verify", img)
	if !strings.Contains(verify, "No errors detected") {
		t.Errorf("sfdisk --verify:\n%s", verify)
	}
	var pt sfdiskJSON
	if err := json.Unmarshal([]byte(tool(t, "sfdisk", "--json", img)), &pt); err != nil {
		t.Fatal(err)
	}
	p := pt.PartitionTable
	if p.Label != "gpt" || !strings.EqualFold(p.ID, ids.Disk.String()) || p.FirstLBA != 34 || p.LastLBA != uint64(l.Size/512-34) || p.SectorSize != 512 {
		t.Errorf("table: %+v", p)
	}
	want := []struct {
		start, size uint64
		ty, uuid    UUID
		name        string
	}{
		{2048, 2048, TypeBIOSBoot, ids.BIOSBootPart, "BSP"},
		{4096, 131072, TypeESP, ids.ESPPart, "ESP"},
		{135168, uint64(l.Size/512) - 34 - 135168 + 1, TypeLinuxData, ids.RootPart, "root"},
	}
	if len(p.Partitions) != len(want) {
		t.Fatalf("sfdisk sees %d partitions, want %d", len(p.Partitions), len(want))
	}
	for i, w := range want {
		g := p.Partitions[i]
		if g.Start != w.start || g.Size != w.size || !strings.EqualFold(g.Type, w.ty.String()) || !strings.EqualFold(g.UUID, w.uuid.String()) || g.Name != w.name {
			t.Errorf("partition %d: sfdisk %+v, want %+v", i+1, g, w)
		}
	}
	// The root partition ends at the last usable LBA: nothing after it
	// but the backup GPT, so growpart can extend it.
	if last := p.Partitions[2].Start + p.Partitions[2].Size - 1; last != p.LastLBA {
		t.Errorf("root partition ends at %d, last usable LBA is %d", last, p.LastLBA)
	}
}

func TestAssembleBootableRootFS(t *testing.T) {
	img, l, ids, tree := assembleTree(t, "bootable", true, 0)
	root := extract(t, img, Extent{Offset: l.Partitions[2].Offset(), Size: l.Partitions[2].Size()})
	fsck := tool(t, "e2fsck", "-fn", root)
	if !strings.Contains(fsck, "cloudimg-rootfs: ") {
		t.Errorf("e2fsck output:\n%s", fsck)
	}
	blk := tool(t, "blkid", "-p", "-O", fmt.Sprint(l.Root.Offset), img)
	for _, w := range []string{`TYPE="ext4"`, `UUID="` + ids.RootFS.String() + `"`, `LABEL="cloudimg-rootfs"`} {
		if !strings.Contains(blk, w) {
			t.Errorf("blkid at the root offset lacks %s: %s", w, blk)
		}
	}
	sb := tool(t, "dumpe2fs", "-h", root)
	features := regexp.MustCompile(`(?m)^Filesystem features:\s+(.*)$`).FindStringSubmatch(sb)
	if features == nil {
		t.Fatalf("no features in dumpe2fs:\n%s", sb)
	}
	have := " " + features[1] + " "
	for _, f := range []string{"has_journal", "extent", "64bit", "flex_bg", "metadata_csum", "ext_attr", "dir_index",
		"resize_inode", "sparse_super", "large_file", "huge_file", "dir_nlink", "extra_isize", "filetype"} {
		if !strings.Contains(have, " "+f+" ") {
			t.Errorf("feature %s missing: %s", f, features[1])
		}
	}
	for _, f := range []string{"orphan_file", "metadata_csum_seed", "csum_seed"} {
		if strings.Contains(have, " "+f+" ") {
			t.Errorf("feature %s present (GRUB 2.06 / older kernels): %s", f, features[1])
		}
	}
	for _, w := range []string{
		"Directory Hash Seed:      " + ids.RootHashSeed.String(),
		"Filesystem created:       " + testEpoch.UTC().Format("Mon Jan _2 15:04:05 2006"),
		"Block size:               4096",
		"Default mount options:    user_xattr acl",
		"Inode size:	          256",
	} {
		if !strings.Contains(sb, w) {
			t.Errorf("dumpe2fs lacks %q", w)
		}
	}

	dbg := func(cmd string) string {
		t.Helper()
		return tool(t, "debugfs", "-R", cmd, root)
	}
	if got := dbg("cat /etc/hello"); got != "hello from strata\n" {
		t.Errorf("/etc/hello = %q", got)
	}
	if got := dbg("cat /etc/fstab"); got != Fstab(ids, true) {
		t.Errorf("/etc/fstab = %q", got)
	}
	big, err := os.ReadFile(filepath.Join(tree, treeBigRel))
	if err != nil {
		t.Fatal(err)
	}
	if got := dbg("cat " + treeBigRel); got != string(big) {
		t.Errorf("%s: %d bytes in the image differ from the tree's %d", treeBigRel, len(got), len(big))
	}
	epochHex := fmt.Sprintf("0x%08x:00000000", testEpoch.Unix())
	for _, p := range []string{"/", "/etc/hello", treeFutureRel, "/bin-hello", "/dev/null", `"` + strings.ReplaceAll(treeOddName, `"`, `""`) + `"`} {
		stat := dbg("stat " + p)
		for _, field := range []string{"ctime", "atime", "mtime", "crtime"} {
			re := regexp.MustCompile(`(?m)^\s*` + field + `: (0x[0-9a-f]+:[0-9a-f]+)`)
			m := re.FindStringSubmatch(stat)
			if m == nil {
				t.Errorf("%s: no %s in debugfs stat:\n%s", p, field, stat)
				continue
			}
			// mtimes before the epoch stay; the test tree's were made now,
			// after it, so every one is clamped.
			if m[1] != epochHex {
				t.Errorf("%s: %s %s, want %s", p, field, m[1], epochHex)
			}
		}
	}
	if s := dbg("stat /usr/bin/hello"); !strings.Contains(s, "Mode:  04755") || !strings.Contains(s, "Links: 2") {
		t.Errorf("/usr/bin/hello: want mode 04755 and 2 links:\n%s", s)
	}
	if a, b := dbg("stat /usr/bin/hello"), dbg("stat /usr/bin/hello-again"); firstLine(a) != firstLine(b) {
		t.Errorf("hard link split: %q vs %q", firstLine(a), firstLine(b))
	}
	if s := dbg("stat /home/user/notes"); !strings.Contains(s, "User:  1000   Group:  1001") || !strings.Contains(s, "Mode:  0600") {
		t.Errorf("/home/user/notes owner/mode:\n%s", s)
	}
	if s := dbg("stat /bin-hello"); !strings.Contains(s, `Fast link dest: "../usr/bin/hello"`) {
		t.Errorf("symlink:\n%s", s)
	}
	if s := dbg("stat /dev/null"); !strings.Contains(s, "Type: character special") || !strings.Contains(s, "Device major/minor number: 01:03") {
		t.Errorf("/dev/null:\n%s", s)
	}
	if s := dbg("stat /run-fifo"); !strings.Contains(s, "Type: FIFO") {
		t.Errorf("fifo:\n%s", s)
	}
	if s := dbg("ea_get " + treeXattrRel + " user.strata"); !strings.Contains(s, "value-1") {
		t.Errorf("xattr user.strata: %q", s)
	}
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

func TestAssembleBootableESP(t *testing.T) {
	img, l, ids, _ := assembleTree(t, "bootable", true, 0)
	esp := l.Partitions[1]
	blk := tool(t, "blkid", "-p", "-O", fmt.Sprint(esp.Offset()), img)
	for _, w := range []string{`TYPE="vfat"`, `VERSION="FAT32"`, `UUID="` + ids.ESPVolumeIDString() + `"`, `LABEL="ESP"`} {
		if !strings.Contains(blk, w) {
			t.Errorf("blkid at the ESP lacks %s: %s", w, blk)
		}
	}
	part := extract(t, img, Extent{Offset: esp.Offset(), Size: esp.Size()})
	if out, err := exec.Command("fsck.vfat", "-n", part).CombinedOutput(); err != nil || strings.Contains(string(out), "Warning") {
		t.Errorf("fsck.vfat -n: %v\n%s", err, out)
	}
	dir := tool(t, "mdir", "-i", fmt.Sprintf("%s@@%d", img, esp.Offset()), "::/EFI/BOOT")
	if !regexp.MustCompile(`BOOTX64\s+EFI\s+\d`).MatchString(dir) {
		t.Errorf("mdir ::/EFI/BOOT:\n%s", dir)
	}
	got := filepath.Join(t.TempDir(), "BOOTX64.EFI")
	tool(t, "mcopy", "-i", fmt.Sprintf("%s@@%d", img, esp.Offset()), "::/EFI/BOOT/BOOTX64.EFI", got)
	// Build the loaders again: grub-mkimage is deterministic, so the ESP
	// must hold exactly what it produces.
	g, err := buildGrub(context.Background(), hostGrubDir, t.TempDir(), ids.RootFS)
	if err != nil {
		t.Fatal(err)
	}
	efi, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(efi, g.efi) {
		t.Errorf("BOOTX64.EFI on the ESP (%d bytes) differs from grub-mkimage's output (%d bytes)", len(efi), len(g.efi))
	}
	if len(efi) < 2 || string(efi[:2]) != "MZ" {
		t.Error("BOOTX64.EFI is not a PE image")
	}
	if !bytes.Contains(efi, []byte("search --no-floppy --fs-uuid --set=root "+ids.RootFS.String())) {
		t.Error("BOOTX64.EFI does not embed the search for the root UUID")
	}
}

func TestAssembleBootableBIOS(t *testing.T) {
	img, l, ids, _ := assembleTree(t, "bootable", true, 0)
	bootImg, err := os.ReadFile(filepath.Join(hostGrubDir, "i386-pc/boot.img"))
	if err != nil {
		t.Fatal(err)
	}
	mbr := readAt(t, img, 0, 512)
	le := binary.LittleEndian
	if !bytes.Equal(mbr[:3], bootImg[:3]) || !bytes.Equal(mbr[0x5a:0x5c], bootImg[0x5a:0x5c]) ||
		!bytes.Equal(mbr[0x65:0x66], bootImg[0x65:0x66]) || !bytes.Equal(mbr[0x68:0x1b8], bootImg[0x68:0x1b8]) {
		t.Error("MBR code differs from boot.img outside the patched fields")
	}
	if !bytes.Equal(mbr[3:0x5a], make([]byte, 0x57)) {
		t.Error("BPB area not zero (kept from the protective MBR)")
	}
	if got := le.Uint64(mbr[0x5c:]); got != 2048 {
		t.Errorf("kernel sector %d, want 2048 (BIOS-boot partition start)", got)
	}
	if mbr[0x64] != 0xff || mbr[0x66] != 0x90 || mbr[0x67] != 0x90 {
		t.Errorf("boot drive %#x, drive check % x", mbr[0x64], mbr[0x66:0x68])
	}
	if !bytes.Equal(mbr[0x1b8:], protectiveMBR(uint64(l.Size / 512))[0x1b8:]) {
		t.Error("protective MBR partition table not intact")
	}

	g, err := buildGrub(context.Background(), hostGrubDir, t.TempDir(), ids.RootFS)
	if err != nil {
		t.Fatal(err)
	}
	sectors := (len(g.coreImg) + 511) / 512
	if l.CoreImage != (Extent{Offset: 2048 * 512, Size: int64(sectors) * 512}) {
		t.Errorf("CoreImage %+v, want %d sectors at LBA 2048", l.CoreImage, sectors)
	}
	onDisk := readAt(t, img, 2048*512, int(BIOSBootSize))
	if s, n, seg := le.Uint64(onDisk[0x1f4:]), le.Uint16(onDisk[0x1fc:]), le.Uint16(onDisk[0x1fe:]); s != 2049 || int(n) != sectors-1 || seg != 0x820 {
		t.Errorf("core.img blocklist start %d len %d seg %#x, want 2049 %d 0x820", s, n, seg, sectors-1)
	}
	if !bytes.Equal(onDisk[:0x1f4], g.coreImg[:0x1f4]) || !bytes.Equal(onDisk[512:len(g.coreImg)], g.coreImg[512:]) {
		t.Error("core.img in the BIOS-boot partition differs from grub-mkimage's output outside the blocklist")
	}
	if !bytes.Equal(onDisk[len(g.coreImg):], make([]byte, len(onDisk)-len(g.coreImg))) {
		t.Error("BIOS-boot partition not zero after core.img")
	}
	if !bytes.Contains(g.coreImg, []byte{0x1f, 0x8b}) && bytes.Contains(g.coreImg, []byte(ids.RootFS.String())) {
		// core.img's payload is LZMA-compressed, so the UUID is not
		// visible in it; the ESP test checks the embedded config.
		t.Log("core.img payload uncompressed")
	}
}

func TestAssembleReproducible(t *testing.T) {
	requireTools(t, assembleTools...)
	ids := DeriveIDs([]byte("repro"))
	tree := makeTree(t, ids, true)
	other := copyTree(t, tree)
	sum := func(tree string, ids IDs) [32]byte {
		out := filepath.Join(t.TempDir(), "disk.raw")
		if _, err := Assemble(context.Background(), Options{
			Tree: tree, Output: out, Size: 128 * mib, Bootable: true, IDs: ids,
			GrubDir: hostGrubDir, SourceDateEpoch: testEpoch,
		}); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			t.Fatal(err)
		}
		return [32]byte(h.Sum(nil))
	}
	a, b := sum(tree, ids), sum(other, ids)
	if a != b {
		t.Errorf("same tree content, same IDs and epoch gave different images: %x vs %x", a, b)
	}
	if c := sum(tree, DeriveIDs([]byte("repro-2"))); c == a {
		t.Error("different IDs gave the same image")
	}
}

func TestAssembleBareFilesystem(t *testing.T) {
	img, l, ids, _ := assembleTree(t, "bare", false, 64*mib)
	if l.Bootable || l.Partitions != nil || l.Root != (Extent{0, 64 * mib}) {
		t.Errorf("layout %+v", l)
	}
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 64*mib {
		t.Errorf("file is %d bytes, want 64 MiB", st.Size())
	}
	tool(t, "e2fsck", "-fn", img)
	blk := tool(t, "blkid", "-p", img)
	if !strings.Contains(blk, `TYPE="ext4"`) || !strings.Contains(blk, ids.RootFS.String()) {
		t.Errorf("blkid: %s", blk)
	}
	if out, err := exec.Command("sfdisk", "--dump", img).CombinedOutput(); err == nil {
		t.Errorf("sfdisk found a partition table on a bare filesystem image:\n%s", out)
	}
	if got := tool(t, "debugfs", "-R", "cat /etc/fstab", img); got != Fstab(ids, false) || strings.Contains(got, "/boot/efi") {
		t.Errorf("fstab = %q", got)
	}
}

func TestAssembleRejects(t *testing.T) {
	requireTools(t, assembleTools...)
	ids := DeriveIDs([]byte("rejects"))
	tree := makeTree(t, ids, true)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"too small", Options{Size: 20 * mib, Bootable: false}, "too small for the tree"},
		{"no grub dir", Options{Bootable: true, GrubDir: filepath.Join(dir, "nogrub")}, "grub-pc-bin"},
		{"long label", Options{FSLabel: "a-label-longer-than-16"}, "16 bytes"},
		{"no ids", Options{IDs: IDs{}}, "DeriveIDs"},
		{"no grub.cfg", Options{Bootable: true, GrubDir: hostGrubDir}, "no /boot/grub/grub.cfg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.Tree = tree
			o.Output = filepath.Join(dir, tc.name+".raw")
			if tc.name != "no ids" {
				o.IDs = ids
			}
			// A 20 MiB bare filesystem cannot hold 16 MiB of data plus a
			// journal, inode tables and the root reservation.
			if tc.name == "no grub.cfg" {
				cfg := filepath.Join(tree, "boot/grub/grub.cfg")
				if err := os.Rename(cfg, cfg+".away"); err != nil {
					t.Fatal(err)
				}
				defer os.Rename(cfg+".away", cfg)
			}
			if tc.name == "too small" {
				writeFile(t, tree, "/var/cache/filler", strings.Repeat("z", 13<<20), 0o644)
				defer os.Remove(filepath.Join(tree, "var/cache/filler"))
			}
			_, err := Assemble(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			if _, err := os.Stat(o.Output); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("failed Assemble left %s behind (stat: %v)", o.Output, err)
			}
		})
	}
}

func TestAssembleTooManyInodes(t *testing.T) {
	requireTools(t, assembleTools...)
	tree := t.TempDir()
	// 16 MiB at one inode per 16 KiB gives 1024 inodes.
	for i := range 1100 {
		writeFile(t, tree, fmt.Sprintf("/d/f%04d", i), "", 0o644)
	}
	out := filepath.Join(t.TempDir(), "disk.raw")
	_, err := Assemble(context.Background(), Options{Tree: tree, Output: out, Size: 16 * mib, IDs: DeriveIDs(nil)})
	if err == nil || !strings.Contains(err.Error(), "1024 inodes") {
		t.Fatalf("err = %v, want it to name the 1024 inodes a 16 MiB filesystem has", err)
	}
}

// A failure after the image file exists (here boot.img is not GRUB's)
// removes the partly written file.
func TestAssembleFailureRemovesOutput(t *testing.T) {
	requireTools(t, assembleTools...)
	ids := DeriveIDs([]byte("late-failure"))
	tree := makeTree(t, ids, true)
	grubDir := t.TempDir()
	tool(t, "cp", "-as", filepath.Join(hostGrubDir, "i386-pc"), filepath.Join(hostGrubDir, "x86_64-efi"), grubDir)
	boot := filepath.Join(grubDir, "i386-pc/boot.img")
	if err := os.Remove(boot); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(boot, make([]byte, 512), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "disk.raw")
	_, err := Assemble(context.Background(), Options{Tree: tree, Output: out, Bootable: true, IDs: ids, GrubDir: grubDir})
	if err == nil || !strings.Contains(err.Error(), "boot.img") {
		t.Fatalf("err = %v, want a boot.img error", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed Assemble left %s behind (stat: %v)", out, err)
	}
}

// The host's mke2fs.conf must not leak into the image: a hostile one here
// asks for 128-byte inodes, no 64bit and orphan_file.
func TestAssembleIgnoresHostMke2fsConf(t *testing.T) {
	requireTools(t, assembleTools...)
	hostile := filepath.Join(t.TempDir(), "mke2fs.conf")
	if err := os.WriteFile(hostile, []byte("[defaults]\n\tinode_size = 128\n\tblocksize = 1024\n[fs_types]\n\text4 = {\n\t\tfeatures = has_journal,extent,^64bit,orphan_file\n\t}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MKE2FS_CONFIG", hostile)
	img, _, _, _ := assembleTree(t, "hostile-conf", false, 64*mib)
	sb := tool(t, "dumpe2fs", "-h", img)
	for _, w := range []string{"Inode size:	          256", "Block size:               4096", " 64bit ", " metadata_csum"} {
		if !strings.Contains(sb, w) {
			t.Errorf("dumpe2fs lacks %q: the host's mke2fs.conf leaked in", w)
		}
	}
	if strings.Contains(sb, "orphan_file") {
		t.Error("orphan_file enabled: the host's mke2fs.conf leaked in")
	}
}

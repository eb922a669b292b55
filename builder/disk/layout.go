package disk

import "fmt"

const (
	mib = int64(1) << 20
	gib = int64(1) << 30

	// ext4BlockSize is the root filesystem's block size.
	ext4BlockSize = 4096

	// BIOSBootSize is the BIOS-boot partition: core.img is at most 444 KiB
	// (GRUB loads it below 0x78000), so 1 MiB holds it with room to spare.
	BIOSBootSize = 1 * mib
	// ESPSize is the EFI system partition. 64 MiB keeps it FAT32 (the UEFI
	// specification's choice for fixed disks; FAT32 needs at least 65525
	// clusters, here 512-byte ones) with room for GRUB plus a signed
	// shim/GRUB pair many times over. DIB's 550 MiB exists for kernels on the
	// ESP; ours stay on ext4, where GRUB reads them. An empty ESP costs
	// nothing in qcow2 or a sparse raw file.
	ESPSize = 64 * mib
	// partitionAlign is where every partition starts: 1 MiB boundaries.
	partitionAlign = 1 * mib
	// minRootSize keeps a tiny explicit Size from producing a root
	// filesystem mke2fs would lay out oddly.
	minRootSize = 16 * mib
)

// Extent is a byte range of the image file.
type Extent struct {
	Offset int64
	Size   int64
}

// Layout says where everything is in an assembled image.
type Layout struct {
	// Size is the image file's length in bytes, a multiple of 1 MiB.
	Size     int64
	Bootable bool
	// Partitions are the GPT entries in table order; nil for a bare
	// filesystem image. A bootable image has 1 BIOS boot, 2 ESP, 3 root.
	Partitions []Partition
	// Root is the ext4 filesystem: the whole file for a bare filesystem
	// image, else the start of partition 3 rounded down to whole 4 KiB
	// blocks.
	Root Extent
	// ESP is the vfat filesystem (partition 2); zero when not bootable.
	ESP Extent
	// CoreImage is where GRUB's i386-pc core.img lies, at the start of the
	// BIOS-boot partition, padded to whole sectors; zero when not bootable
	// or before Assemble has placed it.
	CoreImage Extent
}

// Partition numbers of a bootable image.
const (
	PartBIOSBoot = 1
	PartESP      = 2
	PartRoot     = 3
)

// RootPartition returns the root partition of a bootable layout.
func (l *Layout) RootPartition() (Partition, bool) {
	if !l.Bootable || len(l.Partitions) < PartRoot {
		return Partition{}, false
	}
	return l.Partitions[PartRoot-1], true
}

// PlanLayout lays out an image of size bytes (rounded up to 1 MiB). A
// bootable image gets a GPT with the BIOS-boot partition at 1 MiB, the ESP
// after it and the root partition last, to the end of the disk, so growpart
// can extend it in place. A non-bootable image is a bare ext4 filesystem.
func PlanLayout(size int64, bootable bool, ids IDs) (Layout, error) {
	if size <= 0 {
		return Layout{}, fmt.Errorf("layout: size %d must be positive", size)
	}
	size = roundUp(size, mib)
	l := Layout{Size: size, Bootable: bootable}
	if !bootable {
		if size < minRootSize {
			return Layout{}, fmt.Errorf("layout: size %s is below the %s minimum", fmtBytes(size), fmtBytes(minRootSize))
		}
		l.Root = Extent{Offset: 0, Size: size}
		return l, nil
	}
	total := uint64(size / SectorSize)
	sec := func(b int64) uint64 { return uint64(b / SectorSize) }
	biosFirst := sec(partitionAlign)
	espFirst := biosFirst + sec(BIOSBootSize)
	rootFirst := espFirst + sec(ESPSize)
	rootLast := gptLastUsable(total)
	if rootLast < rootFirst || int64(rootLast-rootFirst+1)*SectorSize < minRootSize {
		return Layout{}, fmt.Errorf("layout: size %s leaves less than %s for the root partition after the boot partitions",
			fmtBytes(size), fmtBytes(minRootSize))
	}
	l.Partitions = []Partition{
		{Number: PartBIOSBoot, Name: "BSP", Type: TypeBIOSBoot, GUID: ids.BIOSBootPart,
			FirstLBA: biosFirst, LastLBA: espFirst - 1},
		{Number: PartESP, Name: "ESP", Type: TypeESP, GUID: ids.ESPPart,
			FirstLBA: espFirst, LastLBA: rootFirst - 1},
		{Number: PartRoot, Name: "root", Type: TypeLinuxData, GUID: ids.RootPart,
			FirstLBA: rootFirst, LastLBA: rootLast},
	}
	esp := l.Partitions[PartESP-1]
	l.ESP = Extent{Offset: esp.Offset(), Size: esp.Size()}
	root := l.Partitions[PartRoot-1]
	l.Root = Extent{Offset: root.Offset(), Size: root.Size() / ext4BlockSize * ext4BlockSize}
	return l, nil
}

// bootOverhead is what a bootable image needs besides the root partition:
// the 1 MiB before the first partition, BIOS boot, ESP, and 1 MiB for the
// backup GPT (rounded up).
const bootOverhead = partitionAlign + BIOSBootSize + ESPSize + mib

// Auto-size parameters; see AutoSize.
const (
	// MinAutoSize is the smallest image AutoSize picks. Raw images are
	// sparse and qcow2 stores no zeroes, so the virtual size is cheap; a
	// 2 GiB disk boots with room for logs and packages before growpart.
	MinAutoSize  = 2 * gib
	autoFree     = 256 * mib
	autoInodeFor = 32 << 10 // bytes of filesystem per inode in the tree
)

// AutoSize returns the image size Assemble uses when Options.Size is 0:
//
//	root  = max(data*4/3 + 256 MiB, inodes*32 KiB)
//	image = max(2 GiB, root (+ 67 MiB of boot partitions and GPT if bootable))
//
// rounded up to 1 MiB, where data is what the tree occupies as ext4 stores
// it (4 KiB blocks; hard links counted once) and inodes is its number of
// inodes. The 4/3 factor covers ext4's metadata (inode tables, bitmaps, the
// journal on small filesystems, 5% reserved for root) and fragmentation;
// the 256 MiB is free space for the first boot before growpart; the inode
// term keeps a tree of many small files within half of the inodes mke2fs
// creates (one per 16 KiB).
func AutoSize(u TreeUsage, bootable bool) int64 {
	root := max(u.Bytes*4/3+autoFree, u.Inodes*autoInodeFor)
	size := root
	if bootable {
		size += bootOverhead
	}
	return roundUp(max(size, MinAutoSize), mib)
}

// ext4InodeRatio is mke2fs's bytes-per-inode for the "default" usage type
// (-T default), which mkfsExt4 pins.
const ext4InodeRatio = 16384

// ext4JournalBytes is the journal mke2fs 1.47 creates for a filesystem of
// fsBytes (ext2fs_default_journal_size).
func ext4JournalBytes(fsBytes int64) int64 {
	blocks := fsBytes / ext4BlockSize
	var j int64
	switch {
	case blocks < 2048:
		j = 0
	case blocks < 32768:
		j = 1024
	case blocks < 256*1024:
		j = 4096
	case blocks < 512*1024:
		j = 8192
	case blocks < 4096*1024:
		j = 16384
	case blocks < 8192*1024:
		j = 32768
	case blocks < 16384*1024:
		j = 65536
	case blocks < 32768*1024:
		j = 131072
	default:
		j = 262144
	}
	return j * ext4BlockSize
}

// checkRootFits rejects a root filesystem of fsBytes that cannot hold the
// tree with the 5% root reservation still free: a clear error before
// mke2fs's "Could not allocate block". The estimate leaves out directory
// indexes and extended-attribute blocks; mke2fs still has the last word.
func checkRootFits(u TreeUsage, fsBytes int64) error {
	inodes := fsBytes / ext4InodeRatio
	overhead := ext4JournalBytes(fsBytes) + inodes*256 + fsBytes/20
	if u.Bytes+overhead > fsBytes || u.Inodes > inodes {
		need := u.Bytes*4/3 + 64*mib
		return fmt.Errorf("a %s root filesystem is too small for the tree (%s in %d inodes; it has room for %s and %d inodes); use at least %s or Size 0",
			fmtBytes(fsBytes), fmtBytes(u.Bytes), u.Inodes, fmtBytes(max(fsBytes-overhead, 0)), inodes, fmtBytes(roundUp(max(need, u.Inodes*autoInodeFor), mib)))
	}
	return nil
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

func fmtBytes(n int64) string {
	switch {
	case n >= gib && n%gib == 0:
		return fmt.Sprintf("%d GiB", n/gib)
	case n >= mib:
		return fmt.Sprintf("%.1f MiB", float64(n)/float64(mib))
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}

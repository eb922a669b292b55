package disk

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
)

// GRUB platform directories under Options.GrubDir.
const (
	grubPlatformBIOS = "i386-pc"
	grubPlatformEFI  = "x86_64-efi"
)

// grubModulesCommon are built into both loaders: what the embedded config
// and a plain grub.cfg (serial console, menuentry, linux, initrd) need,
// plus the commands grub-mkconfig output commonly uses, since
// /boot/grub/<platform>/ is not populated and `insmod` of anything else
// fails. grub-mkimage adds their dependencies (moddep.lst).
var grubModulesCommon = []string{
	"part_gpt", "part_msdos", "ext2", "fat",
	"search", "search_fs_uuid", "search_label", "search_fs_file",
	"configfile", "normal", "linux", "boot",
	"echo", "test", "true", "minicmd", "sleep", "reboot", "halt",
	"serial", "terminal", "terminfo",
	"gzio", "xzio", "lzopio",
	"loadenv", "ls", "cat", "probe", "regexp", "keystatus",
	"all_video", "font", "gfxterm",
}

var grubModulesBIOS = append([]string{"biosdisk"}, grubModulesCommon...)

var grubModulesEFI = append([]string{"efi_gop", "efi_uga"}, grubModulesCommon...)

// grubEarlyConfig is the configuration embedded in a loader: find the root
// filesystem by UUID, point the prefix at its /boot/grub and run its
// grub.cfg. GRUB runs it with the rescue parser, which knows plain
// commands only (no if/then), so a failure falls through: search reports
// the missing UUID, configfile the missing file, and the echo says what
// went wrong before GRUB's own normal mode takes over. The BIOS loader also
// turns on the serial console, so all this shows on ttyS0 (OVMF already
// mirrors its console to the serial port).
func grubEarlyConfig(rootFS UUID, serial bool) string {
	var b bytes.Buffer
	if serial {
		b.WriteString("serial --unit=0 --speed=115200\n")
		b.WriteString("terminal_input serial console\n")
		b.WriteString("terminal_output serial console\n")
	}
	fmt.Fprintf(&b, "search --no-floppy --fs-uuid --set=root %s\n", rootFS)
	b.WriteString("set prefix=($root)/boot/grub\n")
	b.WriteString("configfile $prefix/grub.cfg\n")
	fmt.Fprintf(&b, "echo \"strata: could not run /boot/grub/grub.cfg from the filesystem with UUID %s\"\n", rootFS)
	return b.String()
}

// grubImages are the loaders Assemble places.
type grubImages struct {
	bootImg []byte // i386-pc boot.img, 512 bytes
	coreImg []byte // i386-pc core.img (diskboot.img first)
	efi     []byte // x86_64-efi BOOTX64.EFI
}

// checkGrubDir reports what is missing from a GRUB module directory.
func checkGrubDir(dir string) error {
	if dir == "" {
		return fmt.Errorf("GrubDir is empty: pass <tree>/usr/lib/grub when the image installed grub-pc-bin and grub-efi-amd64-bin, else the host's /usr/lib/grub")
	}
	for _, f := range []string{
		filepath.Join(grubPlatformBIOS, "boot.img"),
		filepath.Join(grubPlatformBIOS, "kernel.img"),
		filepath.Join(grubPlatformBIOS, "moddep.lst"),
		filepath.Join(grubPlatformEFI, "kernel.img"),
		filepath.Join(grubPlatformEFI, "moddep.lst"),
	} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("GrubDir %s lacks %s (install grub-pc-bin and grub-efi-amd64-bin: `%s`): %w", dir, f, DepsHint, err)
		}
	}
	return nil
}

// buildGrub runs grub-mkimage for both platforms into tmp.
func buildGrub(ctx context.Context, grubDir, tmp string, rootFS UUID) (*grubImages, error) {
	env := toolEnv()
	mk := func(platform string, serial bool, modules []string, out string) ([]byte, error) {
		cfg := filepath.Join(tmp, platform+".cfg")
		if err := os.WriteFile(cfg, []byte(grubEarlyConfig(rootFS, serial)), 0o644); err != nil {
			return nil, err
		}
		args := []string{
			"--directory", filepath.Join(grubDir, platform),
			"--format", platform,
			"--prefix", "/boot/grub",
			"--config", cfg,
			"--output", out,
		}
		args = append(args, modules...)
		if _, err := run(ctx, env, "grub-mkimage", args...); err != nil {
			return nil, fmt.Errorf("grub %s: %w", platform, err)
		}
		return os.ReadFile(out)
	}
	var g grubImages
	var err error
	if g.coreImg, err = mk(grubPlatformBIOS, true, grubModulesBIOS, filepath.Join(tmp, "core.img")); err != nil {
		return nil, err
	}
	if g.efi, err = mk(grubPlatformEFI, false, grubModulesEFI, filepath.Join(tmp, "BOOTX64.EFI")); err != nil {
		return nil, err
	}
	if g.bootImg, err = os.ReadFile(filepath.Join(grubDir, grubPlatformBIOS, "boot.img")); err != nil {
		return nil, fmt.Errorf("grub: %w", err)
	}
	return &g, nil
}

// Offsets in GRUB's i386-pc boot.img (include/grub/i386/pc/boot.h) and in
// the first sector of core.img, which is diskboot.img.
const (
	bootBPBStart      = 0x03 // a FAT BPB may live here; kept from the disk
	bootBPBEnd        = 0x5a
	bootKernelSector  = 0x5c // u64 LE: LBA of core.img's first sector
	bootDrive         = 0x64 // 0xff: use the drive the BIOS passed in DL
	bootDriveCheck    = 0x66 // 2-byte jmp, NOPed for hard disks
	bootCodeEnd       = mbrDiskSignature
	blocklistSize     = 12 // start u64, len u16, segment u16
	coreFirstList     = SectorSize - blocklistSize
	coreLoadSegment   = 0x820 // core.img sector 1 onwards load at 0x8200
	coreMaxSectors    = (0x78000 - 0x9000) / SectorSize
	coreNoRSLengthOff = SectorSize + 0x14 // GRUB_KERNEL_I386_PC_NO_REED_SOLOMON_LENGTH
)

// patchMBR returns the MBR with boot.img's code installed the way
// grub-bios-setup installs it on a hard disk: boot.img up to the disk
// signature, the disk's own BPB area, disk signature and partition table
// kept, the kernel-sector field set to coreLBA, the boot drive taken from
// the BIOS and the boot-drive check replaced by two NOPs.
func patchMBR(mbr, bootImg []byte, coreLBA uint64) ([]byte, error) {
	if len(mbr) != SectorSize {
		return nil, fmt.Errorf("patch MBR: MBR is %d bytes, want %d", len(mbr), SectorSize)
	}
	if len(bootImg) != SectorSize || bootImg[510] != 0x55 || bootImg[511] != 0xaa {
		return nil, fmt.Errorf("patch MBR: boot.img is not a 512-byte boot sector")
	}
	// A short jmp over the BPB at 0, and the drive check's short jmp:
	// anything else is a boot.img whose layout this code does not know.
	if bootImg[0] != 0xeb || bootImg[bootDriveCheck] != 0xeb {
		return nil, fmt.Errorf("patch MBR: boot.img layout not recognised (expected GRUB 2 i386-pc boot.img)")
	}
	out := make([]byte, SectorSize)
	copy(out, mbr)
	copy(out[:bootCodeEnd], bootImg[:bootCodeEnd])
	copy(out[bootBPBStart:bootBPBEnd], mbr[bootBPBStart:bootBPBEnd])
	binary.LittleEndian.PutUint64(out[bootKernelSector:], coreLBA)
	out[bootDrive] = 0xff
	out[bootDriveCheck], out[bootDriveCheck+1] = 0x90, 0x90
	out[510], out[511] = 0x55, 0xaa
	return out, nil
}

// patchCoreImg returns core.img padded to whole sectors with its first
// blocklist (the end of diskboot.img) pointing at the rest of itself, as
// grub-bios-setup writes it when embedding at coreLBA: start coreLBA+1,
// length sectors-1, load segment 0x820, and a zero terminator before it.
func patchCoreImg(core []byte, coreLBA uint64) ([]byte, error) {
	if len(core) < 2*SectorSize {
		return nil, fmt.Errorf("patch core.img: %d bytes is too small for a GRUB core image", len(core))
	}
	sectors := (len(core) + SectorSize - 1) / SectorSize
	if sectors > coreMaxSectors {
		return nil, fmt.Errorf("patch core.img: %d sectors, GRUB can load at most %d; embed fewer modules", sectors, coreMaxSectors)
	}
	if binary.LittleEndian.Uint16(core[coreNoRSLengthOff:]) == 0xffff {
		return nil, fmt.Errorf("patch core.img: core.img version mismatch (no Reed-Solomon length)")
	}
	first := core[coreFirstList : coreFirstList+blocklistSize]
	if seg := binary.LittleEndian.Uint16(first[10:]); seg != coreLoadSegment {
		return nil, fmt.Errorf("patch core.img: first blocklist segment is %#x, want %#x (not a GRUB i386-pc core.img?)", seg, coreLoadSegment)
	}
	out := make([]byte, sectors*SectorSize)
	copy(out, core)
	first = out[coreFirstList : coreFirstList+blocklistSize]
	binary.LittleEndian.PutUint64(first[0:], coreLBA+1)
	binary.LittleEndian.PutUint16(first[8:], uint16(sectors-1))
	binary.LittleEndian.PutUint16(first[10:], coreLoadSegment)
	// The entry below is the terminator: GRUB stops at a zero length.
	term := out[coreFirstList-blocklistSize : coreFirstList]
	clear(term)
	return out, nil
}

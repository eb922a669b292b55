package disk

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// EFIBootPath is where the UEFI loader lives on the ESP: the removable-media
// path, which firmware boots without any NVRAM boot entry.
const EFIBootPath = "/EFI/BOOT/BOOTX64.EFI"

// espLabel is the ESP's vfat volume label.
const espLabel = "ESP"

// mtoolsImage is the -i argument that makes mtools work on the vfat
// filesystem at offset in image.
func mtoolsImage(image string, offset int64) string {
	return image + "@@" + strconv.FormatInt(offset, 10)
}

func mtoolsEnv(epoch time.Time) []string {
	// MTOOLSRC=/dev/null: no host mtools.conf changes what is written.
	extra := []string{"MTOOLSRC=/dev/null"}
	if !epoch.IsZero() {
		extra = append(extra, "SOURCE_DATE_EPOCH="+strconv.FormatInt(epoch.Unix(), 10))
	}
	return toolEnv(extra...)
}

// makeESP creates the FAT32 EFI system partition at ext and writes the UEFI
// loader to EFIBootPath.
func makeESP(ctx context.Context, image string, ext Extent, volumeID uint32, efi []byte, epoch time.Time, tmp string) error {
	sector := strconv.FormatInt(ext.Offset/SectorSize, 10)
	args := []string{
		"-F", "32",
		"-S", strconv.Itoa(SectorSize),
		"-s", "1", // 512-byte clusters: enough clusters for FAT32 in 64 MiB
		"-n", espLabel,
		"--mbr=n",
		"--invariant", // before -i, which it would otherwise override
		"-i", fmt.Sprintf("%08X", volumeID),
		"--offset", sector,
		"-h", sector, // hidden sectors: the partition's start LBA
		image, strconv.FormatInt(ext.Size/1024, 10),
	}
	if _, err := run(ctx, toolEnv(), "mkfs.vfat", args...); err != nil {
		return fmt.Errorf("ESP: %w", err)
	}

	src := filepath.Join(tmp, "BOOTX64.EFI")
	if err := os.WriteFile(src, efi, 0o644); err != nil {
		return fmt.Errorf("ESP: %w", err)
	}
	if !epoch.IsZero() {
		if err := os.Chtimes(src, epoch, epoch); err != nil {
			return fmt.Errorf("ESP: %w", err)
		}
	}
	env := mtoolsEnv(epoch)
	img := mtoolsImage(image, ext.Offset)
	if _, err := run(ctx, env, "mmd", "-i", img, "::/EFI", "::/EFI/BOOT"); err != nil {
		return fmt.Errorf("ESP: %w", err)
	}
	if _, err := run(ctx, env, "mcopy", "-m", "-i", img, src, "::"+EFIBootPath); err != nil {
		return fmt.Errorf("ESP: %w", err)
	}
	return nil
}

package disk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultFSLabel is the root filesystem label when Options.FSLabel is
// empty; DIB uses the same one.
const DefaultFSLabel = "cloudimg-rootfs"

// Options describe one image to assemble.
type Options struct {
	// Tree is the finalised root tree. It is only read; /etc/fstab in it
	// should be Fstab(IDs, Bootable), and for a bootable image
	// /boot/grub/grub.cfg must exist (GRUB's embedded config runs it).
	Tree string
	// Output is the raw image file to write. It is created or truncated;
	// nothing else is written. On failure it is removed. The caller
	// renames it into place.
	Output string
	// Size is the image size in bytes (whole disk if Bootable, else the
	// filesystem), rounded up to 1 MiB. 0 picks AutoSize.
	Size int64
	// Bootable selects a GPT disk with BIOS-boot, ESP and root partitions
	// and GRUB for BIOS and UEFI; false writes a bare ext4 filesystem.
	Bootable bool
	// IDs are the disk's identifiers, normally DeriveIDs(seed).
	IDs IDs
	// FSLabel is the ext4 label (at most 16 bytes); "" means
	// DefaultFSLabel.
	FSLabel string
	// GrubDir holds GRUB's i386-pc/ and x86_64-efi/ module directories:
	// <tree>/usr/lib/grub when the image installed grub-pc-bin and
	// grub-efi-amd64-bin, else the host's /usr/lib/grub. Only read when
	// Bootable.
	GrubDir string
	// SourceDateEpoch, when set, makes the output reproducible: it is
	// every tool's "now", all atimes and ctimes, and the upper bound of
	// mtimes. Zero means the current time and the tree's timestamps.
	SourceDateEpoch time.Time
	// ExtraSize is added to the automatic size (DIB's
	// --image-extra-size); ignored when Size is set.
	ExtraSize int64
	// Mkfs tunes the root filesystem beyond strata's defaults (DIB's
	// --mkfs-options, --mkfs-journal-size, --max-online-resize).
	Mkfs MkfsOptions
	// Logger receives progress; nil means slog.Default().
	Logger *slog.Logger
}

// MkfsOptions are a caller's additions to mkfs.ext4's command line.
type MkfsOptions struct {
	// Extra are options placed after strata's own (so they win), before
	// the device; they must not name a device or -d.
	Extra []string
	// JournalMB sets the journal size (-J size=N); 0 leaves mke2fs's.
	JournalMB int
	// ResizeBlocks reserves room to grow online to that many blocks
	// (-E resize=N); 0 leaves mke2fs's.
	ResizeBlocks int64
}

func (o *Options) validate() error {
	if o.Tree == "" || o.Output == "" {
		return errors.New("assemble: Tree and Output must be set")
	}
	if o.FSLabel == "" {
		o.FSLabel = DefaultFSLabel
	}
	if len(o.FSLabel) > 16 {
		return fmt.Errorf("assemble: filesystem label %q is longer than 16 bytes", o.FSLabel)
	}
	if o.Size < 0 {
		return fmt.Errorf("assemble: negative size %d", o.Size)
	}
	if err := o.IDs.validate(o.Bootable); err != nil {
		return fmt.Errorf("assemble: %w", err)
	}
	if o.Bootable {
		if err := checkGrubDir(o.GrubDir); err != nil {
			return fmt.Errorf("assemble: %w", err)
		}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Assemble writes a raw image of opts.Tree to opts.Output and returns where
// everything went. It never uses loop devices or mounts: every tool works
// on the file at an offset.
func Assemble(ctx context.Context, opts Options) (_ *Layout, err error) {
	start := time.Now()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	log := opts.Logger.With("image", opts.Output)
	tools := []string{"mkfs.ext4"}
	if !opts.SourceDateEpoch.IsZero() {
		tools = append(tools, "debugfs")
	}
	if opts.Bootable {
		tools = append(tools, "mkfs.vfat", "mmd", "mcopy", "grub-mkimage")
	}
	if err := CheckTools(tools...); err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}

	usage, entries, err := scanTree(ctx, opts.Tree)
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	if err := checkTreeBootFiles(opts, log); err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	size := opts.Size
	if size == 0 {
		size = AutoSize(usage, opts.Bootable) + roundUp(max(opts.ExtraSize, 0), mib)
	}
	layout, err := PlanLayout(size, opts.Bootable, opts.IDs)
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	if err := checkRootFits(usage, layout.Root.Size); err != nil {
		return nil, fmt.Errorf("assemble: image size %s: %w", fmtBytes(layout.Size), err)
	}
	log.Info("assembling image", "size", layout.Size, "bootable", opts.Bootable,
		"tree_bytes", usage.Bytes, "tree_inodes", usage.Inodes, "root_fs_bytes", layout.Root.Size)

	tmp, err := os.MkdirTemp("", "strata-disk-")
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	defer os.RemoveAll(tmp)

	var grub *grubImages
	if opts.Bootable {
		t := time.Now()
		if grub, err = buildGrub(ctx, opts.GrubDir, tmp, opts.IDs.RootFS); err != nil {
			return nil, fmt.Errorf("assemble: %w", err)
		}
		log.Debug("grub-mkimage done", "core_img", len(grub.coreImg), "efi", len(grub.efi), "took", time.Since(t))
	}

	f, err := os.OpenFile(opts.Output, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			os.Remove(opts.Output)
		}
	}()
	if err := f.Truncate(layout.Size); err != nil {
		return nil, fmt.Errorf("assemble: size %s: %w", opts.Output, err)
	}

	t := time.Now()
	if err := mkfsExt4(ctx, opts.Output, opts.Tree, layout.Root, opts.FSLabel, opts.IDs, opts.SourceDateEpoch, tmp, opts.Mkfs); err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	log.Debug("root filesystem written", "took", time.Since(t))
	if !opts.SourceDateEpoch.IsZero() {
		t = time.Now()
		if err := clampExt4Times(ctx, opts.Output, layout.Root, entries, opts.SourceDateEpoch, tmp); err != nil {
			return nil, fmt.Errorf("assemble: %w", err)
		}
		log.Debug("timestamps clamped", "inodes", len(entries), "took", time.Since(t))
	}

	if opts.Bootable {
		if err := writeBoot(ctx, f, &layout, opts, grub, tmp); err != nil {
			return nil, fmt.Errorf("assemble: %w", err)
		}
	}

	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	cerr := f.Close()
	f = nil
	if cerr != nil {
		return nil, fmt.Errorf("assemble: %w", cerr)
	}
	log.Info("image assembled", "size", layout.Size, "took", time.Since(start).Round(time.Millisecond))
	return &layout, nil
}

// writeBoot makes the ESP, places core.img in the BIOS-boot partition and
// writes the GPT with boot.img's code in the protective MBR.
func writeBoot(ctx context.Context, f *os.File, l *Layout, opts Options, g *grubImages, tmp string) error {
	if err := makeESP(ctx, opts.Output, l.ESP, opts.IDs.ESPVolumeID, g.efi, opts.SourceDateEpoch, tmp); err != nil {
		return err
	}

	bios := l.Partitions[PartBIOSBoot-1]
	core, err := patchCoreImg(g.coreImg, bios.FirstLBA)
	if err != nil {
		return err
	}
	if int64(len(core)) > bios.Size() {
		return fmt.Errorf("core.img is %d bytes, the BIOS-boot partition %d", len(core), bios.Size())
	}
	if _, err := f.WriteAt(core, bios.Offset()); err != nil {
		return fmt.Errorf("write core.img: %w", err)
	}
	l.CoreImage = Extent{Offset: bios.Offset(), Size: int64(len(core))}

	total := uint64(l.Size / SectorSize)
	head, tail, err := encodeGPT(opts.IDs.Disk, total, l.Partitions)
	if err != nil {
		return err
	}
	mbr, err := patchMBR(head[:SectorSize], g.bootImg, bios.FirstLBA)
	if err != nil {
		return err
	}
	copy(head, mbr)
	if _, err := f.WriteAt(head, 0); err != nil {
		return fmt.Errorf("write GPT: %w", err)
	}
	if _, err := f.WriteAt(tail, int64(total-gptTailSectors)*SectorSize); err != nil {
		return fmt.Errorf("write backup GPT: %w", err)
	}
	return nil
}

// checkTreeBootFiles catches a tree that cannot boot from this image: a
// bootable image needs /boot/grub/grub.cfg (the loaders run it). An fstab
// or grub.cfg that does not name the root UUID is only warned about, since
// mounting by label or PARTUUID also works.
func checkTreeBootFiles(opts Options, log *slog.Logger) error {
	uuid := opts.IDs.RootFS.String()
	if fstab, err := os.ReadFile(filepath.Join(opts.Tree, "etc/fstab")); err != nil || !strings.Contains(string(fstab), uuid) {
		log.Warn("the tree's /etc/fstab does not mount the root filesystem by its UUID; write disk.Fstab(IDs, Bootable) before finalise", "uuid", uuid)
	}
	if !opts.Bootable {
		return nil
	}
	cfg, err := os.ReadFile(filepath.Join(opts.Tree, "boot/grub/grub.cfg"))
	if err != nil {
		return fmt.Errorf("bootable image: the tree has no /boot/grub/grub.cfg for GRUB to run: %w", err)
	}
	if !strings.Contains(string(cfg), uuid) {
		log.Warn("the tree's /boot/grub/grub.cfg does not mention the root filesystem UUID (root=UUID=...)", "uuid", uuid)
	}
	return nil
}

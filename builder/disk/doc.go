// Package disk turns a finalised root tree into disk images without loop
// devices: a raw disk (GPT, BIOS-boot partition, EFI system partition, ext4
// root) or a bare ext4 filesystem image, then qcow2 (or another qemu-img
// format) and a tar of the tree.
//
// Everything is written into a plain file at byte offsets:
//
//   - the GPT (protective MBR, primary and backup headers and entry arrays)
//     is encoded in Go;
//   - the root filesystem is made by `mkfs.ext4 -d TREE -E offset=...`, which
//     copies the tree straight into the disk file;
//   - the EFI system partition is made by `mkfs.vfat --offset` and filled by
//     mtools (`mmd`/`mcopy -i FILE@@OFFSET`);
//   - GRUB comes from `grub-mkimage` only: BOOTX64.EFI for UEFI on the ESP;
//     for BIOS, core.img goes into the BIOS-boot partition and boot.img's code
//     into the MBR, patched here the way grub-bios-setup would patch them
//     (kernel sector, boot-drive check, core.img blocklist). Reed-Solomon
//     codes are not added (grub-install --no-rs-codes): they only help when
//     something else scribbles on the embedding area, and a dedicated
//     BIOS-boot partition has no such neighbour.
//
// This package must never call losetup, kpartx, mount or grub-install, and
// never needs privileges beyond reading the tree: the image is a file, and
// nothing else on the host is touched.
//
// # Booting
//
// One image boots under SeaBIOS and OVMF. Both loaders carry a small embedded
// configuration that finds the root filesystem by UUID, sets the prefix to
// ($root)/boot/grub and runs /boot/grub/grub.cfg from the root filesystem;
// the image (its vm element) writes that grub.cfg. The modules that config
// and a plain `linux`/`initrd` grub.cfg need are built into the loaders,
// because /boot/grub/<platform>/ is not populated: an `insmod` of a module
// outside the embedded set fails.
//
// # Reproducibility
//
// Same tree, same IDs, same SourceDateEpoch and same tool versions give the
// same bytes: GUIDs and UUIDs come from DeriveIDs, mke2fs runs with
// E2FSPROGS_FAKE_TIME and SOURCE_DATE_EPOCH, a fixed hash seed and a fixed
// UUID, inode atime/ctime are set to the epoch and later mtimes clamped to it
// (e2fsprogs 1.47.0 copies them from the tree), mkfs.vfat runs with
// --invariant and a fixed volume id, mtools with SOURCE_DATE_EPOCH and TZ=UTC.
//
// # Compression
//
// Convert compresses qcow2 by default, with zstd: on a 695 MiB raw image it
// took 3.9 s against 27 s for zlib, for 267 MB against 273 MB. zstd-compressed
// qcow2 needs qemu >= 5.1 to read; pass Compression "zlib" when the consumers
// (compute hosts, Glance import) run an older qemu-img.
//
// # Not supported
//
// Filesystems other than ext4 for the root; an MBR-only partition table; a
// separate /boot; LVM or encryption; 4096-byte logical sectors; architectures
// other than x86-64 (no arm64 GRUB, no aarch64 EFI loader); Secure Boot (the
// EFI loader is unsigned, there is no shim).
package disk

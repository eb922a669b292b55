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
// # What the caller does
//
//   - Derive IDs once per image (DeriveIDs(seed)) and write Fstab(ids,
//     bootable) to the tree's /etc/fstab before the finalise phase; for a
//     bootable image the tree must have /boot/grub/grub.cfg booting the
//     kernel with KernelRoot(ids) (the vm element's job) and should have
//     /boot/efi.
//   - Pass GrubDir: <tree>/usr/lib/grub when the image installed
//     grub-pc-bin and grub-efi-amd64-bin, else the host's /usr/lib/grub.
//     The host's grub-mkimage builds the loaders either way, so the two
//     GRUB versions should match (a trixie tree on a bookworm host mixes
//     2.12 modules with a 2.06 grub-mkimage).
//   - Unmount everything inside the tree first: Assemble refuses a tree
//     with another filesystem mounted in it.
//   - Assemble, Convert and WriteTar write only the output path they are
//     given (a temp name next to the final one) and remove it on failure;
//     the caller renames it into place.
//
// # Layout
//
// A bootable image is a GPT disk of 512-byte sectors: partition 1 "BSP",
// BIOS boot, 1 MiB at LBA 2048 (core.img); partition 2 "ESP", 64 MiB
// FAT32; partition 3 "root", ext4, from LBA 135168 to the end of the disk
// so growpart can extend it. A non-bootable image is a bare ext4
// filesystem, as DIB writes without the vm element. AutoSize gives the
// default size.
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
// Convert compresses qcow2 by default, with zstd, because it is 5-7 times
// faster than zlib for about the same size: 3.9 s against 27 s for a 695 MiB
// raw image (267 MB against 273 MB); 1.6-2.2 s against 8.4-11.9 s for the
// 350 MiB Debian minbase image of the e2e test (128.7 MiB against 132.1 MiB).
// zstd-compressed qcow2 needs qemu >= 5.1 to read; pass Compression "zlib"
// when the consumers (compute hosts, Glance import) run an older qemu-img.
//
// # Not supported
//
// Hosts with e2fsprogs older than 1.47.0 (Debian 12); filesystems other than ext4 for the root; an MBR-only partition table; a
// separate /boot; LVM or encryption; 4096-byte logical sectors; architectures
// other than x86-64 (no arm64 GRUB, no aarch64 EFI loader); Secure Boot (the
// EFI loader is unsigned, there is no shim).
package disk

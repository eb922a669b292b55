package disk

import "fmt"

// ESPMountPoint is where Fstab mounts the EFI system partition. The tree
// should contain the directory; systemd creates it if missing.
const ESPMountPoint = "/boot/efi"

// Fstab returns the /etc/fstab that matches an image assembled with ids:
// the root ext4 filesystem by UUID and, for a bootable image, the EFI
// system partition by its vfat serial. The ESP is mounted nofail with a
// short device timeout: the guest runs its database without it (only the
// firmware reads it, at boot), and under TCG on a loaded host udev can be
// late enough for systemd's default 90 s wait to end in emergency mode,
// which once failed a whole instance create. The caller writes it into the tree
// before the finalise phase; Assemble does not touch the tree.
func Fstab(ids IDs, bootable bool) string {
	s := "# /etc/fstab: written by strata; filesystems are found by UUID.\n" +
		"# <file system> <mount point> <type> <options> <dump> <pass>\n" +
		fmt.Sprintf("UUID=%s / ext4 errors=remount-ro 0 1\n", ids.RootFS)
	if bootable {
		s += fmt.Sprintf("UUID=%s %s vfat umask=0077,nofail,x-systemd.device-timeout=20s 0 2\n", ids.ESPVolumeIDString(), ESPMountPoint)
	}
	return s
}

// KernelRoot returns the root= argument for the kernel command line that
// the image's grub.cfg should use.
func KernelRoot(ids IDs) string { return "root=UUID=" + ids.RootFS.String() }

package disk

import "testing"

func TestFstab(t *testing.T) {
	ids := IDs{RootFS: mustUUID("0f8e1c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"), ESPVolumeID: 0xdeadbeef}
	const head = "# /etc/fstab: written by strata; filesystems are found by UUID.\n" +
		"# <file system> <mount point> <type> <options> <dump> <pass>\n" +
		"UUID=0f8e1c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b / ext4 errors=remount-ro 0 1\n"
	if got := Fstab(ids, false); got != head {
		t.Errorf("Fstab(not bootable) =\n%s\nwant\n%s", got, head)
	}
	want := head + "UUID=DEAD-BEEF /boot/efi vfat umask=0077,nofail,x-systemd.device-timeout=20s 0 2\n"
	if got := Fstab(ids, true); got != want {
		t.Errorf("Fstab(bootable) =\n%s\nwant\n%s", got, want)
	}
	if got := KernelRoot(ids); got != "root=UUID=0f8e1c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b" {
		t.Errorf("KernelRoot = %s", got)
	}
}

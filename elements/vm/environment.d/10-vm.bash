# Kernel and kernel command line of a bootable image.
# linux-image-cloud-amd64 is Debian's kernel for virtual machines: the
# drivers a hypervisor offers, a third of the generic kernel's modules.
export DIB_DEBIAN_KERNEL=${DIB_DEBIAN_KERNEL:-linux-image-cloud-amd64}
# Both consoles: the last console= is /dev/console, the one the serial log
# (nova console-log, qemu -serial) shows.
export DIB_BOOTLOADER_DEFAULT_CMDLINE=${DIB_BOOTLOADER_DEFAULT_CMDLINE:-"console=tty0 console=ttyS0,115200n8 nomodeset"}
export DIB_BOOTLOADER_TIMEOUT=${DIB_BOOTLOADER_TIMEOUT:-1}
# Installing the kernel together with udev & co. would build the initramfs
# twice (the kernel's postinst hook, then the initramfs trigger). INITRD=No
# skips the kernel hook; the trigger builds it once, and
# install.d/98-vm-initramfs builds any that is still missing.
export INITRD=No

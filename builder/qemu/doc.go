// Package qemu boots a disk image in a qemu-system-x86_64 virtual machine
// and watches its serial console. The builder's boot test uses it for short
// runs; the controller's local compute driver uses it for long-lived
// instances with host port forwards.
//
// A VM is q35 with virtio disks, a virtio RNG, user-mode networking whose
// forwards listen on 127.0.0.1 only, no display and no default devices; its
// first serial port is written to a log file that WaitForSerial watches.
// Firmware is SeaBIOS or OVMF (UEFI, with a private copy of the variable
// store). The accelerator is KVM when /dev/kvm is usable and not PVM, else
// TCG; STRATA_QEMU_ACCEL overrides.
//
// The package owns the qemu process and its temporary files and nothing
// else: it never modifies a disk marked Snapshot, never listens on a
// non-loopback address, and never leaves a qemu process behind when the
// context given to Start ends, Stop is called or this process dies
// (process group kill, parent-death signal).
package qemu

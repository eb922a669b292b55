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
// else: it never modifies a disk marked Snapshot and never listens on a
// non-loopback address. A VM is either bound to its starter — it never
// outlives the context given to Start, Stop or this process (process
// group kill, parent-death signal): the builder's boot tests — or
// Detached — its own session, output to a file, temporary files in its
// own run directory, QMP socket reachable through its pid, not touched
// when this process dies: the controller's instances, which must outlive
// a controller crash.
package qemu

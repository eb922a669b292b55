package qemu

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Drive is a disk attached to the VM.
type Drive struct {
	// Path is the image file.
	Path string
	// Format is the image format ("raw", "qcow2", ...). It is required:
	// letting qemu probe a raw image's format is unsafe.
	Format string
	// Snapshot sends writes to a temporary overlay that is dropped when
	// qemu exits: the file is never modified.
	Snapshot bool
	// ReadOnly attaches the drive read-only.
	ReadOnly bool
	// Serial is the virtio serial number (at most 20 characters); the
	// guest sees /dev/disk/by-id/virtio-<Serial>.
	Serial string
	// CDROM attaches the drive as a SATA CD-ROM (e.g. an ISO 9660 config
	// drive) instead of a virtio disk. It is always read-only.
	CDROM bool
}

// Forward forwards a TCP port on a host loopback address to a guest port.
type Forward struct {
	HostPort  int
	GuestPort int
	// HostAddr is the IPv4 loopback address (127.0.0.0/8) the host side
	// binds; empty means 127.0.0.1. Every address of 127.0.0.0/8 is the
	// host's own, so guests can each have one with their standard ports.
	HostAddr string
}

// hostAddr is the address the forward binds.
func (f Forward) hostAddr() string {
	if f.HostAddr == "" {
		return "127.0.0.1"
	}
	return f.HostAddr
}

// GuestForward gives a guest one way out: TCP connections the guest opens
// to GuestAddr:GuestPort (an address of qemu's user network, 10.0.2.0/24,
// other than its gateway 10.0.2.2 and DNS 10.0.2.3) are each handed to a
// fresh run of Command, whose stdin and stdout are the connection (qemu's
// guestfwd=...-cmd:). A process per connection, so the forward keeps
// working when whatever Command connects to restarts.
type GuestForward struct {
	GuestAddr string
	GuestPort int
	// Command is the program and its arguments, each made of letters,
	// digits and "/._:=+@-" only (qemu's option syntax and the shell-like
	// parsing slirp applies leave no safe way to quote others).
	Command []string
}

var commandWord = regexp.MustCompile(`^[A-Za-z0-9/._:=+@-]+$`)

// CommandWordOK reports whether w may be a word of a GuestForward's
// Command.
func CommandWordOK(w string) bool { return commandWord.MatchString(w) }

// Config describes a VM.
type Config struct {
	// Name labels the VM in qemu's process list and in logs.
	Name string
	// Disk is the boot disk.
	Disk Drive
	// Drives are further disks (config drive, data volume), in order.
	Drives []Drive
	// Firmware is BIOS (the default) or UEFI.
	Firmware Firmware
	// OVMF overrides the UEFI firmware files; nil means FindOVMF("").
	OVMF *OVMF
	// MemoryMiB defaults to 1024; CPUs to 1.
	MemoryMiB int
	CPUs      int
	// Forwards are host-to-guest TCP port forwards, host side on loopback
	// addresses only.
	Forwards []Forward
	// NoNetwork leaves out the user-mode network card.
	NoNetwork bool
	// Restrict fences the guest in: it reaches nothing outside the VM but
	// its GuestForwards (without it, the guest's 10.0.2.2 is the host's
	// 127.0.0.1 and every other address qemu's user network can reach).
	// Forwards into the guest keep working.
	Restrict bool
	// GuestForwards are the guest's ways out (with Restrict, the only ones).
	GuestForwards []GuestForward
	// NoReboot makes a guest reboot end qemu (boot tests: a panic that
	// reboots ends the run instead of looping).
	NoReboot bool
	// SerialLog is the file the first serial port (ttyS0) is written to;
	// required. qemu truncates it at start.
	SerialLog string
	// Accel overrides DetectAccel.
	Accel *Accel
	// Binary defaults to qemu-system-x86_64.
	Binary string
	// ExtraArgs are appended to qemu's command line.
	ExtraArgs []string
	// Logger receives lifecycle events; nil means slog.Default().
	Logger *slog.Logger

	// Detached starts a VM that lives on its own (the controller's
	// instances): qemu gets its own session, no parent-death signal, and
	// the context given to Start bounds only its start-up. Its output goes
	// to OutputLog (a pipe into this process would kill it with SIGPIPE
	// once this process is gone) and its temporary files (UEFI variable
	// store, snapshot overlays, QMP socket) to a directory of its own
	// under RunDir, qemu's working directory, removed when qemu exits
	// while this process watches it. Whoever adopts the VM later finds
	// its QMP socket through its pid (SocketPath). Without Detached (the
	// builder's boot tests) qemu dies with this process or the context,
	// and its temporary files live in TMPDIR.
	Detached bool
	// RunDir (required with Detached) is where the VM's own directory of
	// temporary files is made; the caller removes what a VM that exited
	// unwatched left there.
	RunDir string
	// OutputLog (required with Detached) receives qemu's own messages,
	// appended.
	OutputLog string
	// DieWithParent keeps the parent-death signal on a detached VM: it
	// lives apart from Start's context but dies with this process (tests).
	DieWithParent bool
}

// DefaultBinary is the qemu program Start runs.
const DefaultBinary = "qemu-system-x86_64"

func (c *Config) validate() error {
	if c.SerialLog == "" {
		return errors.New("qemu: SerialLog must be set")
	}
	if c.Detached && (c.RunDir == "" || c.OutputLog == "") {
		return errors.New("qemu: a detached VM needs RunDir and OutputLog")
	}
	if c.Firmware == "" {
		c.Firmware = BIOS
	}
	if c.Firmware != BIOS && c.Firmware != UEFI {
		return fmt.Errorf("qemu: firmware %q: want %q or %q", c.Firmware, BIOS, UEFI)
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 1024
	}
	if c.CPUs == 0 {
		c.CPUs = 1
	}
	if c.MemoryMiB < 0 || c.CPUs < 0 {
		return fmt.Errorf("qemu: negative memory %d MiB or CPUs %d", c.MemoryMiB, c.CPUs)
	}
	if c.Binary == "" {
		c.Binary = DefaultBinary
	}
	if c.Name == "" {
		c.Name = "strata"
	}
	if strings.ContainsAny(c.Name, ",=") {
		return fmt.Errorf("qemu: name %q must not contain ',' or '='", c.Name)
	}
	for i, d := range append([]Drive{c.Disk}, c.Drives...) {
		if d.Path == "" || d.Format == "" {
			return fmt.Errorf("qemu: drive %d needs Path and Format", i)
		}
		if len(d.Serial) > 20 {
			return fmt.Errorf("qemu: drive %d serial %q longer than 20 characters", i, d.Serial)
		}
		if strings.ContainsAny(d.Serial, ",= ") {
			return fmt.Errorf("qemu: drive %d serial %q must not contain ',', '=' or spaces", i, d.Serial)
		}
	}
	if c.Disk.CDROM {
		return errors.New("qemu: the boot disk cannot be a CD-ROM")
	}
	if n := countCDROMs(c.Drives); n > 6 {
		return fmt.Errorf("qemu: %d CD-ROMs, q35's AHCI controller has 6 ports", n)
	}
	seen := map[string]bool{}
	for _, f := range c.Forwards {
		if f.HostPort < 1 || f.HostPort > 65535 || f.GuestPort < 1 || f.GuestPort > 65535 {
			return fmt.Errorf("qemu: port forward %d->%d out of range", f.HostPort, f.GuestPort)
		}
		if a, err := netip.ParseAddr(f.hostAddr()); err != nil || !a.Is4() || !a.IsLoopback() {
			return fmt.Errorf("qemu: port forward host address %q: want an IPv4 loopback address (127.0.0.0/8)", f.HostAddr)
		}
		key := net.JoinHostPort(f.hostAddr(), strconv.Itoa(f.HostPort))
		if seen[key] {
			return fmt.Errorf("qemu: host port %s forwarded twice", key)
		}
		seen[key] = true
	}
	if c.NoNetwork && (len(c.Forwards) > 0 || len(c.GuestForwards) > 0 || c.Restrict) {
		return errors.New("qemu: port forwards and Restrict need the network (NoNetwork is set)")
	}
	userNet := netip.MustParsePrefix("10.0.2.0/24")
	for _, g := range c.GuestForwards {
		a, err := netip.ParseAddr(g.GuestAddr)
		if err != nil || !userNet.Contains(a) || a == netip.MustParseAddr("10.0.2.2") || a == netip.MustParseAddr("10.0.2.3") || a.As4()[3] == 0 || a.As4()[3] == 255 {
			return fmt.Errorf("qemu: guest forward address %q: want an address of 10.0.2.0/24 other than the gateway (.2) and DNS (.3)", g.GuestAddr)
		}
		if g.GuestPort < 1 || g.GuestPort > 65535 {
			return fmt.Errorf("qemu: guest forward port %d out of range", g.GuestPort)
		}
		if len(g.Command) == 0 {
			return fmt.Errorf("qemu: guest forward %s:%d has no command", g.GuestAddr, g.GuestPort)
		}
		for _, w := range g.Command {
			if !commandWord.MatchString(w) {
				return fmt.Errorf("qemu: guest forward %s:%d: command word %q: only letters, digits and /._:=+@- are allowed", g.GuestAddr, g.GuestPort, w)
			}
		}
		key := net.JoinHostPort(g.GuestAddr, strconv.Itoa(g.GuestPort))
		if seen["guest "+key] {
			return fmt.Errorf("qemu: guest address %s forwarded twice", key)
		}
		seen["guest "+key] = true
	}
	return nil
}

func countCDROMs(ds []Drive) int {
	n := 0
	for _, d := range ds {
		if d.CDROM {
			n++
		}
	}
	return n
}

// escapeOpt doubles commas, qemu's escape inside option values.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// args builds qemu's command line. varsCopy is the VM's private OVMF
// variable store (UEFI only), qmpSocket the QMP control socket (both
// relative to the VM's run directory for a detached VM).
func (c *Config) args(accel Accel, ovmf OVMF, varsCopy, qmpSocket string) []string {
	a := []string{
		"-name", c.Name,
		"-nodefaults",
		// -display none, not -nographic: the same "no display" without
		// qemu ever touching stdin or stdout.
		"-display", "none",
		"-machine", "q35,accel=" + accel.Name,
		"-cpu", accel.CPU,
		"-smp", strconv.Itoa(c.CPUs),
		"-m", strconv.Itoa(c.MemoryMiB),
		"-rtc", "base=utc",
	}
	if c.Firmware == UEFI {
		a = append(a,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+escapeOpt(ovmf.Code),
			"-drive", "if=pflash,format=raw,unit=1,file="+escapeOpt(varsCopy))
	}
	cd := 0
	for i, d := range append([]Drive{c.Disk}, c.Drives...) {
		id := "disk" + strconv.Itoa(i)
		drive := "if=none,id=" + id + ",file=" + escapeOpt(d.Path) + ",format=" + d.Format
		if d.Snapshot {
			drive += ",snapshot=on"
		}
		if d.ReadOnly || d.CDROM {
			drive += ",readonly=on"
		}
		if d.CDROM {
			drive += ",media=cdrom"
		}
		var dev string
		if d.CDROM {
			dev = "ide-cd,drive=" + id + ",bus=ide." + strconv.Itoa(cd)
			cd++
		} else {
			dev = "virtio-blk-pci,drive=" + id
		}
		if i == 0 {
			dev += ",bootindex=0"
		}
		if d.Serial != "" {
			dev += ",serial=" + d.Serial
		}
		a = append(a, "-drive", drive, "-device", dev)
	}
	if !c.NoNetwork {
		nd := "user,id=net0"
		if c.Restrict {
			nd += ",restrict=on"
		}
		for _, f := range c.Forwards {
			nd += fmt.Sprintf(",hostfwd=tcp:%s:%d-:%d", f.hostAddr(), f.HostPort, f.GuestPort)
		}
		for _, g := range c.GuestForwards {
			nd += fmt.Sprintf(",guestfwd=tcp:%s:%d-cmd:%s", g.GuestAddr, g.GuestPort, strings.Join(g.Command, " "))
		}
		a = append(a, "-netdev", nd, "-device", "virtio-net-pci,netdev=net0")
	}
	a = append(a,
		"-device", "virtio-rng-pci",
		"-chardev", "file,id=serial0,path="+escapeOpt(c.SerialLog),
		"-serial", "chardev:serial0",
		"-qmp", "unix:"+escapeOpt(qmpSocket)+",server=on,wait=off",
	)
	if c.NoReboot {
		a = append(a, "-no-reboot")
	}
	return append(a, c.ExtraArgs...)
}

package qemu

import (
	"strings"
	"testing"
)

func TestArgs(t *testing.T) {
	c := Config{
		Name:      "db-1",
		Disk:      Drive{Path: "/img/root,1.qcow2", Format: "qcow2", Snapshot: true},
		Drives:    []Drive{{Path: "/img/config.iso", Format: "raw", CDROM: true}, {Path: "/img/data.raw", Format: "raw", Serial: "data"}},
		Firmware:  UEFI,
		MemoryMiB: 2048,
		CPUs:      2,
		Forwards:  []Forward{{HostPort: 13306, GuestPort: 3306}, {HostPort: 2222, GuestPort: 22}, {HostAddr: "127.10.0.7", HostPort: 3306, GuestPort: 3306}},
		NoReboot:  true,
		SerialLog: "/logs/db-1.serial",
		ExtraArgs: []string{"-S"},
	}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(c.args(Accel{Name: "tcg", CPU: "max"}, OVMF{Code: "/fw/CODE.fd", Vars: "/fw/VARS.fd"}, "/run/vm/VARS.fd", "/run/vm/qmp.sock"), " ")
	want := strings.Join([]string{
		"-name db-1 -nodefaults -display none -machine q35,accel=tcg -cpu max -smp 2 -m 2048 -rtc base=utc",
		"-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd",
		"-drive if=pflash,format=raw,unit=1,file=/run/vm/VARS.fd",
		"-drive if=none,id=disk0,file=/img/root,,1.qcow2,format=qcow2,snapshot=on -device virtio-blk-pci,drive=disk0,bootindex=0",
		"-drive if=none,id=disk1,file=/img/config.iso,format=raw,readonly=on,media=cdrom -device ide-cd,drive=disk1,bus=ide.0",
		"-drive if=none,id=disk2,file=/img/data.raw,format=raw -device virtio-blk-pci,drive=disk2,serial=data",
		"-netdev user,id=net0,hostfwd=tcp:127.0.0.1:13306-:3306,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.10.0.7:3306-:3306 -device virtio-net-pci,netdev=net0",
		"-device virtio-rng-pci -chardev file,id=serial0,path=/logs/db-1.serial -serial chardev:serial0",
		"-qmp unix:/run/vm/qmp.sock,server=on,wait=off -no-reboot -S",
	}, " ")
	if got != want {
		t.Errorf("args:\n%s\nwant\n%s", got, want)
	}

	c.Restrict = true
	c.GuestForwards = []GuestForward{{GuestAddr: "10.0.2.100", GuestPort: 2222, Command: []string{"/usr/bin/socat", "-", "TCP:127.0.0.1:41000"}}}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	got = strings.Join(c.args(Accel{Name: "tcg", CPU: "max"}, OVMF{Code: "/fw/CODE.fd", Vars: "/fw/VARS.fd"}, "/run/vm/VARS.fd", "/run/vm/qmp.sock"), " ")
	fenced := "-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:13306-:3306,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.10.0.7:3306-:3306,guestfwd=tcp:10.0.2.100:2222-cmd:/usr/bin/socat - TCP:127.0.0.1:41000 -device"
	if !strings.Contains(got, fenced) {
		t.Errorf("fenced args:\n%s\nwant them to contain\n%s", got, fenced)
	}
}

func TestArgsBIOSDefaults(t *testing.T) {
	c := Config{Disk: Drive{Path: "/d.raw", Format: "raw"}, SerialLog: "/s.log", NoNetwork: true}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(c.args(Accel{Name: "kvm", CPU: "host"}, OVMF{}, "", "/q.sock"), " ")
	want := "-name strata -nodefaults -display none -machine q35,accel=kvm -cpu host -smp 1 -m 1024 -rtc base=utc " +
		"-drive if=none,id=disk0,file=/d.raw,format=raw -device virtio-blk-pci,drive=disk0,bootindex=0 " +
		"-device virtio-rng-pci -chardev file,id=serial0,path=/s.log -serial chardev:serial0 " +
		"-qmp unix:/q.sock,server=on,wait=off"
	if got != want {
		t.Errorf("args:\n%s\nwant\n%s", got, want)
	}
	if c.Firmware != BIOS || c.Binary != DefaultBinary {
		t.Errorf("defaults: firmware %q binary %q", c.Firmware, c.Binary)
	}
}

func TestConfigRejects(t *testing.T) {
	ok := func() Config { return Config{Disk: Drive{Path: "/d.raw", Format: "raw"}, SerialLog: "/s.log"} }
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no serial log", func(c *Config) { c.SerialLog = "" }, "SerialLog"},
		{"no format", func(c *Config) { c.Disk.Format = "" }, "Format"},
		{"firmware", func(c *Config) { c.Firmware = "coreboot" }, "firmware"},
		{"port range", func(c *Config) { c.Forwards = []Forward{{HostPort: 70000, GuestPort: 22}} }, "out of range"},
		{"port twice", func(c *Config) {
			c.Forwards = []Forward{{HostPort: 2222, GuestPort: 22}, {HostPort: 2222, GuestPort: 23, HostAddr: "127.0.0.1"}}
		}, "twice"},
		{"not loopback", func(c *Config) { c.Forwards = []Forward{{HostPort: 2222, GuestPort: 22, HostAddr: "0.0.0.0"}} }, "loopback"},
		{"ipv6 loopback", func(c *Config) { c.Forwards = []Forward{{HostPort: 2222, GuestPort: 22, HostAddr: "::1"}} }, "IPv4 loopback"},
		{"not an address", func(c *Config) { c.Forwards = []Forward{{HostPort: 2222, GuestPort: 22, HostAddr: "localhost"}} }, "loopback"},
		{"forward without net", func(c *Config) { c.NoNetwork = true; c.Forwards = []Forward{{HostPort: 2222, GuestPort: 22}} }, "NoNetwork"},
		{"long serial", func(c *Config) { c.Drives = []Drive{{Path: "/x", Format: "raw", Serial: strings.Repeat("s", 21)}} }, "20 characters"},
		{"comma serial", func(c *Config) { c.Drives = []Drive{{Path: "/x", Format: "raw", Serial: "a,b"}} }, "must not contain"},
		{"cdrom boot", func(c *Config) { c.Disk.CDROM = true }, "CD-ROM"},
		{"guest forward to the gateway", func(c *Config) {
			c.GuestForwards = []GuestForward{{GuestAddr: "10.0.2.2", GuestPort: 22, Command: []string{"cat"}}}
		}, "gateway"},
		{"guest forward off the network", func(c *Config) {
			c.GuestForwards = []GuestForward{{GuestAddr: "192.168.0.1", GuestPort: 22, Command: []string{"cat"}}}
		}, "10.0.2.0/24"},
		{"guest forward port", func(c *Config) {
			c.GuestForwards = []GuestForward{{GuestAddr: "10.0.2.100", GuestPort: 0, Command: []string{"cat"}}}
		}, "out of range"},
		{"guest forward without command", func(c *Config) { c.GuestForwards = []GuestForward{{GuestAddr: "10.0.2.100", GuestPort: 22}} }, "no command"},
		{"guest forward command with a comma", func(c *Config) {
			c.GuestForwards = []GuestForward{{GuestAddr: "10.0.2.100", GuestPort: 22, Command: []string{"socat", "-", "TCP:127.0.0.1:22,fork"}}}
		}, "only letters"},
		{"guest forward command with a space", func(c *Config) {
			c.GuestForwards = []GuestForward{{GuestAddr: "10.0.2.100", GuestPort: 22, Command: []string{"sh", "-c", "rm -rf /"}}}
		}, "only letters"},
		{"guest forward twice", func(c *Config) {
			g := GuestForward{GuestAddr: "10.0.2.100", GuestPort: 22, Command: []string{"cat"}}
			c.GuestForwards = []GuestForward{g, g}
		}, "twice"},
		{"restrict without net", func(c *Config) { c.NoNetwork = true; c.Restrict = true }, "NoNetwork"},
		{"name", func(c *Config) { c.Name = "a,b" }, "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.mutate(&c)
			if err := c.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

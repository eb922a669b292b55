package qemu

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bootSector is a 512-byte MBR that prints bootMarker on COM1 and halts:
//
//	cli; xor ax,ax; mov ds,ax; mov si,0x7c16; mov dx,0x3f8
//	l: lodsb; test al,al; jz h; out dx,al; jmp l
//	h: hlt; jmp h
//	msg: db bootMarker, 13, 10, 0
func bootSector() []byte {
	code := []byte{
		0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0xbe, 0x16, 0x7c, 0xba, 0xf8, 0x03,
		0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8,
		0xf4, 0xeb, 0xfd,
	}
	b := make([]byte, 512)
	copy(b, code)
	copy(b[len(code):], bootMarker+"\r\n\x00")
	b[510], b[511] = 0x55, 0xaa
	return b
}

const bootMarker = "STRATA-QEMU-BIOS-OK"

func requireQEMU(t *testing.T) {
	t.Helper()
	for _, p := range []string{DefaultBinary, "qemu-img"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s not found: install it with `ci/deps.sh build boot`", p)
		}
	}
}

// bootDisk writes a 1 MiB raw disk holding bootSector.
func bootDisk(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "boot.raw")
	if err := os.WriteFile(p, bootSector(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 1<<20); err != nil {
		t.Fatal(err)
	}
	return p
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func testConfig(t *testing.T, disk string) Config {
	return Config{
		Name:      "test",
		Disk:      Drive{Path: disk, Format: "raw", Snapshot: true},
		SerialLog: filepath.Join(t.TempDir(), "serial.log"),
		NoNetwork: true,
		MemoryMiB: 128,
	}
}

func TestBootBIOSSerialAndStop(t *testing.T) {
	requireQEMU(t)
	cfg := testConfig(t, bootDisk(t))
	cfg.Forwards = nil
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	vm, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("accelerator %s", vm.Accel())
	line, err := vm.WaitForSerial(ctx, regexp.MustCompile(regexp.QuoteMeta(bootMarker)))
	if err != nil {
		t.Fatal(err)
	}
	if line != bootMarker {
		t.Errorf("matched line %q, want %q", line, bootMarker)
	}
	// Already-written output still matches a later call.
	if _, err := vm.WaitForSerial(ctx, regexp.MustCompile("QEMU-BIOS")); err != nil {
		t.Errorf("second wait: %v", err)
	}
	if st, err := vm.Status(); err != nil || st != "running" {
		t.Errorf("status %q %v, want running", st, err)
	}
	log, err := os.ReadFile(cfg.SerialLog)
	if err != nil || !strings.Contains(string(log), bootMarker+"\r\n") {
		t.Errorf("serial log %q %v", log, err)
	}
	pid := vm.PID()
	// The boot sector has no ACPI: Stop falls back to killing.
	start := time.Now()
	err = vm.Stop(2 * time.Second)
	if !errors.Is(err, ErrKilled) {
		t.Errorf("Stop = %v, want ErrKilled", err)
	}
	if d := time.Since(start); d < 2*time.Second || d > 20*time.Second {
		t.Errorf("Stop took %s, want the 2s timeout plus a kill", d)
	}
	if alive(pid) {
		t.Errorf("qemu %d still alive after Stop", pid)
	}
	if err := vm.Wait(); !errors.Is(err, ErrKilled) {
		t.Errorf("Wait = %v, want ErrKilled", err)
	}
	if d := tempDirOf(vm); d != "" {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("temp dir %s left behind", d)
		}
	}
}

// tempDirOf finds the VM's temp dir on its command line (the QMP socket).
func tempDirOf(vm *VM) string {
	for i, a := range vm.Args() {
		if a == "-qmp" {
			s := strings.TrimPrefix(vm.Args()[i+1], "unix:")
			s, _, _ = strings.Cut(s, ",")
			return filepath.Dir(s)
		}
	}
	return ""
}

func TestContextCancelKills(t *testing.T) {
	requireQEMU(t)
	cfg := testConfig(t, bootDisk(t))
	ctx, cancel := context.WithCancel(context.Background())
	vm, err := Start(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	pid, dir := vm.PID(), tempDirOf(vm)
	cancel()
	select {
	case <-vm.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("qemu still running 20s after the context was cancelled")
	}
	if alive(pid) {
		t.Errorf("qemu %d alive", pid)
	}
	if err := vm.Wait(); !errors.Is(err, ErrKilled) {
		t.Errorf("Wait = %v, want ErrKilled", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s left behind", dir)
	}
}

func TestStartFailsWithQEMUOutput(t *testing.T) {
	requireQEMU(t)
	disk := bootDisk(t)
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"bad device", func(c *Config) { c.ExtraArgs = []string{"-device", "no-such-device"} }, "no-such-device"},
		{"wrong format", func(c *Config) { c.Disk.Format = "qcow2" }, "qcow2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, disk)
			tc.mutate(&cfg)
			_, err := Start(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), "qemu said:") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want qemu's own message mentioning %q", err, tc.want)
			}
		})
	}
	cfg := testConfig(t, filepath.Join(t.TempDir(), "missing.raw"))
	if _, err := Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "missing.raw") {
		t.Errorf("missing disk: err = %v", err)
	}
}

// Under OVMF the boot sector is not bootable, but the firmware reaching
// its boot manager and reporting on the serial port proves the pflash
// setup; the real UEFI boot is builder/disk's e2e test.
func TestUEFIFirmwareRuns(t *testing.T) {
	requireQEMU(t)
	if _, err := FindOVMF(""); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, bootDisk(t))
	cfg.Firmware = UEFI
	cfg.MemoryMiB = 256
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	vm, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Stop(time.Second)
	line, err := vm.WaitForSerial(ctx, regexp.MustCompile(`BdsDxe`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("OVMF: %s", line)
}

func TestPortForwardListensOnLoopbackOnly(t *testing.T) {
	requireQEMU(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	// A second forward on an address of its own, on the guest's port: how
	// instances get their standard ports on 127.0.0.0/8.
	own := fmt.Sprintf("127.%d.%d.%d", 200+rand.IntN(50), rand.IntN(256), 1+rand.IntN(254))
	cfg := testConfig(t, bootDisk(t))
	cfg.NoNetwork = false
	cfg.Forwards = []Forward{{HostPort: port, GuestPort: 22}, {HostAddr: own, HostPort: port, GuestPort: 23}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vm, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Stop(time.Second)
	tcp, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	// /proc/net/tcp: local address as hex IP (little-endian) : port, state
	// 0A = LISTEN.
	var listening []string
	for _, line := range strings.Split(string(tcp), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", port)) && f[3] == "0A" {
			listening = append(listening, f[1])
		}
	}
	hex := func(addr string) string {
		b := netip.MustParseAddr(addr).As4()
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", b[3], b[2], b[1], b[0], port)
	}
	want := []string{hex("127.0.0.1"), hex(own)}
	sort.Strings(listening)
	sort.Strings(want)
	if !slices.Equal(listening, want) {
		t.Errorf("listeners on port %d: %v, want only %v (127.0.0.1 and %s)", port, listening, want, own)
	}
}

//go:build e2e

// The end-to-end boot proof: a real Debian tree, assembled by this package,
// converted to qcow2, and booted under SeaBIOS and OVMF until a systemd
// unit in the guest reports on the serial console.
//
//	go test -tags e2e ./builder/disk/ -run BootDebian -timeout 20m -v
//
// STRATA_E2E_TREE names a ready Debian tree (made with mmdebstrap
// --variant=minbase --include=systemd-sysv,linux-image-cloud-amd64,usr-is-merged);
// it is copied, never modified. Without it the test runs mmdebstrap itself
// with the host's apt sources.
package disk

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"strata/builder/qemu"
)

const e2eMarker = "STRATA-E2E-BOOTED"

// e2eTree returns a private, writable Debian root tree.
func e2eTree(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "root")
	if src := os.Getenv("STRATA_E2E_TREE"); src != "" {
		start := time.Now()
		tool(t, "cp", "-a", src, dst)
		t.Logf("copied %s in %s", src, time.Since(start).Round(time.Millisecond))
		return dst
	}
	requireTools(t, "mmdebstrap")
	sources, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	if lists, _ := filepath.Glob("/etc/apt/sources.list.d/*.list"); len(lists) > 0 {
		sources = append(sources, lists...)
	}
	if st, err := os.Stat("/etc/apt/sources.list"); err == nil && st.Size() > 0 {
		sources = append(sources, "/etc/apt/sources.list")
	}
	if len(sources) == 0 {
		t.Fatal("no apt sources on the host for mmdebstrap; set STRATA_E2E_TREE to a ready Debian tree")
	}
	start := time.Now()
	args := append([]string{"--variant=minbase", "--include=systemd-sysv,linux-image-cloud-amd64,usr-is-merged", "bookworm", dst}, sources...)
	tool(t, "mmdebstrap", args...)
	t.Logf("mmdebstrap took %s", time.Since(start).Round(time.Second))
	return dst
}

// prepareTree does what the lead's vm element and finalise phase will do:
// fstab from Fstab, a grub.cfg booting the kernel by root UUID on the
// serial console, and a unit that reports the boot on ttyS0.
func prepareTree(t *testing.T, tree string, ids IDs) {
	t.Helper()
	writeFile(t, tree, "/etc/fstab", Fstab(ids, true), 0o644)
	if err := os.MkdirAll(filepath.Join(tree, "boot/efi"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, tree, "/boot/grub/grub.cfg", fmt.Sprintf(`set timeout=0
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
menuentry 'strata e2e' {
  linux /vmlinuz %s ro console=ttyS0,115200
  initrd /initrd.img
}
`, KernelRoot(ids)), 0o644)
	// minbase has no dbus, so no logind to act on the ACPI power button:
	// this stands in for it, so Stop's graceful path is exercised. evdev
	// reads whole 24-byte events.
	writeFile(t, tree, "/etc/systemd/system/strata-e2e-powerbutton.service", `[Unit]
Description=strata e2e: power off on the ACPI power button

[Service]
ExecStart=/bin/sh -c 'for d in /sys/class/input/event*; do if [ "$$(cat $$d/device/name)" = "Power Button" ]; then (dd if=/dev/input/$${d##*/} of=/dev/null bs=24 count=1 status=none && systemctl poweroff) & fi; done; wait'

[Install]
WantedBy=multi-user.target
`, 0o644)
	writeFile(t, tree, "/etc/systemd/system/strata-e2e-marker.service", `[Unit]
Description=strata e2e boot marker
After=local-fs.target strata-e2e-powerbutton.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "`+e2eMarker+` fw=$(if [ -d /sys/firmware/efi ]; then echo uefi; else echo bios; fi) root=$(findmnt -no SOURCE /) esp=$(findmnt -no FSTYPE `+ESPMountPoint+`)" >/dev/ttyS0'

[Install]
WantedBy=multi-user.target
`, 0o644)
	wants := filepath.Join(tree, "etc/systemd/system/multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"strata-e2e-marker.service", "strata-e2e-powerbutton.service"} {
		if err := os.Symlink("/etc/systemd/system/"+u, filepath.Join(wants, u)); err != nil {
			t.Fatal(err)
		}
	}
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func allocatedMiB(t *testing.T, p string) float64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return float64(st.Size()) / float64(mib)
}

// TestBootDebianBIOSAndUEFI proves one assembled image boots to systemd
// under SeaBIOS (raw) and OVMF (zstd qcow2), with the root filesystem
// found by UUID, the ESP mounted from fstab, and the image file untouched
// by a Snapshot boot.
func TestBootDebianBIOSAndUEFI(t *testing.T) {
	requireTools(t, append(assembleTools, "qemu-img", qemu.DefaultBinary)...)
	ids := DeriveIDs([]byte("e2e"))
	tree := e2eTree(t)
	prepareTree(t, tree, ids)
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")

	start := time.Now()
	layout, err := Assemble(context.Background(), Options{
		Tree: tree, Output: raw, Bootable: true, IDs: ids,
		GrubDir: hostGrubDir, SourceDateEpoch: testEpoch,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE assemble: %.2f s for a %s image (%d MiB virtual)", time.Since(start).Seconds(), filepath.Base(raw), layout.Size/mib)
	if out, err := exec.Command("sfdisk", "--verify", raw).CombinedOutput(); err != nil {
		t.Fatalf("sfdisk --verify: %v\n%s", err, out)
	}

	qcow := map[string]string{}
	for _, alg := range []string{CompressionZstd, CompressionZlib} {
		out := filepath.Join(dir, "disk-"+alg+".qcow2")
		start := time.Now()
		if err := Convert(context.Background(), raw, out, "qcow2", ConvertOptions{Compression: alg}); err != nil {
			t.Fatal(err)
		}
		t.Logf("FIGURE convert %s: %.2f s, %.1f MiB", alg, time.Since(start).Seconds(), allocatedMiB(t, out))
		qcow[alg] = out
	}

	rawSum := sha256File(t, raw)
	for _, tc := range []struct {
		name     string
		firmware qemu.Firmware
		disk     qemu.Drive
		fw       string
	}{
		{"seabios-raw", qemu.BIOS, qemu.Drive{Path: raw, Format: "raw", Snapshot: true}, "bios"},
		{"ovmf-qcow2-zstd", qemu.UEFI, qemu.Drive{Path: qcow[CompressionZstd], Format: "qcow2", Snapshot: true}, "uefi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			defer cancel()
			serial := filepath.Join(t.TempDir(), "serial.log")
			start := time.Now()
			vm, err := qemu.Start(ctx, qemu.Config{
				Name:      "e2e-" + tc.name,
				Disk:      tc.disk,
				Firmware:  tc.firmware,
				MemoryMiB: 1024,
				SerialLog: serial,
				NoReboot:  true,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer vm.Stop(5 * time.Second)
			line, err := vm.WaitForSerial(ctx, regexp.MustCompile(regexp.QuoteMeta(e2eMarker)))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("FIGURE boot %s (%s): %.1f s to the marker", tc.name, vm.Accel().Name, time.Since(start).Seconds())
			want := fmt.Sprintf("%s fw=%s root=/dev/vda%d esp=vfat", e2eMarker, tc.fw, PartRoot)
			if !strings.Contains(line, want) {
				t.Errorf("marker line %q, want %q", line, want)
			}
			log, _ := os.ReadFile(serial)
			if !strings.Contains(string(log), "root=UUID="+ids.RootFS.String()) {
				t.Error("the kernel command line on the console does not carry root=UUID")
			}
			start = time.Now()
			if err := vm.Stop(2 * time.Minute); err != nil {
				log, _ := os.ReadFile(serial)
				t.Errorf("ACPI power-down: %v; serial console:\n%s", err, tailLines(string(log), 40))
			}
			t.Logf("FIGURE power-down %s: %.1f s", tc.name, time.Since(start).Seconds())
		})
	}
	if got := sha256File(t, raw); got != rawSum {
		t.Error("booting with Snapshot modified the raw image")
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

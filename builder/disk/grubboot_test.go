package disk

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"strata/builder/qemu"
)

// TestGrubFindsRootByUUIDUnderBIOSAndUEFI boots an assembled image (no
// kernel) under SeaBIOS and OVMF: each loader must find the root
// filesystem by UUID and run its /boot/grub/grub.cfg, which reports the
// partition GRUB found on the serial console. The kernel boot itself is
// boot_e2e_test.go's job.
func TestGrubFindsRootByUUIDUnderBIOSAndUEFI(t *testing.T) {
	requireTools(t, append(assembleTools, qemu.DefaultBinary)...)
	ids := DeriveIDs([]byte("grub-boot"))
	tree := makeTree(t, ids, true)
	writeFile(t, tree, "/boot/grub/grub.cfg", "echo STRATA-GRUB-CFG root=$root\n", 0o644)
	img := filepath.Join(t.TempDir(), "disk.raw")
	if _, err := Assemble(context.Background(), Options{
		Tree: tree, Output: img, Size: 128 * mib, Bootable: true, IDs: ids,
		GrubDir: hostGrubDir, SourceDateEpoch: testEpoch,
	}); err != nil {
		t.Fatal(err)
	}
	for _, fw := range []qemu.Firmware{qemu.BIOS, qemu.UEFI} {
		t.Run(string(fw), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			start := time.Now()
			vm, err := qemu.Start(ctx, qemu.Config{
				Name:      "grub-" + string(fw),
				Disk:      qemu.Drive{Path: img, Format: "raw", Snapshot: true},
				Firmware:  fw,
				MemoryMiB: 256,
				NoNetwork: true,
				SerialLog: filepath.Join(t.TempDir(), "serial.log"),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer vm.Stop(time.Second)
			line, err := vm.WaitForSerial(ctx, regexp.MustCompile(`STRATA-GRUB-CFG root=\S+`))
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("STRATA-GRUB-CFG root=hd0,gpt%d", PartRoot); !regexp.MustCompile(regexp.QuoteMeta(want) + `$`).MatchString(line) {
				t.Errorf("serial line %q, want it to end with %q", line, want)
			}
			t.Logf("%s: grub.cfg ran after %.1f s (%s)", fw, time.Since(start).Seconds(), vm.Accel())
		})
	}
}

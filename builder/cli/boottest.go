package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"strata/builder/disk"
	"strata/builder/qemu"
)

// NewBootTestCommand returns `strata boot-test`: boot an image under qemu
// without modifying it and wait for a line on its serial console.
func NewBootTestCommand() *cobra.Command {
	var (
		firmwares []string
		files     []string
		label     string
		expect    string
		timeout   time.Duration
		memory    int
		cpus      int
		keepLog   string
	)
	cmd := &cobra.Command{
		Use:   "boot-test IMAGE",
		Short: "Boot an image under qemu and wait for a line on its serial console",
		Long: `Boot IMAGE (qcow2 or raw) under qemu with writes going to a throw-away
overlay, optionally with a config drive, and wait until a serial console line
matches --expect (a regular expression). KVM is used when it works, else TCG
(STRATA_QEMU_ACCEL=kvm|tcg overrides). Prints the seconds from start to match.`,
		Example: `  strata boot-test out/minimal.qcow2 --firmware bios,uefi --expect 'login:'
  strata boot-test out/mariadb.qcow2 --drive-file strata/bootstrap.json=./bootstrap.json --expect 'strata-agent.*connected'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			image := args[0]
			format := "qcow2"
			if strings.HasSuffix(image, ".raw") {
				format = "raw"
			}
			re, err := regexp.Compile(expect)
			if err != nil {
				return fmt.Errorf("--expect: %w", err)
			}
			driveFiles := map[string][]byte{}
			for _, f := range files {
				dst, src, ok := strings.Cut(f, "=")
				if !ok {
					return fmt.Errorf("--drive-file %q: want PATH-ON-DRIVE=LOCAL-FILE", f)
				}
				b, err := os.ReadFile(src)
				if err != nil {
					return fmt.Errorf("--drive-file: %w", err)
				}
				driveFiles[dst] = b
			}
			tmp, err := os.MkdirTemp("", "strata-boot-test-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			var drives []qemu.Drive
			if len(driveFiles) > 0 {
				cd := filepath.Join(tmp, "config-drive.img")
				if err := disk.WriteConfigDrive(cmd.Context(), cd, label, driveFiles); err != nil {
					return err
				}
				drives = append(drives, qemu.Drive{Path: cd, Format: "raw", ReadOnly: true, Serial: "config-drive"})
			}
			for _, fw := range firmwares {
				res, err := BootTest(cmd.Context(), BootTestConfig{
					Image: image, Format: format, Firmware: qemu.Firmware(fw), Drives: drives,
					Expect: re, Timeout: timeout, MemoryMiB: memory, CPUs: cpus,
					SerialLog: filepath.Join(tmp, fw+".serial.log"),
				})
				if keepLog != "" {
					_ = copyFile(filepath.Join(tmp, fw+".serial.log"), keepLog+"."+fw)
				}
				if err != nil {
					return fmt.Errorf("%s boot: %w", fw, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "boot-test: %s, %s (%s): matched %q after %.1fs\n", image, fw, res.Accel, res.Line, res.Seconds)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&firmwares, "firmware", []string{"bios"}, "firmware to boot with: bios, uefi (comma-separated to boot each in turn)")
	f.StringArrayVar(&files, "drive-file", nil, "put LOCAL-FILE on a config drive at PATH-ON-DRIVE (PATH=LOCAL, repeatable)")
	f.StringVar(&label, "drive-label", disk.LabelConfigDrive, "config drive label (config-2 or cidata)")
	f.StringVar(&expect, "expect", "login:", "regular expression a serial console line must match")
	f.DurationVar(&timeout, "timeout", 10*time.Minute, "how long to wait (a TCG boot takes 40-100 s)")
	f.IntVar(&memory, "memory", 1024, "guest memory in MiB")
	f.IntVar(&cpus, "cpus", 2, "guest CPUs")
	f.StringVar(&keepLog, "serial-log", "", "also keep the serial console log at this path (.bios/.uefi appended)")
	return cmd
}

// BootTestConfig is one boot.
type BootTestConfig struct {
	Image, Format string
	Firmware      qemu.Firmware
	Drives        []qemu.Drive
	Expect        *regexp.Regexp
	Timeout       time.Duration
	MemoryMiB     int
	CPUs          int
	SerialLog     string
}

// BootTestResult says what matched and when.
type BootTestResult struct {
	Line    string
	Seconds float64
	Accel   string
}

// BootTest boots the image, waits for the expected line and powers the VM
// off (killing it if it does not stop). The image is never modified.
func BootTest(ctx context.Context, c BootTestConfig) (BootTestResult, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	start := time.Now()
	vm, err := qemu.Start(ctx, qemu.Config{
		Name: "strata-boot-test", Disk: qemu.Drive{Path: c.Image, Format: c.Format, Snapshot: true},
		Drives: c.Drives, Firmware: c.Firmware, MemoryMiB: c.MemoryMiB, CPUs: c.CPUs,
		NoReboot: true, SerialLog: c.SerialLog,
	})
	if err != nil {
		return BootTestResult{}, err
	}
	defer vm.Stop(20 * time.Second)
	line, err := vm.WaitForSerial(ctx, c.Expect)
	if err != nil {
		return BootTestResult{}, err
	}
	return BootTestResult{Line: line, Seconds: time.Since(start).Seconds(), Accel: vm.Accel().String()}, nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

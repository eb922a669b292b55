package cli

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"strata/agent/wire"
	"strata/builder/boottest"
	"strata/builder/disk"
	"strata/builder/manifest"
	"strata/builder/qemu"
)

// NewBootTestCommand returns `strata boot-test`: boot an image under qemu
// without modifying it and prove it works. newEndpoint makes the controller
// endpoint `--agent` boots talk to; the builder does not import the
// controller, so main hands it in.
func NewBootTestCommand(newEndpoint boottest.NewEndpoint) *cobra.Command {
	var (
		firmwares []string
		files     []string
		label     string
		expect    string
		agent     bool
		manager   string
		dsVersion string
		prepare   bool
		timeout   time.Duration
		memory    int
		cpus      int
	)
	cmd := &cobra.Command{
		Use:   "boot-test IMAGE",
		Short: "Boot an image under qemu and check it comes up (serial console line, or the agent)",
		Long: `Boot IMAGE (qcow2 or raw) under qemu with writes going to a throw-away
overlay. KVM is used when it works, else TCG (STRATA_QEMU_ACCEL=kvm|tcg
overrides the detection). Two kinds of proof:

  --expect REGEXP   a serial console line must match (default: a login prompt);
                    --drive-file puts files on a config drive for the guest.
  --agent           the baked-in strata agent must come up: strata gives the
                    guest a config drive with a bootstrap and a blank data disk,
                    runs an SSH endpoint on the host, and waits until the agent
                    enrolls with its one-time token and heartbeats; with
                    --prepare (the default) it then prepares the datastore on
                    the data disk and waits for it to report running.

The datastore of --agent comes from the image's manifest (IMAGE without its
extension + .manifest.json) unless --manager is given.`,
		Example: `  strata boot-test out/minimal.qcow2 --firmware bios,uefi
  strata boot-test out/mariadb-10.11.qcow2 --agent
  strata boot-test out/x.qcow2 --drive-file strata/nonce=./nonce --expect 'nonce=abc'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			image := args[0]
			if _, err := os.Stat(image); err != nil {
				return err
			}
			tmp, err := os.MkdirTemp("", "strata-boot-test-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			out := cmd.OutOrStdout()
			if agent {
				if manager == "" {
					m, err := manifest.Read(strings.TrimSuffix(image, ".qcow2") + ".manifest.json")
					if err != nil {
						return fmt.Errorf("--agent: no --manager given and the image's manifest cannot say: %w", err)
					}
					if m.Datastore == nil {
						return fmt.Errorf("--agent: the image's manifest names no datastore (build it from a recipe with a datastore section, or give --manager)")
					}
					manager, dsVersion = m.Datastore.Manager, m.Datastore.Version
				}
			}
			for _, fw := range firmwares {
				o := boottest.Options{
					Image: image, Firmware: qemu.Firmware(fw), Timeout: timeout,
					MemoryMiB: memory, CPUs: cpus, WorkDir: tmp,
				}
				if agent {
					a := boottest.AgentOptions{NewEndpoint: newEndpoint, Manager: manager, Version: dsVersion}
					if prepare {
						a.Prepare = DefaultPrepare(manager)
					}
					r, err := boottest.Agent(cmd.Context(), o, a)
					if err != nil {
						return fmt.Errorf("%s boot: %w", fw, err)
					}
					fmt.Fprintf(out, "boot-test: %s, %s (%s): config drive read after %.1fs; agent %s enrolled after %.1fs",
						image, fw, r.Accel, r.ConfigDrive, r.AgentVersion, r.Enrolled)
					if prepare {
						fmt.Fprintf(out, "; %s prepared after %.1fs, running after %.1fs", manager, r.Prepared, r.Running)
					}
					fmt.Fprintln(out)
					continue
				}
				re, err := regexp.Compile(expect)
				if err != nil {
					return fmt.Errorf("--expect: %w", err)
				}
				if len(files) > 0 {
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
					cd := tmp + "/config-drive.img"
					if err := disk.WriteConfigDrive(cmd.Context(), cd, label, driveFiles); err != nil {
						return err
					}
					o.Drives = []qemu.Drive{{Path: cd, Format: "raw", ReadOnly: true, Serial: "config-drive"}}
				}
				r, err := boottest.Serial(cmd.Context(), o, re)
				if err != nil {
					return fmt.Errorf("%s boot: %w", fw, err)
				}
				fmt.Fprintf(out, "boot-test: %s, %s (%s): matched %q after %.1fs\n", image, fw, r.Accel, r.Line, r.Seconds)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&firmwares, "firmware", []string{"bios"}, "firmware to boot with: bios, uefi (comma-separated to boot each in turn)")
	f.StringArrayVar(&files, "drive-file", nil, "put LOCAL-FILE on a config drive at PATH-ON-DRIVE (PATH=LOCAL, repeatable)")
	f.StringVar(&label, "drive-label", disk.LabelConfigDrive, "config drive label (config-2 or cidata)")
	f.StringVar(&expect, "expect", "login:", "regular expression a serial console line must match")
	f.BoolVar(&agent, "agent", false, "prove the baked-in agent comes up and enrolls over SSH")
	f.StringVar(&manager, "manager", "", "with --agent: datastore manager (mariadb, postgresql, redis); default from the manifest")
	f.StringVar(&dsVersion, "datastore-version", "", "with --agent: datastore version; default from the manifest")
	f.BoolVar(&prepare, "prepare", true, "with --agent: also prepare the datastore on a blank data disk")
	f.DurationVar(&timeout, "timeout", 10*time.Minute, "how long one boot may take (a TCG boot takes 20-100 s here)")
	f.IntVar(&memory, "memory", 1024, "guest memory in MiB")
	f.IntVar(&cpus, "cpus", 2, "guest CPUs")
	return cmd
}

// DefaultPrepare is the prepare a boot test asks for: one database and one
// user where the datastore has them.
func DefaultPrepare(manager string) *wire.PrepareArgs {
	p := &wire.PrepareArgs{MemoryMB: 1024}
	if manager != "redis" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			panic(err) // crypto/rand does not fail on Linux
		}
		pw := hex.EncodeToString(b) // only ever used inside the test guest
		p.Databases = []wire.Database{{Name: "boottest"}}
		p.Users = []wire.User{{Name: "boottest", Host: "%", Password: pw, Databases: []string{"boottest"}}}
	}
	return p
}

package build

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"strata/builder/blockdevice"
	"strata/builder/element"
)

// Where strata differs from disk-image-create on purpose, an element that
// needs what strata cannot give is refused before anything runs, naming
// the element, the hook and the contract, never left to fail (or worse,
// do nothing) half-way through a build.

// loopContract matches DIB's variables that name the loop device (and the
// raw file behind it) disk-image-create builds the disk on, and commands
// that make loop devices of their own.
var loopContract = regexp.MustCompile(`\b(IMAGE_BLOCK_DEVICES?|TMP_IMAGE_PATH|losetup|kpartx)\b|mount -o loop`)

// instead says what to use in place of a known element that needs a loop
// device.
var instead = map[string]string{
	"bootloader": "strata's vm element writes GRUB for BIOS and UEFI itself: use strata's vm (strata's elements are searched before DIB's tree) and leave bootloader out",
	"lvm":        "strata's disk has no LVM volumes; leave lvm out",
	"iso":        "strata does not write ISO images; build -t qcow2, raw or tar, or boot the kernel and initramfs the baremetal element extracts",
}

// ramdiskDirs are the hook directories only ramdisk-image-create runs.
var ramdiskDirs = []string{"binary-deps.d", "ramdisk-install.d", "init.d"}

// rootBuilders are DIB's elements that build or configure the root
// filesystem DIB's own debootstrap makes; strata's debian-minimal does that
// part itself (mmdebstrap, apt, systemd), and running both would build or
// configure the root twice.
var rootBuilders = map[string]string{
	"debootstrap":    "builds the root filesystem with debootstrap",
	"debian-systemd": "tells DIB's debootstrap to install systemd",
	"debian-upstart": "tells DIB's debootstrap to install upstart",
	"dpkg":           "configures apt and dpkg in the root filesystem DIB's debootstrap builds",
}

// checkContracts refuses elements made for ramdisk-image-create, DIB's
// own root filesystem builders, and elements whose hooks need a loop
// device.
func checkContracts(set *element.Set) error {
	for _, e := range set.Elements {
		if what, ok := rootBuilders[e.Name]; ok && element.IsDIBTree(filepath.Dir(e.Dir)) {
			return fmt.Errorf("element %s %s; strata's debian-minimal builds the root filesystem (mmdebstrap, with systemd and apt set up): leave %s out", e.Name, what, e.Name)
		}
		if d := ramdiskOnly(e); d != "" {
			return fmt.Errorf("element %s is for ramdisk-image-create (its %s hooks run only there), which strata does not implement: strata builds disk images; leave %s out", e.Name, d, e.Name)
		}
	}
	for _, e := range set.Elements {
		var files []string
		for ph, hooks := range e.Hooks {
			for _, h := range hooks {
				files = append(files, filepath.Join(string(ph), h))
			}
		}
		for _, b := range e.BinNames {
			files = append(files, filepath.Join("bin", b))
		}
		sort.Strings(files)
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(e.Dir, f))
			if err != nil {
				return fmt.Errorf("element %s: %w", e.Name, err)
			}
			m := loopContract.Find(b)
			if m == nil {
				continue
			}
			what := instead[e.Name]
			if what == "" {
				what = "the tree is at $TMP_MOUNT_PATH in every phase, and strata makes the disk from it after cleanup.d"
			}
			if !strings.Contains(string(m), "_") {
				return fmt.Errorf("element %s: %s uses a loop device (%s); strata builds images without loop devices, which unprivileged build hosts and containers often lack: %s", e.Name, f, m, what)
			}
			return fmt.Errorf("element %s: %s uses %s, the loop device disk-image-create builds the disk on; strata assembles disks without loop devices, so there is none to give it: %s", e.Name, f, m, what)
		}
	}
	return nil
}

// ramdiskOnly names the ramdisk hook directory of an element made for
// ramdisk-image-create: one with binary-deps.d or ramdisk-install.d, or
// with init.d and no install.d (mellanox ships init.d for ramdisks and
// install.d for disk images: it is a disk-image element too).
func ramdiskOnly(e *element.Element) string {
	for _, d := range ramdiskDirs {
		fi, err := os.Stat(filepath.Join(e.Dir, d))
		if err != nil || !fi.IsDir() {
			continue
		}
		if d == "init.d" && len(e.Hooks[element.InstallPhase]) > 0 {
			continue
		}
		return d
	}
	return ""
}

// blockDeviceLayout maps DIB's block-device configuration (from
// DIB_BLOCK_DEVICE_CONFIG, else the first element shipping one, as
// disk-image-create looks for it) onto strata's disk, or refuses it.
func blockDeviceLayout(p *plan, cfg *Config) (*blockdevice.Layout, error) {
	src, ok, err := blockdevice.FromEnv(p.env["DIB_BLOCK_DEVICE_CONFIG"])
	if err != nil {
		return nil, err
	}
	for _, e := range p.set.Elements {
		if ok {
			break
		}
		if src, ok, err = blockdevice.FromElement(e.Name, e.Dir, cfg.Arch); err != nil {
			return nil, err
		}
	}
	if !ok {
		return &blockdevice.Layout{}, nil
	}
	l, err := blockdevice.Map(src, p.bootable)
	if err != nil {
		return nil, err
	}
	if l.RootLabel != "" {
		p.env["DIB_ROOT_LABEL"] = l.RootLabel
		p.evaluated["DIB_ROOT_LABEL"] = l.RootLabel
	}
	return l, nil
}

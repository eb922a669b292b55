// Package blockdevice reads diskimage-builder's block-device configuration
// (DIB_BLOCK_DEVICE_CONFIG, or an element's block-device-default.yaml)
// and maps it onto the disk strata assembles without loop devices: a GPT
// disk with a BIOS-boot partition, a 64 MiB EFI system partition and one
// ext4 root filesystem, or a bare ext4 filesystem.
//
// What that disk can express (the root filesystem's label and type, the
// image size, an ESP at /boot/efi, a BIOS-boot partition, an MBR or GPT
// label) is taken over, with a note for every difference a user would
// notice; what it cannot (LVM, a second filesystem such as /var, xfs,
// swap) is refused before anything runs, naming the partition and where
// the configuration came from.
//
// The package only parses and decides; builder/disk writes the disk.
package blockdevice

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Layout is what a block-device configuration asks of strata's disk.
type Layout struct {
	// Source says where the configuration came from, for messages; ""
	// when there was none.
	Source string
	// RootLabel is the root filesystem's label ("" = not set).
	RootLabel string
	// Size is the image size from local_loop (0 = automatic).
	Size int64
	// Partitioned: the configuration has a partition table.
	Partitioned bool
	// Notes are the differences between the configuration and the disk
	// strata writes, to be shown to the user.
	Notes []string
}

// Source is a configuration and where it came from.
type Source struct {
	Name string // "DIB_BLOCK_DEVICE_CONFIG", "element block-device-efi (block-device-default.yaml)"
	YAML []byte
}

// FromEnv reads DIB_BLOCK_DEVICE_CONFIG as disk-image-create does: a
// file:// URL or the YAML itself. ok is false when it is not set.
func FromEnv(value string) (Source, bool, error) {
	if value == "" {
		return Source{}, false, nil
	}
	if path, ok := strings.CutPrefix(value, "file://"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return Source{}, false, fmt.Errorf("DIB_BLOCK_DEVICE_CONFIG: %w", err)
		}
		return Source{Name: "DIB_BLOCK_DEVICE_CONFIG (" + path + ")", YAML: b}, true, nil
	}
	return Source{Name: "DIB_BLOCK_DEVICE_CONFIG", YAML: []byte(value)}, true, nil
}

// FromElement reads an element's block-device-<arch>.yaml or
// block-device-default.yaml, as disk-image-create looks for them.
func FromElement(name, dir, arch string) (Source, bool, error) {
	for _, f := range []string{"block-device-" + arch + ".yaml", "block-device-default.yaml"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err == nil {
			return Source{Name: "element " + name + " (" + f + ")", YAML: b}, true, nil
		}
		if !os.IsNotExist(err) {
			return Source{}, false, fmt.Errorf("element %s: %w", name, err)
		}
	}
	return Source{}, false, nil
}

// Error is a configuration strata cannot build, with what to do instead.
type Error struct {
	Source string
	What   string
}

func (e *Error) Error() string {
	return fmt.Sprintf("block-device configuration from %s: %s; strata assembles one ext4 root filesystem (with BIOS-boot and EFI partitions when the image has the vm element) without loop devices — drop the configuration (unset DIB_BLOCK_DEVICE_CONFIG, leave out the block-device-* element) to get that layout", e.Source, e.What)
}

// Map decides what the configuration asks of strata's disk. bootable is
// whether the image gets partitions and GRUB (the vm element).
func Map(src Source, bootable bool) (*Layout, error) {
	l := &Layout{Source: src.Name}
	bad := func(format string, args ...any) error {
		return &Error{Source: src.Name, What: fmt.Sprintf(format, args...)}
	}
	var nodes []map[string]yaml.Node
	if err := yaml.Unmarshal(src.YAML, &nodes); err != nil {
		return nil, bad("not a list of block-device nodes: %v", err)
	}
	// Refuse whole features first: their partitions only make sense with
	// them.
	for _, n := range nodes {
		if _, ok := n["lvm"]; ok {
			return nil, bad("LVM (an lvm node): strata's disk has no volume groups")
		}
	}
	var loops int
	var fss []filesystem
	hasESP := false
	for _, n := range nodes {
		if len(n) != 1 {
			return nil, bad("each node must be a map with one key (local_loop, partitioning, mkfs...), found %d keys", len(n))
		}
		for kind, body := range n {
			switch kind {
			case "local_loop":
				loops++
				var ll struct {
					Name string `yaml:"name"`
					Size string `yaml:"size"`
				}
				if err := body.Decode(&ll); err != nil {
					return nil, bad("local_loop: %v", err)
				}
				if ll.Size != "" {
					n, err := parseSize(ll.Size)
					if err != nil {
						return nil, bad("local_loop %s: size: %v", ll.Name, err)
					}
					l.Size = n
				}
			case "partitioning":
				var pt struct {
					Label      string `yaml:"label"`
					Partitions []struct {
						Name string    `yaml:"name"`
						Type string    `yaml:"type"`
						Size string    `yaml:"size"`
						Mkfs *mkfsNode `yaml:"mkfs"`
					} `yaml:"partitions"`
				}
				if err := body.Decode(&pt); err != nil {
					return nil, bad("partitioning: %v", err)
				}
				l.Partitioned = true
				switch pt.Label {
				case "gpt":
				case "mbr", "":
					l.Notes = append(l.Notes, "the "+orDefault(pt.Label, "mbr")+" partition table is written as GPT with a protective MBR and a BIOS-boot partition: the disk boots under BIOS (as an MBR disk does) and UEFI")
				default:
					return nil, bad("partition table label %q (mbr or gpt)", pt.Label)
				}
				for _, p := range pt.Partitions {
					typ := strings.ToUpper(strings.TrimPrefix(strings.ToLower(p.Type), "0x"))
					switch {
					case p.Mkfs == nil && typ == "EF02":
						// strata always writes its BIOS-boot partition
					case p.Mkfs == nil:
						return nil, bad("partition %s (type %s) has no filesystem; only a BIOS-boot partition (EF02) may be bare", p.Name, orDefault(p.Type, "default"))
					default:
						fss = append(fss, filesystem{partition: p.Name, typ: p.Type, size: p.Size, mkfs: *p.Mkfs})
					}
				}
			case "mkfs":
				var m mkfsNode
				if err := body.Decode(&m); err != nil {
					return nil, bad("mkfs: %v", err)
				}
				fss = append(fss, filesystem{partition: orDefault(m.Base, "image0"), mkfs: m})
			case "mount", "fstab":
				// Flat-form nodes naming a mkfs by base: only the root
				// filesystem can exist, so a mount elsewhere is refused
				// through its mkfs; a bare mount point is checked here.
				var m struct {
					MountPoint string `yaml:"mount_point"`
				}
				if err := body.Decode(&m); err == nil && m.MountPoint != "" && m.MountPoint != "/" && m.MountPoint != "/boot/efi" {
					return nil, bad("a filesystem mounted at %s: strata's disk has no filesystem but / (and the ESP at /boot/efi)", m.MountPoint)
				}
			default:
				return nil, bad("a %s node, which strata's disk assembly does not know", kind)
			}
		}
	}
	if loops > 1 {
		return nil, bad("%d local_loop images: strata writes one disk", loops)
	}
	root := false
	for _, fs := range fss {
		mp := fs.mkfs.mountPoint()
		typ := strings.ToLower(orDefault(fs.mkfs.Type, "ext4"))
		switch {
		case mp == "/":
			if typ != "ext4" {
				return nil, bad("root filesystem type %s: strata's root filesystem is ext4 (filled with mkfs.ext4 -d, without mounting)", typ)
			}
			if len(fs.mkfs.Label) > 16 {
				return nil, bad("root filesystem label %q is longer than ext4's 16 bytes", fs.mkfs.Label)
			}
			root = true
			l.RootLabel = fs.mkfs.Label
		case mp == "/boot/efi" && (typ == "vfat" || typ == "fat" || typ == "fat32"):
			hasESP = true
			if fs.size != "" {
				if n, err := parseSize(fs.size); err == nil && n != 64<<20 {
					l.Notes = append(l.Notes, fmt.Sprintf("the EFI system partition is 64 MiB, not %s (kernels stay on the root filesystem, where GRUB reads them)", fs.size))
				}
			}
		case mp == "":
			return nil, bad("partition %s gets a %s filesystem that is not mounted anywhere", fs.partition, typ)
		default:
			return nil, bad("partition %s: a %s filesystem mounted at %s; strata's disk has no filesystem but / (and the ESP at /boot/efi)", fs.partition, typ, mp)
		}
	}
	if !root {
		return nil, bad("no filesystem is mounted at /")
	}
	switch {
	case l.Partitioned && !bootable:
		return nil, bad("a partition table, which strata writes only for bootable images: add the vm element")
	case bootable && !l.Partitioned:
		l.Notes = append(l.Notes, "the image has the vm element, so the root filesystem goes into a GPT partition with BIOS-boot and EFI partitions beside it")
	case bootable && !hasESP:
		l.Notes = append(l.Notes, "an EFI system partition (64 MiB, /boot/efi) is added so the disk boots under UEFI too")
	}
	return l, nil
}

type filesystem struct {
	partition, typ, size string
	mkfs                 mkfsNode
}

type mkfsNode struct {
	Name  string `yaml:"name"`
	Base  string `yaml:"base"`
	Type  string `yaml:"type"`
	Label string `yaml:"label"`
	Mount *struct {
		MountPoint string `yaml:"mount_point"`
	} `yaml:"mount"`
}

func (m mkfsNode) mountPoint() string {
	if m.Mount == nil {
		return ""
	}
	return m.Mount.MountPoint
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

var sizeRE = regexp.MustCompile(`^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$`)

// parseSize reads DIB's sizes: a number with an optional unit (B, KiB,
// MiB, GiB, TiB, or KB, MB, GB, TB, or K, M, G, T as binary). Percentages
// are relative and have no absolute value.
func parseSize(s string) (int64, error) {
	if strings.HasSuffix(strings.TrimSpace(s), "%") {
		return 0, fmt.Errorf("%q is relative", s)
	}
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, err
	}
	mult := map[string]float64{
		"": 1, "B": 1,
		"K": 1 << 10, "KIB": 1 << 10, "KB": 1e3,
		"M": 1 << 20, "MIB": 1 << 20, "MB": 1e6,
		"G": 1 << 30, "GIB": 1 << 30, "GB": 1e9,
		"T": 1 << 40, "TIB": 1 << 40, "TB": 1e12,
	}[strings.ToUpper(m[2])]
	if mult == 0 {
		return 0, fmt.Errorf("%q: unknown unit %q", s, m[2])
	}
	return int64(math.Round(n * mult)), nil
}

package blockdevice

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dibConfigs are DIB 3.13's block-device-*.yaml as the elements ship them,
// read from the installed package when it is there, so the test follows
// what users have. (The make test host installs it: ci/deps.sh dib.)
func dibConfig(t *testing.T, element string) Source {
	t.Helper()
	dir := filepath.Join("/usr/lib/python3/dist-packages/diskimage_builder/elements", element)
	src, ok, err := FromElement(element, dir, "amd64")
	if err != nil || !ok {
		t.Fatalf("DIB's %s element: %v (ok %v); ci/deps.sh dib installs python3-diskimage-builder", element, err, ok)
	}
	return src
}

func TestDIBsOwnLayoutsMapOntoStratasDisk(t *testing.T) {
	for _, tc := range []struct {
		element string
		note    string
	}{
		{"block-device-gpt", "EFI system partition (64 MiB, /boot/efi) is added"},
		{"block-device-efi", "not 550MiB"},
		{"block-device-mbr", "written as GPT with a protective MBR"},
	} {
		l, err := Map(dibConfig(t, tc.element), true)
		if err != nil {
			t.Errorf("%s: %v", tc.element, err)
			continue
		}
		if !l.Partitioned || !strings.Contains(strings.Join(l.Notes, "\n"), tc.note) {
			t.Errorf("%s: %+v, want a note %q", tc.element, l, tc.note)
		}
	}
	if _, err := Map(dibConfig(t, "block-device-efi-lvm"), true); err == nil || !strings.Contains(err.Error(), "LVM") {
		t.Errorf("efi-lvm: err = %v, want LVM refused", err)
	}
}

func TestConfigurationsStrataCannotBuildAreRefusedNamingWhy(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
		bootable         bool
	}{
		{"var partition", `
- local_loop: {name: image0}
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: root
        size: 50%
        mkfs: {type: ext4, mount: {mount_point: /}}
      - name: var
        size: 100%
        mkfs: {type: ext4, mount: {mount_point: /var}}
`, "partition var: a ext4 filesystem mounted at /var", true},
		{"xfs root", `
- local_loop: {name: image0}
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: root
        mkfs: {type: xfs, mount: {mount_point: /}}
`, "root filesystem type xfs", true},
		{"swap", `
- local_loop: {name: image0}
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: swap
        type: '8200'
      - name: root
        mkfs: {mount: {mount_point: /}}
`, "partition swap (type 8200) has no filesystem", true},
		{"partitions without vm", `
- local_loop: {name: image0}
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: root
        mkfs: {mount: {mount_point: /}}
`, "add the vm element", false},
		{"no root", `
- local_loop: {name: image0}
- mkfs: {base: image0, type: ext4, mount: {mount_point: /srv}}
`, "mounted at /srv", false},
	} {
		_, err := Map(Source{Name: "DIB_BLOCK_DEVICE_CONFIG", YAML: []byte(tc.yaml)}, tc.bootable)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "DIB_BLOCK_DEVICE_CONFIG") {
			t.Errorf("%s: err = %v, want it to say %q and where the configuration came from", tc.name, err, tc.want)
		}
	}
}

func TestLabelAndSizeAreTakenOver(t *testing.T) {
	cfg := `
- local_loop:
    name: image0
    size: 3GiB
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: ESP
        type: 'EF00'
        size: 64MiB
        mkfs: {type: vfat, mount: {mount_point: /boot/efi}}
      - name: BSP
        type: 'EF02'
        size: 8MiB
      - name: root
        size: 100%
        mkfs: {type: ext4, label: my-root, mount: {mount_point: /}}
`
	l, err := Map(Source{Name: "test", YAML: []byte(cfg)}, true)
	if err != nil {
		t.Fatal(err)
	}
	if l.RootLabel != "my-root" || l.Size != 3<<30 || len(l.Notes) != 0 {
		t.Fatalf("layout = %+v", l)
	}
	// The bare fallback DIB uses without a configuration is strata's
	// non-bootable image.
	bare := "- local_loop: {name: image0}\n- mkfs: {name: mkfs_root, base: image0, mount: {mount_point: /}}\n"
	if l, err := Map(Source{Name: "test", YAML: []byte(bare)}, false); err != nil || l.Partitioned {
		t.Fatalf("bare: %+v %v", l, err)
	}
}

func TestFromEnvReadsFileURLsAndInlineYAML(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bd.yaml")
	os.WriteFile(p, []byte("- local_loop: {name: image0}\n"), 0o644)
	src, ok, err := FromEnv("file://" + p)
	if err != nil || !ok || !strings.Contains(src.Name, p) {
		t.Fatalf("file://: %+v %v %v", src, ok, err)
	}
	if _, ok, _ := FromEnv(""); ok {
		t.Fatal("empty value read as a configuration")
	}
	if _, _, err := FromEnv("file:///does/not/exist"); err == nil {
		t.Fatal("missing file not reported")
	}
}

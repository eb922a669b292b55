package disk

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteConfigDrive(t *testing.T) {
	if err := CheckTools("mkfs.vfat", "mmd", "mcopy", "mtype", "fsck.vfat"); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "cd.img")
	files := map[string][]byte{
		"strata/bootstrap.json":           []byte(`{"instance_id":"i-1"}`),
		"openstack/latest/meta_data.json": []byte(`{"uuid":"i-1"}`),
		"top.txt":                         []byte("top"),
	}
	if err := WriteConfigDrive(context.Background(), out, LabelConfigDrive, files); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("fsck.vfat", "-n", out).CombinedOutput(); err != nil {
		t.Fatalf("fsck.vfat: %v\n%s", err, b)
	}
	label, err := exec.Command("blkid", "-o", "value", "-s", "LABEL", out).Output()
	if err != nil || strings.TrimSpace(string(label)) != "config-2" {
		t.Fatalf("label = %q, %v", label, err)
	}
	for p, want := range files {
		got, err := exec.Command("mtype", "-i", out, "::/"+p).Output()
		if err != nil || string(got) != string(want) {
			t.Errorf("%s = %q, %v; want %q", p, got, err, want)
		}
	}
	if err := WriteConfigDrive(context.Background(), filepath.Join(t.TempDir(), "x"), LabelNoCloud, map[string][]byte{"../escape": nil}); err == nil {
		t.Error("a path escaping the drive was accepted")
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".configdrive-*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatal(err)
	}
}

package dib

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindReadsAnInstallAndItsVersion(t *testing.T) {
	root := t.TempDir()
	pkg := filepath.Join(root, "diskimage_builder")
	for _, f := range []string{"lib/die", "lib/img-functions", "lib/common-functions", "elements/vm/README.rst"} {
		os.MkdirAll(filepath.Dir(filepath.Join(pkg, f)), 0o755)
		os.WriteFile(filepath.Join(pkg, f), nil, 0o644)
	}
	os.MkdirAll(filepath.Join(root, "diskimage_builder-3.13.0.egg-info"), 0o755)
	os.WriteFile(filepath.Join(root, "diskimage_builder-3.13.0.egg-info", "PKG-INFO"), []byte("Name: diskimage-builder\nVersion: 3.13.0\n"), 0o644)
	t.Setenv("STRATA_DIB_DIR", pkg)
	in, ok := Find()
	if !ok || in.Elements != filepath.Join(pkg, "elements") || in.Lib != filepath.Join(pkg, "lib") || in.Version != "3.13.0" {
		t.Fatalf("Find = %+v, %v", in, ok)
	}
	t.Setenv("STRATA_DIB_DIR", "")
	if _, ok := Find(); ok {
		t.Fatal("STRATA_DIB_DIR= did not turn the lookup off")
	}
}

// strata's own library does what DIB documents, under set -eu as hooks
// run.
func TestStrataLibraryDoesWhatDIBDocuments(t *testing.T) {
	lib := t.TempDir()
	if err := WriteLibrary(lib); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	for _, f := range []string{"vmlinuz-6.1.0-9-cloud-amd64", "initrd.img-6.1.0-9-cloud-amd64", "vmlinuz-6.1.0-10-cloud-amd64", "initrd.img-6.1.0-10-cloud-amd64"} {
		os.WriteFile(filepath.Join(root, "boot", f), nil, 0o644)
	}
	script := `set -eu
source "$_LIB/img-functions"
eval declare -A els=($(get_image_element_array))
echo "element=${els[vm]}"
select_boot_kernel_initrd "$ROOT"
echo "kernel=$KERNEL ramdisk=$RAMDISK"
tmpfs_check || echo no-tmpfs
source "$_LIB/die"
false || die "it broke"
`
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = []string{"_LIB=" + lib, "ROOT=" + root, "PATH=" + os.Getenv("PATH"), "IMAGE_ELEMENT_YAML=vm: /elements/vm\nbase: /elements/base\n"}
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("die did not exit 1: %v\n%s", err, out)
	}
	for _, want := range []string{"element=/elements/vm", "kernel=vmlinuz-6.1.0-10-cloud-amd64 ramdisk=initrd.img-6.1.0-10-cloud-amd64", "no-tmpfs", "it broke"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

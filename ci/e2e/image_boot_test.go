//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"strata/builder/boottest"
	"strata/builder/disk"
	"strata/builder/manifest"
	"strata/builder/qemu"
)

// TestMinimalImageBuildsAndBootsUnderBIOSReadingItsConfigDrive builds
// images/debian-minimal.yaml plus the boot-marker test element with the
// strata binary, checks the outputs (checksum, manifest, SBOM), then boots
// the qcow2 under SeaBIOS with a config drive holding a fresh nonce, and
// waits for the marker unit to print that nonce and the firmware it booted
// with on the serial console. The boot disk is an overlay 1 GiB larger than
// the image, as a Nova flavor's root disk would be: the growroot element
// must have grown / beyond the whole image's size by then. (The UEFI path is booted by the MariaDB agent
// test; STRATA_E2E_BOTH_FIRMWARES=1 boots this image under both.)
func TestMinimalImageBuildsAndBootsUnderBIOSReadingItsConfigDrive(t *testing.T) {
	// Light (one VM at most): runs beside the other light tests, after
	// the heavy ones (the package comment says why).
	t.Parallel()
	out := t.TempDir()
	img := filepath.Join(out, "minimal")
	run(t, []string{"ELEMENTS_PATH=" + filepath.Join(repo, "ci/e2e/elements")},
		"build", "-f", "images/debian-minimal.yaml", "-o", img, "--image-cache", cache, "boot-marker")

	qcow := img + ".qcow2"
	sum, err := os.ReadFile(qcow + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	if got := fileSHA256(t, qcow); !strings.HasPrefix(string(sum), got+"  minimal.qcow2") {
		t.Fatalf("checksum file %q does not match the image (%s)", sum, got)
	}
	m, err := manifest.Read(img + ".manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	checkManifest(t, m)
	var sbom struct {
		SPDXVersion string `json:"spdxVersion"`
		Packages    []struct{ Name string }
	}
	b, _ := os.ReadFile(img + ".spdx.json")
	if err := json.Unmarshal(b, &sbom); err != nil || sbom.SPDXVersion != "SPDX-2.3" || len(sbom.Packages) < 50 {
		t.Fatalf("SBOM: %v, version %q, %d packages", err, sbom.SPDXVersion, len(sbom.Packages))
	}
	fi, _ := os.Stat(qcow)
	t.Logf("qcow2: %.1f MiB", float64(fi.Size())/(1<<20))

	n := nonce(t)
	cd := filepath.Join(out, "config-drive.img")
	if err := disk.WriteConfigDrive(context.Background(), cd, disk.LabelConfigDrive, map[string][]byte{"strata/nonce": []byte(n + "\n")}); err != nil {
		t.Fatal(err)
	}
	grown := filepath.Join(out, "grown.qcow2")
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	b, err = exec.Command("qemu-img", "info", "--output=json", qcow).Output()
	if err == nil {
		err = json.Unmarshal(b, &info)
	}
	if err != nil {
		t.Fatalf("qemu-img info: %v", err)
	}
	if b, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", qcow, "-F", "qcow2", grown, strconv.FormatInt(info.VirtualSize+1<<30, 10)).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, b)
	}
	imageMiB := info.VirtualSize >> 20

	firmwares := []qemu.Firmware{qemu.BIOS}
	if os.Getenv("STRATA_E2E_BOTH_FIRMWARES") == "1" {
		firmwares = append(firmwares, qemu.UEFI)
	}
	for _, fw := range firmwares {
		t.Run(string(fw), func(t *testing.T) {
			res, err := boottest.Serial(context.Background(), boottest.Options{
				Image: grown, Firmware: fw, Timeout: 12 * time.Minute, WorkDir: out,
				Drives: []qemu.Drive{{Path: cd, Format: "raw", ReadOnly: true, Serial: "config-drive"}},
			}, regexp.MustCompile(`STRATA-BOOT-MARKER nonce=`+n+` firmware=`+string(fw)+` root_mib=[0-9]+`))
			if err != nil {
				t.Fatal(err)
			}
			rootMiB, _ := strconv.ParseInt(res.Line[strings.LastIndex(res.Line, "=")+1:], 10, 64)
			if rootMiB <= imageMiB {
				t.Fatalf("/ is %d MiB on a disk of %d MiB grown from %d MiB: growroot did not grow it (%q)", rootMiB, imageMiB+1024, imageMiB, res.Line)
			}
			t.Logf("%s: marker after %.1fs (%s), / grown to %d MiB on a %d MiB disk", fw, res.Seconds, res.Accel, rootMiB, imageMiB+1024)
		})
	}
}

func checkManifest(t *testing.T, m *manifest.Manifest) {
	t.Helper()
	names := map[string]bool{}
	for _, e := range m.Elements {
		names[e.Name] = e.Digest != ""
	}
	for _, want := range []string{"base", "vm", "debian-minimal", "config-drive", "growroot", "boot-marker"} {
		if !names[want] {
			t.Errorf("manifest lacks element %s (or its digest)", want)
		}
	}
	pkgs := map[string]string{}
	for _, p := range m.Packages {
		pkgs[p.Name] = p.Version
	}
	for _, want := range []string{"linux-image-cloud-amd64", "systemd", "grub-pc-bin", "udev"} {
		if pkgs[want] == "" {
			t.Errorf("manifest lacks package %s with a version", want)
		}
	}
	hooks := map[string]manifest.Hook{}
	for _, h := range m.Hooks {
		hooks[h.Phase+"/"+h.Name] = h
	}
	for _, want := range []string{"root.d/10-debian-minimal", "install.d/01-package-installs", "install.d/70-boot-marker", "finalise.d/50-vm-bootloader"} {
		if h, ok := hooks[want]; !ok || (h.Status != "ok" && h.Status != "cached") {
			t.Errorf("manifest hook %s: %+v", want, h)
		}
	}
	if len(m.Outputs) != 1 || m.Outputs[0].Format != "qcow2" || m.Outputs[0].SHA256 == "" || m.Outputs[0].VirtualSize < 1<<30 {
		t.Errorf("manifest outputs = %+v", m.Outputs)
	}
	if len(m.Inputs.PhaseKeys) != 11 || m.Inputs.Env["DIB_RELEASE"] != "bookworm" {
		t.Errorf("manifest inputs = %+v", m.Inputs)
	}
}

func fileSHA256(t *testing.T, p string) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

package qemu

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Firmware selects how the VM boots.
type Firmware string

const (
	// BIOS boots with SeaBIOS, qemu's default firmware.
	BIOS Firmware = "bios"
	// UEFI boots with OVMF from pflash.
	UEFI Firmware = "uefi"
)

// DefaultOVMFDir is where Debian's ovmf package installs the firmware.
const DefaultOVMFDir = "/usr/share/OVMF"

// OVMF is a pair of UEFI firmware images: read-only code and the template
// of the variable store, which each VM gets a private copy of.
type OVMF struct {
	Code string
	Vars string
}

// ovmfPairs are tried in order: Debian's 4 MiB build, then the 2 MiB one.
// The Secure Boot builds (.secboot/.ms) need SMM and enrolled keys, and
// are not used.
var ovmfPairs = [][2]string{
	{"OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"},
	{"OVMF_CODE.fd", "OVMF_VARS.fd"},
}

// FindOVMF returns the first complete OVMF pair in dir ("" for
// DefaultOVMFDir).
func FindOVMF(dir string) (OVMF, error) {
	if dir == "" {
		dir = DefaultOVMFDir
	}
	for _, p := range ovmfPairs {
		o := OVMF{Code: filepath.Join(dir, p[0]), Vars: filepath.Join(dir, p[1])}
		if isFile(o.Code) && isFile(o.Vars) {
			return o, nil
		}
	}
	return OVMF{}, fmt.Errorf("no OVMF firmware (OVMF_CODE_4M.fd or OVMF_CODE.fd with its VARS file) in %s: install the ovmf package (`ci/deps.sh build boot`)", dir)
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// copyFile copies src to a new file dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDetectAccel(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	pvm := filepath.Join(dir, "kvm_pvm")
	if err := os.Mkdir(pvm, 0o755); err != nil {
		t.Fatal(err)
	}
	kvm := filepath.Join(dir, "kvm") // a regular file opens like a usable /dev/kvm
	if err := os.WriteFile(kvm, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, override, pvm, kvm string
		wantName, wantCPU        string
		wantReason               string
	}{
		{"override kvm", "kvm", pvm, missing, "kvm", "host", "STRATA_QEMU_ACCEL=kvm"},
		{"override tcg", "tcg", missing, kvm, "tcg", "max", "STRATA_QEMU_ACCEL=tcg"},
		{"pvm", "", pvm, kvm, "tcg", "max", "is PVM"},
		{"no kvm", "", missing, missing, "tcg", "max", "no such file or directory"},
		{"kvm", "", missing, kvm, "kvm", "host", "is usable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := detectAccel(tc.override, tc.pvm, tc.kvm)
			if err != nil {
				t.Fatal(err)
			}
			if a.Name != tc.wantName || a.CPU != tc.wantCPU || !strings.Contains(a.Reason, tc.wantReason) {
				t.Errorf("got %+v, want %s/%s with reason containing %q", a, tc.wantName, tc.wantCPU, tc.wantReason)
			}
			if !strings.HasPrefix(a.String(), tc.wantName+": ") {
				t.Errorf("String() = %q", a.String())
			}
		})
	}
	if _, err := detectAccel("hvf", missing, kvm); err == nil || !strings.Contains(err.Error(), "want kvm or tcg") {
		t.Errorf("bad override: err = %v", err)
	}
}

func TestFindOVMF(t *testing.T) {
	dir := t.TempDir()
	if _, err := FindOVMF(dir); err == nil || !strings.Contains(err.Error(), "ovmf") {
		t.Errorf("empty dir: err = %v", err)
	}
	for _, f := range []string{"OVMF_CODE.fd", "OVMF_VARS.fd"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	o, err := FindOVMF(dir)
	if err != nil || o.Code != filepath.Join(dir, "OVMF_CODE.fd") || o.Vars != filepath.Join(dir, "OVMF_VARS.fd") {
		t.Errorf("2M pair: %+v %v", o, err)
	}
	// The 4M build wins, but only as a complete pair.
	if err := os.WriteFile(filepath.Join(dir, "OVMF_CODE_4M.fd"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if o, _ := FindOVMF(dir); o.Code != filepath.Join(dir, "OVMF_CODE.fd") {
		t.Errorf("incomplete 4M pair chosen: %+v", o)
	}
	if err := os.WriteFile(filepath.Join(dir, "OVMF_VARS_4M.fd"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if o, _ := FindOVMF(dir); o.Code != filepath.Join(dir, "OVMF_CODE_4M.fd") || o.Vars != filepath.Join(dir, "OVMF_VARS_4M.fd") {
		t.Errorf("4M pair not preferred: %+v", o)
	}
}

package qemu

import (
	"fmt"
	"os"
)

// AccelEnv overrides accelerator detection: "kvm" or "tcg".
const AccelEnv = "STRATA_QEMU_ACCEL"

// Accel is the accelerator a VM runs with and why it was chosen.
type Accel struct {
	Name   string // "kvm" or "tcg"
	CPU    string // -cpu model: "host" under KVM, "max" under TCG
	Reason string
}

func (a Accel) String() string { return a.Name + ": " + a.Reason }

var (
	accelKVM = Accel{Name: "kvm", CPU: "host"}
	accelTCG = Accel{Name: "tcg", CPU: "max"}
)

// Host paths DetectAccel looks at.
const (
	kvmDevice = "/dev/kvm"
	// pvmModule exists when the host's KVM is PVM, a paravirtualised KVM
	// on which stock guest kernels hang and OVMF stops with "KVM internal
	// error".
	pvmModule = "/sys/module/kvm_pvm"
)

// DetectAccel picks the accelerator: $STRATA_QEMU_ACCEL if set; else TCG
// when /dev/kvm cannot be opened or the host's KVM is PVM; else KVM.
func DetectAccel() (Accel, error) {
	return detectAccel(os.Getenv(AccelEnv), pvmModule, kvmDevice)
}

func detectAccel(override, pvmPath, kvmPath string) (Accel, error) {
	switch override {
	case "kvm":
		a := accelKVM
		a.Reason = AccelEnv + "=kvm"
		return a, nil
	case "tcg":
		a := accelTCG
		a.Reason = AccelEnv + "=tcg"
		return a, nil
	case "":
	default:
		return Accel{}, fmt.Errorf("%s=%q: want kvm or tcg", AccelEnv, override)
	}
	if _, err := os.Stat(pvmPath); err == nil {
		a := accelTCG
		a.Reason = kvmPath + " is PVM (" + pvmPath + " exists), which hangs stock kernels"
		return a, nil
	}
	f, err := os.OpenFile(kvmPath, os.O_RDWR, 0)
	if err != nil {
		a := accelTCG
		a.Reason = "cannot open " + kvmPath + ": " + errReason(err)
		return a, nil
	}
	f.Close()
	a := accelKVM
	a.Reason = kvmPath + " is usable"
	return a, nil
}

func errReason(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

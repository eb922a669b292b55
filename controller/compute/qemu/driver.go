// Package qemu is the embedded compute driver: each instance is a local
// qemu VM (KVM when usable, else TCG, via strata/builder/qemu) booted from
// a qcow2 overlay on the registered image, with a sparse raw data disk, a
// vfat config drive carrying the agent's bootstrap, and user-mode
// networking whose forwards expose the database's standard port on a
// loopback address of the instance's own (networks.go), reachable from
// this host only.
//
// Where things are, per instance, under Dir/<instance-id>/:
//
//	root.qcow2        overlay; the image itself is never written
//	data.raw          the data volume (guest: /dev/disk/by-id/virtio-strata-data)
//	config-drive.img  the config drive (label config-2)
//	console.log       the serial console of the current boot (.1: previous)
//	server.json       address, ports, size and pid: enough to start the VM again
//
// and, per network, networks/<network id>/<address>: the claim on an
// instance's address (networks.go).
//
// VMs are children of the controller process (they die with it; the
// builder's launcher guarantees no stray qemu). A controller that starts
// again finds them stopped and starts them again (StartServer, driven by
// lifecycle's recovery) — on the same ports, disks and enrolled agent key.
//
// The driver owns these files and processes only.
package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bq "strata/builder/qemu"
	"strata/controller/compute"
)

// Config configures the driver.
type Config struct {
	// Dir holds one directory per instance.
	Dir string
	// Accel overrides accelerator detection (tests).
	Accel *bq.Accel
	// Firmware defaults to BIOS.
	Firmware bq.Firmware
	// QemuImg defaults to "qemu-img"; Binary to qemu-system-x86_64.
	QemuImg string
	Binary  string
	// StopTimeout bounds a guest's ACPI power-off at Shutdown (30s).
	StopTimeout time.Duration
	// Networks are the blocks of loopback addresses instances get their
	// address from (networks.go), the first the default; nil means
	// DefaultNetwork alone.
	Networks []Network
	Logger   *slog.Logger
}

// Driver runs instances as local VMs.
type Driver struct {
	cfg  Config
	log  *slog.Logger
	life context.Context

	mu  sync.Mutex
	vms map[string]*bq.VM
}

var _ compute.Driver = (*Driver)(nil)

// New returns a driver whose VMs live until life ends (or Shutdown).
func New(life context.Context, cfg Config) (*Driver, error) {
	if cfg.Dir == "" {
		return nil, errors.New("qemu driver: Dir is required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("qemu driver: %w", err)
	}
	if cfg.QemuImg == "" {
		cfg.QemuImg = "qemu-img"
	}
	if cfg.Firmware == "" {
		cfg.Firmware = bq.BIOS
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	if len(cfg.Networks) == 0 {
		cfg.Networks = []Network{DefaultNetwork}
	}
	if err := checkNetworks(cfg.Networks); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Driver{cfg: cfg, log: log.With("component", "compute-qemu"), life: life, vms: map[string]*bq.VM{}}, nil
}

// Paths of an instance's files.
type paths struct {
	dir, root, data, configDrive, console, state, qmp string
}

func (d *Driver) paths(instanceID string) paths {
	dir := filepath.Join(d.cfg.Dir, instanceID)
	// A unix socket path must stay under 108 bytes; state dirs can be deep.
	h := sha256.Sum256([]byte(dir))
	return paths{
		dir:         dir,
		root:        filepath.Join(dir, "root.qcow2"),
		data:        filepath.Join(dir, "data.raw"),
		configDrive: filepath.Join(dir, "config-drive.img"),
		console:     filepath.Join(dir, "console.log"),
		state:       filepath.Join(dir, "server.json"),
		qmp:         filepath.Join(os.TempDir(), "strata-qmp-"+hex.EncodeToString(h[:8])+".sock"),
	}
}

// checkID keeps instance ids (they name directories) to what the
// controller makes.
func checkID(id string) error {
	if len(id) < 8 || len(id) > 64 {
		return fmt.Errorf("%w: instance id %q", compute.ErrInvalid, id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%w: instance id %q", compute.ErrInvalid, id)
		}
	}
	return nil
}

// Shutdown powers every running VM off (ACPI, then kill after
// StopTimeout), in parallel. The controller calls it when it exits.
func (d *Driver) Shutdown() {
	d.mu.Lock()
	vms := make(map[string]*bq.VM, len(d.vms))
	for id, vm := range d.vms {
		vms[id] = vm
	}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for id, vm := range vms {
		wg.Go(func() {
			if err := vm.Stop(d.cfg.StopTimeout); err != nil {
				d.log.Warn("VM did not power off cleanly", "instance", id, "err", err)
			}
		})
	}
	wg.Wait()
}

// Running lists the instances whose VM this driver runs (tests, metrics).
func (d *Driver) Running() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for id, vm := range d.vms {
		select {
		case <-vm.Done():
		default:
			out = append(out, id)
		}
	}
	return out
}

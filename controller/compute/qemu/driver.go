// Package qemu is the embedded compute driver: each instance is a local
// qemu VM (KVM when usable, else TCG, via strata/builder/qemu) booted from
// a qcow2 overlay on the registered image, with a sparse raw data disk, a
// vfat config drive carrying the agent's bootstrap, and user-mode
// networking whose forwards expose the database's standard port on a
// loopback address of the instance's own (networks.go), reachable from
// this host only. The guest itself reaches nothing but the agent endpoint
// (fence.go).
//
// Where things are, per instance, under Dir/<instance-id>/:
//
//	root.qcow2        overlay; the image itself is never written
//	root.qcow2.old    during a rebuild: the old overlay, kept for a rollback
//	                  until the new guest is ready (rebuild.go); with
//	                  config-drive.img.old
//	data.raw          the data volume (guest: /dev/disk/by-id/virtio-strata-data)
//	config-drive.img  the config drive (label config-2)
//	console.log       the serial console of the current boot (.1: previous)
//	qemu.log          qemu's own messages
//	run/vm-*/         the running VM's temporary files (UEFI variables,
//	                  snapshot overlays, QMP sockets); qemu's working dir
//	server.json       address, ports, size, pid and launch digest: enough
//	                  to find the running VM again, or to start it again
//
// and, per network, networks/<network id>/<address>: the claim on an
// instance's address (networks.go).
//
// VMs outlive the controller (builder/qemu's Detached mode): a controller
// that is killed, or stopped with SIGTERM, leaves them running, and one
// that starts again adopts them — a VM is ours when the pid in server.json
// is a qemu whose command line names this instance's root disk — and
// starts only those that are really down (StartServer, driven by
// lifecycle's recovery), on the same ports, disks and enrolled agent key.
// server.json records a digest of the command line a VM was started with;
// a running VM whose digest differs from what the driver would start now
// is reported by LaunchOutdated, and RestartServer restarts it with the
// current settings. StopAll powers every VM off (`strata controller vms
// stop`); Config.DieWithController ties the VMs to the controller's
// process (tests).
//
// The driver owns these files and processes only.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	// StopTimeout bounds a guest's ACPI power-off before RestartServer
	// (30s).
	StopTimeout time.Duration
	// RebuildStopTimeout bounds the guest's ACPI power-off before a
	// rebuild swaps its root disk (2 min): its database stops cleanly
	// rather than being killed; acknowledged commits survive a kill anyway.
	RebuildStopTimeout time.Duration
	// DieWithController gives each VM a parent-death signal: it dies with
	// the controller process (tests, which must leave no qemu behind).
	DieWithController bool
	// OnExit, if set, is called when a VM of an instance exits (watched
	// for VMs this process started or adopted), so recovery can look at
	// once rather than at its next round.
	OnExit func(instanceID string)
	// Networks are the blocks of loopback addresses instances get their
	// address from (networks.go), the first the default; nil means
	// DefaultNetwork alone.
	Networks []Network
	// AgentEndpoint is the agent endpoint's listening address on this
	// host (host:port, IPv4). Every VM is fenced in (fence.go): its one
	// way out leads there, at GuestEndpoint. Empty: no way out at all.
	AgentEndpoint string
	// Relay is the program a guest's connection to the endpoint is
	// handed to (default: socat, found on PATH).
	Relay string
	// PublicAddresses are the pool public instances are published on
	// (publish.go): addresses of this host, apart from Networks.
	PublicAddresses []netip.Prefix
	// RelayCommand runs RunRelay (`strata controller publish-relay`); it
	// is required with PublicAddresses.
	RelayCommand []string
	Logger       *slog.Logger
}

// Driver runs instances as local VMs.
type Driver struct {
	cfg  Config
	log  *slog.Logger
	life context.Context

	mu sync.Mutex
	// vms are the VMs this process started (it waits for them); watched
	// the pids of adopted VMs being watched for their exit.
	vms     map[string]*bq.VM
	watched map[string]int
	// swapping are the instances whose root disk a rebuild or revert is
	// swapping: StartServer (recovery) leaves them to it.
	swapping map[string]bool
	// pubMu serialises changes to publications.
	pubMu sync.Mutex
}

var (
	_ compute.Driver        = (*Driver)(nil)
	_ compute.LaunchChecker = (*Driver)(nil)
	_ compute.Restarter     = (*Driver)(nil)
	_ compute.VolumeSizer   = (*Driver)(nil)
)

// New returns a driver. life bounds the goroutines that watch VMs, never
// the VMs themselves.
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
	if cfg.RebuildStopTimeout == 0 {
		cfg.RebuildStopTimeout = 2 * time.Minute
	}
	if len(cfg.Networks) == 0 {
		cfg.Networks = []Network{DefaultNetwork}
	}
	if err := checkNetworks(cfg.Networks); err != nil {
		return nil, err
	}
	if err := checkFence(&cfg); err != nil {
		return nil, err
	}
	if err := checkPublic(&cfg); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Driver{cfg: cfg, log: log.With("component", "compute-qemu"), life: life,
		vms: map[string]*bq.VM{}, watched: map[string]int{}, swapping: map[string]bool{}}, nil
}

// Paths of an instance's files.
type paths struct {
	dir, root, data, configDrive, console, state, output, run string
}

func (d *Driver) paths(instanceID string) paths {
	dir := filepath.Join(d.cfg.Dir, instanceID)
	return paths{
		dir:         dir,
		root:        filepath.Join(dir, "root.qcow2"),
		data:        filepath.Join(dir, "data.raw"),
		configDrive: filepath.Join(dir, "config-drive.img"),
		console:     filepath.Join(dir, "console.log"),
		state:       filepath.Join(dir, "server.json"),
		output:      filepath.Join(dir, "qemu.log"),
		run:         filepath.Join(dir, "run"),
	}
}

// ctlSocket is the driver's own QMP socket in a VM's run directory (the
// launcher holds the VM's first one while it watches the VM): block_resize
// and power-off go through it, for adopted VMs too.
const ctlSocket = "qmp-ctl.sock"

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

// StopAll powers off every running VM under Dir, in parallel: ACPI power
// button, then kill after timeout (0: kill at once), and stops the publish
// relays. It is the explicit
// way to stop the VMs (`strata controller vms stop`): a controller that
// stops leaves them running. It returns how many VMs it stopped.
func (d *Driver) StopAll(ctx context.Context, timeout time.Duration) (int, error) {
	entries, err := os.ReadDir(d.cfg.Dir)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	for _, e := range entries {
		id := e.Name()
		if !e.IsDir() || checkID(id) != nil {
			continue
		}
		// Its publication goes with it (recovery starts both again).
		if err := d.stopRelay(d.paths(id)); err != nil {
			d.log.Warn("publish relay did not stop", "instance", id, "err", err)
		}
		if _, ok := d.pidOf(id); !ok {
			continue
		}
		wg.Go(func() {
			if err := d.stop(id, timeout); err != nil {
				d.log.Warn("VM did not power off cleanly", "instance", id, "err", err)
			}
			mu.Lock()
			n++
			mu.Unlock()
		})
	}
	wg.Wait()
	return n, nil
}

// Running lists the instances whose VM runs (tests, metrics).
func (d *Driver) Running() []string {
	entries, _ := os.ReadDir(d.cfg.Dir)
	var out []string
	for _, e := range entries {
		if _, ok := d.pidOf(e.Name()); ok && checkID(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// KillUnder SIGKILLs every qemu process whose command line names a path
// under dir, with its process group, and returns their pids: the cleanup
// tests run so that no VM of theirs outlives them, whatever happened to
// the controller that started it.
func KillUnder(dir string) []int {
	dir = filepath.Clean(dir) + "/"
	procs, _ := os.ReadDir("/proc")
	var killed []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if !strings.HasPrefix(filepath.Base(args[0]), "qemu-system") || !strings.Contains(string(cmdline), dir) {
			continue
		}
		syscall.Kill(-pid, syscall.SIGKILL)
		syscall.Kill(pid, syscall.SIGKILL)
		killed = append(killed, pid)
	}
	for _, pid := range killed {
		waitGone(pid)
	}
	return killed
}

// Package boottest boots a built image under qemu and proves it works:
// either a line on the serial console (Serial), or the baked-in strata
// agent coming up (Agent): the agent reads a config drive carrying a
// bootstrap, dials an SSH endpoint this package runs on the host (the guest
// reaches the host's loopback at 10.0.2.2), enrolls with the one-time
// token, heartbeats, and — if asked — prepares its datastore on a blank
// data disk.
//
// The endpoint is the controller's own (controller/agentendpoint over an
// in-memory store), but the builder must not import the controller: rooms
// meet only in strata/agent/wire. So this package says what it needs as a
// small interface, Endpoint, and the caller hands in a constructor
// (AgentOptions.NewEndpoint): the strata main wires the controller's, as do
// the end-to-end tests. Everything else speaks wire, as the controller
// does. It never modifies the image (writes go to an overlay).
package boottest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/wire"
	"strata/builder/disk"
	"strata/builder/qemu"
)

// Options describe one boot.
type Options struct {
	Image    string
	Format   string // qcow2 (default) or raw
	Firmware qemu.Firmware
	// Drives are extra disks (Serial boots only; Agent makes its own).
	Drives    []qemu.Drive
	MemoryMiB int
	CPUs      int
	Timeout   time.Duration
	// WorkDir holds the serial log, config drive and data disk; it must
	// exist. The caller removes it.
	WorkDir string
	Logger  *slog.Logger
}

func (o *Options) defaults() {
	if o.Format == "" {
		o.Format = "qcow2"
		if strings.HasSuffix(o.Image, ".raw") {
			o.Format = "raw"
		}
	}
	if o.Firmware == "" {
		o.Firmware = qemu.BIOS
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 1024
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// SerialLog is where the boot's serial console is written.
func (o Options) SerialLog() string {
	return filepath.Join(o.WorkDir, string(o.Firmware)+".serial.log")
}

// SerialResult says what matched and when.
type SerialResult struct {
	Line    string
	Seconds float64
	Accel   string
}

// Serial boots the image and waits until a console line matches expect,
// then powers the VM off (killing it if it does not stop).
func Serial(ctx context.Context, o Options, expect *regexp.Regexp) (SerialResult, error) {
	o.defaults()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	start := time.Now()
	vm, err := start1(ctx, o, o.Drives)
	if err != nil {
		return SerialResult{}, err
	}
	defer vm.Stop(20 * time.Second)
	line, err := vm.WaitForSerial(ctx, expect)
	if err != nil {
		return SerialResult{}, err
	}
	return SerialResult{Line: line, Seconds: time.Since(start).Seconds(), Accel: vm.Accel().String()}, nil
}

func start1(ctx context.Context, o Options, drives []qemu.Drive) (*qemu.VM, error) {
	return qemu.Start(ctx, qemu.Config{
		Name: "strata-boot-test", Disk: qemu.Drive{Path: o.Image, Format: o.Format, Snapshot: true},
		Drives: drives, Firmware: o.Firmware, MemoryMiB: o.MemoryMiB, CPUs: o.CPUs,
		NoReboot: true, SerialLog: o.SerialLog(), Logger: o.Logger,
	})
}

// Endpoint is what an agent boot test needs of the controller's agent
// endpoint: an SSH server an agent enrolls with, over a store that keeps
// everything in memory and can be asked what it received.
type Endpoint interface {
	// AddInstance registers a one-time enrollment token for instanceID.
	AddInstance(instanceID, token string)
	// Serve accepts agents on ln until ctx ends.
	Serve(ctx context.Context, ln net.Listener) error
	// Submit queues an operation for the instance; Await waits for its
	// result.
	Submit(ctx context.Context, instanceID string, op wire.Operation) error
	Await(ctx context.Context, instanceID, opID string) (wire.Result, error)
	// Heartbeats lists the heartbeats stored for instanceID, oldest first.
	Heartbeats(instanceID string) []wire.Heartbeat
	// Redemptions counts successful token redemptions.
	Redemptions() int
	// Keys lists the agent keys enrolled for instanceID.
	Keys(instanceID string) []wire.AgentKey
}

// NewEndpoint makes an Endpoint presenting hostKey and logging to log.
type NewEndpoint func(hostKey ssh.Signer, log *slog.Logger) (Endpoint, error)

// AgentOptions say what the agent boot must show.
type AgentOptions struct {
	// NewEndpoint makes the controller endpoint the agent dials (required;
	// the strata main hands in controller/agentendpoint's).
	NewEndpoint NewEndpoint
	// Manager and Version identify the datastore (from the image's
	// manifest or recipe).
	Manager, Version string
	// Prepare, if set, is sent as the prepare operation once the agent is
	// enrolled; the test then waits for a heartbeat reporting the datastore
	// running on the data volume.
	Prepare *wire.PrepareArgs
	// DataDiskBytes is the blank data disk's size (default 1 GiB).
	DataDiskBytes int64
	// Check, if set, runs once the agent is up (and prepared), with the VM
	// still running: further operations through ep.
	Check func(ctx context.Context, ep Endpoint, instanceID string) error
	// NetworkData, if set, goes on the config drive as Nova's
	// openstack/latest/network_data.json. The guest's one NIC has qemu's
	// default MAC address, GuestMAC; the controller is at 10.0.2.2 on the
	// 10.0.2.0/24 of qemu's user network.
	NetworkData []byte
}

// GuestMAC is the MAC address of the guest's NIC (qemu's default for the
// first one).
const GuestMAC = "52:54:00:12:34:56"

// AgentResult is what the agent boot showed, with seconds since qemu
// started.
type AgentResult struct {
	Accel          string
	ConfigDrive    float64 // the config drive was read
	Enrolled       float64 // enrolled and first heartbeat received
	Prepared       float64 // prepare answered (0 if not asked)
	Running        float64 // a heartbeat said running (0 if not asked)
	AgentVersion   string
	FirstHeartbeat wire.Heartbeat
	Prepare        *wire.PrepareResult
	LastHeartbeat  wire.Heartbeat
	Redemptions    int
	EnrolledKeys   int
	InstanceID     string
}

// dataSerial is the data disk's virtio serial: the guest sees it as
// /dev/disk/by-id/virtio-strata-data.
const dataSerial = "strata-data"

// Agent boots an image with the strata agent in it and proves the agent
// comes up and talks to a controller endpoint over SSH.
func Agent(ctx context.Context, o Options, a AgentOptions) (AgentResult, error) {
	o.defaults()
	if a.Manager == "" {
		return AgentResult{}, errors.New("agent boot test: the datastore manager is not known (give it, or boot an image whose manifest names it)")
	}
	if a.NewEndpoint == nil {
		return AgentResult{}, errors.New("agent boot test: no controller endpoint to talk to (AgentOptions.NewEndpoint is not set)")
	}
	if a.DataDiskBytes == 0 {
		a.DataDiskBytes = 1 << 30
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return AgentResult{}, err
	}
	hostKey, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return AgentResult{}, err
	}
	res := AgentResult{InstanceID: "boot-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	ep, err := a.NewEndpoint(hostKey, o.Logger)
	if err != nil {
		return res, err
	}
	token := wire.NewEnrollmentToken()
	ep.AddInstance(res.InstanceID, token)
	// qemu's user network connects the guest's 10.0.2.2 to this loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	sctx, stopServer := context.WithCancel(ctx)
	defer stopServer()
	go ep.Serve(sctx, ln)

	boot := wire.Bootstrap{
		Format: 1, InstanceID: res.InstanceID,
		Controllers:       []string{"10.0.2.2:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)},
		ControllerHostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey.PublicKey()))),
		EnrollmentToken:   token,
		Datastore:         wire.DatastoreRef{Manager: a.Manager, Version: a.Version},
		HeartbeatSeconds:  5,
		DataDevice:        "/dev/disk/by-id/virtio-" + dataSerial,
	}
	bj, err := json.Marshal(boot)
	if err != nil {
		return res, err
	}
	cd := filepath.Join(o.WorkDir, "config-drive.img")
	files := map[string][]byte{"strata/bootstrap.json": bj}
	if a.NetworkData != nil {
		files["openstack/latest/network_data.json"] = a.NetworkData
	}
	if err := disk.WriteConfigDrive(ctx, cd, disk.LabelConfigDrive, files); err != nil {
		return res, err
	}
	data := filepath.Join(o.WorkDir, "data.raw")
	if err := os.WriteFile(data, nil, 0o600); err != nil {
		return res, err
	}
	if err := os.Truncate(data, a.DataDiskBytes); err != nil {
		return res, err
	}

	start := time.Now()
	since := func() float64 { return time.Since(start).Seconds() }
	vm, err := start1(ctx, o, []qemu.Drive{
		{Path: cd, Format: "raw", ReadOnly: true, Serial: "config-drive"},
		{Path: data, Format: "raw", Serial: dataSerial},
	})
	if err != nil {
		return res, err
	}
	defer vm.Stop(30 * time.Second)
	res.Accel = vm.Accel().String()
	if _, err := vm.WaitForSerial(ctx, regexp.MustCompile(`strata-config-drive: copied`)); err != nil {
		return res, fmt.Errorf("the guest did not read its config drive: %w", err)
	}
	res.ConfigDrive = since()

	err = wait(ctx, func() bool {
		return len(ep.Heartbeats(res.InstanceID)) > 0
	})
	if err != nil {
		return res, fmt.Errorf("the agent did not enroll and heartbeat (is strata-agent in the image? see the serial log %s): %w", o.SerialLog(), err)
	}
	res.Enrolled = since()
	res.FirstHeartbeat = ep.Heartbeats(res.InstanceID)[0]
	res.AgentVersion = res.FirstHeartbeat.AgentVersion
	res.Redemptions = ep.Redemptions()
	res.EnrolledKeys = len(ep.Keys(res.InstanceID))

	if a.Prepare != nil {
		args, err := json.Marshal(a.Prepare)
		if err != nil {
			return res, err
		}
		op := wire.Operation{ID: "boot-test-prepare", Kind: wire.KindPrepare, Args: args}
		if err := ep.Submit(ctx, res.InstanceID, op); err != nil {
			return res, err
		}
		r, err := ep.Await(ctx, res.InstanceID, op.ID)
		if err != nil {
			return res, fmt.Errorf("prepare: %w", err)
		}
		if !r.OK() {
			return res, fmt.Errorf("prepare failed in the guest: %v", r.Error)
		}
		var pr wire.PrepareResult
		if err := r.Decode(&pr); err != nil {
			return res, fmt.Errorf("prepare result: %w", err)
		}
		res.Prepare = &pr
		res.Prepared = since()
		err = wait(ctx, func() bool {
			hbs := ep.Heartbeats(res.InstanceID)
			last := hbs[len(hbs)-1]
			return last.Status == wire.StatusRunning && last.Volume != nil
		})
		if err != nil {
			hbs := ep.Heartbeats(res.InstanceID)
			return res, fmt.Errorf("no heartbeat reported the datastore running on its volume (last: %+v): %w", hbs[len(hbs)-1], err)
		}
		res.Running = since()
	}
	if a.Check != nil {
		if err := a.Check(ctx, ep, res.InstanceID); err != nil {
			return res, err
		}
	}
	hbs := ep.Heartbeats(res.InstanceID)
	res.LastHeartbeat = hbs[len(hbs)-1]
	return res, nil
}

func wait(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return nil
}

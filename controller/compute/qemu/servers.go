package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"strata/builder/disk"
	"strata/builder/imagecheck"
	bq "strata/builder/qemu"
	"strata/controller/compute"
)

// serverState is server.json: what StartServer needs to boot the VM again.
type serverState struct {
	Name      string             `json:"name"`
	Image     string             `json:"image"`
	RAMMB     int                `json:"ram_mb"`
	VCPUs     int                `json:"vcpus"`
	Endpoints []compute.Endpoint `json:"endpoints"`
	// PID is the qemu process of the last start, for a replica that did
	// not start it to stop it.
	PID int `json:"pid"`
}

func (d *Driver) loadState(p paths) (serverState, error) {
	var st serverState
	data, err := os.ReadFile(p.state)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("%s: %w", p.state, err)
	}
	return st, nil
}

func (d *Driver) saveState(p paths, st serverState) error {
	data, _ := json.MarshalIndent(st, "", "  ")
	tmp := p.state + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p.state)
}

func server(id string, st serverState) compute.Server {
	return compute.Server{
		ID:        id,
		Addresses: []compute.Address{{Type: "private", Address: "127.0.0.1"}},
		Endpoints: st.Endpoints,
	}
}

// CreateServer makes the overlay and config drive, picks host ports for
// the guest ports, and starts the VM.
func (d *Driver) CreateServer(ctx context.Context, spec compute.ServerSpec) (compute.Server, error) {
	id := spec.InstanceID
	if err := checkID(id); err != nil {
		return compute.Server{}, err
	}
	if spec.Image.Format != "qcow2" && spec.Image.Format != "raw" {
		return compute.Server{}, fmt.Errorf("%w: image format %q", compute.ErrInvalid, spec.Image.Format)
	}
	p := d.paths(id)
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return compute.Server{}, err
	}
	if d.running(id) {
		st, err := d.loadState(p)
		return server(id, st), err
	}
	if _, err := os.Stat(p.root); errors.Is(err, os.ErrNotExist) {
		image, err := filepath.Abs(spec.Image.Location)
		if err != nil {
			return compute.Server{}, err
		}
		// The image was checked when it was stored; the file in the cache
		// is checked again before an overlay opens it: a backing or
		// external data file would give the guest a file of this host.
		info, err := imagecheck.File(ctx, image, spec.Image.Format, imagecheck.Options{QemuImg: d.cfg.QemuImg, Shared: true})
		if errors.Is(err, imagecheck.ErrRefused) {
			return compute.Server{}, fmt.Errorf("%w: image %s: %w", compute.ErrInvalid, image, err)
		} else if err != nil {
			return compute.Server{}, err
		}
		tmp := p.root + ".tmp"
		args := []string{"create", "-q", "-f", "qcow2", "-F", spec.Image.Format, "-b", image, tmp}
		if spec.RootDiskGB > 0 {
			size := info.VirtualSize
			want := int64(spec.RootDiskGB) * gib
			if want < size {
				return compute.Server{}, fmt.Errorf("%w: the flavor's root disk (%d GB) is smaller than the image (%.1f GB)", compute.ErrInvalid, spec.RootDiskGB, float64(size)/float64(gib))
			}
			// Larger than the image: the growroot element grows / into it
			// at boot.
			args = append(args, strconv.FormatInt(want, 10))
		}
		out, err := exec.CommandContext(ctx, d.cfg.QemuImg, args...).CombinedOutput()
		if err != nil {
			os.Remove(tmp)
			return compute.Server{}, fmt.Errorf("overlay on %s: %v: %s", image, err, bytes.TrimSpace(out))
		}
		if err := os.Rename(tmp, p.root); err != nil {
			return compute.Server{}, err
		}
	}
	if err := disk.WriteConfigDrive(ctx, p.configDrive, disk.LabelConfigDrive, spec.ConfigDrive); err != nil {
		return compute.Server{}, fmt.Errorf("config drive of %s: %w", id, err)
	}
	st, err := d.loadState(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return compute.Server{}, err
	}
	st.Name, st.Image, st.RAMMB, st.VCPUs = spec.Name, spec.Image.Location, spec.RAMMB, spec.VCPUs
	for _, gp := range spec.Ports {
		if _, ok := server(id, st).Endpoint(gp); ok {
			continue // keep the port an earlier run picked
		}
		hp, err := freePort()
		if err != nil {
			return compute.Server{}, err
		}
		st.Endpoints = append(st.Endpoints, compute.Endpoint{GuestPort: gp, Host: "127.0.0.1", Port: hp})
	}
	if err := d.saveState(p, st); err != nil {
		return compute.Server{}, err
	}
	if err := d.start(id, p, st); err != nil {
		return compute.Server{}, err
	}
	return server(id, st), nil
}

// StartServer boots a stopped VM again from its server.json.
func (d *Driver) StartServer(ctx context.Context, srv compute.Server) error {
	if err := checkID(srv.ID); err != nil {
		return err
	}
	if d.running(srv.ID) {
		return nil
	}
	p := d.paths(srv.ID)
	st, err := d.loadState(p)
	if err != nil {
		return fmt.Errorf("server %s: %w", srv.ID, err)
	}
	if isOurs(st.PID, "strata-"+srv.ID) {
		return nil // another controller process on this host runs it
	}
	return d.start(srv.ID, p, st)
}

func (d *Driver) start(id string, p paths, st serverState) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if vm := d.vms[id]; vm != nil && !isDone(vm) {
		return nil
	}
	if _, err := os.Stat(p.console); err == nil {
		os.Rename(p.console, p.console+".1") // keep the previous boot's console
	}
	os.Remove(p.qmp)
	var fwd []bq.Forward
	for _, e := range st.Endpoints {
		fwd = append(fwd, bq.Forward{HostPort: e.Port, GuestPort: e.GuestPort})
	}
	vm, err := bq.Start(d.life, bq.Config{
		Name:     "strata-" + id,
		Disk:     bq.Drive{Path: p.root, Format: "qcow2"},
		Drives:   []bq.Drive{{Path: p.data, Format: "raw", Serial: dataSerial}, {Path: p.configDrive, Format: "raw", ReadOnly: true, Serial: "config-drive"}},
		Firmware: d.cfg.Firmware, MemoryMiB: st.RAMMB, CPUs: st.VCPUs, Forwards: fwd,
		SerialLog: p.console, Accel: d.cfg.Accel, Binary: d.cfg.Binary,
		ExtraArgs: []string{"-qmp", "unix:" + p.qmp + ",server=on,wait=off"},
		Logger:    d.log,
	})
	if err != nil {
		return fmt.Errorf("start VM of %s: %w", id, err)
	}
	d.vms[id] = vm
	st.PID = vm.PID()
	if err := d.saveState(p, st); err != nil {
		d.log.Warn("recording the VM's pid failed", "instance", id, "err", err)
	}
	d.log.Info("VM started", "instance", id, "pid", vm.PID(), "accel", vm.Accel().Name, "endpoints", st.Endpoints)
	go func() {
		err := vm.Wait()
		d.log.Info("VM exited", "instance", id, "err", err)
		os.Remove(p.qmp)
	}()
	return nil
}

func isDone(vm *bq.VM) bool {
	select {
	case <-vm.Done():
		return true
	default:
		return false
	}
}

func (d *Driver) running(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	vm := d.vms[id]
	return vm != nil && !isDone(vm)
}

// ServerState reports running (its qemu runs, started by this or another
// controller process on this host), stopped (its files exist) or gone.
func (d *Driver) ServerState(ctx context.Context, srv compute.Server) (compute.State, error) {
	if err := checkID(srv.ID); err != nil {
		return "", err
	}
	if d.running(srv.ID) {
		return compute.StateRunning, nil
	}
	st, err := d.loadState(d.paths(srv.ID))
	switch {
	case err == nil && isOurs(st.PID, "strata-"+srv.ID):
		return compute.StateRunning, nil
	case err == nil:
		return compute.StateStopped, nil
	case errors.Is(err, os.ErrNotExist):
		return compute.StateGone, nil
	}
	return "", err
}

// DeleteServer stops the VM (no grace: its disks go next) and removes the
// overlay, config drive, console logs and state.
func (d *Driver) DeleteServer(ctx context.Context, srv compute.Server) error {
	if err := checkID(srv.ID); err != nil {
		return err
	}
	p := d.paths(srv.ID)
	d.mu.Lock()
	vm := d.vms[srv.ID]
	delete(d.vms, srv.ID)
	d.mu.Unlock()
	if vm != nil {
		vm.Stop(0)
	} else if st, err := d.loadState(p); err == nil && st.PID > 0 {
		killIfOurs(st.PID, "strata-"+srv.ID)
	}
	for _, f := range []string{p.root, p.root + ".tmp", p.configDrive, p.console, p.console + ".1", p.state, p.state + ".tmp", p.qmp} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if entries, err := os.ReadDir(p.dir); err == nil && len(entries) == 0 {
		os.Remove(p.dir)
	}
	return nil
}

// isOurs reports whether pid is still the qemu of the VM called name.
func isOurs(pid int, name string) bool {
	if pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(cmdline, []byte("\x00"+name+"\x00"))
}

// killIfOurs kills pid if it is still the qemu of that VM (another
// controller process on this host started it).
func killIfOurs(pid int, name string) {
	if !isOurs(pid, name) {
		return
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	for range 50 {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Console returns the end of the current boot's serial console.
func (d *Driver) Console(ctx context.Context, srv compute.Server, maxBytes int) (string, error) {
	if err := checkID(srv.ID); err != nil {
		return "", err
	}
	f, err := os.Open(d.paths(srv.ID).console)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	off := max(st.Size()-int64(maxBytes), 0)
	data, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return "", err
	}
	s := strings.ToValidUTF8(string(data), "?")
	if off > 0 {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return s, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

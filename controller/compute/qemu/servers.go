package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// serverState is server.json: what StartServer needs to boot the VM again,
// and what finds the running VM again after a controller restart.
type serverState struct {
	// Format 2 added the instance's own address. A server.json without it
	// (format 1) is read as 127.0.0.1 on the default network with the
	// forwarded ports it recorded: those instances keep working as they
	// were, on the address and port their clients know.
	Format    int                `json:"format,omitempty"`
	Name      string             `json:"name"`
	Image     string             `json:"image"`
	RAMMB     int                `json:"ram_mb"`
	VCPUs     int                `json:"vcpus"`
	Network   string             `json:"network,omitempty"`
	Address   string             `json:"address,omitempty"`
	Endpoints []compute.Endpoint `json:"endpoints"`
	// PID is the qemu process of the last start: whoever runs next
	// (another controller process, the same after a restart) adopts or
	// stops the VM through it.
	PID int `json:"pid"`
	// LaunchDigest identifies the command line the VM was last started
	// with (launchDigest): a VM whose digest is not what the driver would
	// start now runs with older settings.
	LaunchDigest string    `json:"launch_digest,omitempty"`
	StartedAt    time.Time `json:"started_at,omitzero"`
	// OldImage is the image of the root disk a rebuild set aside
	// (root.qcow2.old), while it is kept for a rollback.
	OldImage string `json:"old_image,omitempty"`
	// Public is the instance's publication while it is public
	// (publish.go).
	Public *publication `json:"public,omitempty"`
	// Fenced: FenceServer killed the VM and it is never started again
	// (fence.go's network fence is another thing: the guest's way out).
	Fenced bool `json:"fenced,omitempty"`
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
	if st.Format < stateFormat && st.Address == "" && len(st.Endpoints) > 0 {
		st.Format, st.Network, st.Address = 1, d.cfg.Networks[0].ID, "127.0.0.1"
	}
	return st, nil
}

// stateFormat is the format server.json is written in.
const stateFormat = 2

func (d *Driver) saveState(p paths, st serverState) error {
	data, _ := json.MarshalIndent(st, "", "  ")
	return writeFileAtomic(p.state, data)
}

// writeFileAtomic replaces the file at path with data (0600) by a rename,
// so a reader (a relay, the next controller) sees the old or the new
// content, never part of it.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func server(id string, st serverState) compute.Server {
	srv := compute.Server{ID: id, Endpoints: st.Endpoints}
	if st.Address != "" {
		srv.Addresses = []compute.Address{{Type: "private", Address: st.Address, Network: st.Network}}
	}
	if st.Public != nil {
		srv.Addresses = append(srv.Addresses, compute.Address{Type: "public", Address: st.Public.Address})
	}
	return srv
}

// CreateServer makes the overlay and config drive, claims the instance's
// address on its network (its standard ports forwarded there), and starts
// the VM.
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
	if _, ok := d.pidOf(id); ok {
		st, err := d.loadState(p)
		return server(id, st), err
	}
	if _, err := os.Stat(p.root); errors.Is(err, os.ErrNotExist) {
		if err := d.makeRoot(ctx, p, spec); err != nil {
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
	if st.Address == "" {
		nics, err := d.ResolveNICs(ctx, spec.NICs)
		if err != nil {
			return compute.Server{}, err
		}
		n, _ := d.network(nics[0].NetworkID)
		addr, err := d.claim(id, n, nics[0].FixedIP, spec.Ports)
		if err != nil {
			return compute.Server{}, fmt.Errorf("address of %s: %w", id, err)
		}
		st.Format, st.Network, st.Address = stateFormat, n.ID, addr.String()
	}
	for _, gp := range spec.Ports {
		if _, ok := server(id, st).Endpoint(gp); ok {
			continue // kept from an earlier run
		}
		e := compute.Endpoint{GuestPort: gp, Host: st.Address, Port: gp}
		if st.Format < stateFormat {
			// A server of format 1 forwards from 127.0.0.1, one port each.
			hp, err := freePort()
			if err != nil {
				return compute.Server{}, err
			}
			e.Port = hp
		}
		st.Endpoints = append(st.Endpoints, e)
	}
	if err := d.saveState(p, st); err != nil {
		return compute.Server{}, err
	}
	if err := d.start(id, p, st); err != nil {
		return compute.Server{}, err
	}
	return server(id, st), nil
}

// makeRoot makes the instance's root disk: a qcow2 overlay on the image,
// written under a temporary name and renamed into place.
func (d *Driver) makeRoot(ctx context.Context, p paths, spec compute.ServerSpec) error {
	image, err := filepath.Abs(spec.Image.Location)
	if err != nil {
		return err
	}
	// The image was checked when it was stored; the file in the cache
	// is checked again before an overlay opens it: a backing or
	// external data file would give the guest a file of this host.
	info, err := imagecheck.File(ctx, image, spec.Image.Format, imagecheck.Options{QemuImg: d.cfg.QemuImg, Shared: true})
	if errors.Is(err, imagecheck.ErrRefused) {
		return fmt.Errorf("%w: image %s: %w", compute.ErrInvalid, image, err)
	} else if err != nil {
		return err
	}
	tmp := p.root + ".tmp"
	args := []string{"create", "-q", "-f", "qcow2", "-F", spec.Image.Format, "-b", image, tmp}
	if spec.RootDiskGB > 0 {
		size := info.VirtualSize
		want := int64(spec.RootDiskGB) * gib
		if want < size {
			return fmt.Errorf("%w: the flavor's root disk (%d GB) is smaller than the image (%.1f GB)", compute.ErrInvalid, spec.RootDiskGB, float64(size)/float64(gib))
		}
		// Larger than the image: the growroot element grows / into it
		// at boot.
		args = append(args, strconv.FormatInt(want, 10))
	}
	out, err := exec.CommandContext(ctx, d.cfg.QemuImg, args...).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("overlay on %s: %v: %s", image, err, bytes.TrimSpace(out))
	}
	if err := os.Rename(tmp, p.root); err != nil {
		return err
	}
	return nil
}

// StartServer boots a stopped VM again from its server.json; a running one
// (started by this process or adopted) is left alone.
func (d *Driver) StartServer(ctx context.Context, srv compute.Server) error {
	if err := checkID(srv.ID); err != nil {
		return err
	}
	d.mu.Lock()
	swapping := d.swapping[srv.ID]
	d.mu.Unlock()
	if swapping {
		return nil // a rebuild or revert starts it when its disks are in place
	}
	p := d.paths(srv.ID)
	st, err := d.loadState(p)
	if err != nil {
		return fmt.Errorf("server %s: %w", srv.ID, err)
	}
	return d.start(srv.ID, p, st)
}

// launchConfig is how the VM of an instance is started with the driver's
// current settings.
func (d *Driver) launchConfig(id string, p paths, st serverState) bq.Config {
	var fwd []bq.Forward
	for _, e := range st.Endpoints {
		fwd = append(fwd, bq.Forward{HostAddr: e.Host, HostPort: e.Port, GuestPort: e.GuestPort})
	}
	return bq.Config{
		Name:     "strata-" + id,
		Disk:     bq.Drive{Path: p.root, Format: "qcow2"},
		Drives:   []bq.Drive{{Path: p.data, Format: "raw", Serial: dataSerial}, {Path: p.configDrive, Format: "raw", ReadOnly: true, Serial: "config-drive"}},
		Firmware: d.cfg.Firmware, MemoryMiB: st.RAMMB, CPUs: st.VCPUs, Forwards: fwd,
		Restrict: true, GuestForwards: d.wayOut(p, st),
		SerialLog: p.console, Accel: d.cfg.Accel, Binary: d.cfg.Binary,
		ExtraArgs: []string{"-qmp", "unix:" + ctlSocket + ",server=on,wait=off"},
		Logger:    d.log,
		Detached:  true, RunDir: p.run, OutputLog: p.output, DieWithParent: d.cfg.DieWithController,
	}
}

// launchDigest identifies a launch configuration's command line.
func launchDigest(cfg bq.Config) (string, error) {
	bin, args, err := bq.CommandLine(cfg)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	io.WriteString(h, filepath.Base(bin))
	for _, a := range args {
		h.Write([]byte{0})
		io.WriteString(h, a)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func (d *Driver) start(id string, p paths, st serverState) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st.Fenced {
		return fmt.Errorf("server %s: %w: it stays off until it is deleted or rejoins its replication group", id, compute.ErrFenced)
	}
	if pid, ok := d.pidOf(id); ok {
		d.watchLocked(id, pid)
		return d.keepPublished(id, p, st) // running: started by this process or adopted
	}
	// Left by a VM that exited while no controller watched it.
	os.RemoveAll(p.run)
	if _, err := os.Stat(p.console); err == nil {
		os.Rename(p.console, p.console+".1") // keep the previous boot's console
	}
	cfg := d.launchConfig(id, p, st)
	digest, err := launchDigest(cfg)
	if err != nil {
		return fmt.Errorf("start VM of %s: %w", id, err)
	}
	// The start-up is bounded by its own context: neither a task's step
	// nor the controller's life may end the VM.
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := bq.Start(sctx, cfg)
	if err != nil {
		return fmt.Errorf("start VM of %s: %w", id, err)
	}
	d.vms[id] = vm
	delete(d.watched, id)
	st.PID, st.LaunchDigest, st.StartedAt = vm.PID(), digest, time.Now().UTC()
	if err := d.saveState(p, st); err != nil {
		// Without its pid recorded the VM could not be found again: do not
		// leave it running.
		vm.Stop(0)
		delete(d.vms, id)
		return fmt.Errorf("recording the VM's pid: %w", err)
	}
	d.log.Info("VM started", "instance", id, "pid", vm.PID(), "accel", vm.Accel().Name, "endpoints", st.Endpoints, "launch", digest)
	if err := d.keepPublished(id, p, st); err != nil {
		d.log.Warn("the instance runs but is not published", "instance", id, "err", err)
	}
	go func() {
		err := vm.Wait()
		d.log.Info("VM exited", "instance", id, "pid", vm.PID(), "err", err)
		d.mu.Lock()
		if d.vms[id] == vm {
			delete(d.vms, id)
		}
		d.mu.Unlock()
		if d.cfg.OnExit != nil {
			d.cfg.OnExit(id)
		}
	}()
	return nil
}

// watchLocked watches an adopted VM (one this process did not start) for
// its exit, once. d.mu is held.
func (d *Driver) watchLocked(id string, pid int) {
	if _, own := d.vms[id]; own {
		return
	}
	if d.watched[id] == pid {
		return
	}
	d.watched[id] = pid
	d.log.Info("adopted a running VM", "instance", id, "pid", pid)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-d.life.Done():
				return
			case <-t.C:
			}
			if _, ok := d.pidOf(id); ok {
				continue
			}
			d.mu.Lock()
			mine := d.watched[id] == pid
			if mine {
				delete(d.watched, id)
			}
			d.mu.Unlock()
			if mine {
				d.log.Info("adopted VM exited", "instance", id, "pid", pid)
				if d.cfg.OnExit != nil {
					d.cfg.OnExit(id)
				}
			}
			return
		}
	}()
}

// pidOf returns the pid of the instance's running VM: the pid recorded in
// server.json, if that process is a qemu whose command line names this
// instance's root disk (a reused pid, or an exited VM, is not).
func (d *Driver) pidOf(id string) (int, bool) {
	p := d.paths(id)
	st, err := d.loadState(p)
	if err != nil || !isOurs(st.PID, p.root) {
		return 0, false
	}
	return st.PID, true
}

// ServerState reports running (its qemu runs, started by this controller
// process or an earlier one), stopped (its files exist) or gone.
func (d *Driver) ServerState(ctx context.Context, srv compute.Server) (compute.State, error) {
	if err := checkID(srv.ID); err != nil {
		return "", err
	}
	if pid, ok := d.pidOf(srv.ID); ok {
		d.mu.Lock()
		d.watchLocked(srv.ID, pid)
		d.mu.Unlock()
		p := d.paths(srv.ID)
		if st, err := d.loadState(p); err == nil {
			if err := d.keepPublished(srv.ID, p, st); err != nil {
				d.log.Warn("the instance runs but is not published", "instance", srv.ID, "err", err)
			}
		}
		return compute.StateRunning, nil
	}
	st, err := d.loadState(d.paths(srv.ID))
	switch {
	case err == nil && st.Fenced:
		return compute.StateFenced, nil
	case err == nil:
		return compute.StateStopped, nil
	case errors.Is(err, os.ErrNotExist):
		return compute.StateGone, nil
	}
	return "", err
}

// LaunchOutdated says why the instance's running VM needs a restart to run
// with the driver's current settings ("" when it does not, or does not
// run): it was started with another command line (another accelerator,
// firmware, port forwards, a newer controller's devices...).
func (d *Driver) LaunchOutdated(ctx context.Context, srv compute.Server) (string, error) {
	if err := checkID(srv.ID); err != nil {
		return "", err
	}
	if _, ok := d.pidOf(srv.ID); !ok {
		return "", nil
	}
	p := d.paths(srv.ID)
	st, err := d.loadState(p)
	if err != nil {
		return "", err
	}
	want, err := launchDigest(d.launchConfig(srv.ID, p, st))
	if err != nil {
		return "", err
	}
	switch st.LaunchDigest {
	case want:
		return "", nil
	case "":
		return "the VM was started by a controller that did not record its launch settings; restart the instance to run it with the current ones", nil
	}
	return fmt.Sprintf("the VM runs with launch settings %s from %s; the current ones are %s: restart the instance to apply them",
		st.LaunchDigest, st.StartedAt.Format(time.RFC3339), want), nil
}

// RestartServer powers the VM off (ACPI, then kill after StopTimeout) and
// starts it again with the current launch settings.
func (d *Driver) RestartServer(ctx context.Context, srv compute.Server) error {
	if err := checkID(srv.ID); err != nil {
		return err
	}
	p := d.paths(srv.ID)
	st, err := d.loadState(p)
	if err != nil {
		return fmt.Errorf("server %s: %w", srv.ID, err)
	}
	if err := d.stop(srv.ID, d.cfg.StopTimeout); err != nil {
		d.log.Warn("VM did not power off cleanly before its restart", "instance", srv.ID, "err", err)
	}
	return d.start(srv.ID, p, st)
}

// stop powers the instance's VM off: ACPI power button through QMP, then,
// after timeout (0: at once), SIGKILL to its process group. It returns
// once the VM is gone; an error says it had to be killed.
func (d *Driver) stop(id string, timeout time.Duration) error {
	d.mu.Lock()
	vm := d.vms[id]
	d.mu.Unlock()
	if vm != nil {
		return vm.Stop(timeout) // this process started it: wait reaps it
	}
	pid, ok := d.pidOf(id)
	if !ok {
		return nil
	}
	root := d.paths(id).root
	var perr error
	if timeout > 0 {
		q, err := bq.DialQMP(bq.SocketPath(pid, ctlSocket))
		if err == nil {
			_, err = q.Execute("system_powerdown", nil)
			q.Close()
		}
		perr = err
		deadline := time.Now().Add(timeout)
		for perr == nil && time.Now().Before(deadline) && isOurs(pid, root) {
			time.Sleep(100 * time.Millisecond)
		}
		if !isOurs(pid, root) {
			waitGone(pid)
			return nil
		}
	}
	killIfOurs(pid, root)
	if perr != nil {
		return fmt.Errorf("%w: power-down request failed (%v)", bq.ErrKilled, perr)
	}
	if timeout > 0 {
		return fmt.Errorf("%w: guest did not power off within %s", bq.ErrKilled, timeout)
	}
	return nil
}

// Kill kills the instance's VM at once (SIGKILL to its process group), as
// a crash would: for the chaos tests' kill points.
func (d *Driver) Kill(instanceID string) error {
	if err := checkID(instanceID); err != nil {
		return err
	}
	pid, ok := d.pidOf(instanceID)
	if !ok {
		return fmt.Errorf("instance %s has no running VM", instanceID)
	}
	killIfOurs(pid, d.paths(instanceID).root)
	return nil
}

// DeleteServer stops the VM (no grace: its disks go next) and removes the
// instance's files but its data volume: overlay, config drive, console
// logs, run directory, publication, replication route and state.
func (d *Driver) DeleteServer(ctx context.Context, srv compute.Server) error {
	if err := checkID(srv.ID); err != nil {
		return err
	}
	p := d.paths(srv.ID)
	d.stop(srv.ID, 0)
	if err := d.stopRelay(p); err != nil {
		return err
	}
	d.mu.Lock()
	delete(d.vms, srv.ID)
	delete(d.watched, srv.ID)
	d.mu.Unlock()
	// Everything in the instance's directory but the data volume's files
	// (DeleteVolume's) goes, server.json last: a delete cut short is
	// found and run again. No list of names to keep up to date.
	entries, err := os.ReadDir(p.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		f := filepath.Join(p.dir, e.Name())
		if f == p.data || f == p.data+".tmp" || f == p.state {
			continue
		}
		if err := os.RemoveAll(f); err != nil {
			return err
		}
	}
	if err := os.Remove(p.state); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if entries, err := os.ReadDir(p.dir); err == nil && len(entries) == 0 {
		os.Remove(p.dir)
	}
	// Last: while anything of the server is left, its addresses stay its.
	if err := d.releasePublic(srv.ID); err != nil {
		return err
	}
	return d.release(srv.ID)
}

// isOurs reports whether pid is a running qemu whose command line names
// root (an instance's root disk): the VM of that instance, in this state
// directory. An exited VM not yet reaped has no command line.
func isOurs(pid int, root string) bool {
	if pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(cmdline, []byte("file="+strings.ReplaceAll(root, ",", ",,")+","))
}

// killIfOurs kills pid's process group if pid is still the VM of root, and
// waits (up to 5 s) for it to have let go of its disks.
func killIfOurs(pid int, root string) {
	if !isOurs(pid, root) {
		return
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	waitGone(pid)
}

// waitGone waits (up to 5 s) until pid has closed its files (procGone),
// not only until its command line is gone.
func waitGone(pid int) {
	for range 250 {
		if procGone(pid) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A process whose command line is empty has only begun to exit: the
// kernel drops its memory (and so its command line) before it closes its
// files, and with them qemu's locks on its disks. Only a zombie (or no
// process at all) has let go of them: a VM started on the same disks
// before that fails ("Failed to get "write" lock").
func procGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// The state is the field after the ")" that ends the command name.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return true
	}
	switch b[i+2] {
	case 'Z', 'X', 'x':
		return true
	}
	return false
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

var _ compute.Fencer = (*Driver)(nil)

// FenceServer marks the server fenced in server.json first (from then on
// nothing starts it: not StartServer, not a controller's recovery after a
// host restart) and then kills its qemu at once.
func (d *Driver) FenceServer(ctx context.Context, srv compute.Server) error {
	id := srv.ID
	if err := checkID(id); err != nil {
		return err
	}
	p := d.paths(id)
	d.mu.Lock()
	st, err := d.loadState(p)
	if err == nil && !st.Fenced {
		st.Fenced = true
		err = d.saveState(p, st)
	}
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("fence server %s: %w", id, err)
	}
	// No grace: stop kills, and says so in its error.
	stopErr := d.stop(id, 0)
	if _, ok := d.pidOf(id); ok {
		return fmt.Errorf("fence server %s: its VM still runs after being killed: %v", id, stopErr)
	}
	d.log.Warn("server fenced: its VM was killed and is kept off", "instance", id)
	return nil
}

// UnfenceServer lifts a fence: server.json no longer says fenced, and the
// VM (off) may be started again. A server that is not fenced is left as
// it is.
func (d *Driver) UnfenceServer(ctx context.Context, srv compute.Server) error {
	id := srv.ID
	if err := checkID(id); err != nil {
		return err
	}
	p := d.paths(id)
	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.loadState(p)
	if err == nil && st.Fenced {
		st.Fenced = false
		err = d.saveState(p, st)
	}
	if err != nil {
		return fmt.Errorf("lift the fence of server %s: %w", id, err)
	}
	d.log.Info("server's fence lifted: it may be started again", "instance", id)
	return nil
}

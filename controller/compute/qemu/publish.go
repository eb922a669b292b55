package qemu

// Publishing (Trove's access.is_public). An instance's own loopback address
// serves clients on this host (networks.go); a public instance is also
// published on an address of the operator's pool of public addresses
// (Config.PublicAddresses: addresses of this host, given with `controller
// serve --public-addresses`), at the datastore's standard ports, and a
// connection from a client outside the instance's allowed CIDRs is closed
// as soon as it is accepted.
//
// The publisher is a relay process per public instance (RunRelay, run as
// `strata controller publish-relay`): the driver binds the public
// address's ports itself — so a busy address is found at once — and hands
// the listening sockets to the relay, which it starts in a session of its
// own. It is not the controller's child in any way that matters: it keeps
// serving while no controller runs, like the VMs and the fence's relays.
// It reads the allowed CIDRs from a file in the instance's directory at
// every connection, so changing them is one atomic rename, without a
// restart; a missing or unreadable file lets no one in. Each accepted
// connection is relayed to the instance's private address and port, which
// qemu forwards into the guest.
//
// Per instance, under Dir/<instance-id>/:
//
//	public.json   the allowed CIDRs the relay checks (present while public)
//	publish.pid   the relay's pid; the relay is ours when its command line
//	              names this instance's public.json
//	publish.log   the relay's messages (refused clients, failed dials)
//
// and the claim on the public address: networks/public/<address>. The
// publication is recorded in server.json (Public); StartServer and
// ServerState start the relay again when it is not running (a host
// reboot, a killed relay), so recovery restores it with the VM.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"strata/controller/compute"
)

// publication is what server.json records of a public instance.
type publication struct {
	Address      string   `json:"address"`
	AllowedCIDRs []string `json:"allowed_cidrs,omitempty"`
}

// allowFile is public.json, what the relay reads.
type allowFile struct {
	AllowedCIDRs []string `json:"allowed_cidrs"`
}

func (p paths) allow() string       { return filepath.Join(p.dir, "public.json") }
func (p paths) relayPID() string    { return filepath.Join(p.dir, "publish.pid") }
func (p paths) relayLog() string    { return filepath.Join(p.dir, "publish.log") }
func (d *Driver) publicDir() string { return filepath.Join(d.cfg.Dir, "networks", "public") }

var _ compute.Publisher = (*Driver)(nil)

// checkPublic validates the pool: IPv4 blocks, apart from each other and
// from the networks (an address is either an instance's own or public).
func checkPublic(cfg *Config) error {
	for i, p := range cfg.PublicAddresses {
		if !p.IsValid() || !p.Addr().Is4() || p.Bits() < 8 {
			return fmt.Errorf("qemu driver: public addresses: %s: want IPv4 addresses or blocks of at most /8", p)
		}
		cfg.PublicAddresses[i] = p.Masked()
		for _, q := range cfg.PublicAddresses[:i] {
			if q.Overlaps(p) {
				return fmt.Errorf("qemu driver: public addresses %s and %s overlap", q, p)
			}
		}
		for _, n := range cfg.Networks {
			if n.CIDR.Overlaps(p) {
				return fmt.Errorf("qemu driver: public addresses %s overlap network %s (%s): an address is an instance's own or public, not both", p, n.Name, n.CIDR)
			}
		}
	}
	if len(cfg.PublicAddresses) > 0 && len(cfg.RelayCommand) == 0 {
		return errors.New("qemu driver: public addresses need a RelayCommand (the program that runs RunRelay)")
	}
	return nil
}

// ParsePublicAddresses reads --public-addresses: comma-separated IPv4
// addresses and CIDR blocks.
func ParsePublicAddresses(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil || !a.Is4() {
				return nil, fmt.Errorf("public address %q: want an IPv4 address or CIDR block", f)
			}
			out = append(out, netip.PrefixFrom(a, 32))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("public addresses %q: want an IPv4 address or CIDR block", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// CheckAccess refuses public without a pool of public addresses.
func (d *Driver) CheckAccess(ctx context.Context, a compute.Access) error {
	if a.Public && len(d.cfg.PublicAddresses) == 0 {
		return fmt.Errorf("%w: this controller has no public addresses to publish instances on (start it with --public-addresses); its instances are reachable from this host only, at their private address", compute.ErrInvalid)
	}
	for _, c := range a.AllowedCIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			return fmt.Errorf("%w: allowed CIDR %q: %v", compute.ErrInvalid, trunc(c), err)
		}
	}
	return nil
}

// Publish publishes the instance's ports on a public address or removes
// the publication (see the top of this file).
func (d *Driver) Publish(ctx context.Context, srv compute.Server, ports []int, a compute.Access) (compute.Server, error) {
	if err := checkID(srv.ID); err != nil {
		return compute.Server{}, err
	}
	if err := d.CheckAccess(ctx, a); err != nil {
		return compute.Server{}, err
	}
	id := srv.ID
	p := d.paths(id)
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	st, err := d.loadState(p)
	if err != nil {
		return compute.Server{}, fmt.Errorf("server %s: %w", id, err)
	}
	if !a.Public {
		// Relay first: once it is gone nothing is published, whatever
		// is left to tidy.
		if err := d.stopRelay(p); err != nil {
			return compute.Server{}, err
		}
		if err := os.Remove(p.allow()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return compute.Server{}, err
		}
		st.Public = nil
		if err := d.saveState(p, st); err != nil {
			return compute.Server{}, err
		}
		if err := d.releasePublic(id); err != nil {
			return compute.Server{}, err
		}
		d.log.Info("instance unpublished", "instance", id)
		return server(id, st), nil
	}
	var guestPorts []int
	for _, e := range st.Endpoints {
		if len(ports) == 0 || slices.Contains(ports, e.GuestPort) {
			guestPorts = append(guestPorts, e.GuestPort)
		}
	}
	if len(guestPorts) == 0 {
		return compute.Server{}, fmt.Errorf("%w: server %s has none of ports %v to publish", compute.ErrInvalid, id, ports)
	}
	addr, err := d.claimPublic(id, guestPorts)
	if err != nil {
		return compute.Server{}, fmt.Errorf("public address of %s: %w", id, err)
	}
	// The CIDRs first: a running relay lets in the new ones from the
	// next connection on.
	if err := writeAllow(p.allow(), a.AllowedCIDRs); err != nil {
		return compute.Server{}, err
	}
	old := st.Public
	undo := func() {
		// The old publication stays in force, with its own CIDRs.
		if old != nil {
			writeAllow(p.allow(), old.AllowedCIDRs)
		} else {
			d.stopRelay(p)
			os.Remove(p.allow())
			d.releasePublic(id)
		}
	}
	st.Public = &publication{Address: addr.String(), AllowedCIDRs: a.AllowedCIDRs}
	if err := d.ensureRelay(id, p, st); err != nil {
		undo()
		return compute.Server{}, err
	}
	if err := d.saveState(p, st); err != nil {
		undo()
		return compute.Server{}, err
	}
	d.log.Info("instance published", "instance", id, "address", addr, "ports", guestPorts, "allowed_cidrs", a.AllowedCIDRs)
	return server(id, st), nil
}

func writeAllow(path string, cidrs []string) error {
	if cidrs == nil {
		cidrs = []string{}
	}
	data, _ := json.Marshal(allowFile{AllowedCIDRs: cidrs})
	return writeFileAtomic(path, data)
}

// claimPublic gives the instance an address of the pool whose ports are
// free: the one it holds, or a free one, tried from a random point.
func (d *Driver) claimPublic(id string, ports []int) (netip.Addr, error) {
	dir := d.publicDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return netip.Addr{}, err
	}
	claims, err := readClaims(dir)
	if err != nil {
		return netip.Addr{}, err
	}
	for addr, holder := range claims {
		if holder == id {
			return netip.MustParseAddr(addr), nil
		}
	}
	busy := 0
	var lastErr error
	for _, pool := range d.cfg.PublicAddresses {
		size := uint64(1) << (32 - pool.Bits())
		b := pool.Addr().As4()
		start := uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
		offset := rand.Uint64N(size)
		for i := range size {
			v := start + (offset+i)%size
			a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
			if pool.Bits() <= 30 && !usable(pool, a) {
				continue // a block's network and broadcast addresses
			}
			if _, taken := claims[a.String()]; taken {
				continue
			}
			err := d.take(dir, id, a, ports)
			if err == nil {
				return a, nil
			}
			var pe *portsBusyError
			switch {
			case errors.As(err, &pe):
				lastErr = err
				if busy++; busy >= maxBusy {
					return netip.Addr{}, fmt.Errorf("no public address has ports %v free after %d tries (last: %v); are the addresses of --public-addresses this host's own, and does nothing listen on those ports on every address (0.0.0.0)?", ports, busy, lastErr)
				}
			case errors.Is(err, os.ErrExist):
			default:
				return netip.Addr{}, err
			}
		}
	}
	if lastErr != nil {
		return netip.Addr{}, fmt.Errorf("no public address has ports %v free (last: %v)", ports, lastErr)
	}
	return netip.Addr{}, errors.New("every public address is in use: give the controller more with --public-addresses")
}

// readClaims lists the addresses claimed in dir (address → instance id):
// a network's claims and the public pool's are kept alike.
func readClaims(dir string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, e := range entries {
		if a, err := netip.ParseAddr(e.Name()); err == nil {
			if data, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
				out[a.String()] = strings.TrimSpace(string(data))
			}
		}
	}
	return out, nil
}

// PublicClaims lists the pool's claimed addresses (address → instance).
func (d *Driver) PublicClaims() (map[string]string, error) { return readClaims(d.publicDir()) }

func (d *Driver) releasePublic(id string) error {
	claims, err := readClaims(d.publicDir())
	if err != nil {
		return err
	}
	for addr, holder := range claims {
		if holder == id {
			if err := os.Remove(filepath.Join(d.publicDir(), addr)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// relayPID returns the pid of the instance's running relay.
func (d *Driver) relayPID(p paths) (int, bool) {
	data, err := os.ReadFile(p.relayPID())
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || !slices.Contains(strings.Split(string(cmdline), "\x00"), p.allow()) {
		return 0, false
	}
	return pid, true
}

// ensureRelay starts the instance's relay unless it runs already (for
// st.Public: same address and targets; otherwise it is replaced).
func (d *Driver) ensureRelay(id string, p paths, st serverState) error {
	if st.Public == nil {
		return nil
	}
	args := []string{"--allow", p.allow()}
	var lns []*os.File
	defer func() {
		for _, f := range lns {
			f.Close()
		}
	}()
	var targets []string
	for _, e := range st.Endpoints {
		targets = append(targets, st.Public.Address+":"+strconv.Itoa(e.GuestPort)+"="+net.JoinHostPort(e.Host, strconv.Itoa(e.Port)))
	}
	for _, t := range targets {
		args = append(args, "--forward", t)
	}
	if pid, ok := d.relayPID(p); ok {
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if strings.HasSuffix(strings.TrimSuffix(string(cmdline), "\x00"), strings.Join(args, "\x00")) {
			return nil
		}
		if err := d.stopRelay(p); err != nil {
			return err
		}
	}
	for _, e := range st.Endpoints {
		ln, err := net.Listen("tcp4", net.JoinHostPort(st.Public.Address, strconv.Itoa(e.GuestPort)))
		if err != nil {
			return fmt.Errorf("publishing %s: %w", id, err)
		}
		f, err := ln.(*net.TCPListener).File()
		ln.Close()
		if err != nil {
			return err
		}
		lns = append(lns, f)
	}
	logf, err := os.OpenFile(p.relayLog(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(d.cfg.RelayCommand[0], append(slices.Clone(d.cfg.RelayCommand[1:]), args...)...)
	cmd.Stdout, cmd.Stderr, cmd.ExtraFiles = logf, logf, lns
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if d.cfg.DieWithController {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the publish relay of %s: %w", id, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaped while this process lives; init's after
	if err := os.WriteFile(p.relayPID(), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		cmd.Process.Kill()
		return err
	}
	// Clients queue on the sockets bound above from now on; a relay that
	// cannot serve them (a broken RelayCommand) fails at once.
	select {
	case err := <-exited:
		os.Remove(p.relayPID())
		return fmt.Errorf("the publish relay of %s exited at once (%v); see %s", id, err, p.relayLog())
	case <-time.After(relayStartCheck):
	}
	d.log.Info("publish relay started", "instance", id, "pid", cmd.Process.Pid, "forwards", targets)
	return nil
}

// exited: pid is no process, or a zombie whose other threads are gone
// too (a multi-threaded process's leader is a zombie while the others
// still exit, holding its files).
func exited(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 || i+2 >= len(stat) || (stat[i+2] != 'Z' && stat[i+2] != 'X') {
		return false
	}
	tasks, err := os.ReadDir(dir + "/task")
	return err != nil || len(tasks) <= 1
}

// relayStartCheck is how long a new relay is watched for an early exit.
const relayStartCheck = 150 * time.Millisecond

// stopRelay ends the instance's relay (its connections with it) and
// waits for it to go.
func (d *Driver) stopRelay(p paths) error {
	pid, ok := d.relayPID(p)
	if ok {
		syscall.Kill(pid, syscall.SIGKILL)
		// Gone or a zombie: its sockets are closed then (its command
		// line is empty earlier, while it still holds them).
		for range 200 {
			if exited(pid) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !exited(pid) {
			return fmt.Errorf("the publish relay (pid %d) of %s did not exit", pid, filepath.Base(p.dir))
		}
	}
	if err := os.Remove(p.relayPID()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// RunRelay is the publish relay's main (`strata controller publish-relay`):
// args are --allow FILE and, per inherited listening socket (fd 3, 4...),
// --forward PUBLIC:PORT=TARGET:PORT. It serves until ctx ends or a
// listener fails.
//
// With --peer FILE --port N it is instead the relay of one replica's
// connection to its source (peers.go), on stdin and stdout.
func RunRelay(ctx context.Context, args []string, log *slog.Logger) error {
	if len(args) == 4 && args[0] == "--peer" && args[2] == "--port" {
		port, err := strconv.Atoi(args[3])
		if err != nil || port < 1 || port > 65535 {
			return fmt.Errorf("peer relay: --port %q", args[3])
		}
		// qemu hands the guest's connection to this process as its
		// stdin, stdout and stderr alike: any word of its own there
		// would reach the replica's server as if its source had sent it
		// (a Redis replica takes such a line in its stream for
		// corruption and forgets its position). Its own messages go to
		// a log beside the route file instead.
		if stderrTo(filepath.Join(filepath.Dir(args[1]), peerLog)) != nil && stderrTo(os.DevNull) != nil {
			return nil // nowhere to say a word: close the connection without one
		}
		return runPeer(args[1], port, os.Stdin, os.Stdout)
	}
	var allow string
	var targets []string
	for i := 0; i < len(args); i++ {
		if i+1 >= len(args) {
			return fmt.Errorf("publish relay: %s needs a value", args[i])
		}
		switch args[i] {
		case "--allow":
			allow = args[i+1]
		case "--forward":
			_, to, ok := strings.Cut(args[i+1], "=")
			if !ok {
				return fmt.Errorf("publish relay: --forward %q: want PUBLIC:PORT=TARGET:PORT", args[i+1])
			}
			targets = append(targets, to)
		default:
			return fmt.Errorf("publish relay: unknown argument %q", args[i])
		}
		i++
	}
	if allow == "" || len(targets) == 0 {
		return errors.New("publish relay: want --allow FILE and at least one --forward")
	}
	var lns []net.Listener
	for i := range targets {
		f := os.NewFile(uintptr(3+i), "listener")
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("publish relay: listener %d (fd %d): %w", i, 3+i, err)
		}
		lns = append(lns, ln)
	}
	return ServeRelay(ctx, lns, targets, allow, log)
}

// ServeRelay relays each connection accepted on lns[i] to targets[i] when
// its source address is inside the CIDRs of the allow file (none listed:
// every source), and closes it at once otherwise.
func ServeRelay(ctx context.Context, lns []net.Listener, targets []string, allow string, log *slog.Logger) error {
	errc := make(chan error, len(lns))
	for i, ln := range lns {
		go func() { errc <- serveOne(ln, targets[i], allow, log) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	for _, ln := range lns {
		ln.Close()
	}
	return err
}

func serveOne(ln net.Listener, target, allow string, log *slog.Logger) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("publish relay: accept on %s: %w", ln.Addr(), err)
		}
		go relayConn(c, target, allow, log)
	}
}

// Allowed reports whether src may connect under the CIDRs of the allow
// file at path; a file that cannot be read lets no one in.
func Allowed(path string, src netip.Addr) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	var a allowFile
	if err := json.Unmarshal(data, &a); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	if len(a.AllowedCIDRs) == 0 {
		return true, nil
	}
	src = src.Unmap()
	for _, c := range a.AllowedCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			if ad, err2 := netip.ParseAddr(c); err2 == nil {
				p = netip.PrefixFrom(ad, ad.BitLen())
			} else {
				return false, fmt.Errorf("%s: %q: %w", path, c, err)
			}
		}
		if p.Contains(src) {
			return true, nil
		}
	}
	return false, nil
}

func relayConn(c net.Conn, target, allow string, log *slog.Logger) {
	defer c.Close()
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
	ok, err := Allowed(allow, src)
	if !ok {
		log.Warn("connection refused: source not among the allowed CIDRs", "source", src, "to", c.LocalAddr(), "err", err)
		return
	}
	up, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		log.Warn("connection dropped: the instance does not answer", "source", src, "target", target, "err", err)
		return
	}
	defer up.Close()
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}
	wg.Add(2)
	go half(up, c)
	go half(c, up)
	wg.Wait()
}

// keepPublished starts the relay of a public instance whose relay is not
// running (recovery after a host restart or a killed relay).
func (d *Driver) keepPublished(id string, p paths, st serverState) error {
	if st.Public == nil {
		return nil
	}
	if !d.pubMu.TryLock() {
		return nil // a Publish is under way: it sets the relay up
	}
	defer d.pubMu.Unlock()
	// Publish may have changed it since st was read.
	st, err := d.loadState(p)
	if err != nil || st.Public == nil {
		return err
	}
	return d.ensureRelay(id, p, st)
}

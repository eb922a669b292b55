package qemu

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"strata/controller/compute"
)

// The local driver's networks. Every address of 127.0.0.0/8 is this
// host's own (Linux routes the whole block to lo), so a network here is a
// block of loopback addresses: each instance gets one address of its own,
// and qemu's user-mode network forwards the datastore's standard ports
// (3306, 5432, 6379) from that address into the guest — a client connects
// to the instance's reported address on the usual port, as with Trove on
// Nova. Nothing outside this host reaches those addresses.
//
// Addresses are handed out here and nowhere else (claim, release,
// Claims), so that a fence between guests can extend this one place. A
// claim is a file DIR/networks/<network id>/<address> holding the
// instance id, created exclusively: durable across restarts, safe between
// controller processes sharing the state directory, and removed by
// DeleteServer. Other strata state directories and other programs on this
// host use the same block without knowing these files: an address whose
// ports cannot be bound is skipped, and addresses are tried from a random
// point so that concurrent controllers rarely meet.

// DefaultNetwork is the network instances get when a request names none:
// its id is stable across installations, so configurations (tempest's
// shared_network, scripts) can name it. Its name is the one Trove's
// tooling looks a network up by by default.
var DefaultNetwork = Network{ID: "5c1e8f2a-7b3d-4e6f-9a0b-1c2d3e4f5a6b", Name: "private", CIDR: netip.MustParsePrefix("127.10.0.0/16")}

// Network is one of the driver's networks: a block of loopback addresses.
type Network struct {
	ID   string
	Name string
	CIDR netip.Prefix
}

func (n Network) compute(isDefault bool) compute.Network {
	return compute.Network{ID: n.ID, Name: n.Name, CIDRs: []string{n.CIDR.String()}, Default: isDefault}
}

// checkNetworks validates configured networks: ids and names unique,
// blocks inside 127.0.0.0/8, apart, and large enough to hand out.
func checkNetworks(nets []Network) error {
	loopback := netip.MustParsePrefix("127.0.0.0/8")
	for i, n := range nets {
		if n.ID == "" || n.Name == "" || strings.ContainsAny(n.ID, "/.\\") {
			return fmt.Errorf("qemu driver: network %d: want an id (no / or .) and a name", i)
		}
		if !n.CIDR.IsValid() || !n.CIDR.Addr().Is4() || !loopback.Contains(n.CIDR.Addr()) || n.CIDR.Bits() < 8 || n.CIDR.Bits() > 30 {
			return fmt.Errorf("qemu driver: network %s: %s is not a block of 127.0.0.0/8 between /8 and /30", n.Name, n.CIDR)
		}
		if n.CIDR.Contains(netip.MustParseAddr("127.0.0.1")) {
			return fmt.Errorf("qemu driver: network %s: %s holds 127.0.0.1, the host's own address", n.Name, n.CIDR)
		}
		for _, m := range nets[:i] {
			if m.ID == n.ID || m.Name == n.Name || m.CIDR.Overlaps(n.CIDR) {
				return fmt.Errorf("qemu driver: networks %s and %s share an id, a name or addresses", m.Name, n.Name)
			}
		}
	}
	return nil
}

// Networks lists the driver's networks, the default first.
func (d *Driver) Networks(ctx context.Context) ([]compute.Network, error) {
	var out []compute.Network
	for i, n := range d.cfg.Networks {
		out = append(out, n.compute(i == 0))
	}
	return out, nil
}

func (d *Driver) network(id string) (Network, bool) {
	for _, n := range d.cfg.Networks {
		if n.ID == id {
			return n, true
		}
	}
	return Network{}, false
}

// ResolveNICs accepts at most one interface on one of the driver's
// networks, optionally with the address wanted (free, inside it).
func (d *Driver) ResolveNICs(ctx context.Context, nics []compute.NIC) ([]compute.NIC, error) {
	nets, _ := d.Networks(ctx)
	valid := "; the local networks are: " + compute.NetworkList(nets)
	if len(nics) > 1 {
		return nil, fmt.Errorf("%w: %d network interfaces asked for; a local instance has one%s", compute.ErrInvalid, len(nics), valid)
	}
	nic := compute.NIC{}
	if len(nics) == 1 {
		nic = nics[0]
	}
	switch {
	case nic.PortID != "":
		return nil, fmt.Errorf("%w: port %q: the local driver has no ports; name a network%s", compute.ErrInvalid, trunc(nic.PortID), valid)
	case nic.SubnetID != "":
		return nil, fmt.Errorf("%w: subnet %q: local networks have no subnets; name the network%s", compute.ErrInvalid, trunc(nic.SubnetID), valid)
	case nic.NetworkID == "":
		nic.NetworkID = d.cfg.Networks[0].ID
	}
	n, ok := d.network(nic.NetworkID)
	if !ok {
		return nil, fmt.Errorf("%w: network %q is not one of this controller's%s", compute.ErrInvalid, trunc(nic.NetworkID), valid)
	}
	if nic.FixedIP != "" {
		a, err := netip.ParseAddr(nic.FixedIP)
		if err != nil || !a.Is4() || !usable(n.CIDR, a) {
			return nil, fmt.Errorf("%w: address %q is not a usable IPv4 address of network %s (%s)", compute.ErrInvalid, trunc(nic.FixedIP), n.Name, n.CIDR)
		}
		if holder, ok := d.holder(n, a); ok {
			return nil, fmt.Errorf("%w: address %s of network %s is in use by instance %s", compute.ErrInvalid, a, n.Name, holder)
		}
		nic.FixedIP = a.String()
	}
	return []compute.NIC{nic}, nil
}

// usable: inside the block, neither its first nor its last address.
func usable(p netip.Prefix, a netip.Addr) bool {
	if !p.Contains(a) {
		return false
	}
	first, last := p.Masked().Addr(), lastAddr(p)
	return a != first && a != last
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	hostBits := 32 - p.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= (1 << hostBits) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (d *Driver) claimDir(n Network) string { return filepath.Join(d.cfg.Dir, "networks", n.ID) }

// holder returns the instance holding a claim on a.
func (d *Driver) holder(n Network, a netip.Addr) (string, bool) {
	data, err := os.ReadFile(filepath.Join(d.claimDir(n), a.String()))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(data)), true
}

// Claims lists a network's claimed addresses (address → instance id).
func (d *Driver) Claims(networkID string) (map[string]string, error) {
	n, ok := d.network(networkID)
	if !ok {
		return nil, fmt.Errorf("qemu driver: no network %q", networkID)
	}
	return readClaims(d.claimDir(n))
}

// maxBusy bounds how many addresses whose ports are taken by something
// else are tried before giving up: past that, the ports are most likely
// bound on every address (a server listening on 0.0.0.0).
const maxBusy = 64

// claim gives instance id an address of network n whose ports are free:
// the one it holds already, or want (if set), or a free one.
func (d *Driver) claim(id string, n Network, want string, ports []int) (netip.Addr, error) {
	dir := d.claimDir(n)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return netip.Addr{}, err
	}
	// An earlier run of this step may have claimed one already.
	claims, err := d.Claims(n.ID)
	if err != nil {
		return netip.Addr{}, err
	}
	for addr, holder := range claims {
		if holder == id && (want == "" || want == addr) {
			return netip.MustParseAddr(addr), nil
		}
	}
	if want != "" {
		a, err := netip.ParseAddr(want)
		if err != nil || !usable(n.CIDR, a) {
			return netip.Addr{}, fmt.Errorf("%w: address %q is not a usable address of network %s (%s)", compute.ErrInvalid, want, n.Name, n.CIDR)
		}
		if err := d.take(dir, id, a, ports); err != nil {
			return netip.Addr{}, fmt.Errorf("%w: the address asked for: %v", compute.ErrInvalid, err)
		}
		return a, nil
	}
	size := uint32(1) << (32 - n.CIDR.Bits())
	base := n.CIDR.Masked().Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	offset := rand.Uint32N(size)
	busy := 0
	var lastErr error
	for i := range size {
		v := start + (offset+i)%size
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		if !usable(n.CIDR, a) {
			continue
		}
		if _, taken := claims[a.String()]; taken {
			continue
		}
		err := d.take(dir, id, a, ports)
		if err == nil {
			return a, nil
		}
		var pe *portsBusyError
		if !errors.As(err, &pe) && !errors.Is(err, os.ErrExist) {
			return netip.Addr{}, err
		}
		if errors.As(err, &pe) {
			lastErr = err
			if busy++; busy >= maxBusy {
				break
			}
		}
	}
	if lastErr != nil {
		return netip.Addr{}, fmt.Errorf("no address of network %s (%s) has ports %v free after %d tries (last: %v); does something on this host listen on those ports on every address (0.0.0.0)?",
			n.Name, n.CIDR, ports, busy, lastErr)
	}
	return netip.Addr{}, fmt.Errorf("network %s (%s) has no free address left", n.Name, n.CIDR)
}

type portsBusyError struct {
	addr netip.Addr
	err  error
}

func (e *portsBusyError) Error() string { return fmt.Sprintf("%s: %v", e.addr, e.err) }

// take claims a for id if its ports can be bound now (nothing else on
// this host uses them) and no one claimed it first.
func (d *Driver) take(dir, id string, a netip.Addr, ports []int) error {
	for _, p := range ports {
		ln, err := net.Listen("tcp", net.JoinHostPort(a.String(), strconv.Itoa(p)))
		if err != nil {
			return &portsBusyError{addr: a, err: err}
		}
		ln.Close()
	}
	path := filepath.Join(dir, a.String())
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		h, _ := os.ReadFile(path)
		if holder := strings.TrimSpace(string(h)); holder != id {
			return fmt.Errorf("%w: address %s is in use by instance %s", os.ErrExist, a, holder)
		}
		return nil
	}
	if err != nil {
		return err
	}
	_, werr := f.WriteString(id + "\n")
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(f.Name())
		return werr
	}
	return nil
}

// release drops every claim of instance id (DeleteServer).
func (d *Driver) release(id string) error {
	for _, n := range d.cfg.Networks {
		claims, err := d.Claims(n.ID)
		if err != nil {
			return err
		}
		for addr, holder := range claims {
			if holder == id {
				if err := os.Remove(filepath.Join(d.claimDir(n), addr)); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
		}
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

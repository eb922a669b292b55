// Package netconfig turns the network description on an OpenStack config
// drive (openstack/latest/network_data.json, written by Nova) into
// systemd-networkd units, so a guest on a network without DHCP takes the
// fixed address Neutron gave its port.
//
// strata-network.service runs `strata-agent -network-config
// /run/systemd/network` after strata-config-drive.service copied the drive
// and before systemd-networkd starts. The units it writes match an
// interface by MAC address and sort before the image's catch-all DHCP unit
// (80-strata-dhcp.network), so they win on the interfaces they name; every
// other interface keeps DHCP. No network_data.json (a NoCloud seed, a
// local VM) means nothing is written.
//
// Everything read is validated before anything is written: a value that
// does not parse as what its field says (an address, a MAC, a number) is
// an error naming the network and field, and no unit is written — the
// file is never copied into a unit as text.
package netconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// DataPath is network_data.json inside a config drive's tree.
const DataPath = "openstack/latest/network_data.json"

// Prefix starts the name of every unit written here; Write replaces all
// files with it.
const Prefix = "10-strata-netdata-"

// maxData caps what is read: Nova's file for a few ports is a few KiB.
const maxData = 1 << 20

// The file's shape, as Nova writes it (only what is used).
type data struct {
	Links    []link    `json:"links"`
	Networks []network `json:"networks"`
	Services []service `json:"services"`
}

type link struct {
	ID   string          `json:"id"`
	Type string          `json:"type"`
	MAC  string          `json:"ethernet_mac_address"`
	MTU  json.RawMessage `json:"mtu"`
}

type network struct {
	ID       string    `json:"id"`
	Type     string    `json:"type"`
	Link     string    `json:"link"`
	Address  string    `json:"ip_address"`
	Netmask  string    `json:"netmask"`
	Routes   []route   `json:"routes"`
	Services []service `json:"services"`
}

type route struct {
	Network string `json:"network"`
	Netmask string `json:"netmask"`
	Gateway string `json:"gateway"`
}

type service struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

// Interface is what one link gets: validated values only.
type Interface struct {
	Link      string // the link's id in the file (for messages)
	MAC       net.HardwareAddr
	MTU       int // 0: not set
	Addresses []netip.Prefix
	Routes    []Route
	DNS       []netip.Addr
	DHCPv4    bool
	DHCPv6    bool
	AcceptRA  bool
}

// Route is a static route; a zero-length Destination is the default route.
type Route struct {
	Destination netip.Prefix
	Gateway     netip.Addr
}

// Skipped says what in the file was left to DHCP, and why.
type Skipped struct {
	What, Why string
}

// Parse validates a network_data.json. It returns one Interface per link
// that has at least one network it understands, in the file's order, and
// what it left alone (links of type vlan or bond, network types it does
// not know): those interfaces keep the image's DHCP.
func Parse(raw []byte) ([]Interface, []Skipped, error) {
	var d data
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, nil, fmt.Errorf("%s is not valid JSON: %w", DataPath, err)
	}
	var global []netip.Addr
	for i, s := range d.Services {
		if s.Type != "dns" {
			continue
		}
		a, err := addr(s.Address)
		if err != nil {
			return nil, nil, fmt.Errorf("services[%d] (dns): address %q: %w", i, s.Address, err)
		}
		global = append(global, a)
	}
	var skipped []Skipped
	links := map[string]*Interface{}
	var order []string
	for i, l := range d.Links {
		where := fmt.Sprintf("links[%d] (%q)", i, l.ID)
		if l.ID == "" {
			return nil, nil, fmt.Errorf("links[%d] has no id", i)
		}
		if slices.Contains(order, l.ID) {
			return nil, nil, fmt.Errorf("%s: id used twice", where)
		}
		if l.Type == "vlan" || l.Type == "bond" {
			skipped = append(skipped, Skipped{What: where, Why: "link type " + l.Type + " is not configured from network_data.json"})
			order = append(order, l.ID)
			continue
		}
		mac, err := net.ParseMAC(l.MAC)
		if err != nil || len(mac) != 6 {
			return nil, nil, fmt.Errorf("%s: ethernet_mac_address %q is not an Ethernet MAC address", where, l.MAC)
		}
		mtu, err := mtuOf(l.MTU)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: mtu: %w", where, err)
		}
		for _, other := range links {
			if other.MAC.String() == mac.String() {
				return nil, nil, fmt.Errorf("%s: MAC address %s is also link %q's", where, mac, other.Link)
			}
		}
		links[l.ID] = &Interface{Link: l.ID, MAC: mac, MTU: mtu}
		order = append(order, l.ID)
	}
	used := map[string]bool{}
	for i, n := range d.Networks {
		where := fmt.Sprintf("networks[%d] (%q)", i, n.ID)
		if !slices.Contains(order, n.Link) {
			return nil, nil, fmt.Errorf("%s: link %q is not in links", where, n.Link)
		}
		ifc := links[n.Link]
		if ifc == nil { // a vlan or bond link: skipped above
			skipped = append(skipped, Skipped{What: where, Why: "its link " + n.Link + " is not configured"})
			continue
		}
		switch n.Type {
		case "ipv4_dhcp":
			ifc.DHCPv4 = true
		case "ipv6_dhcp", "ipv6_dhcpv6-stateful":
			ifc.DHCPv6, ifc.AcceptRA = true, true
		case "ipv6_slaac", "ipv6_dhcpv6-stateless":
			ifc.AcceptRA = true
		case "ipv4", "ipv6":
			p, err := prefix(n.Address, n.Netmask, n.Type == "ipv6")
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", where, err)
			}
			ifc.Addresses = append(ifc.Addresses, p)
			for j, r := range n.Routes {
				rt, err := routeOf(r, n.Type == "ipv6")
				if err != nil {
					return nil, nil, fmt.Errorf("%s: routes[%d]: %w", where, j, err)
				}
				ifc.Routes = append(ifc.Routes, rt)
			}
			for j, s := range n.Services {
				if s.Type != "dns" {
					continue
				}
				a, err := addr(s.Address)
				if err != nil {
					return nil, nil, fmt.Errorf("%s: services[%d] (dns): address %q: %w", where, j, s.Address, err)
				}
				if !slices.Contains(ifc.DNS, a) {
					ifc.DNS = append(ifc.DNS, a)
				}
			}
		default:
			skipped = append(skipped, Skipped{What: where, Why: fmt.Sprintf("network type %q is not known", n.Type)})
			continue
		}
		used[n.Link] = true
	}
	var out []Interface
	for _, id := range order {
		ifc := links[id]
		if ifc == nil || !used[id] {
			continue
		}
		if len(ifc.Addresses) > 0 {
			for _, a := range global {
				if !slices.Contains(ifc.DNS, a) {
					ifc.DNS = append(ifc.DNS, a)
				}
			}
		}
		out = append(out, *ifc)
	}
	return out, skipped, nil
}

func mtuOf(raw json.RawMessage) (int, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 68 || n > 65535 {
		return 0, fmt.Errorf("%s is not a number from 68 to 65535", s)
	}
	return n, nil
}

// addr parses an address, without zone (a zone would be text in a unit).
func addr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, errors.New("not an IP address")
	}
	if a.Zone() != "" {
		return netip.Addr{}, errors.New("an address with a zone is not accepted")
	}
	return a.Unmap(), nil
}

// family names the IP version for messages ("4" or "6").
func family(v6 bool) string {
	if v6 {
		return "6"
	}
	return "4"
}

// bits reads a netmask: dotted (IPv4), an IPv6 mask as an address, or a
// prefix length.
func bits(mask string, v6 bool) (int, error) {
	max := 32
	if v6 {
		max = 128
	}
	if n, err := strconv.Atoi(mask); err == nil {
		if n < 0 || n > max {
			return 0, fmt.Errorf("netmask /%d is out of range for IPv%s", n, family(v6))
		}
		return n, nil
	}
	m, err := netip.ParseAddr(mask)
	if err != nil || m.Is6() != v6 || m.Zone() != "" {
		return 0, fmt.Errorf("netmask %q is not an IPv%s mask", mask, family(v6))
	}
	ones, size := net.IPMask(m.AsSlice()).Size()
	if size == 0 {
		return 0, fmt.Errorf("netmask %q is not contiguous", mask)
	}
	return ones, nil
}

func prefix(address, mask string, v6 bool) (netip.Prefix, error) {
	a, err := addr(address)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("ip_address %q: %w", address, err)
	}
	if a.Is6() != v6 {
		return netip.Prefix{}, fmt.Errorf("ip_address %q is not an IPv%s address", address, family(v6))
	}
	n, err := bits(mask, v6)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, n), nil
}

func routeOf(r route, v6 bool) (Route, error) {
	gw, err := addr(r.Gateway)
	if err != nil || gw.Is6() != v6 {
		return Route{}, fmt.Errorf("gateway %q is not an IPv%s address", r.Gateway, family(v6))
	}
	dst, err := addr(r.Network)
	if err != nil || dst.Is6() != v6 {
		return Route{}, fmt.Errorf("network %q is not an IPv%s address", r.Network, family(v6))
	}
	n, err := bits(r.Netmask, v6)
	if err != nil {
		return Route{}, err
	}
	p := netip.PrefixFrom(dst, n)
	if p.Masked() != p {
		return Route{}, fmt.Errorf("network %s has host bits set for /%d", dst, n)
	}
	return Route{Destination: p, Gateway: gw}, nil
}

// Unit renders one interface's systemd-networkd unit.
func (ifc Interface) Unit() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written at boot by strata-network.service from the config drive's\n# %s (link %q).\n", DataPath, ifc.Link)
	fmt.Fprintf(&b, "[Match]\nType=ether\nMACAddress=%s\n", ifc.MAC)
	if ifc.MTU > 0 {
		fmt.Fprintf(&b, "\n[Link]\nMTUBytes=%d\n", ifc.MTU)
	}
	dhcp := "no"
	switch {
	case ifc.DHCPv4 && ifc.DHCPv6:
		dhcp = "yes"
	case ifc.DHCPv4:
		dhcp = "ipv4"
	case ifc.DHCPv6:
		dhcp = "ipv6"
	}
	fmt.Fprintf(&b, "\n[Network]\nDHCP=%s\nIPv6AcceptRA=%s\n", dhcp, map[bool]string{false: "no", true: "yes"}[ifc.AcceptRA])
	for _, a := range ifc.Addresses {
		fmt.Fprintf(&b, "Address=%s\n", a)
	}
	for _, a := range ifc.DNS {
		fmt.Fprintf(&b, "DNS=%s\n", a)
	}
	if ifc.DHCPv4 {
		b.WriteString("\n[DHCPv4]\nUseDomains=yes\n")
	}
	for _, r := range ifc.Routes {
		b.WriteString("\n[Route]\n")
		if r.Destination.Bits() != 0 {
			fmt.Fprintf(&b, "Destination=%s\n", r.Destination)
		}
		fmt.Fprintf(&b, "Gateway=%s\n", r.Gateway)
	}
	return b.String()
}

// FileName is the unit's name in the network directory.
func (ifc Interface) FileName() string {
	return Prefix + strings.ReplaceAll(ifc.MAC.String(), ":", "") + ".network"
}

// Result says what Write did.
type Result struct {
	Found      bool     // the drive has a network_data.json
	Written    []string // units written, full paths
	Interfaces []Interface
	Skipped    []Skipped
}

// Write reads drive's network_data.json and writes one unit per
// configured interface into dir (created if missing), replacing every
// earlier unit of Prefix there. Without a network_data.json it removes
// those earlier units and writes nothing. On any error nothing is
// changed in dir.
func Write(drive, dir string) (Result, error) {
	var res Result
	raw, err := readCapped(filepath.Join(drive, DataPath))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return res, removeOld(dir, nil)
	case err != nil:
		return res, err
	}
	res.Found = true
	ifcs, skipped, err := Parse(raw)
	if err != nil {
		return res, fmt.Errorf("%s: %w", filepath.Join(drive, DataPath), err)
	}
	res.Interfaces, res.Skipped = ifcs, skipped
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	keep := map[string]bool{}
	for _, ifc := range ifcs {
		path := filepath.Join(dir, ifc.FileName())
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(ifc.Unit()), 0o644); err != nil {
			os.Remove(tmp)
			return res, err
		}
		if err := os.Rename(tmp, path); err != nil {
			os.Remove(tmp)
			return res, err
		}
		keep[filepath.Base(path)] = true
		res.Written = append(res.Written, path)
	}
	return res, removeOld(dir, keep)
}

func removeOld(dir string, keep map[string]bool) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), Prefix) && !keep[e.Name()] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxData+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxData {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxData)
	}
	return data, nil
}

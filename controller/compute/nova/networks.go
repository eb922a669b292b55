package nova

import (
	"context"
	"fmt"
	"net/netip"
	"sort"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"strata/controller/compute"
)

// Networks lists the Neutron networks the service user sees, the
// configured one (--nova-network) first and marked default.
func (d *Driver) Networks(ctx context.Context) ([]compute.Network, error) {
	pages, err := networks.List(d.network, networks.ListOpts{}).AllPages(ctx)
	if err != nil {
		return nil, serviceErr("neutron", "listing networks", err)
	}
	all, err := networks.ExtractNetworks(pages)
	if err != nil {
		return nil, serviceErr("neutron", "listing networks", err)
	}
	out := make([]compute.Network, 0, len(all))
	for _, n := range all {
		out = append(out, compute.Network{ID: n.ID, Name: n.Name, Default: n.ID == d.cfg.Network})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Default && !out[j].Default })
	return out, nil
}

// ResolveNICs checks each interface against Neutron: the network, or the
// port (whose network it takes), must exist; a fixed address must be
// IPv4. Nova takes a network with an optional fixed address, or a port
// alone; a subnet it cannot take (a port on that subnet can be).
func (d *Driver) ResolveNICs(ctx context.Context, nics []compute.NIC) ([]compute.NIC, error) {
	if len(nics) == 0 {
		nics = []compute.NIC{{}}
	}
	var valid string
	known := func() string {
		if valid == "" {
			nets, err := d.Networks(ctx)
			if err != nil {
				valid = "; the networks could not be listed: " + err.Error()
			} else {
				valid = "; the networks are: " + compute.NetworkList(nets)
			}
		}
		return valid
	}
	out := make([]compute.NIC, 0, len(nics))
	for _, nic := range nics {
		if nic.SubnetID != "" {
			return nil, fmt.Errorf("%w: subnet %q: Nova attaches a server to a network (net-id, with v4-fixed-ip), or to a port (port-id) — make a port on the subnet and pass its id%s",
				compute.ErrInvalid, nic.SubnetID, known())
		}
		if nic.FixedIP != "" {
			a, err := netip.ParseAddr(nic.FixedIP)
			if err != nil || !a.Is4() {
				return nil, fmt.Errorf("%w: address %q is not an IPv4 address", compute.ErrInvalid, nic.FixedIP)
			}
			nic.FixedIP = a.String()
		}
		if nic.PortID != "" {
			if nic.FixedIP != "" {
				return nil, fmt.Errorf("%w: port %s: a port brings its own addresses; give either port-id or v4-fixed-ip", compute.ErrInvalid, nic.PortID)
			}
			p, err := ports.Get(ctx, d.network, nic.PortID).Extract()
			if gophercloud.ResponseCodeIs(err, 404) {
				return nil, fmt.Errorf("%w: port %q not found in Neutron%s", compute.ErrInvalid, nic.PortID, known())
			}
			if err != nil {
				return nil, serviceErr("neutron", "reading port "+nic.PortID, err)
			}
			if p.DeviceID != "" {
				return nil, fmt.Errorf("%w: port %s is in use by %s", compute.ErrInvalid, p.ID, p.DeviceID)
			}
			if nic.NetworkID != "" && nic.NetworkID != p.NetworkID {
				return nil, fmt.Errorf("%w: port %s is on network %s, not %s", compute.ErrInvalid, p.ID, p.NetworkID, nic.NetworkID)
			}
			nic.NetworkID = p.NetworkID
			out = append(out, nic)
			continue
		}
		if nic.NetworkID == "" {
			nic.NetworkID = d.cfg.Network
		}
		if _, err := networks.Get(ctx, d.network, nic.NetworkID).Extract(); gophercloud.ResponseCodeIs(err, 404) {
			return nil, fmt.Errorf("%w: network %q not found in Neutron%s", compute.ErrInvalid, nic.NetworkID, known())
		} else if err != nil {
			return nil, serviceErr("neutron", "reading network "+nic.NetworkID, err)
		}
		out = append(out, nic)
	}
	return out, nil
}

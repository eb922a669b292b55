//go:build openstack

package nova_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"strata/controller/compute"
	"strata/controller/compute/nova"
)

// TestRealNICsAndZoneReachNovaAndNeutron: Trove's nics and
// availability_zone on the real services. A net-id with a v4-fixed-ip
// gives the server that address; a port-id gives it that port (which
// stays, the user's, when the server goes); a port in use, an unknown
// network and an address that is not IPv4 are refused before anything is
// made; the zone Nova lists is accepted, reaches the server and the
// volume, and one it does not list is refused naming the real ones.
func TestRealNICsAndZoneReachNovaAndNeutron(t *testing.T) {
	r := newRealCloud(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r.flavor(ctx, "strata-paths-nics", 1)
	d := r.driver(nova.Config{})
	img := r.image(ctx, "strata-paths-nics", "64M", 0)
	subnet, err := netip.ParsePrefix(r.c.GuestCIDR)
	if err != nil {
		t.Fatal(err)
	}
	// An address near the top of the allocation pool (.10-.250), which
	// the tier's other servers take from the bottom.
	fixed := subnet.Addr().As4()
	fixed[3] = 241
	want := netip.AddrFrom4(fixed).String()

	// The zone: Nova's own, checked, and passed to Cinder and Nova.
	if err := d.CheckAvailabilityZone(ctx, "nova"); err != nil {
		t.Fatalf("zone nova: %v", err)
	}
	if err := d.CheckAvailabilityZone(ctx, "az-nowhere"); !errors.Is(err, compute.ErrInvalid) || !strings.Contains(err.Error(), "(available: nova)") {
		t.Fatalf("an unknown zone: %v", err)
	}

	const id1 = "0a1b2c3d-0000-4000-8000-00000000nic1"
	nics, err := d.ResolveNICs(ctx, []compute.NIC{{NetworkID: r.c.NetworkID, FixedIP: want}})
	if err != nil {
		t.Fatalf("ResolveNICs(net-id, v4-fixed-ip): %v", err)
	}
	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: id1, Name: "nics", SizeGB: 1, AvailabilityZone: "nova"})
	if err != nil {
		t.Fatalf("CreateVolume in zone nova: %v", err)
	}
	t.Cleanup(func() {
		if err := d.DeleteVolume(context.Background(), vol); err != nil {
			t.Errorf("DeleteVolume: %v", err)
		}
	})
	spec := serverSpec(id1, img.ID, vol)
	spec.NICs, spec.AvailabilityZone = nics, "nova"
	srv, err := d.CreateServer(ctx, spec)
	if err != nil {
		r.logs()
		t.Fatalf("CreateServer with a fixed address: %v", err)
	}
	t.Cleanup(func() { d.DeleteServer(context.Background(), srv) })
	if len(srv.Addresses) != 1 || srv.Addresses[0].Address != want || srv.Endpoints[0].Host != want {
		t.Errorf("the server's addresses %+v, endpoints %+v; want the fixed %s", srv.Addresses, srv.Endpoints, want)
	}
	var zoned struct {
		Zone string `json:"OS-EXT-AZ:availability_zone"`
	}
	if err := servers.Get(ctx, r.cc, srv.ID).ExtractInto(&zoned); err != nil || zoned.Zone != "nova" {
		t.Errorf("the server's zone %q (%v), want nova", zoned.Zone, err)
	}
	if v, err := volumes.Get(ctx, r.vc, vol.ID).Extract(); err != nil || v.AvailabilityZone != "nova" {
		t.Errorf("the volume's zone: %+v, %v", v, err)
	}
	// The same fixed address again: Neutron refuses it; the rollback
	// leaves nothing.
	const id2 = "0a1b2c3d-0000-4000-8000-00000000nic2"
	vol2 := r.volume(ctx, d, id2, 1)
	spec2 := serverSpec(id2, img.ID, vol2)
	spec2.NICs = nics
	if s2, err := d.CreateServer(ctx, spec2); err == nil {
		d.DeleteServer(context.Background(), s2)
		t.Fatalf("a second server got the address %s: %+v", want, s2.Addresses)
	} else {
		t.Logf("the same fixed address twice: %v", err)
	}

	// A port the user made: the server takes it; deleting the server
	// leaves it (Nova does not delete a port it did not make), unbound.
	port, err := ports.Create(ctx, r.nc, ports.CreateOpts{NetworkID: r.c.NetworkID, Name: "strata-test-user-port"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ports.Delete(context.Background(), r.nc, port.ID) })
	const id3 = "0a1b2c3d-0000-4000-8000-00000000nic3"
	pnics, err := d.ResolveNICs(ctx, []compute.NIC{{PortID: port.ID}})
	if err != nil {
		t.Fatalf("ResolveNICs(port-id): %v", err)
	}
	vol3 := r.volume(ctx, d, id3, 1)
	spec3 := serverSpec(id3, img.ID, vol3)
	spec3.NICs = pnics
	srv3, err := d.CreateServer(ctx, spec3)
	if err != nil {
		r.logs()
		t.Fatalf("CreateServer on a port: %v", err)
	}
	if len(srv3.Addresses) != 1 || srv3.Addresses[0].Address != port.FixedIPs[0].IPAddress {
		t.Errorf("the server on port %s has %+v, want its address %s", port.ID, srv3.Addresses, port.FixedIPs[0].IPAddress)
	}
	// That port is now in use: another create naming it is refused
	// before anything is made.
	if _, err := d.ResolveNICs(ctx, []compute.NIC{{PortID: port.ID}}); !errors.Is(err, compute.ErrInvalid) || !strings.Contains(err.Error(), "is in use by "+srv3.ID) {
		t.Errorf("a port in use: %v", err)
	}
	if err := d.DeleteServer(ctx, srv3); err != nil {
		t.Fatal(err)
	}
	p, err := ports.Get(ctx, r.nc, port.ID).Extract()
	if err != nil || p.DeviceID != "" {
		t.Errorf("the user's port after its server went: %+v, %v; want it kept and unbound", p, err)
	}

	for _, tc := range []struct {
		nic  compute.NIC
		want string
	}{
		{compute.NIC{NetworkID: "5f1e0c6c-0000-4000-8000-00000000dead"}, "the networks are: "},
		{compute.NIC{PortID: "5f1e0c6c-0000-4000-8000-00000000beef"}, "not found in Neutron"},
		{compute.NIC{NetworkID: r.c.NetworkID, FixedIP: "fd00::5"}, "is not an IPv4 address"},
	} {
		if _, err := d.ResolveNICs(ctx, []compute.NIC{tc.nic}); !errors.Is(err, compute.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ResolveNICs(%+v) = %v, want a refusal saying %q", tc.nic, err, tc.want)
		}
	}
}

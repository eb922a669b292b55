package qemu_test

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
	"testing"
	"time"

	"strata/controller/compute"
	"strata/controller/compute/qemu"
)

// testNetwork is a small block of its own, so that tests running at the
// same time on this host (and other state directories) do not meet.
func testNetwork(bits int) qemu.Network {
	cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{127, byte(100 + rand.IntN(90)), byte(rand.IntN(256)), byte(rand.IntN(32) * 8)}), bits).Masked()
	return qemu.Network{ID: fmt.Sprintf("net-%d", rand.Uint32()), Name: "test", CIDR: cidr}
}

func driverWith(t *testing.T, dir string, nets ...qemu.Network) *qemu.Driver {
	t.Helper()
	t.Cleanup(func() { qemu.KillUnder(dir) })
	return driverOn(t, dir, qemu.Config{Networks: nets})
}

func TestTheDefaultNetworkIsStableAndListed(t *testing.T) {
	d, _ := newDriver(t)
	nets, err := d.Networks(context.Background())
	if err != nil || len(nets) != 1 {
		t.Fatalf("networks = %v, %v", nets, err)
	}
	n := nets[0]
	if n.ID != "5c1e8f2a-7b3d-4e6f-9a0b-1c2d3e4f5a6b" || n.Name != "private" || !n.Default || n.CIDRs[0] != "127.10.0.0/16" {
		t.Fatalf("default network = %+v (its id and name are documented and configured elsewhere: they must not change)", n)
	}
	got, err := d.ResolveNICs(context.Background(), nil)
	if err != nil || len(got) != 1 || got[0].NetworkID != n.ID {
		t.Fatalf("no nics = %v, %v; want the default network", got, err)
	}
	got, err = d.ResolveNICs(context.Background(), []compute.NIC{{}})
	if err != nil || len(got) != 1 || got[0].NetworkID != n.ID {
		t.Fatalf("an empty nic = %v, %v; want the default network", got, err)
	}
}

func TestResolveNICsRefusesWhatTheLocalDriverCannotDo(t *testing.T) {
	dir := t.TempDir()
	n := testNetwork(29)
	d := driverWith(t, dir, n)
	ctx := context.Background()
	first, last := n.CIDR.Addr().String(), n.CIDR.Addr().Next().Next().Next().Next().Next().Next().Next().String()
	inside := n.CIDR.Addr().Next().Next().String()
	if _, err := d.Claim("holder-instance-1", n.ID, inside, []int{3306}); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		nics []compute.NIC
		want string
	}{
		"unknown network": {[]compute.NIC{{NetworkID: "0000-nope"}}, `network "0000-nope" is not one of this controller's`},
		"two nics":        {[]compute.NIC{{NetworkID: n.ID}, {NetworkID: n.ID}}, "a local instance has one"},
		"port":            {[]compute.NIC{{PortID: "p-1"}}, "has no ports"},
		"subnet":          {[]compute.NIC{{SubnetID: "s-1"}}, "have no subnets"},
		"outside":         {[]compute.NIC{{NetworkID: n.ID, FixedIP: "127.0.0.1"}}, "not a usable IPv4 address"},
		"first":           {[]compute.NIC{{NetworkID: n.ID, FixedIP: first}}, "not a usable IPv4 address"},
		"last":            {[]compute.NIC{{NetworkID: n.ID, FixedIP: last}}, "not a usable IPv4 address"},
		"not an address":  {[]compute.NIC{{NetworkID: n.ID, FixedIP: "ten"}}, "not a usable IPv4 address"},
		"taken":           {[]compute.NIC{{NetworkID: n.ID, FixedIP: inside}}, "in use by instance holder-instance-1"},
	} {
		_, err := d.ResolveNICs(ctx, c.nics)
		if !errors.Is(err, compute.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalid with %q", name, err, c.want)
			continue
		}
		// Every refusal names the networks there are.
		if !strings.Contains(err.Error(), n.ID) && !strings.Contains(err.Error(), n.Name) {
			t.Errorf("%s: %v does not name the valid networks", name, err)
		}
	}
	free := n.CIDR.Addr().Next().Next().Next().String()
	got, err := d.ResolveNICs(ctx, []compute.NIC{{NetworkID: n.ID, FixedIP: free}})
	if err != nil || got[0].FixedIP != free {
		t.Fatalf("a free address asked for: %v, %v", got, err)
	}
}

// TestAddressesAreClaimedDurablyOncePerInstanceAndFreedOnRelease: the
// allocation the fence will extend.
func TestAddressesAreClaimedDurablyOncePerInstanceAndFreedOnRelease(t *testing.T) {
	dir := t.TempDir()
	n := testNetwork(29) // 6 usable addresses
	d := driverWith(t, dir, n)
	// Something else on this host listens on one address's port: skipped.
	busy := n.CIDR.Addr().Next().Next().Next()
	ln, err := net.Listen("tcp", net.JoinHostPort(busy.String(), "5432"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := map[string]string{}
	for i := range 5 {
		id := fmt.Sprintf("instance-%02d-aaaa", i)
		a, err := d.Claim(id, n.ID, "", []int{5432})
		if err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		if a == busy.String() {
			t.Fatalf("claimed %s, whose port 5432 something else holds", a)
		}
		if !n.CIDR.Contains(netip.MustParseAddr(a)) || seen[a] != "" {
			t.Fatalf("claim %d = %s (outside %s, or given twice: %v)", i, a, n.CIDR, seen)
		}
		seen[a] = id
		// Again for the same instance (a step run twice): the same address.
		if again, err := d.Claim(id, n.ID, "", []int{5432}); err != nil || again != a {
			t.Fatalf("second claim of %s = %s, %v; want %s", id, again, err, a)
		}
	}
	if _, err := d.Claim("instance-99-aaaa", n.ID, "", []int{5432}); err == nil || !strings.Contains(err.Error(), "5432") {
		t.Fatalf("claim on a full network: %v, want an error naming the port", err)
	}
	// Durable: another driver (a controller started again) on the same
	// state directory sees the same claims.
	d2 := driverWith(t, dir, n)
	claims, err := d2.Claims(n.ID)
	if err != nil || len(claims) != 5 {
		t.Fatalf("claims after a restart = %v, %v", claims, err)
	}
	for a, id := range seen {
		if claims[a] != id {
			t.Fatalf("claims after a restart = %v, want %v", claims, seen)
		}
	}
	// Release frees exactly that instance's address, which is handed out
	// again.
	var freed string
	for a, id := range seen {
		if id == "instance-02-aaaa" {
			freed = a
		}
	}
	if err := d2.Release("instance-02-aaaa"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "networks", n.ID, freed)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the claim file of a released address: %v", err)
	}
	if a, err := d2.Claim("instance-50-aaaa", n.ID, "", []int{5432}); err != nil || a != freed {
		t.Fatalf("claim after release = %s, %v; want %s", a, err, freed)
	}
}

func TestNetworksConfigurationIsChecked(t *testing.T) {
	for name, nets := range map[string][]qemu.Network{
		"not loopback":    {{ID: "a", Name: "a", CIDR: netip.MustParsePrefix("10.0.0.0/24")}},
		"holds 127.0.0.1": {{ID: "a", Name: "a", CIDR: netip.MustParsePrefix("127.0.0.0/16")}},
		"too small":       {{ID: "a", Name: "a", CIDR: netip.MustParsePrefix("127.9.0.0/31")}},
		"overlap":         {{ID: "a", Name: "a", CIDR: netip.MustParsePrefix("127.9.0.0/16")}, {ID: "b", Name: "b", CIDR: netip.MustParsePrefix("127.9.1.0/24")}},
		"same name":       {{ID: "a", Name: "a", CIDR: netip.MustParsePrefix("127.9.0.0/24")}, {ID: "b", Name: "a", CIDR: netip.MustParsePrefix("127.9.1.0/24")}},
		"path in id":      {{ID: "../x", Name: "a", CIDR: netip.MustParsePrefix("127.9.0.0/24")}},
	} {
		if _, err := qemu.New(context.Background(), qemu.Config{Dir: t.TempDir(), Networks: nets}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestAnInstanceIsReachedOnItsOwnAddressAtTheStandardPort boots a (blank)
// VM: its port 3306 is forwarded from its own loopback address, and
// deleting it frees the address.
func TestAnInstanceIsReachedOnItsOwnAddressAtTheStandardPort(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n := testNetwork(24)
	d := driverWith(t, dir, n)
	img := blankImage(t)
	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: id, Name: "db", SizeGB: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := n.CIDR.Addr().Next().Next().Next().Next().Next().String()
	spec := compute.ServerSpec{InstanceID: id, Name: "db", Image: img, RAMMB: 256, VCPUs: 1, Volume: vol,
		ConfigDrive: map[string][]byte{"strata/bootstrap.json": []byte(`{"format":1}`)}, Ports: []int{3306},
		NICs: []compute.NIC{{NetworkID: n.ID, FixedIP: want}}}
	srv, err := d.CreateServer(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	ep, _ := srv.Endpoint(3306)
	if ep.Host != want || ep.Port != 3306 || len(srv.Addresses) != 1 || srv.Addresses[0].Address != want || srv.Addresses[0].Network != n.ID {
		t.Fatalf("server = %+v, want %s:3306 on %s", srv, want, n.ID)
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(want, "3306"), 2*time.Second)
	if err != nil {
		t.Fatalf("the instance's own address, port 3306: %v", err)
	}
	conn.Close()
	if err := d.DeleteServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if claims, _ := d.Claims(n.ID); len(claims) != 0 {
		t.Fatalf("claims after DeleteServer: %v", claims)
	}
	d.DeleteVolume(ctx, vol)
}

// TestAServerFromBeforeOwnAddressesKeepsItsForward: a server.json of
// format 1 (no address; 127.0.0.1 and a random port) starts again on
// exactly that address and port.
func TestAServerFromBeforeOwnAddressesKeepsItsForward(t *testing.T) {
	ctx := context.Background()
	d, dir := newDriver(t)
	img := blankImage(t)
	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: id, Name: "db", SizeGB: 1})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	inst := filepath.Join(dir, id)
	// What the earlier controller left: the disks and a format-1 state.
	spec := compute.ServerSpec{InstanceID: id, Name: "db", Image: img, RAMMB: 256, VCPUs: 1, Volume: vol,
		ConfigDrive: map[string][]byte{"strata/bootstrap.json": []byte(`{"format":1}`)}, Ports: []int{3306}}
	if _, err := d.CreateServer(ctx, spec); err != nil {
		t.Fatal(err)
	}
	qemu.KillUnder(dir) // the earlier controller and its VMs are gone
	old := `{"name":"db","image":"` + img.Location + `","ram_mb":256,"vcpus":1,"endpoints":[{"guest_port":3306,"host":"127.0.0.1","port":` + strconv.Itoa(port) + `}],"pid":0}`
	if err := os.WriteFile(filepath.Join(inst, "server.json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Release(id); err != nil {
		t.Fatal(err)
	}
	d2 := driverWith(t, dir)
	if err := d2.StartServer(ctx, compute.Server{ID: id}); err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 2*time.Second)
	if err != nil {
		t.Fatalf("the port of the format-1 server after a start: %v", err)
	}
	conn.Close()
	// A repeated create step keeps it as it was, too.
	got, err := d2.CreateServer(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if ep, _ := got.Endpoint(3306); ep.Host != "127.0.0.1" || ep.Port != port || got.Addresses[0].Address != "127.0.0.1" {
		t.Fatalf("format-1 server after CreateServer = %+v, want 127.0.0.1:%d", got, port)
	}
	if claims, _ := d2.Claims(qemu.DefaultNetwork.ID); len(claims) != 0 {
		t.Fatalf("a format-1 server claimed an address: %v", claims)
	}
	if err := d2.DeleteServer(ctx, got); err != nil {
		t.Fatal(err)
	}
	d2.DeleteVolume(ctx, vol)
}

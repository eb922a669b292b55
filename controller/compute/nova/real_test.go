//go:build openstack

package nova_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"strata/ci/openstack/ostest"
	"strata/controller/compute"
	"strata/controller/compute/nova"
)

func TestMain(m *testing.M) { os.Exit(ostest.Main(m)) }

// TestDriverBootsOnRealNova: strata's Nova driver creates a volume, boots
// a tiny image with no OS (config drive, the volume attached at boot, a
// security group of its own, a port on the Neutron flat network) to ACTIVE
// on the private compute tier of ci/openstack/compute-start.sh, deletes it
// all, and an inventory of Nova, Cinder and Neutron shows nothing left.
func TestDriverBootsOnRealNova(t *testing.T) {
	s, c := ostest.SharedCompute(t)
	t.Logf("compute tier ready in %.1f s (network %s, %s)", c.Seconds, c.NetworkID, c.GuestCIDR)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cl, err := s.Clients(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pc, cc, nc, vc := cl.Provider, cl.Compute, cl.Network, cl.Volume
	// Registered first: it runs after every other cleanup, on a failure too.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		inventory(ctx, t, cc, nc, vc)
	})
	logs := func() {
		for _, svc := range []string{"nova-api", "nova-conductor", "nova-compute", "cinder-volume", "neutron-server", "neutron-linuxbridge-agent"} {
			t.Logf("--- %s:\n%s", svc, s.ComputeLog(svc))
		}
	}

	// A guest with no OS: an empty qcow2 that SeaBIOS finds nothing on.
	ic := cl.Image
	p := filepath.Join(t.TempDir(), "empty.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	data, _ := os.ReadFile(p)
	img, err := images.Create(ctx, ic, images.CreateOpts{Name: "strata-smoke-empty", DiskFormat: "qcow2", ContainerFormat: "bare"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { images.Delete(context.Background(), ic, img.ID) })
	if err := imagedata.Upload(ctx, ic, img.ID, bytes.NewReader(data)).ExtractErr(); err != nil {
		t.Fatal(err)
	}

	disk := 1
	fl, err := flavors.Create(ctx, cc, flavors.CreateOpts{Name: "strata-smoke", RAM: 128, VCPUs: 1, Disk: &disk}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { flavors.Delete(context.Background(), cc, fl.ID) })

	d, err := nova.Connect(pc, "RegionOne", nova.Config{Network: c.NetworkID, Poll: 250 * time.Millisecond, Timeout: 3 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	const id = "0a1b2c3d-0000-4000-8000-00000000smok"
	t0 := time.Now()
	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: id, Name: "smoke", SizeGB: 1})
	if err != nil {
		logs()
		t.Fatalf("CreateVolume: %v", err)
	}
	t.Logf("volume %s available in %.1f s", vol.ID, time.Since(t0).Seconds())
	t1 := time.Now()
	srv, err := d.CreateServer(ctx, compute.ServerSpec{
		InstanceID: id, Name: "smoke", RAMMB: 128, VCPUs: 1,
		Image:       compute.ImageRef{ID: img.ID, Location: img.ID, Format: "qcow2"},
		Volume:      vol,
		ConfigDrive: map[string][]byte{"strata/bootstrap.json": []byte(`{"smoke":true}`)},
		Ports:       []int{3306},
	})
	if err != nil {
		logs()
		d.DeleteVolume(context.Background(), vol)
		t.Fatalf("CreateServer: %v", err)
	}
	t.Logf("server %s ACTIVE in %.1f s, addresses %+v", srv.ID, time.Since(t1).Seconds(), srv.Addresses)
	prefix := strings.TrimSuffix(c.GuestCIDR, "0/24")
	if len(srv.Addresses) == 0 || !strings.HasPrefix(srv.Addresses[0].Address, prefix) {
		t.Errorf("addresses %+v: want one in %s", srv.Addresses, c.GuestCIDR)
	}
	if st, err := d.ServerState(ctx, srv); err != nil || st != compute.StateRunning {
		t.Errorf("state: %v, %v", st, err)
	}

	// The port carries the instance's security group and goes ACTIVE once
	// the linuxbridge agent in the compute namespace has wired its tap
	// (bridge, filtering rules).
	var pl []ports.Port
	t4 := time.Now()
	for {
		pp, err := ports.List(nc, ports.ListOpts{DeviceID: srv.ID}).AllPages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pl, _ = ports.ExtractPorts(pp)
		if len(pl) == 1 && pl[0].Status == "ACTIVE" || time.Since(t4) > time.Minute {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(pl) != 1 || pl[0].Status != "ACTIVE" || len(pl[0].SecurityGroups) != 1 || pl[0].SecurityGroups[0] != srv.Refs["security_group"] {
		logs()
		t.Errorf("the server's ports: %+v", pl)
	} else {
		t.Logf("port %s ACTIVE %.1f s after the server", pl[0].ID, time.Since(t4).Seconds())
	}

	t2 := time.Now()
	if err := d.DeleteServer(ctx, srv); err != nil {
		logs()
		t.Fatalf("DeleteServer: %v", err)
	}
	t.Logf("server deleted in %.1f s", time.Since(t2).Seconds())
	t3 := time.Now()
	if err := d.DeleteVolume(ctx, vol); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
	t.Logf("volume deleted in %.1f s", time.Since(t3).Seconds())
}

// inventory fails the test if Nova, Cinder or Neutron still hold a
// server, volume, port on a server or security group strata made
// (ostest.Inventory).
func inventory(ctx context.Context, t *testing.T, cc, nc, vc *gophercloud.ServiceClient) {
	t.Helper()
	left, err := ostest.Inventory(ctx, cc, nc, vc)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
}

//go:build openstack

package nova_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"strata/controller/compute"
	"strata/controller/compute/nova"
)

// TestRealResizeServerMovesToALargerFlavor: a flavor resize on the real
// Nova (one host: allow_resize_to_same_host) moves the server to the Nova
// flavor for the new RAM, confirmed, with its data volume still attached
// and libvirt's domain given the new memory; asked again it changes
// nothing.
func TestRealResizeServerMovesToALargerFlavor(t *testing.T) {
	r := newRealCloud(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r.flavor(ctx, "strata-paths-resize-small", 1)
	disk := 1
	big, err := flavors.Create(ctx, r.cc, flavors.CreateOpts{Name: "strata-paths-resize-big", RAM: 256, VCPUs: 1, Disk: &disk}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { flavors.Delete(context.Background(), r.cc, big.ID) })
	d := r.driver(nova.Config{})
	img := r.image(ctx, "strata-paths-resize", "64M", 0)
	const id = "0a1b2c3d-0000-4000-8000-0000resize01"
	srv, vol := r.server(ctx, d, id, img.ID)
	t0 := time.Now()
	if err := d.ResizeServer(ctx, srv, compute.Flavor{RAMMB: 256, VCPUs: 1}); err != nil {
		r.logs("nova-api", "nova-conductor", "nova-compute")
		t.Fatalf("ResizeServer: %v", err)
	}
	t.Logf("ResizeServer 128 → 256 MB returned after %.1f s", time.Since(t0).Seconds())
	cur, err := servers.Get(ctx, r.cc, srv.ID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	attached := false
	for _, v := range cur.AttachedVolumes {
		attached = attached || v.ID == vol.ID
	}
	// The test's client speaks Nova's base microversion: the flavor is a
	// reference by id (the driver's 2.56 embeds it by name).
	if cur.Status != "ACTIVE" || cur.Flavor["id"] != big.ID || !attached {
		t.Fatalf("after the resize: status %s, flavor %v, volumes %v; want ACTIVE on %s (%s) with volume %s", cur.Status, cur.Flavor, cur.AttachedVolumes, big.Name, big.ID, vol.ID)
	}
	info, err := r.c.Virsh(ctx, "dominfo", cur.InstanceName)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, "262144 KiB") {
		t.Errorf("libvirt's domain after the resize:\n%s\nwant 262144 KiB of memory", info)
	}
	t1 := time.Now()
	if err := d.ResizeServer(ctx, srv, compute.Flavor{RAMMB: 256, VCPUs: 1}); err != nil {
		t.Fatalf("ResizeServer again: %v", err)
	}
	t.Logf("ResizeServer to the flavor it has: %.1f s", time.Since(t1).Seconds())
	if again, err := servers.Get(ctx, r.cc, srv.ID).Extract(); err != nil || again.Flavor["id"] != big.ID || again.Status != "ACTIVE" {
		t.Fatalf("after a second resize to the same flavor: %+v, %v", again, err)
	}
}

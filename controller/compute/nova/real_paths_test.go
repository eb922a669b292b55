//go:build openstack

package nova_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumetypes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"strata/ci/openstack/ostest"
	"strata/controller/compute"
	"strata/controller/compute/nova"
)

// The driver's ERROR paths and online extend against the real compute
// tier (ci/openstack/compute-start.sh). Each test ends with an inventory
// of Nova, Cinder and Neutron (t.Cleanup, after the test's own cleanups):
// nothing strata made may be left behind.

// realCloud is one test's view of the compute tier.
type realCloud struct {
	t              *testing.T
	s              *ostest.Stack
	c              *ostest.Compute
	pc             *gophercloud.ProviderClient
	cc, nc, vc, ic *gophercloud.ServiceClient
}

func newRealCloud(t *testing.T) *realCloud {
	t.Helper()
	s, c := ostest.SharedCompute(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := s.Clients(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := &realCloud{t: t, s: s, c: c, pc: cl.Provider, cc: cl.Compute, nc: cl.Network, vc: cl.Volume, ic: cl.Image}
	// Registered first, so it runs after every cleanup the test adds.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		inventory(ctx, t, r.cc, r.nc, r.vc)
	})
	return r
}

func (r *realCloud) driver(cfg nova.Config) *nova.Driver {
	r.t.Helper()
	if cfg.Network == "" {
		cfg.Network = r.c.NetworkID
	}
	cfg.Poll, cfg.Timeout = 250*time.Millisecond, 3*time.Minute
	d, err := nova.Connect(r.pc, "RegionOne", cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	return d
}

// logs prints the services' logs, for a failure.
func (r *realCloud) logs(services ...string) {
	if len(services) == 0 {
		services = []string{"nova-api", "nova-conductor", "nova-compute", "cinder-volume", "cinder-scheduler", "neutron-server"}
	}
	for _, svc := range services {
		r.t.Logf("--- %s:\n%s", svc, r.s.ComputeLog(svc))
	}
}

// image uploads a qcow2 with no OS of the given virtual size to Glance,
// with minDiskGB as its min_disk; deleted when the test ends.
func (r *realCloud) image(ctx context.Context, name, virtualSize string, minDiskGB int) *images.Image {
	r.t.Helper()
	p := filepath.Join(r.t.TempDir(), name+".qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, virtualSize).CombinedOutput(); err != nil {
		r.t.Fatalf("qemu-img: %v: %s", err, out)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		r.t.Fatal(err)
	}
	img, err := images.Create(ctx, r.ic, images.CreateOpts{Name: name, DiskFormat: "qcow2", ContainerFormat: "bare", MinDisk: minDiskGB}).Extract()
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { images.Delete(context.Background(), r.ic, img.ID) })
	if err := imagedata.Upload(ctx, r.ic, img.ID, bytes.NewReader(data)).ExtractErr(); err != nil {
		r.t.Fatal(err)
	}
	return img
}

// flavor makes the one flavor the driver will find for 128 MB and one
// vCPU (the stack has no other), with a root disk of diskGB.
func (r *realCloud) flavor(ctx context.Context, name string, diskGB int) *flavors.Flavor {
	r.t.Helper()
	fl, err := flavors.Create(ctx, r.cc, flavors.CreateOpts{Name: name, RAM: 128, VCPUs: 1, Disk: &diskGB}).Extract()
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { flavors.Delete(context.Background(), r.cc, fl.ID) })
	return fl
}

// volume makes the instance's data volume through the driver; deleted
// through the driver when the test ends (a failed CreateServer leaves it
// for the instance, by design).
func (r *realCloud) volume(ctx context.Context, d *nova.Driver, id string, gb int) compute.Volume {
	r.t.Helper()
	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: id, Name: "paths", SizeGB: gb})
	if err != nil {
		r.logs("cinder-api", "cinder-volume", "cinder-scheduler")
		r.t.Fatalf("CreateVolume: %v", err)
	}
	r.t.Cleanup(func() {
		if err := d.DeleteVolume(context.Background(), vol); err != nil {
			r.t.Errorf("DeleteVolume %s: %v", vol.ID, err)
		}
	})
	return vol
}

// server boots instance id's server from img with a 1 GB data volume
// through the driver; both are deleted through the driver when the test
// ends (the server first).
func (r *realCloud) server(ctx context.Context, d *nova.Driver, id, img string) (compute.Server, compute.Volume) {
	r.t.Helper()
	vol := r.volume(ctx, d, id, 1)
	t0 := time.Now()
	srv, err := d.CreateServer(ctx, serverSpec(id, img, vol))
	if err != nil {
		r.logs()
		r.t.Fatalf("CreateServer: %v", err)
	}
	r.t.Logf("server %s ACTIVE in %.1f s", srv.ID, time.Since(t0).Seconds())
	r.t.Cleanup(func() {
		if err := d.DeleteServer(context.Background(), srv); err != nil {
			r.t.Errorf("DeleteServer: %v", err)
		}
	})
	return srv, vol
}

func serverSpec(id string, img string, vol compute.Volume) compute.ServerSpec {
	return compute.ServerSpec{
		InstanceID: id, Name: "paths", RAMMB: 128, VCPUs: 1,
		Image:       compute.ImageRef{ID: img, Location: img, Format: "qcow2"},
		Volume:      vol,
		ConfigDrive: map[string][]byte{"strata/bootstrap.json": []byte(`{"paths":true}`)},
		Ports:       []int{3306},
	}
}

// wantRefusal checks a failed CreateServer: an error, wrapping
// compute.ErrInvalid (the lifecycle fails the instance with it at once
// instead of booting again), that says each of wants.
func wantRefusal(t *testing.T, what string, srv compute.Server, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: CreateServer succeeded (server %s)", what, srv.ID)
	}
	t.Logf("%s: %v", what, err)
	if !errors.Is(err, compute.ErrInvalid) {
		t.Errorf("%s: the error does not wrap compute.ErrInvalid (the lifecycle would retry a request Nova refuses for good): %v", what, err)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: the error does not say %q: %v", what, w, err)
		}
	}
}

// TestRealNovaRefusesAnImageTooBigForTheFlavor: the driver picks its
// flavor by RAM and vCPUs; when that flavor's root disk (1 GB) cannot hold
// the image, Nova refuses — at the API for an image whose min_disk says
// so, on the compute host (the build aborted, the server in ERROR) for
// one whose virtual size is larger than the disk. Either way CreateServer
// fails with Nova's own words, and no server, port or security group is
// left (the inventory).
func TestRealNovaRefusesAnImageTooBigForTheFlavor(t *testing.T) {
	r := newRealCloud(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r.flavor(ctx, "strata-paths-disk1", 1)
	d := r.driver(nova.Config{})

	for _, tc := range []struct {
		name, id, virtualSize string
		minDisk               int
		wants                 []string
	}{
		{"min_disk above the flavor's disk", "0a1b2c3d-0000-4000-8000-0000mindisk1", "64M", 2,
			[]string{"HTTP 400", "Flavor's disk is smaller than the minimum size specified in image metadata"}},
		{"virtual size above the flavor's disk", "0a1b2c3d-0000-4000-8000-0000virtsz1", "2G", 0,
			[]string{"went to ERROR", "Flavor's disk is too small for requested image", "aborted"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := r.image(ctx, "strata-paths-big", tc.virtualSize, tc.minDisk)
			vol := r.volume(ctx, d, tc.id, 1)
			t0 := time.Now()
			srv, err := d.CreateServer(ctx, serverSpec(tc.id, img.ID, vol))
			t.Logf("CreateServer answered in %.1f s", time.Since(t0).Seconds())
			wantRefusal(t, tc.name, srv, err, tc.wants...)
			if t.Failed() {
				r.logs("nova-api", "nova-conductor", "nova-compute")
			}
		})
	}
}

// TestRealDriverPicksAFlavorThatHoldsTheImage: two flavors have the RAM
// and vCPUs asked for; the one with the smaller disk cannot hold the
// image (min_disk 2 GB), so the driver boots on the other one.
func TestRealDriverPicksAFlavorThatHoldsTheImage(t *testing.T) {
	r := newRealCloud(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r.flavor(ctx, "strata-paths-small", 1)
	big := r.flavor(ctx, "strata-paths-large", 3)
	d := r.driver(nova.Config{})
	img := r.image(ctx, "strata-paths-min2", "64M", 2)
	const id = "0a1b2c3d-0000-4000-8000-00000flavor1"
	srv, _ := r.server(ctx, d, id, img.ID)
	cur, err := servers.Get(ctx, r.cc, srv.ID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if cur.Flavor["id"] != big.ID {
		t.Errorf("the server's flavor is %v; want %s (%s, the one whose disk holds the image)", cur.Flavor, big.ID, big.Name)
	}
}

// TestRealNovaRefusesADeletedImage: the version's image was deleted from
// Glance before the create; Nova refuses the request, naming the image,
// and the security group the driver made for it is gone again.
func TestRealNovaRefusesADeletedImage(t *testing.T) {
	r := newRealCloud(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r.flavor(ctx, "strata-paths-gone", 1)
	d := r.driver(nova.Config{})
	img := r.image(ctx, "strata-paths-gone", "64M", 0)
	if err := images.Delete(ctx, r.ic, img.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	const id = "0a1b2c3d-0000-4000-8000-000000gone01"
	vol := r.volume(ctx, d, id, 1)
	t0 := time.Now()
	srv, err := d.CreateServer(ctx, serverSpec(id, img.ID, vol))
	t.Logf("CreateServer answered in %.1f s", time.Since(t0).Seconds())
	wantRefusal(t, "deleted image", srv, err, "HTTP 400: Can not find requested image", "from image "+img.ID, "its security group was deleted")
	if t.Failed() {
		r.logs("nova-api")
	}
}

// TestRealCinderVolumeThatFails: Cinder puts the data volume in error —
// no backend can hold its size (the share is an 8 GB tmpfs; the NFS
// driver is thin, Cinder's default over-subscription is 20×), or its
// volume type names a backend there is not. CreateVolume fails with
// Cinder's reason (its user message for the volume) and deletes the
// volume.
func TestRealCinderVolumeThatFails(t *testing.T) {
	r := newRealCloud(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	public := true
	vt, err := volumetypes.Create(ctx, r.vc, volumetypes.CreateOpts{Name: "strata-paths-nowhere", IsPublic: &public,
		ExtraSpecs: map[string]string{"volume_backend_name": "nowhere"}}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := volumetypes.Delete(context.Background(), r.vc, vt.ID).ExtractErr(); err != nil {
			t.Errorf("deleting volume type %s: %v", vt.ID, err)
		}
	})
	for _, tc := range []struct {
		name, id, volumeType string
		gb                   int
	}{
		{"beyond the backend's capacity", "0a1b2c3d-0000-4000-8000-00000000big1", "", 500},
		{"a volume type no backend has", "0a1b2c3d-0000-4000-8000-0000nowhere1", vt.Name, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := r.driver(nova.Config{VolumeType: tc.volumeType})
			t0 := time.Now()
			vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: tc.id, Name: "paths", SizeGB: tc.gb})
			t.Logf("CreateVolume answered in %.1f s", time.Since(t0).Seconds())
			if err == nil {
				d.DeleteVolume(context.Background(), vol)
				t.Fatalf("CreateVolume succeeded: %+v", vol)
			}
			t.Logf("%s: %v", tc.name, err)
			for _, w := range []string{`went to status "error": schedule allocate volume:Could not find any available weighted backend.`, "the volume was deleted"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the error does not say %q: %v", w, err)
				}
			}
			if t.Failed() {
				r.logs("cinder-scheduler", "cinder-api")
			}
		})
	}
}

// TestRealExtendVolumeOnline: the data volume grows from 1 to 2 GB while
// its server runs — Cinder's extend (3.42) of the attached volume, then
// Nova's volume-extended event and libvirt's resize of the guest's disk.
// Cinder's size and the capacity libvirt gives the guest's disk both grow.
func TestRealExtendVolumeOnline(t *testing.T) {
	r := newRealCloud(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r.flavor(ctx, "strata-paths-extend", 1)
	d := r.driver(nova.Config{})
	img := r.image(ctx, "strata-paths-extend", "64M", 0)
	const id = "0a1b2c3d-0000-4000-8000-0000extend01"
	srv, vol := r.server(ctx, d, id, img.ID)
	cur, err := servers.Get(ctx, r.cc, srv.ID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	domain := cur.InstanceName
	dev, before := guestDisk(ctx, t, r.c, domain, vol.ID)
	t.Logf("libvirt domain %s: the volume is %s, %d bytes", domain, dev, before)
	if before != 1<<30 {
		t.Errorf("the attached volume's capacity before the extend: %d bytes, want %d", before, 1<<30)
	}

	t1 := time.Now()
	grown, err := d.ExtendVolume(ctx, srv, vol, 2)
	if err != nil {
		r.logs("cinder-volume", "cinder-api", "nova-compute", "nova-api")
		t.Fatalf("ExtendVolume: %v", err)
	}
	t.Logf("ExtendVolume returned %d GB after %.1f s", grown.SizeGB, time.Since(t1).Seconds())
	if grown.SizeGB != 2 {
		t.Errorf("ExtendVolume returned %d GB, want 2", grown.SizeGB)
	}
	cv, err := volumes.Get(ctx, r.vc, vol.ID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if cv.Size != 2 || cv.Status != "in-use" {
		t.Errorf("cinder: volume %s is %d GB, %s; want 2 GB, in-use", vol.ID, cv.Size, cv.Status)
	}
	// The driver's contract: the guest sees the new size when ExtendVolume
	// returns (the agent grows the filesystem next). Nova resizes the disk
	// only after Cinder's volume-extended event reaches it.
	_, after := guestDisk(ctx, t, r.c, domain, vol.ID)
	if after != 2<<30 {
		for time.Since(t1) < time.Minute && after != 2<<30 {
			time.Sleep(250 * time.Millisecond)
			_, after = guestDisk(ctx, t, r.c, domain, vol.ID)
		}
		r.logs("cinder-volume", "nova-compute", "nova-api")
		t.Fatalf("libvirt: disk %s of %s was not %d bytes when ExtendVolume returned (%d bytes %.1f s after the extend began)",
			dev, domain, int64(2<<30), after, time.Since(t1).Seconds())
	}
	t.Logf("libvirt: disk %s is %d bytes when ExtendVolume returns", dev, after)
}

// guestDisk finds the disk of domain backed by the volume (the NFS
// driver's file is volume-<id>) and returns its target and the capacity
// libvirt reports for it.
func guestDisk(ctx context.Context, t *testing.T, c *ostest.Compute, domain, volumeID string) (string, int64) {
	t.Helper()
	list, err := c.Virsh(ctx, "domblklist", domain)
	if err != nil {
		t.Fatal(err)
	}
	dev := ""
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.HasSuffix(f[1], "volume-"+volumeID) {
			dev = f[0]
		}
	}
	if dev == "" {
		t.Fatalf("libvirt: no disk of %s is volume %s:\n%s", domain, volumeID, list)
	}
	info, err := c.Virsh(ctx, "domblkinfo", domain, dev)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^Capacity:\s+(\d+)`).FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("libvirt: no capacity in domblkinfo %s %s:\n%s", domain, dev, info)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return dev, n
}

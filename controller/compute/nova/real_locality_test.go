//go:build openstack

package nova_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servergroups"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"strata/controller/compute"
	"strata/controller/compute/nova"
)

// TestRealServerGroupsPlaceByLocality: on the one-host compute tier, an
// affinity group takes a source and its replica side by side; an
// anti-affinity group takes the source and Nova's scheduler finds no host
// for the replica — the driver rolls that server back with Nova's fault
// and keeps the group for the source. Each group goes with its last
// server.
func TestRealServerGroupsPlaceByLocality(t *testing.T) {
	r := newRealCloud(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r.flavor(ctx, "strata-paths-locality", 1)
	d := r.driver(nova.Config{})
	img := r.image(ctx, "strata-paths-locality", "64M", 0)
	groups := func() map[string]servergroups.ServerGroup {
		t.Helper()
		pages, err := servergroups.List(r.cc, servergroups.ListOpts{}).AllPages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		all, err := servergroups.ExtractServerGroups(pages)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]servergroups.ServerGroup{}
		for _, g := range all {
			if strings.HasPrefix(g.Name, "strata-group-") {
				out[g.ID] = g
			}
		}
		return out
	}
	boot := func(id, key, policy string) (compute.Server, error) {
		t.Helper()
		spec := serverSpec(id, img.ID, r.volume(ctx, d, id, 1))
		spec.ServerGroup = &compute.ServerGroup{Key: key, Policy: policy}
		t0 := time.Now()
		srv, err := d.CreateServer(ctx, spec)
		t.Logf("%s server %s (%s group of %s): %.1f s, %v", id, srv.ID, policy, key, time.Since(t0).Seconds(), err)
		return srv, err
	}
	host := func(srv compute.Server) string {
		t.Helper()
		var s struct {
			Host string `json:"OS-EXT-SRV-ATTR:host"`
		}
		if err := servers.Get(ctx, r.cc, srv.ID).ExtractInto(&s); err != nil {
			t.Fatal(err)
		}
		return s.Host
	}
	del := func(srv compute.Server) {
		t.Helper()
		if err := d.DeleteServer(ctx, srv); err != nil {
			t.Fatalf("DeleteServer %s: %v", srv.ID, err)
		}
	}

	const src, replica = "0a1b2c3d-0000-4000-8000-00000affsrc1", "0a1b2c3d-0000-4000-8000-00000affrep1"
	a, err := boot(src, src, compute.LocalityAffinity)
	if err != nil {
		r.logs()
		t.Fatal(err)
	}
	b, err := boot(replica, src, compute.LocalityAffinity)
	if err != nil {
		del(a)
		r.logs()
		t.Fatal(err)
	}
	g := groups()[a.Refs["server_group"]]
	if len(g.Policies) != 1 || g.Policies[0] != "affinity" || len(g.Members) != 2 || b.Refs["server_group"] != g.ID {
		t.Errorf("affinity group %+v; servers %s %s", g, a.ID, b.ID)
	}
	if ha, hb := host(a), host(b); ha == "" || ha != hb {
		t.Errorf("affinity: hosts %q and %q", ha, hb)
	}
	del(b)
	if _, ok := groups()[g.ID]; !ok {
		t.Error("the affinity group went with its first server, while the source is still in it")
	}
	del(a)
	if _, ok := groups()[g.ID]; ok {
		t.Error("the affinity group is left after its last server went")
	}

	const src2, replica2 = "0a1b2c3d-0000-4000-8000-00000antsrc1", "0a1b2c3d-0000-4000-8000-00000antrep1"
	a, err = boot(src2, src2, compute.LocalityAntiAffinity)
	if err != nil {
		r.logs()
		t.Fatal(err)
	}
	t.Cleanup(func() { d.DeleteServer(context.Background(), a) })
	_, err = boot(replica2, src2, compute.LocalityAntiAffinity)
	if err == nil || !strings.Contains(err.Error(), "No valid host was found") || !strings.Contains(err.Error(), "the server and its security group were deleted") {
		r.logs("nova-scheduler", "nova-conductor")
		t.Fatalf("anti-affinity on one host: %v", err)
	}
	g = groups()[a.Refs["server_group"]]
	if len(g.Members) != 1 || g.Members[0] != a.ID {
		t.Errorf("after the refused replica the anti-affinity group is %+v, want the source alone", g)
	}
	del(a)
	if left := groups(); len(left) != 0 {
		t.Errorf("server groups left: %+v", left)
	}
}

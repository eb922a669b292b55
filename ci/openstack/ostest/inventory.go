package ostest

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servergroups"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/config"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
)

// Inventory lists what Nova, Cinder and Neutron still hold of what strata
// makes: every server and volume (of any project), every port a server
// owns, every security group named strata-* and every server group
// named strata-group-* (Trove's locality). The tier starts with
// none of them, so after a test the list must be empty.
func Inventory(ctx context.Context, cc, nc, vc *gophercloud.ServiceClient) ([]string, error) {
	sp, err := servers.List(cc, servers.ListOpts{AllTenants: true}).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	sl, err := servers.ExtractServers(sp)
	if err != nil {
		return nil, err
	}
	vp, err := volumes.List(vc, volumes.ListOpts{AllTenants: true}).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	vl, err := volumes.ExtractVolumes(vp)
	if err != nil {
		return nil, err
	}
	pp, err := ports.List(nc, ports.ListOpts{}).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	pl, err := ports.ExtractPorts(pp)
	if err != nil {
		return nil, err
	}
	gp, err := groups.List(nc, groups.ListOpts{}).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	gl, err := groups.ExtractGroups(gp)
	if err != nil {
		return nil, err
	}
	sgp, err := servergroups.List(cc, servergroups.ListOpts{AllProjects: true}).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	sgl, err := servergroups.ExtractServerGroups(sgp)
	if err != nil {
		return nil, err
	}
	var left []string
	for _, g := range sgl {
		if strings.HasPrefix(g.Name, "strata-group-") {
			left = append(left, "server group "+g.ID+" "+g.Name)
		}
	}
	for _, s := range sl {
		left = append(left, "server "+s.ID+" "+s.Name+" "+s.Status)
	}
	for _, v := range vl {
		left = append(left, "volume "+v.ID+" "+v.Name+" "+v.Status)
	}
	for _, p := range pl {
		if strings.HasPrefix(p.DeviceOwner, "compute:") {
			left = append(left, "port "+p.ID+" of "+p.DeviceID)
		}
	}
	for _, g := range gl {
		if strings.HasPrefix(g.Name, "strata-") {
			left = append(left, "security group "+g.ID+" "+g.Name)
		}
	}
	return left, nil
}

// Clients are the stack's admin clients of the compute tier's services.
type Clients struct {
	Provider                        *gophercloud.ProviderClient
	Compute, Network, Volume, Image *gophercloud.ServiceClient
}

// Clients logs in as the stack's admin (clouds.yaml) and makes a client
// for Nova, Neutron, Cinder and Glance.
func (s *Stack) Clients(ctx context.Context) (*Clients, error) {
	return s.ClientsVia(ctx, nil)
}

// ClientsVia is Clients whose requests, the login's too, go through rt
// (nil: Go's default transport): the fixture recorder keeps the answers.
func (s *Stack) ClientsVia(ctx context.Context, rt http.RoundTripper) (*Clients, error) {
	ao, eo, _, err := clouds.Parse(clouds.WithLocations(s.CloudsYAML), clouds.WithCloudName(Cloud))
	if err != nil {
		return nil, err
	}
	var pc *gophercloud.ProviderClient
	if rt != nil {
		pc, err = config.NewProviderClient(ctx, ao, config.WithHTTPClient(http.Client{Transport: rt}))
	} else {
		pc, err = config.NewProviderClient(ctx, ao)
	}
	if err != nil {
		return nil, err
	}
	c := &Clients{Provider: pc}
	for _, mk := range []struct {
		to  **gophercloud.ServiceClient
		new func(*gophercloud.ProviderClient, gophercloud.EndpointOpts) (*gophercloud.ServiceClient, error)
	}{{&c.Compute, openstack.NewComputeV2}, {&c.Network, openstack.NewNetworkV2}, {&c.Volume, openstack.NewBlockStorageV3}, {&c.Image, openstack.NewImageV2}} {
		if *mk.to, err = mk.new(pc, eo); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Leftovers is Inventory with the clients' services, and every Glance
// image named as a rebuild's snapshot of an old root disk
// (strata-<instance id>-rollback).
func (c *Clients) Leftovers(ctx context.Context) ([]string, error) {
	left, err := Inventory(ctx, c.Compute, c.Network, c.Volume)
	if err != nil || c.Image == nil {
		return left, err
	}
	pages, err := images.List(c.Image, images.ListOpts{}).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	all, err := images.ExtractImages(pages)
	if err != nil {
		return nil, err
	}
	for _, img := range all {
		if strings.HasPrefix(img.Name, "strata-") && strings.HasSuffix(img.Name, "-rollback") {
			left = append(left, "image "+img.ID+" "+img.Name+" "+string(img.Status))
		}
	}
	return left, nil
}

// Console returns the end of a Nova server's serial console, as libvirt
// writes it under the tier's instances_path (compute/nova/instances).
func (s *Stack) Console(serverID string) string {
	data, _ := os.ReadFile(filepath.Join(s.Dir, "compute", "nova", "instances", serverID, "console.log"))
	if len(data) > 8000 {
		data = data[len(data)-8000:]
	}
	return string(data)
}

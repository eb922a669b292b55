package nova

import (
	"context"
	"fmt"
	"slices"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servergroups"

	"strata/controller/compute"
)

// Trove's locality as Nova server groups: a source created with locality
// founds a group, strata-group-<its instance id>, with that policy; its
// replicas join it (the scheduler hint "group"). A group goes when its
// last member does. The policies are the two every Nova takes before
// microversion 2.64 (the driver speaks 2.56): affinity and anti-affinity.

var _ compute.GroupPlacer = (*Driver)(nil)

// refServerGroup is the Refs key of the server group a server is in.
const refServerGroup = "server_group"

func groupName(key string) string { return "strata-group-" + key }

// CheckLocality accepts Nova's two policies.
func (d *Driver) CheckLocality(ctx context.Context, policy string) error {
	switch policy {
	case compute.LocalityAffinity, compute.LocalityAntiAffinity:
		return nil
	}
	return fmt.Errorf("%w: locality %q: Nova's server groups take %s or %s", compute.ErrInvalid, policy, compute.LocalityAffinity, compute.LocalityAntiAffinity)
}

// serverGroup finds the group named after g.Key, or makes it with
// g.Policy. A group of that name with another policy is refused: the
// replicas of a source are placed as the source was.
func (d *Driver) serverGroup(ctx context.Context, g compute.ServerGroup) (string, error) {
	if err := checkID(g.Key); err != nil {
		return "", err
	}
	if err := d.CheckLocality(ctx, g.Policy); err != nil {
		return "", err
	}
	pages, err := servergroups.List(d.compute, servergroups.ListOpts{}).AllPages(ctx)
	if err != nil {
		return "", serviceErr("nova", "listing server groups", err)
	}
	all, err := servergroups.ExtractServerGroups(pages)
	if err != nil {
		return "", serviceErr("nova", "listing server groups", err)
	}
	for _, x := range all {
		if x.Name != groupName(g.Key) {
			continue
		}
		if !slices.Contains(x.Policies, g.Policy) {
			return "", fmt.Errorf("%w: server group %s (%s) has policies %v, not %s", compute.ErrInvalid, x.Name, x.ID, x.Policies, g.Policy)
		}
		return x.ID, nil
	}
	created, err := servergroups.Create(ctx, d.compute, servergroups.CreateOpts{Name: groupName(g.Key), Policies: []string{g.Policy}}).Extract()
	if err != nil {
		return "", serviceErr("nova", fmt.Sprintf("creating server group %s (%s)", groupName(g.Key), g.Policy), err)
	}
	d.log.Info("server group created", "group", created.ID, "name", created.Name, "policy", g.Policy)
	return created.ID, nil
}

// dropEmptyGroup deletes a server group no server is in any more; one
// that is gone is not an error. It says whether the group is gone. Nova
// lists only servers not deleted as members, but on the test cloud it
// still listed a server for a moment after the server's GET answered 404:
// the servers in gone (deleted by the caller, waited for) do not count.
func (d *Driver) dropEmptyGroup(ctx context.Context, id string, gone ...string) (bool, error) {
	g, err := servergroups.Get(ctx, d.compute, id).Extract()
	if gophercloud.ResponseCodeIs(err, 404) {
		return true, nil
	}
	if err != nil {
		return false, serviceErr("nova", "reading server group "+id, err)
	}
	for _, m := range g.Members {
		if !slices.Contains(gone, m) {
			return false, nil
		}
	}
	if err := servergroups.Delete(ctx, d.compute, id).ExtractErr(); err != nil && !gophercloud.ResponseCodeIs(err, 404) {
		return false, serviceErr("nova", "deleting server group "+id, err)
	}
	d.log.Info("server group deleted: its last server went", "group", id)
	return true, nil
}

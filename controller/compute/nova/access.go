package nova

import (
	"context"
	"fmt"
	"net/netip"
	"sort"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"

	"strata/controller/compute"
)

// Trove's access on Nova: allowed_cidrs are the instance's security group
// rules. Each datastore port gets one ingress TCP rule per allowed block
// (IPv4, remote_ip_prefix); with none, one rule for IPv4 and one for IPv6
// from anywhere, as CreateServer opens it. The driver has no public
// network or floating IPs: is_public is refused before anything is made.

var _ compute.Publisher = (*Driver)(nil)

// CheckAccess refuses is_public: the instance is reachable on the
// networks it was created on, and nowhere else.
func (d *Driver) CheckAccess(ctx context.Context, a compute.Access) error {
	if a.Public {
		return fmt.Errorf("%w: is_public: the Nova driver gives instances no public address (no floating IPs); clients reach them on their networks (nics), and allowed_cidrs limits which clients may", compute.ErrInvalid)
	}
	for _, c := range a.AllowedCIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			return fmt.Errorf("%w: allowed_cidrs: %q is not a CIDR block", compute.ErrInvalid, c)
		}
	}
	return nil
}

// Publish makes the security group's ingress rules for ports exactly the
// ones a allows. Rules that are no longer allowed are deleted before new
// ones are added, so a call cut short lets in only clients both the old
// and the new access allow, never one neither does; the task that called
// it runs it again. The server's addresses do not change.
func (d *Driver) Publish(ctx context.Context, srv compute.Server, ports []int, a compute.Access) (compute.Server, error) {
	if err := d.CheckAccess(ctx, a); err != nil {
		return srv, err
	}
	sg := srv.Refs[refSecurityGroup]
	if sg == "" {
		return srv, fmt.Errorf("%w: server %s has no security group of its own to restrict", compute.ErrInvalid, srv.ID)
	}
	return srv, d.syncRules(ctx, sg, ports, a.AllowedCIDRs)
}

// ruleKey is what makes two ingress rules the same for us.
type ruleKey struct {
	etherType string
	port      int
	prefix    string // "" from anywhere
}

func wantedRules(ports []int, cidrs []string) map[ruleKey]bool {
	want := map[ruleKey]bool{}
	for _, p := range ports {
		if len(cidrs) == 0 {
			want[ruleKey{string(rules.EtherType4), p, ""}] = true
			want[ruleKey{string(rules.EtherType6), p, ""}] = true
			continue
		}
		for _, c := range cidrs {
			pfx := netip.MustParsePrefix(c).Masked()
			et := rules.EtherType4
			if pfx.Addr().Is6() {
				et = rules.EtherType6
			}
			want[ruleKey{string(et), p, pfx.String()}] = true
		}
	}
	return want
}

// syncRules deletes the group's ingress rules not wanted (any ingress
// rule: the group is the instance's own), then creates the missing ones.
func (d *Driver) syncRules(ctx context.Context, sgID string, ports []int, cidrs []string) error {
	pages, err := rules.List(d.network, rules.ListOpts{SecGroupID: sgID, Direction: string(rules.DirIngress)}).AllPages(ctx)
	if err != nil {
		return serviceErr("neutron", "listing the rules of security group "+sgID, err)
	}
	have, err := rules.ExtractRules(pages)
	if err != nil {
		return serviceErr("neutron", "listing the rules of security group "+sgID, err)
	}
	want := wantedRules(ports, cidrs)
	kept := map[ruleKey]bool{}
	for _, r := range have {
		if r.Direction != string(rules.DirIngress) || r.SecGroupID != sgID {
			continue
		}
		k := ruleKey{r.EtherType, r.PortRangeMin, r.RemoteIPPrefix}
		if r.RemoteIPPrefix != "" {
			if p, err := netip.ParsePrefix(r.RemoteIPPrefix); err == nil {
				k.prefix = p.Masked().String()
			}
		}
		if want[k] && r.Protocol == string(rules.ProtocolTCP) && r.PortRangeMax == r.PortRangeMin && r.RemoteGroupID == "" && !kept[k] {
			kept[k] = true
			continue
		}
		if err := rules.Delete(ctx, d.network, r.ID).ExtractErr(); err != nil && !gophercloud.ResponseCodeIs(err, 404) {
			return serviceErr("neutron", fmt.Sprintf("deleting rule %s (%s port %d from %s) of security group %s", r.ID, r.EtherType, r.PortRangeMin, orAnywhere(r.RemoteIPPrefix), sgID), err)
		}
	}
	keys := make([]ruleKey, 0, len(want))
	for k := range want {
		if !kept[k] {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].port != keys[j].port {
			return keys[i].port < keys[j].port
		}
		if keys[i].etherType != keys[j].etherType {
			return keys[i].etherType < keys[j].etherType
		}
		return keys[i].prefix < keys[j].prefix
	})
	for _, k := range keys {
		_, err := rules.Create(ctx, d.network, rules.CreateOpts{SecGroupID: sgID, Direction: rules.DirIngress, EtherType: rules.RuleEtherType(k.etherType),
			Protocol: rules.ProtocolTCP, PortRangeMin: k.port, PortRangeMax: k.port, RemoteIPPrefix: k.prefix}).Extract()
		if err != nil && !gophercloud.ResponseCodeIs(err, 409) { // 409: the same rule exists (a re-run)
			return serviceErr("neutron", fmt.Sprintf("opening port %d to %s in security group %s", k.port, orAnywhere(k.prefix), sgID), err)
		}
	}
	if len(keys) > 0 || len(have) != len(kept) {
		d.log.Info("security group rules set", "security_group", sgID, "ports", ports, "allowed_cidrs", cidrs)
	}
	return nil
}

func orAnywhere(prefix string) string {
	if prefix == "" {
		return "anywhere"
	}
	return prefix
}

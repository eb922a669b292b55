//go:build openstack

package nova_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"

	"strata/controller/compute"
	"strata/controller/compute/nova"
)

// TestRealSecurityGroupFollowsAllowedCIDRs: Trove's allowed_cidrs on a
// server the driver booted become its security group's rules in Neutron,
// and the linuxbridge agent puts them on the server's tap (iptables in
// the compute namespace); lifting the limit opens the port to IPv4 and
// IPv6 again; is_public is refused.
func TestRealSecurityGroupFollowsAllowedCIDRs(t *testing.T) {
	r := newRealCloud(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r.flavor(ctx, "strata-paths-access", 1)
	d := r.driver(nova.Config{})
	img := r.image(ctx, "strata-paths-access", "64M", 0)
	const id = "0a1b2c3d-0000-4000-8000-0000access01"
	srv, _ := r.server(ctx, d, id, img.ID)
	sg := srv.Refs["security_group"]
	groupRules := func() []string {
		t.Helper()
		pages, err := rules.List(r.nc, rules.ListOpts{SecGroupID: sg, Direction: "ingress"}).AllPages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		all, err := rules.ExtractRules(pages)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, x := range all {
			p := x.RemoteIPPrefix
			if p == "" {
				p = "anywhere"
			}
			out = append(out, fmt.Sprintf("%s %s %d-%d %s", x.EtherType, x.Protocol, x.PortRangeMin, x.PortRangeMax, p))
		}
		sort.Strings(out)
		return out
	}
	open := []string{"IPv4 tcp 3306-3306 anywhere", "IPv6 tcp 3306-3306 anywhere"}
	if got := groupRules(); !slices.Equal(got, open) {
		t.Fatalf("after CreateServer the group has %v, want %v", got, open)
	}

	t0 := time.Now()
	if _, err := d.Publish(ctx, srv, []int{3306}, compute.Access{AllowedCIDRs: []string{"10.0.0.0/8", "192.0.2.7/32"}}); err != nil {
		r.logs("neutron-server")
		t.Fatalf("Publish: %v", err)
	}
	t.Logf("Publish with two blocks returned after %.1f s", time.Since(t0).Seconds())
	limited := []string{"IPv4 tcp 3306-3306 10.0.0.0/8", "IPv4 tcp 3306-3306 192.0.2.7/32"}
	if got := groupRules(); !slices.Equal(got, limited) {
		t.Fatalf("after Publish the group has %v, want %v", got, limited)
	}
	// The agent's filter on the server's tap: the blocks let in, nobody
	// else on port 3306.
	t1 := time.Now()
	var filter string
	for time.Since(t1) < 2*time.Minute {
		filter = tapFilter(ctx, t, r.c.NetnsPID)
		if strings.Contains(filter, "-s 10.0.0.0/8 -p tcp -m tcp --dport 3306") && strings.Contains(filter, "-s 192.0.2.7/32 -p tcp -m tcp --dport 3306") &&
			!openToAll(filter) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !strings.Contains(filter, "-s 10.0.0.0/8 -p tcp -m tcp --dport 3306") || openToAll(filter) {
		r.logs("neutron-server")
		t.Fatalf("the linuxbridge agent's rules for port 3306 after %.0f s:\n%s", time.Since(t1).Seconds(), filter)
	}
	t.Logf("the agent's iptables had the blocks %.1f s after Publish returned", time.Since(t1).Seconds())

	if _, err := d.Publish(ctx, srv, []int{3306}, compute.Access{}); err != nil {
		t.Fatalf("Publish (no limit): %v", err)
	}
	if got := groupRules(); !slices.Equal(got, open) {
		t.Fatalf("after lifting the limit the group has %v, want %v", got, open)
	}
	if _, err := d.Publish(ctx, srv, []int{3306}, compute.Access{Public: true}); !errors.Is(err, compute.ErrInvalid) {
		t.Fatalf("Publish(public) = %v, want a refusal", err)
	}
	if got := groupRules(); !slices.Equal(got, open) {
		t.Fatalf("a refused publication changed the group: %v", got)
	}
}

// tapFilter is the iptables rules the linuxbridge agent keeps for ports'
// ingress (neutron-linuxbri-i... chains) in the compute namespace.
func tapFilter(ctx context.Context, t *testing.T, netnsPID string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "nsenter", "-t", netnsPID, "--net", "--", "iptables-save", "-t", "filter").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save in the compute namespace: %v: %s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "-A neutron-linuxbri-i") && strings.Contains(l, "--dport 3306") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// openToAll: a rule letting anyone in to port 3306.
func openToAll(filter string) bool {
	for _, l := range strings.Split(filter, "\n") {
		if strings.Contains(l, "--dport 3306") && !strings.Contains(l, " -s ") && !strings.Contains(l, "--match-set") {
			return true
		}
	}
	return false
}

package api_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"strata/controller/compute"
)

// groupedCompute is the fake compute with server groups, as the Nova
// driver has them: it records the group each server was asked into.
type groupedCompute struct {
	*fakeCompute
	mu    sync.Mutex
	asked []string
}

func (g *groupedCompute) CheckLocality(ctx context.Context, policy string) error {
	if policy != compute.LocalityAffinity && policy != compute.LocalityAntiAffinity {
		return fmt.Errorf("%w: locality %q is not a policy of this fake", compute.ErrInvalid, policy)
	}
	return nil
}

func (g *groupedCompute) CreateServer(ctx context.Context, spec compute.ServerSpec) (compute.Server, error) {
	g.mu.Lock()
	if spec.ServerGroup != nil {
		g.asked = append(g.asked, fmt.Sprintf("%s in %s %s", spec.InstanceID, spec.ServerGroup.Key, spec.ServerGroup.Policy))
	} else {
		g.asked = append(g.asked, spec.InstanceID+" in no group")
	}
	g.mu.Unlock()
	return g.fakeCompute.CreateServer(ctx, spec)
}

func (g *groupedCompute) askedFor() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.asked)
}

// Trove's locality: a source created with it founds a server group (its
// id is the key), shows its policy, and its replicas are placed in the
// same group and show it too; a value other than affinity or
// anti-affinity, and a locality named on a replica, are refused before
// anything is made.
func TestLocalityPlacesASourceAndItsReplicasInOneServerGroup(t *testing.T) {
	t.Parallel()
	var gc *groupedCompute
	r := newRig(t, rigOptions{driver: func(fc *fakeCompute) compute.Driver {
		gc = &groupedCompute{fakeCompute: fc}
		return gc
	}})
	c := r.admin()
	created := c.must(200, "POST", "/instances", createBody("apart", map[string]any{"locality": "anti-affinity", "databases": []any{map[string]any{"name": "shop"}}}))["instance"].(map[string]any)
	src := created["id"].(string)
	if created["locality"] != "anti-affinity" {
		t.Errorf("create answer's locality: %v", created["locality"])
	}
	c.waitStatus(src, "ACTIVE", 20*time.Second)
	if got := c.instance(src)["locality"]; got != "anti-affinity" {
		t.Errorf("source's locality: %v", got)
	}
	replica := c.must(200, "POST", "/instances", map[string]any{"instance": map[string]any{"name": "r1", "replica_of": src}})["instance"].(map[string]any)["id"].(string)
	c.waitStatus(replica, "ACTIVE", 60*time.Second)
	if got := c.instance(replica)["locality"]; got != "anti-affinity" {
		t.Errorf("replica's locality: %v", got)
	}
	plain := c.must(200, "POST", "/instances", createBody("plain", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(plain, "ACTIVE", 20*time.Second)
	if _, ok := c.instance(plain)["locality"]; ok {
		t.Errorf("an instance created without locality shows one: %v", c.instance(plain)["locality"])
	}
	want := []string{src + " in " + src + " anti-affinity", replica + " in " + src + " anti-affinity", plain + " in no group"}
	if got := gc.askedFor(); !slices.Equal(got, want) {
		t.Fatalf("the driver was asked for %v, want %v", got, want)
	}

	for _, tc := range []struct {
		body map[string]any
		want string
	}{
		{createBody("near", map[string]any{"locality": "near"}), `instance.locality "near": must be affinity or anti-affinity`},
		{createBody("inj", map[string]any{"locality": "affinity'; DROP TABLE instances; --"}), "instance.locality"},
		{map[string]any{"instance": map[string]any{"name": "r2", "replica_of": src, "locality": "affinity"}}, "Cannot specify locality when creating replicas."},
	} {
		code, doc := c.do("POST", "/instances", tc.body)
		if code != 400 || !strings.Contains(errorMessage(doc), tc.want) {
			t.Errorf("%v: %d %v, want 400 saying %q", tc.body["instance"], code, doc, tc.want)
		}
	}
	if got := gc.askedFor(); len(got) != 3 {
		t.Fatalf("refused creates reached the driver: %v", got)
	}
}

// A driver without server groups (the local one) refuses locality with a
// 400 that says so, and makes nothing.
func TestLocalityIsRefusedWithoutServerGroups(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	code, doc := c.do("POST", "/instances", createBody("apart", map[string]any{"locality": "affinity"}))
	if code != 400 || !strings.Contains(errorMessage(doc), "has no server groups") {
		t.Fatalf("locality on a driver without server groups: %d %v", code, doc)
	}
	if n := len(r.compute.callsSnapshot()); n != 0 {
		t.Fatalf("a refused create reached the driver: %v", r.compute.callsSnapshot())
	}
}

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

// zonedCompute is the fake compute with availability zones, as the Nova
// driver has them: it records the zone each volume and server was asked
// for.
type zonedCompute struct {
	*fakeCompute
	mu    sync.Mutex
	asked []string
}

func (z *zonedCompute) CheckAvailabilityZone(ctx context.Context, zone string) error {
	if zone != "az-db" && zone != "nova" {
		return fmt.Errorf("%w: availability zone %q is not an available zone of this cloud (available: az-db, nova)", compute.ErrInvalid, zone)
	}
	return nil
}

func (z *zonedCompute) CreateVolume(ctx context.Context, spec compute.VolumeSpec) (compute.Volume, error) {
	z.mu.Lock()
	z.asked = append(z.asked, "volume "+spec.AvailabilityZone)
	z.mu.Unlock()
	return z.fakeCompute.CreateVolume(ctx, spec)
}

func (z *zonedCompute) CreateServer(ctx context.Context, spec compute.ServerSpec) (compute.Server, error) {
	z.mu.Lock()
	z.asked = append(z.asked, "server "+spec.AvailabilityZone)
	z.mu.Unlock()
	return z.fakeCompute.CreateServer(ctx, spec)
}

// availability_zone is honoured by a driver with zones (the zone reaches
// the volume and the server) and checked against its zones before
// anything is made; a driver without zones refuses it (badinput_test);
// a replica naming one is refused.
func TestAvailabilityZoneIsHonouredByADriverWithZones(t *testing.T) {
	t.Parallel()
	var zc *zonedCompute
	r := newRig(t, rigOptions{driver: func(fc *fakeCompute) compute.Driver {
		zc = &zonedCompute{fakeCompute: fc}
		return zc
	}})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("zoned", map[string]any{"availability_zone": "az-db"}))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	zc.mu.Lock()
	asked := slices.Clone(zc.asked)
	zc.mu.Unlock()
	if !slices.Equal(asked, []string{"volume az-db", "server az-db"}) {
		t.Fatalf("the driver was asked for %v", asked)
	}

	code, doc := c.do("POST", "/instances", createBody("nowhere", map[string]any{"availability_zone": "nowhere"}))
	if msg := errorMessage(doc); code != 400 || !strings.Contains(msg, "instance.availability_zone") || !strings.Contains(msg, `"nowhere"`) || !strings.Contains(msg, "az-db, nova") {
		t.Fatalf("an unknown zone: %d %v", code, doc)
	}
	code, doc = c.do("POST", "/instances", createBody("replica", map[string]any{"availability_zone": "az-db", "replica_of": id}))
	if code != 400 || !strings.Contains(errorMessage(doc), "instance.availability_zone") {
		t.Fatalf("a replica with a zone: %d %v", code, doc)
	}
	zc.mu.Lock()
	defer zc.mu.Unlock()
	if len(zc.asked) != 2 {
		t.Fatalf("refused creates reached the driver: %v", zc.asked)
	}
}

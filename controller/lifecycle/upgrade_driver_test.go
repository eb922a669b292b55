package lifecycle

import (
	"context"
	"errors"
	"strings"
	"testing"

	"strata/controller/compute"
)

// rebuildOnly is a driver that rebuilds but keeps no copy of the data
// volume (the Nova driver's capabilities); its methods are never called.
type rebuildOnly struct {
	compute.Driver
	compute.Rebuilder
}

// An upgrade is refused, before anything is read or touched, on a driver
// that cannot keep the data volume's copy its rollback needs; the refusal
// names the way that works.
func TestAnUpgradeNeedsADriverThatKeepsTheDataVolume(t *testing.T) {
	m := &Manager{Compute: rebuildOnly{}}
	err := m.Upgrade(context.Background(), "project", "instance", "11.8")
	if !errors.Is(err, ErrUnprocessable) || !strings.Contains(err.Error(), "cannot keep a copy of the data volume") || !strings.Contains(err.Error(), "from a backup") {
		t.Fatalf("upgrade on a driver that is no compute.VolumeKeeper: %v", err)
	}
	if _, ok := any(rebuildOnly{}).(compute.VolumeKeeper); ok {
		t.Fatal("the test's driver keeps volumes: the refusal above would not be tested")
	}
}

package nova

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/availabilityzones"

	"strata/controller/compute"
)

var _ compute.ZonePlacer = (*Driver)(nil)

// CheckAvailabilityZone asks Nova for its zones: a create may name only an
// available one (Trove's availability_zone); the server and its volume
// are then made there.
func (d *Driver) CheckAvailabilityZone(ctx context.Context, zone string) error {
	pages, err := availabilityzones.List(d.compute).AllPages(ctx)
	if err != nil {
		return serviceErr("nova", "listing availability zones", err)
	}
	zones, err := availabilityzones.ExtractAvailabilityZones(pages)
	if err != nil {
		return serviceErr("nova", "listing availability zones", err)
	}
	var available []string
	for _, z := range zones {
		if z.ZoneState.Available {
			available = append(available, z.ZoneName)
		}
	}
	slices.Sort(available)
	if !slices.Contains(available, zone) {
		return fmt.Errorf("%w: availability zone %q is not an available zone of this cloud (available: %s)",
			compute.ErrInvalid, short(zone), strings.Join(available, ", "))
	}
	return nil
}

// zoneOr is the zone a request named, else the driver's configured one.
func zoneOr(requested, configured string) string {
	if requested != "" {
		return requested
	}
	return configured
}

func short(s string) string {
	if len(s) > 70 {
		return s[:70] + "..."
	}
	return s
}

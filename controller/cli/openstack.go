package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"strata/controller/compute/nova"
	"strata/controller/server"
)

// novaFlags configure the Nova compute driver.
type novaFlags struct {
	network, zone, volumeType string
}

func (n *novaFlags) register(f *pflag.FlagSet) {
	f.StringVar(&n.network, "nova-network", "", "--compute nova: the Neutron network (id) instances are attached to")
	f.StringVar(&n.zone, "nova-availability-zone", "", "--compute nova: availability zone for servers and volumes")
	f.StringVar(&n.volumeType, "nova-volume-type", "", "--compute nova: Cinder volume type of data volumes")
}

// openStackParts sets the Glance image store and the Nova driver when
// asked for; both use the service user of OpenStack mode.
func openStackParts(ctx context.Context, cfg *server.Config, imageStore, computeDriver string, n novaFlags) error {
	switch imageStore {
	case "local", "":
	case "glance":
	default:
		return fmt.Errorf("--image-store %q: want local or glance", imageStore)
	}
	switch computeDriver {
	case "qemu", "":
	case "nova":
		if n.network == "" {
			return errors.New("--compute nova needs --nova-network (the Neutron network id instances attach to)")
		}
	default:
		return fmt.Errorf("--compute %q: want qemu or nova", computeDriver)
	}
	if imageStore != "glance" && computeDriver != "nova" {
		return nil
	}
	if cfg.Keystone == nil {
		return errors.New("--image-store glance and --compute nova are OpenStack mode: give --keystone-url and the service user")
	}
	pc, err := server.OpenStackProvider(ctx, cfg.Keystone)
	if err != nil {
		return err
	}
	if imageStore == "glance" {
		if cfg.Images, err = server.GlanceStore(pc, cfg.Region); err != nil {
			return err
		}
	}
	if computeDriver == "nova" {
		d, err := nova.Connect(pc, cfg.Region, nova.Config{Network: n.network, AvailabilityZone: n.zone, VolumeType: n.volumeType, Logger: cfg.Logger})
		if err != nil {
			return err
		}
		cfg.Compute = d
	}
	return nil
}

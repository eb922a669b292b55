// Package nova is the OpenStack compute driver: each instance is a Nova
// server booted from the version's Glance image, with a Cinder data
// volume attached at boot, a security group of its own that opens only
// the datastore's ports, and the agent's bootstrap on the config drive —
// all through gophercloud, with the controller's service credentials.
//
// Why the config drive and not user_data: user_data stays readable from
// the metadata service (169.254.169.254) by anything in the guest for the
// server's whole life, and the bootstrap holds a one-time enrollment
// token. The bootstrap is injected as a personality file
// (/etc/strata/bootstrap.json, compute microversion 2.56, the last that
// has personality) on a config drive; the agent reads Nova's layout
// (openstack/latest/meta_data.json "files" → openstack/content/NNNN).
//
// What belongs to an instance is found by name, strata-<instance id>
// (server, volume, security group), so every call can be repeated after
// an interruption. CreateVolume deletes a volume that ends in error;
// CreateServer deletes the server and security group it made when the
// server ends in ERROR or does not become ACTIVE in time.
//
// Files: driver.go (configuration, names, waiting), servers.go (Nova,
// Neutron security groups), networks.go (the Neutron networks and ports a
// request's nics name), volumes.go (Cinder) — the layout of compute/qemu.
// The driver owns servers, volumes and security groups and nothing else;
// networks and ports are the operator's, only looked up.
package nova

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"

	"strata/controller/compute"
)

// Config configures the driver.
type Config struct {
	// Network is the Neutron network id servers are attached to when a
	// request names none.
	Network string
	// AvailabilityZone and VolumeType are optional.
	AvailabilityZone string
	VolumeType       string
	// Poll is the status polling interval (2 s); Timeout bounds a wait
	// for a volume or server to settle (10 min).
	Poll    time.Duration
	Timeout time.Duration
	Logger  *slog.Logger
}

// Driver runs instances on Nova.
type Driver struct {
	compute, volume, network *gophercloud.ServiceClient
	// image (Glance) tells how much root disk an image needs, to pick a
	// flavor that holds it; nil: the flavor is picked by RAM and vCPUs.
	image *gophercloud.ServiceClient
	cfg   Config
	log   *slog.Logger
}

var _ compute.Driver = (*Driver)(nil)

// computeMicroversion is the newest that still takes personality files.
const computeMicroversion = "2.56"

// New returns a driver over the three service clients.
func New(computeClient, volumeClient, networkClient *gophercloud.ServiceClient, cfg Config) (*Driver, error) {
	if cfg.Network == "" {
		return nil, errors.New("nova driver: Network (a Neutron network id) is required")
	}
	if cfg.Poll == 0 {
		cfg.Poll = 2 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	c := *computeClient
	c.Microversion = computeMicroversion
	if c.Type == "" {
		c.Type = "compute" // the microversion header depends on it
	}
	return &Driver{compute: &c, volume: volumeClient, network: networkClient, cfg: cfg, log: log.With("component", "compute-nova")}, nil
}

// Connect finds Nova, Cinder (v3) and Neutron in the catalog.
func Connect(pc *gophercloud.ProviderClient, region string, cfg Config) (*Driver, error) {
	eo := gophercloud.EndpointOpts{Region: region}
	c, err := openstack.NewComputeV2(pc, eo)
	if err != nil {
		return nil, fmt.Errorf("nova driver: no compute endpoint in the catalog: %w", err)
	}
	v, err := openstack.NewBlockStorageV3(pc, eo)
	if err != nil {
		return nil, fmt.Errorf("nova driver: no block-storage (Cinder v3) endpoint in the catalog: %w", err)
	}
	n, err := openstack.NewNetworkV2(pc, eo)
	if err != nil {
		return nil, fmt.Errorf("nova driver: no network (Neutron) endpoint in the catalog: %w", err)
	}
	d, err := New(c, v, n, cfg)
	if err != nil {
		return nil, err
	}
	if ic, err := openstack.NewImageV2(pc, eo); err == nil {
		d.image = ic
	} else {
		d.log.Warn("no image (Glance) endpoint in the catalog: flavors are picked by RAM and vCPUs only", "err", err)
	}
	return d, nil
}

// name is what every resource of an instance is called.
func name(instanceID string) string { return "strata-" + instanceID }

// checkID keeps instance ids to what the controller makes.
func checkID(id string) error {
	if len(id) < 8 || len(id) > 64 {
		return fmt.Errorf("%w: instance id %q", compute.ErrInvalid, id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%w: instance id %q", compute.ErrInvalid, id)
		}
	}
	return nil
}

// wait polls check until it reports done, fails, or the timeout passes.
func (d *Driver) wait(ctx context.Context, what string, check func() (bool, error)) error {
	deadline := time.Now().Add(d.cfg.Timeout)
	for {
		done, err := check()
		if err != nil || done {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not done after %s", what, d.cfg.Timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d.cfg.Poll):
		}
	}
}

// cleanupCtx outlives a cancelled request: rollback must still happen.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
}

// serviceErr names the service and what it said: the message of an
// OpenStack error body (Nova's and Cinder's {"badRequest": {"message":
// ...}}, Neutron's {"NeutronError": {"message": ...}}), else the body.
func serviceErr(service, action string, err error) error {
	var code gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &code) {
		return fmt.Errorf("%s: %s: HTTP %d: %s", service, action, code.Actual, errorMessage(code.Body))
	}
	return fmt.Errorf("%s: %s: %w", service, action, err)
}

// errorMessage is the message of an OpenStack error body, or the body cut
// to 300 bytes.
func errorMessage(body []byte) string {
	var doc map[string]struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &doc) == nil && len(doc) == 1 {
		for _, v := range doc {
			if v.Message != "" {
				return v.Message
			}
		}
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

package server

import (
	"context"
	"fmt"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/config"

	"strata/controller/auth"
	"strata/controller/imagestore/glance"
)

// OpenStackProvider logs the controller's service user (the one that
// validates tokens) in with gophercloud, for the Glance image store and
// the Nova compute driver.
func OpenStackProvider(ctx context.Context, k *auth.Keystone) (*gophercloud.ProviderClient, error) {
	ao := gophercloud.AuthOptions{IdentityEndpoint: k.URL, Username: k.Username, Password: k.Password,
		DomainName: orDefault(k.UserDomain, "Default"), AllowReauth: true,
		Scope: &gophercloud.AuthScope{ProjectName: k.Project, DomainName: orDefault(k.ProjectDomain, "Default")}}
	pc, err := config.NewProviderClient(ctx, ao)
	if err != nil {
		return nil, fmt.Errorf("keystone %s: the controller's service user %q: %w", k.URL, k.Username, err)
	}
	return pc, nil
}

// GlanceStore is the image store of OpenStack mode.
func GlanceStore(pc *gophercloud.ProviderClient, region string) (*glance.Store, error) {
	c, err := openstack.NewImageV2(pc, gophercloud.EndpointOpts{Region: region})
	if err != nil {
		return nil, fmt.Errorf("the service catalog has no image (Glance) endpoint in region %q: %w", region, err)
	}
	return &glance.Store{Client: c}, nil
}

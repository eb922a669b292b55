package publish

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/config"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
)

// session is an authenticated OpenStack client and what the token says.
type session struct {
	provider  *gophercloud.ProviderClient
	endpoint  gophercloud.EndpointOpts
	authURL   string
	projectID string
}

// authenticate logs in with a clouds.yaml entry (cloud != "") or the
// OS_* environment, as the openstack CLI does.
func authenticate(ctx context.Context, cloud string) (*session, error) {
	// No overall timeout (an upload may take long); a server that has
	// the whole request and does not answer is cut off after ten minutes
	// (Glance may still be writing a large image to a slow store).
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.ResponseHeaderTimeout = 10 * time.Minute
	client := http.Client{Transport: transport}
	if cloud != "" {
		source := fmt.Sprintf("cloud %q of clouds.yaml", cloud)
		ao, eo, tc, err := clouds.Parse(clouds.WithCloudName(cloud))
		if err != nil {
			return nil, fmt.Errorf("credentials: %s: %w", source, err)
		}
		if tc != nil {
			transport.TLSClientConfig = tc
		}
		return login(ctx, ao, eo, source, client)
	}
	source := "the OS_* environment"
	ao, err := authOptionsFromEnv()
	if err != nil {
		return nil, fmt.Errorf("credentials: %s: %w", source, err)
	}
	eo := gophercloud.EndpointOpts{Region: os.Getenv("OS_REGION_NAME")}
	if iface := os.Getenv("OS_INTERFACE"); iface != "" {
		eo.Availability = gophercloud.Availability(strings.TrimSuffix(iface, "URL"))
	}
	return login(ctx, ao, eo, source, client)
}

func login(ctx context.Context, ao gophercloud.AuthOptions, eo gophercloud.EndpointOpts, source string, client http.Client) (*session, error) {
	if ao.IdentityEndpoint == "" {
		return nil, fmt.Errorf("credentials: %s names no auth URL (OS_AUTH_URL or auth.auth_url)", source)
	}
	ao.AllowReauth = true
	pc, err := config.NewProviderClient(ctx, ao, config.WithHTTPClient(client))
	if err != nil {
		return nil, serviceError("keystone", ao.IdentityEndpoint, "authenticating with "+source, err)
	}
	s := &session{provider: pc, endpoint: eo, authURL: ao.IdentityEndpoint}
	if r, ok := pc.GetAuthResult().(tokens.CreateResult); ok {
		if p, err := r.ExtractProject(); err == nil && p != nil {
			s.projectID = p.ID
		}
	}
	if s.projectID == "" {
		return nil, fmt.Errorf("keystone at %s: the token from %s is not scoped to a project; set a project name or id", ao.IdentityEndpoint, source)
	}
	return s, nil
}

// authOptionsFromEnv reads the OS_* variables an openrc sets, as the
// openstack CLI does. gophercloud's own reader wants OS_DOMAIN_ID or
// OS_DOMAIN_NAME where every openrc sets OS_USER_DOMAIN_NAME and
// OS_PROJECT_DOMAIN_NAME, so the domains are read here.
func authOptionsFromEnv() (gophercloud.AuthOptions, error) {
	env := func(names ...string) string {
		for _, n := range names {
			if v := os.Getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	ao := gophercloud.AuthOptions{
		IdentityEndpoint:            env("OS_AUTH_URL"),
		UserID:                      env("OS_USER_ID", "OS_USERID"),
		Username:                    env("OS_USERNAME"),
		Password:                    env("OS_PASSWORD"),
		ApplicationCredentialID:     env("OS_APPLICATION_CREDENTIAL_ID"),
		ApplicationCredentialName:   env("OS_APPLICATION_CREDENTIAL_NAME"),
		ApplicationCredentialSecret: env("OS_APPLICATION_CREDENTIAL_SECRET"),
		DomainID:                    env("OS_USER_DOMAIN_ID", "OS_DOMAIN_ID"),
		DomainName:                  env("OS_USER_DOMAIN_NAME", "OS_DOMAIN_NAME"),
	}
	var missing []string
	if ao.IdentityEndpoint == "" {
		missing = append(missing, "OS_AUTH_URL")
	}
	appCred := ao.ApplicationCredentialID != "" || ao.ApplicationCredentialName != ""
	if appCred {
		if ao.ApplicationCredentialSecret == "" {
			missing = append(missing, "OS_APPLICATION_CREDENTIAL_SECRET")
		}
		return ao, missingVars(missing)
	}
	if ao.UserID == "" && ao.Username == "" {
		missing = append(missing, "OS_USERNAME")
	}
	if ao.Password == "" {
		missing = append(missing, "OS_PASSWORD")
	}
	if ao.UserID == "" && ao.DomainID == "" && ao.DomainName == "" {
		ao.DomainID = "default"
	}
	projectID, projectName := env("OS_PROJECT_ID", "OS_TENANT_ID"), env("OS_PROJECT_NAME", "OS_TENANT_NAME")
	switch {
	case projectID != "":
		ao.Scope = &gophercloud.AuthScope{ProjectID: projectID}
	case projectName != "":
		ao.Scope = &gophercloud.AuthScope{ProjectName: projectName, DomainID: env("OS_PROJECT_DOMAIN_ID"), DomainName: env("OS_PROJECT_DOMAIN_NAME")}
		if ao.Scope.DomainID == "" && ao.Scope.DomainName == "" {
			ao.Scope.DomainID, ao.Scope.DomainName = ao.DomainID, ao.DomainName
		}
	default:
		missing = append(missing, "OS_PROJECT_NAME or OS_PROJECT_ID")
	}
	return ao, missingVars(missing)
}

func missingVars(names []string) error {
	if len(names) == 0 {
		return nil
	}
	return fmt.Errorf("%s not set (source an openrc file, or pass --os-cloud with a clouds.yaml)", strings.Join(names, ", "))
}

package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/config"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"

	"strata/controller/objectstore"
	objlocal "strata/controller/objectstore/local"
	objs3 "strata/controller/objectstore/s3"
	objswift "strata/controller/objectstore/swift"
)

// BackupStoreOptions choose and configure the backup object store.
type BackupStoreOptions struct {
	// Driver is local, swift or s3.
	Driver string
	// Dir is the local store's directory (default STATE_DIR/backups).
	Dir string
	// Container is Swift's container, Bucket S3's (default
	// strata-backups).
	Container string
	// Region picks the Swift endpoint from the catalog; S3's SigV4
	// region (default us-east-1).
	Region string
	// S3Endpoint is the S3 server's URL.
	S3Endpoint string
}

// OpenBackupStore opens the backup store; it returns the store and the
// driver's name. Credentials never come from flags:
//
//   - swift: clouds.yaml (OS_CLOUD), else the OS_* variables (Keystone
//     v3), else Swift's own ST_AUTH, ST_USER, ST_KEY (tempauth);
//   - s3: STRATA_S3_ACCESS_KEY and STRATA_S3_SECRET_KEY (or
//     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
func OpenBackupStore(ctx context.Context, stateDir string, o BackupStoreOptions) (objectstore.Store, string, error) {
	if o.Container == "" {
		o.Container = "strata-backups"
	}
	switch o.Driver {
	case "", "local":
		dir := o.Dir
		if dir == "" {
			dir = filepath.Join(stateDir, "backups")
		}
		st, err := objlocal.New(dir)
		if err != nil {
			return nil, "", fmt.Errorf("backup store: %w", err)
		}
		return st, "local", nil
	case "swift":
		client, err := swiftClient(ctx, o.Region)
		if err != nil {
			return nil, "", fmt.Errorf("backup store swift: %w", err)
		}
		st, err := objswift.New(ctx, client, objswift.Options{Container: o.Container})
		if err != nil {
			return nil, "", fmt.Errorf("backup store: %w", err)
		}
		return st, "swift", nil
	case "s3":
		key, secret := os.Getenv("STRATA_S3_ACCESS_KEY"), os.Getenv("STRATA_S3_SECRET_KEY")
		if key == "" {
			key, secret = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
		}
		if o.S3Endpoint == "" || key == "" || secret == "" {
			return nil, "", errors.New("backup store s3: needs --s3-endpoint and STRATA_S3_ACCESS_KEY / STRATA_S3_SECRET_KEY in the environment")
		}
		st, err := objs3.New(ctx, objs3.Options{Endpoint: o.S3Endpoint, AccessKey: key, SecretKey: secret, Region: o.Region, Bucket: o.Container})
		if err != nil {
			return nil, "", fmt.Errorf("backup store: %w", err)
		}
		return st, "s3", nil
	}
	return nil, "", fmt.Errorf("--backup-store %q: want local, swift or s3", o.Driver)
}

func swiftClient(ctx context.Context, region string) (*gophercloud.ServiceClient, error) {
	if auth := os.Getenv("ST_AUTH"); auth != "" && os.Getenv("OS_CLOUD") == "" && os.Getenv("OS_AUTH_URL") == "" {
		return objswift.TempAuth(ctx, auth, os.Getenv("ST_USER"), os.Getenv("ST_KEY"))
	}
	var ao gophercloud.AuthOptions
	eo := gophercloud.EndpointOpts{Region: region}
	var err error
	if os.Getenv("OS_CLOUD") != "" {
		ao, eo, _, err = clouds.Parse()
		if region != "" {
			eo.Region = region
		}
	} else {
		ao, err = openstack.AuthOptionsFromEnv()
	}
	if err != nil {
		return nil, fmt.Errorf("credentials (clouds.yaml with OS_CLOUD, the OS_* variables, or ST_AUTH/ST_USER/ST_KEY): %w", err)
	}
	ao.AllowReauth = true
	pc, err := config.NewProviderClient(ctx, ao)
	if err != nil {
		return nil, fmt.Errorf("keystone %s: %w", ao.IdentityEndpoint, err)
	}
	client, err := openstack.NewObjectStorageV1(pc, eo)
	if err != nil {
		return nil, fmt.Errorf("the service catalog has no object-store endpoint in region %q: %w", eo.Region, err)
	}
	return client, nil
}

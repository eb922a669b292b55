package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"strata/builder/publish"
	"strata/builder/recipe"
)

// publishFlags are the flags `strata image publish` and `strata build
// --publish` share.
type publishFlags struct {
	cloud, controllerURL, troveURL string
}

func (f *publishFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.cloud, "os-cloud", os.Getenv("OS_CLOUD"), "clouds.yaml cloud to use ($OS_CLOUD); empty: the OS_* variables (an openrc)")
	cmd.Flags().StringVar(&f.controllerURL, "controller-url", os.Getenv("STRATA_CONTROLLER_URL"), "the strata controller's API ($STRATA_CONTROLLER_URL); empty: the catalog's database service")
	cmd.Flags().StringVar(&f.troveURL, "trove-url", "", "also register the version in this Trove (its API URL), through its management API")
}

func (f *publishFlags) run(cmd *cobra.Command, recipePath, image string) error {
	res, err := publish.Publish(cmd.Context(), publish.Options{Recipe: recipePath, Image: image, Cloud: f.cloud,
		ControllerURL: f.controllerURL, TroveURL: f.troveURL, Out: cmd.ErrOrStderr()})
	if err != nil {
		return err
	}
	uploaded := "uploaded"
	if !res.Uploaded {
		uploaded = "already there"
	}
	created := "created"
	if !res.VersionCreated {
		created = "updated or unchanged"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "image %s (%s)\n", res.ImageID, uploaded)
	if res.VersionID != "" {
		fmt.Fprintf(cmd.OutOrStdout(), "version %s (%s)\n", res.VersionID, created)
	}
	if res.TroveVersionID != "" {
		fmt.Fprintf(cmd.OutOrStdout(), "trove version %s\n", res.TroveVersionID)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%.1f s\n", res.Seconds)
	return nil
}

// NewPublishCommand returns `publish`, a subcommand of `strata image`.
func NewPublishCommand() *cobra.Command {
	var f publishFlags
	var image string
	cmd := &cobra.Command{
		Use:   "publish RECIPE",
		Short: "Upload a built image to Glance and register its datastore version (strata controller, and a Trove with --trove-url)",
		Long: `Publish uploads the image built from RECIPE to the image service (Glance, or
the embedded controller's Glance API), waits until it is active, checks
Glance's checksum and os_hash_value against the file, and registers the
recipe's datastore version booting it — with the recipe's validation rules
as the version's configuration parameters — in the strata controller and,
with --trove-url, in a Trove through its management API.

Credentials come from clouds.yaml (--os-cloud, $OS_CLOUD) or the OS_*
variables of an openrc, as for the openstack client; for the embedded
controller, source STATE_DIR/openrc.

Publishing again is cheap: an image with the same SHA-256 is reused, and
an existing version is updated in place. If a registration fails after the
upload, the verified image is kept (and reused by the next try).`,
		Example: `  . /var/lib/strata/openrc && strata image publish images/mariadb-10.11.yaml
  strata image publish images/mariadb-10.11.yaml --os-cloud prod --controller-url https://strata:8779 --trove-url https://trove:8779`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if image == "" {
				r, err := recipe.Load(args[0])
				if err != nil {
					return err
				}
				image = filepath.Join("out", r.Name+".qcow2")
			}
			return f.run(cmd, args[0], image)
		},
	}
	cmd.Flags().StringVar(&image, "image", "", "the built image (default out/<recipe name>.qcow2, where `make image` writes it)")
	f.register(cmd)
	return cmd
}

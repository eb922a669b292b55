package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"strata/builder/recipe"
	"strata/controller/imagestore"
	"strata/controller/registry"
)

// newDatastoreCommand is trove-manage's datastore part.
func newDatastoreCommand() *cobra.Command {
	var sf stateFlags
	cmd := &cobra.Command{Use: "datastore", Short: "Register datastores, their versions and validation rules (what trove-manage did)"}
	sf.register(cmd)

	update := &cobra.Command{
		Use:   "update NAME [DEFAULT_VERSION]",
		Short: "Create a datastore, or set its default version (trove-manage datastore_update)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			def := ""
			if len(args) == 2 {
				def = args[1]
			}
			ds, err := sf.registry(db).UpdateDatastore(cmd.Context(), args[0], def)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "datastore %s (%s) default version %s\n", ds.Name, ds.ID, orNone(ds.DefaultVersionID))
			return nil
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List datastores and their versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			r := sf.registry(db)
			all, err := r.Datastores(cmd.Context())
			if err != nil {
				return err
			}
			var rows [][]any
			for _, d := range all {
				vs, err := r.Versions(cmd.Context(), d.ID)
				if err != nil {
					return err
				}
				for _, v := range vs {
					def := ""
					if v.ID == d.DefaultVersionID {
						def = "default"
					}
					rows = append(rows, []any{d.Name, v.Name, v.ID, v.Manager, v.ImageID, v.Active, v.Port, len(v.Rules), def})
				}
				if len(vs) == 0 {
					rows = append(rows, []any{d.Name, "-", "-", "-", "-", "-", "-", "-", ""})
				}
			}
			table(cmd.OutOrStdout(), "DATASTORE\tVERSION\tID\tMANAGER\tIMAGE\tACTIVE\tPORT\tRULES\t", rows)
			return nil
		},
	}
	cmd.AddCommand(update, list, newVersionCommand(&sf))
	return cmd
}

func newVersionCommand(sf *stateFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "version", Short: "Datastore versions"}
	var spec registry.VersionSpec
	var packages, fromRecipe string
	var inactive bool
	var bootTimeout time.Duration
	update := &cobra.Command{
		Use:   "update DATASTORE VERSION",
		Short: "Create or update a datastore version (trove-manage datastore_version_update)",
		Long: `Create or update a datastore version: the image it boots (an id or name in
the image store), the agent manager, packages, port and boot timeout.
--from-recipe reads manager, port, packages and boot timeout from an image
recipe's datastore section; flags given explicitly win.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec.Datastore, spec.Name = args[0], args[1]
			if fromRecipe != "" {
				rc, err := recipe.Load(fromRecipe)
				if err != nil {
					return err
				}
				if rc.Datastore == nil {
					return fmt.Errorf("recipe %s has no datastore section", fromRecipe)
				}
				d := rc.Datastore
				if !cmd.Flags().Changed("manager") {
					spec.Manager = d.Manager
				}
				if !cmd.Flags().Changed("port") && d.Port != 0 {
					spec.Port = d.Port
				}
				if !cmd.Flags().Changed("packages") {
					packages = strings.Join(d.Packages, ",")
				}
				if !cmd.Flags().Changed("boot-timeout") && d.BootTimeout != 0 {
					bootTimeout = time.Duration(d.BootTimeout) * time.Second
				}
			}
			if packages != "" {
				spec.Packages = strings.Split(packages, ",")
			}
			spec.Active, spec.BootTimeout = !inactive, bootTimeout
			db, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			img, err := sf.images(db).Get(cmd.Context(), spec.ImageID)
			if errors.Is(err, imagestore.ErrNotFound) {
				return fmt.Errorf("image %q is not in the image store; register it with `strata image register`", spec.ImageID)
			}
			if err != nil {
				return err
			}
			spec.ImageID = img.ID
			v, err := sf.registry(db).UpdateVersion(cmd.Context(), spec)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "datastore version %s %s (%s): manager %s, image %s, port %d, active %v, root on create %v, auth plugin %s\n",
				v.DatastoreName, v.Name, v.ID, v.Manager, v.ImageID, v.Port, v.Active, v.RootOnCreate, orDefault(v.AuthPlugin))
			return nil
		},
	}
	f := update.Flags()
	f.StringVar(&spec.Manager, "manager", "", "the agent's datastore manager (mariadb, postgresql, redis)")
	f.StringVar(&spec.ImageID, "image", "", "image id or name in the image store")
	f.StringVar(&packages, "packages", "", "comma-separated packages (informational)")
	f.BoolVar(&inactive, "inactive", false, "register the version as inactive (not offered for new instances)")
	f.IntVar(&spec.Port, "port", 0, "the database's TCP port in the guest")
	f.DurationVar(&bootTimeout, "boot-timeout", 15*time.Minute, "how long a new instance may take to become ready before it ends in ERROR")
	f.BoolVar(&spec.RootOnCreate, "root-on-create", false, "give new instances their remote root account at create, the password in the create response (Trove's root_on_create)")
	f.StringVar(&spec.AuthPlugin, "auth-plugin", "", "MariaDB only: the authentication plugin of the instances' accounts, mysql_native_password (the default: every client speaks it, unsalted SHA-1) or ed25519 (salted; clients need ed25519 support); see docs/datastores.md")
	f.StringVar(&fromRecipe, "from-recipe", "", "take manager, port, packages and boot timeout from this image recipe")
	update.MarkFlagRequired("image")

	loadRules := &cobra.Command{
		Use:   "load-rules DATASTORE VERSION FILE",
		Short: "Load a version's configuration validation rules (trove-manage db_load_datastore_config_parameters)",
		Long: `Load the validation rules of a datastore version from FILE, in Trove's
validation-rules.json format extended with allowed_values and apply
(live, reload, restart). The file replaces the version's earlier rules.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[2])
			if err != nil {
				return err
			}
			db, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			abs, _ := filepath.Abs(args[2])
			v, err := sf.registry(db).LoadRules(cmd.Context(), args[0], args[1], data, abs)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "datastore version %s %s: %d configuration parameters loaded from %s\n", v.DatastoreName, v.Name, len(v.Rules), abs)
			return nil
		},
	}
	cmd.AddCommand(update, loadRules, newVersionFlavorCommand(sf), newVersionUpgradeCommand(sf))
	return cmd
}

// newVersionFlavorCommand is trove-manage's datastore_version_flavor_add
// and _delete, with a list: a version with a flavor list is created only
// with those flavors.
func newVersionFlavorCommand(sf *stateFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "flavor", Short: "A version's flavor list (empty: every flavor)"}
	add := &cobra.Command{
		Use:   "add DATASTORE VERSION FLAVOR...",
		Short: "Allow flavors (ids or names) for a version; its instances then take only listed flavors (trove-manage datastore_version_flavor_add)",
		Args:  cobra.MinimumNArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return sf.withRegistry(cmd.Context(), func(r *registry.Registry) error {
				if err := r.EnsureDefaultFlavors(cmd.Context()); err != nil {
					return err
				}
				v, err := r.AddVersionFlavors(cmd.Context(), args[0], args[1], args[2:])
				if err != nil {
					return err
				}
				return printVersionFlavors(cmd, r, v)
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete DATASTORE VERSION FLAVOR",
		Short: "Remove a flavor from a version's list; an empty list allows every flavor (trove-manage datastore_version_flavor_delete)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return sf.withRegistry(cmd.Context(), func(r *registry.Registry) error {
				if err := r.DeleteVersionFlavor(cmd.Context(), args[0], args[1], args[2]); err != nil {
					return err
				}
				v, err := r.FindVersion(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				return printVersionFlavors(cmd, r, v)
			})
		},
	}
	list := &cobra.Command{
		Use:   "list DATASTORE VERSION",
		Short: "List a version's flavor list",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return sf.withRegistry(cmd.Context(), func(r *registry.Registry) error {
				v, err := r.FindVersion(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				return printVersionFlavors(cmd, r, v)
			})
		},
	}
	cmd.AddCommand(add, del, list)
	return cmd
}

// newVersionUpgradeCommand declares the upgrade paths between a
// datastore's versions: an instance is upgraded (`openstack database
// instance upgrade`) only along a declared path.
func newVersionUpgradeCommand(sf *stateFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "upgrade", Short: "The versions a version's instances may be upgraded to"}
	add := &cobra.Command{
		Use:   "add DATASTORE FROM_VERSION TO_VERSION",
		Short: "Let instances of FROM_VERSION be upgraded to TO_VERSION (a rebuild onto TO_VERSION's image plus the datastore's upgrade step)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return sf.withRegistry(cmd.Context(), func(r *registry.Registry) error {
				f, _, err := r.AddUpgradePath(cmd.Context(), args[0], args[1], args[2])
				if err != nil {
					return err
				}
				return printUpgradeTargets(cmd, r, f)
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete DATASTORE FROM_VERSION TO_VERSION",
		Short: "Remove an upgrade path",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return sf.withRegistry(cmd.Context(), func(r *registry.Registry) error {
				if err := r.DeleteUpgradePath(cmd.Context(), args[0], args[1], args[2]); err != nil {
					return err
				}
				f, err := r.FindVersion(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				return printUpgradeTargets(cmd, r, f)
			})
		},
	}
	list := &cobra.Command{
		Use:   "list DATASTORE VERSION",
		Short: "List the versions VERSION's instances may be upgraded to",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return sf.withRegistry(cmd.Context(), func(r *registry.Registry) error {
				v, err := r.FindVersion(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				return printUpgradeTargets(cmd, r, v)
			})
		},
	}
	cmd.AddCommand(add, del, list)
	return cmd
}

func printUpgradeTargets(cmd *cobra.Command, r *registry.Registry, v registry.Version) error {
	vs, err := r.UpgradeTargets(cmd.Context(), v.ID)
	if err != nil {
		return err
	}
	if len(vs) == 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "datastore version %s %s has no upgrade path\n", v.DatastoreName, v.Name)
		return nil
	}
	var rows [][]any
	for _, t := range vs {
		rows = append(rows, []any{v.Name, t.Name, t.ID, t.ImageID})
	}
	table(cmd.OutOrStdout(), "FROM\tTO\tTO_ID\tTO_IMAGE\t", rows)
	return nil
}

func printVersionFlavors(cmd *cobra.Command, r *registry.Registry, v registry.Version) error {
	fs, err := r.VersionFlavors(cmd.Context(), v.ID)
	if err != nil {
		return err
	}
	if len(fs) == 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "datastore version %s %s has no flavor list: every flavor is allowed\n", v.DatastoreName, v.Name)
		return nil
	}
	var rows [][]any
	for _, f := range fs {
		rows = append(rows, []any{f.ID, f.Name, f.RAMMB, f.VCPUs})
	}
	table(cmd.OutOrStdout(), "ID\tNAME\tRAM\tVCPUS\t", rows)
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func orDefault(s string) string {
	if s == "" {
		return "(default)"
	}
	return s
}

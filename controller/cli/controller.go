package cli

import (
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"strata/controller/auth"
	"strata/controller/compute"
	"strata/controller/compute/qemu"
	"strata/controller/identity"
	"strata/controller/quotas"
	"strata/controller/registry"
	"strata/controller/server"
	"strata/controller/store"
)

func newControllerCommand() *cobra.Command {
	var sf stateFlags
	cmd := &cobra.Command{Use: "controller", Short: "Run the controller and manage its users, projects and flavors"}
	sf.register(cmd)
	cmd.AddCommand(newServeCommand(&sf), newProjectCommand(&sf), newUserCommand(&sf), newFlavorCommand(&sf), newNetworkCommand(&sf), newVMsCommand(&sf),
		&cobra.Command{
			Use:   "systemd-unit",
			Short: "Print a systemd unit for the controller (KillMode=process: its VMs outlive it)",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				_, err := cmd.OutOrStdout().Write(systemdUnit)
				return err
			},
		},
		&cobra.Command{
			// Started by the qemu driver, one per public instance, with its
			// listening sockets; it outlives the controller.
			Use: "publish-relay", Hidden: true, DisableFlagParsing: true,
			Short: "Relay a public instance's published ports to it (started by the local compute driver)",
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
				defer stop()
				return qemu.RunRelay(ctx, args, slog.New(slog.NewTextHandler(os.Stderr, nil)))
			},
		})
	return cmd
}

// systemdUnit is the controller's unit, shipped in the binary.
//
//go:embed strata-controller.service
var systemdUnit []byte

// newVMsCommand looks at and stops the local VMs (the qemu driver's)
// without a controller: they outlive it, so stopping them is explicit.
func newVMsCommand(sf *stateFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "vms", Short: "The local VMs of the qemu compute driver, which outlive the controller"}
	driver := func(cmd *cobra.Command) (*qemu.Driver, error) {
		return qemu.New(cmd.Context(), qemu.Config{Dir: filepath.Join(sf.dir, "compute", "qemu"), Logger: slog.New(slog.DiscardHandler)})
	}
	var timeout time.Duration
	stop := &cobra.Command{
		Use:   "stop",
		Short: "Power every local VM off (ACPI power button, then kill after --timeout)",
		Long: `Stop powers off every VM under STATE_DIR/compute/qemu: for host maintenance,
after stopping the controller (a running controller's recovery boots them
again within its recovery interval). A controller that stops, or is
killed, leaves its VMs running; the next start adopts them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := driver(cmd)
			if err != nil {
				return err
			}
			n, err := d.StopAll(cmd.Context(), timeout)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stopped %d VM(s)\n", n)
			return nil
		},
	}
	stop.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long a guest may take to power off before it is killed (0: kill at once)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the local VMs that run",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := driver(cmd)
			if err != nil {
				return err
			}
			var rows [][]any
			for _, id := range d.Running() {
				reason, _ := d.LaunchOutdated(cmd.Context(), compute.Server{ID: id})
				launch := "current"
				if reason != "" {
					launch = "needs a restart"
				}
				rows = append(rows, []any{id, launch})
			}
			table(cmd.OutOrStdout(), "INSTANCE\tLAUNCH SETTINGS", rows)
			return nil
		},
	}
	cmd.AddCommand(stop, list)
	return cmd
}

func newServeCommand(sf *stateFlags) *cobra.Command {
	var cfg server.Config
	var advertise, logLevel, imageStore, computeDriver, publicAddresses string
	var backupStore server.BackupStoreOptions
	var nova novaFlags
	var ks struct{ url, user, password, project, userDomain, projectDomain string }
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the Trove-compatible API, the agent endpoint and the task engine",
		Long: `Serve runs the controller until interrupted. On first start it creates the
admin user and project and writes STATE_DIR/openrc; source it to use
` + "`openstack database ...`" + `. With --keystone-url it validates tokens against that
Keystone instead and serves no identity API.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := logger(logLevel)
			if err != nil {
				return err
			}
			cfg.StateDir, cfg.DSN, cfg.Logger = sf.dir, sf.dsn, log
			if publicAddresses != "" {
				if computeDriver != "qemu" {
					return fmt.Errorf("--public-addresses is for the local compute driver (--compute qemu), not %s", computeDriver)
				}
				pool, err := qemu.ParsePublicAddresses(publicAddresses)
				if err != nil {
					return fmt.Errorf("--public-addresses: %w", err)
				}
				cfg.PublicAddresses = pool
			}
			if advertise != "" {
				cfg.AgentAdvertise = strings.Split(advertise, ",")
			}
			if ks.url != "" {
				if ks.user == "" || ks.project == "" {
					return errors.New("--keystone-url needs --keystone-user, --keystone-project and a password ($STRATA_KEYSTONE_PASSWORD)")
				}
				if ks.password == "" {
					ks.password = os.Getenv("STRATA_KEYSTONE_PASSWORD")
				}
				cfg.Keystone = &auth.Keystone{URL: ks.url, Username: ks.user, Password: ks.password, Project: ks.project,
					UserDomain: ks.userDomain, ProjectDomain: ks.projectDomain}
			}
			if err := openStackParts(cmd.Context(), &cfg, imageStore, computeDriver, nova); err != nil {
				return err
			}
			if cfg.BackupStore, cfg.BackupStoreName, err = server.OpenBackupStore(cmd.Context(), cfg.StateDir, backupStore); err != nil {
				return err
			}
			c, err := server.Start(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "strata controller: API %s, agent endpoint %s\n", c.APIURL, c.AgentAddr)
			return c.Wait()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8779", "API address")
	f.StringVar(&cfg.AgentListen, "agent-listen", "127.0.0.1:2222", "agent endpoint (SSH) address")
	f.StringVar(&advertise, "agent-advertise", "", "comma-separated endpoint addresses written into bootstraps, for the Nova driver (local VMs reach the endpoint at 10.0.2.100:<agent port>, their one way out)")
	f.StringVar(&cfg.PublicURL, "public-url", "", "API base URL given to clients (default http://<listen>, https:// with --tls-cert)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "serve the API over TLS with this PEM certificate (chain); with --tls-key")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "the PEM private key of --tls-cert")
	f.StringVar(&cfg.Region, "region", "RegionOne", "region name in the service catalog")
	f.StringVar(&cfg.HostKeyFile, "agent-host-key", "", "agent endpoint host key (default STATE_DIR/agent_host_key; replicas share one)")
	f.IntVar(&cfg.HeartbeatSeconds, "heartbeat", 10, "seconds between agent heartbeats")
	f.IntVar(&cfg.MaxVolumeGB, "max-volume-gb", 20, "largest volume size accepted")
	f.StringVar(&cfg.DefaultDatastore, "default-datastore", "", "datastore (name or id) of a create that names none, as Trove's default_datastore (default: the only one registered, else such a create is refused)")
	f.StringVar(&cfg.DefaultDatastoreVersion, "default-datastore-version", "", "version of --default-datastore (default: that datastore's default version)")
	cfg.Quotas = quotas.Limits{}
	for _, r := range quotas.Resources {
		v := quotas.TroveDefaults[r]
		cfg.Quotas[r] = v
		f.Var(int64Flag{&v, func(n int64) { cfg.Quotas[r] = n }}, "quota-"+string(r),
			fmt.Sprintf("default %s quota of a project (%s; -1: unlimited; per project: openstack database quota update)", r, quotaUnit[r]))
	}
	f.IntVar(&cfg.APIRate, "api-rate", server.DefaultAPIRate, "API requests of one HTTP verb a user may make per minute before 429 (-1: no limit)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&ks.url, "keystone-url", "", "OpenStack mode: the Keystone identity endpoint, with /v3")
	f.StringVar(&ks.user, "keystone-user", "", "OpenStack mode: the controller's service user")
	f.StringVar(&ks.password, "keystone-password", "", "OpenStack mode: its password (or $STRATA_KEYSTONE_PASSWORD)")
	f.StringVar(&ks.project, "keystone-project", "service", "OpenStack mode: the service user's project")
	f.StringVar(&ks.userDomain, "keystone-user-domain", "Default", "OpenStack mode: the service user's domain")
	f.StringVar(&ks.projectDomain, "keystone-project-domain", "Default", "OpenStack mode: the service project's domain")
	f.StringVar(&imageStore, "image-store", "local", "local (files in STATE_DIR), or glance (OpenStack mode: the catalog's image service)")
	f.StringVar(&computeDriver, "compute", "qemu", "qemu (local VMs), or nova (OpenStack mode: Nova, Cinder and Neutron from the catalog)")
	f.StringVar(&publicAddresses, "public-addresses", "", "local compute: comma-separated addresses or CIDR blocks of this host that public instances (access.is_public) are published on, at the datastore's standard port; empty: instances cannot be made public")
	f.BoolVar(&cfg.VMsDieWithController, "vms-die-with-controller", false, "tests: the local VMs die with this process instead of outliving it")
	f.MarkHidden("vms-die-with-controller")
	f.DurationVar(&cfg.GuestCallTimeout, "guest-call-timeout", time.Minute, "how long a guest call (create database, user...) waits for the agent before it is answered 202 and left queued")
	f.StringVar(&backupStore.Driver, "backup-store", "local", "where backups go: local (a directory), swift (credentials: clouds.yaml/OS_CLOUD, OS_*, or ST_AUTH/ST_USER/ST_KEY), or s3 (keys: STRATA_S3_ACCESS_KEY/STRATA_S3_SECRET_KEY)")
	f.StringVar(&backupStore.Dir, "backup-dir", "", "local backup store directory (default STATE_DIR/backups)")
	f.StringVar(&backupStore.Container, "backup-container", "strata-backups", "Swift container or S3 bucket for backups")
	f.StringVar(&backupStore.Region, "backup-region", "", "Swift: the catalog region of the object store; S3: the SigV4 region (default us-east-1)")
	f.StringVar(&backupStore.S3Endpoint, "s3-endpoint", "", "S3: the server's URL, http(s)://host:port")
	f.StringVar(&cfg.BackupKEKFile, "backup-key", "", "key-encryption key wrapping every backup's data key: 64 hex digits, mode 0600 (default STATE_DIR/backup.kek, created on first use)")
	nova.register(f)
	return cmd
}

func newProjectCommand(sf *stateFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "project", Short: "Projects of the embedded identity service"}
	cmd.AddCommand(&cobra.Command{
		Use:   "create NAME",
		Short: "Create a project",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			p, err := (&identity.Store{DB: db}).CreateProject(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), p.ID)
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a project that owns nothing (no instance, backup or configuration group)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return sf.withDB(cmd.Context(), func(db *store.DB) error {
				ids := &identity.Store{DB: db}
				p, err := ids.Project(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				what, err := server.ProjectInUse(db)(cmd.Context(), p.ID)
				if err != nil {
					return err
				}
				if what != "" {
					return fmt.Errorf("project %s (%s) still has %s; delete those first", p.Name, p.ID, what)
				}
				if err := ids.DeleteProject(cmd.Context(), p.ID); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted project %s (%s), its role assignments and tokens\n", p.Name, p.ID)
				return nil
			})
		},
	})
	return cmd
}

func newUserCommand(sf *stateFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Users of the embedded identity service"}
	var project, passwordFile, openrc string
	var admin bool
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a user in a project (password from --password-file or stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var data []byte
			var err error
			if passwordFile != "" {
				data, err = os.ReadFile(passwordFile)
			} else {
				data, err = readAll(cmd)
			}
			if err != nil {
				return err
			}
			pw := strings.TrimRight(string(data), "\r\n")
			db, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			ids := &identity.Store{DB: db}
			u, err := ids.CreateUser(cmd.Context(), args[0], pw, project, admin)
			if err != nil {
				return err
			}
			if openrc != "" {
				p, err := ids.Project(cmd.Context(), u.ProjectID)
				if err != nil {
					return err
				}
				apiURL, _ := cmd.Flags().GetString("api-url")
				if err := server.WriteOpenrc(openrc, strings.TrimRight(apiURL, "/"), u.Name, pw, p.Name, ""); err != nil {
					return err
				}
			}
			fmt.Fprintln(cmd.OutOrStdout(), u.ID)
			return nil
		},
	}
	create.Flags().StringVar(&project, "project", "", "the user's project (name or id)")
	create.Flags().StringVar(&passwordFile, "password-file", "", "file holding the password (default: read stdin)")
	create.Flags().BoolVar(&admin, "admin", false, "give the user the admin role")
	create.Flags().StringVar(&openrc, "openrc", "", "also write an openrc file for the user here")
	create.Flags().String("api-url", "http://127.0.0.1:8779", "API base URL for --openrc")
	create.MarkFlagRequired("project")
	cmd.AddCommand(create)
	// The rest act on one user, by name or id, each ending its sessions.
	onUser := func(use, short string, act func(cmd *cobra.Command, ids *identity.Store, u identity.User) (string, error)) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return sf.withDB(cmd.Context(), func(db *store.DB) error {
					ids := &identity.Store{DB: db}
					u, err := ids.UserByName(cmd.Context(), args[0])
					if err != nil {
						return err
					}
					msg, err := act(cmd, ids, u)
					if err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s (%s)\n", msg, u.Name, u.ID)
					return nil
				})
			},
		}
	}
	cmd.AddCommand(onUser("delete NAME", "Delete a user, its role assignments and tokens", func(cmd *cobra.Command, ids *identity.Store, u identity.User) (string, error) {
		return "deleted user", ids.DeleteUser(cmd.Context(), u.ID)
	}))
	cmd.AddCommand(onUser("disable NAME", "Disable a user: it cannot log in, and its tokens are revoked", func(cmd *cobra.Command, ids *identity.Store, u identity.User) (string, error) {
		return "disabled user (its tokens are revoked)", ids.SetEnabled(cmd.Context(), u.ID, false)
	}))
	cmd.AddCommand(onUser("enable NAME", "Enable a disabled user", func(cmd *cobra.Command, ids *identity.Store, u identity.User) (string, error) {
		return "enabled user", ids.SetEnabled(cmd.Context(), u.ID, true)
	}))
	var setPasswordFile string
	setPassword := onUser("set-password NAME", "Set a user's password (from --password-file or stdin); its tokens are revoked", func(cmd *cobra.Command, ids *identity.Store, u identity.User) (string, error) {
		var data []byte
		var err error
		if setPasswordFile != "" {
			data, err = os.ReadFile(setPasswordFile)
		} else {
			data, err = readAll(cmd)
		}
		if err != nil {
			return "", err
		}
		return "set the password of user (its tokens are revoked)", ids.SetPassword(cmd.Context(), u.ID, strings.TrimRight(string(data), "\r\n"))
	})
	setPassword.Flags().StringVar(&setPasswordFile, "password-file", "", "file holding the password (default: read stdin)")
	cmd.AddCommand(setPassword)
	return cmd
}

func readAll(cmd *cobra.Command) ([]byte, error) {
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := cmd.InOrStdin().Read(buf)
		b.Write(buf[:n])
		if err != nil || b.Len() > 4096 {
			break
		}
	}
	return []byte(b.String()), nil
}

func newFlavorCommand(sf *stateFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "flavor", Short: "Machine sizes instances are created with"}
	var f registry.Flavor
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create or update a flavor",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			f.Name = args[0]
			r := sf.registry(db)
			// The defaults come first, as a controller's first start makes them.
			if err := r.EnsureDefaultFlavors(cmd.Context()); err != nil {
				return err
			}
			out, err := r.CreateFlavor(cmd.Context(), f)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.ID)
			return nil
		},
	}
	create.Flags().IntVar(&f.RAMMB, "ram", 1024, "memory in MB")
	create.Flags().IntVar(&f.VCPUs, "vcpus", 1, "virtual CPUs")
	create.Flags().IntVar(&f.DiskGB, "disk", 0, "root disk in GB (informational; the image decides)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List flavors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			r := sf.registry(db)
			if err := r.EnsureDefaultFlavors(cmd.Context()); err != nil {
				return err
			}
			fs, err := r.Flavors(cmd.Context())
			if err != nil {
				return err
			}
			var rows [][]any
			for _, f := range fs {
				rows = append(rows, []any{f.ID, f.Name, f.RAMMB, f.VCPUs, f.DiskGB})
			}
			table(cmd.OutOrStdout(), "ID\tNAME\tRAM MB\tVCPUS\tDISK GB", rows)
			return nil
		},
	}
	cmd.AddCommand(create, list)
	return cmd
}

func newNetworkCommand(sf *stateFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Networks of the local compute driver (instances' nics name them)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the local driver's networks and how many of their addresses instances hold",
		Long: `List shows the networks of the local (qemu) compute driver: blocks of loopback
addresses, one address per instance, the datastore's standard port forwarded
there. The first is the default. Pass an id as an instance's nics entry:
openstack database instance create ... --nic net-id=ID. With the Nova driver,
the networks are Neutron's: openstack network list.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := qemu.New(cmd.Context(), qemu.Config{Dir: server.LocalComputeDir(sf.dir)})
			if err != nil {
				return err
			}
			nets, err := d.Networks(cmd.Context())
			if err != nil {
				return err
			}
			var rows [][]any
			for _, n := range nets {
				claims, err := d.Claims(n.ID)
				if err != nil {
					return err
				}
				def := ""
				if n.Default {
					def = "yes"
				}
				rows = append(rows, []any{n.ID, n.Name, strings.Join(n.CIDRs, ","), def, len(claims)})
			}
			table(cmd.OutOrStdout(), "ID\tNAME\tADDRESSES\tDEFAULT\tIN USE", rows)
			return nil
		},
	})
	return cmd
}

var quotaUnit = map[quotas.Resource]string{quotas.Instances: "instances", quotas.Volumes: "GB of volumes", quotas.Backups: "backups"}

// int64Flag is an integer flag that also tells set when it is given.
type int64Flag struct {
	v   *int64
	set func(int64)
}

func (f int64Flag) String() string {
	if f.v == nil {
		return "0"
	}
	return strconv.FormatInt(*f.v, 10)
}

func (f int64Flag) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("want an integer: %w", err)
	}
	if n < quotas.Unlimited {
		return fmt.Errorf("%d is below -1 (unlimited)", n)
	}
	*f.v = n
	f.set(n)
	return nil
}

func (f int64Flag) Type() string { return "int" }

// Package server wires `strata controller serve`: it opens the state
// (database, host key, image store), makes the admin user and the openrc
// on first start, and runs the API (Trove v1.0 plus, in the embedded mode,
// the Keystone v3 subset), the agent endpoint, the task engine and the
// recovery loop until its context ends — then stops them in order and
// powers the local VMs off.
//
// It holds no logic of its own beyond that wiring.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"strata/controller/agentendpoint"
	"strata/controller/api"
	"strata/controller/api/glance"
	"strata/controller/api/keystone"
	"strata/controller/api/neutron"
	"strata/controller/auth"
	"strata/controller/backups"
	"strata/controller/backups/format"
	"strata/controller/chaos"
	"strata/controller/compute"
	"strata/controller/compute/qemu"
	"strata/controller/configurations"
	"strata/controller/guestlogs"
	"strata/controller/identity"
	"strata/controller/imagestore"
	"strata/controller/imagestore/local"
	"strata/controller/instances"
	"strata/controller/lifecycle"
	"strata/controller/objectstore"
	objlocal "strata/controller/objectstore/local"
	"strata/controller/quotas"
	"strata/controller/registry"
	"strata/controller/store"
	"strata/controller/tasks"
)

// Config configures a controller.
type Config struct {
	// StateDir holds the SQLite database (unless DSN names PostgreSQL),
	// the agent host key, images, VM disks and openrc.
	StateDir string
	// DSN is a postgres:// URL or an SQLite path (default
	// StateDir/controller.db).
	DSN string
	// Listen is the API address; AgentListen the agents' SSH endpoint.
	Listen      string
	AgentListen string
	// AgentAdvertise are the endpoint addresses written into bootstraps
	// by a compute driver other than the local one (default: 10.0.2.2:
	// <agent port>). The local driver's guests are fenced in and reach the
	// endpoint at the driver's own address (qemu.GuestEndpointAddr); the
	// flag is refused with it.
	AgentAdvertise []string
	// PublicURL is the API's base URL for clients (default from Listen:
	// https:// when TLSCert is set, else http://).
	PublicURL string
	// TLSCert and TLSKey, both or neither, are PEM files: the API is then
	// served over TLS (1.2 or later) only. Without them the API speaks
	// plain HTTP, for loopback or behind a TLS-terminating reverse proxy
	// (docs/controller.md).
	TLSCert, TLSKey string
	Region          string
	// DefaultDatastore and DefaultDatastoreVersion: lifecycle.Manager's
	// DefaultDatastore and DefaultVersion.
	DefaultDatastore, DefaultDatastoreVersion string
	// HostKeyFile defaults to StateDir/agent_host_key.
	HostKeyFile string
	// Keystone, if set, switches to OpenStack mode: tokens are validated
	// by that Keystone and no identity API is served.
	Keystone *auth.Keystone
	// HeartbeatSeconds, MaxVolumeGB and GuestCallTimeout are passed to
	// lifecycle.
	HeartbeatSeconds int
	MaxVolumeGB      int
	GuestCallTimeout time.Duration
	// Quotas are the limits of a project the operator set none for
	// (missing resources: Trove's defaults, quotas.TroveDefaults).
	Quotas quotas.Limits
	// APIRate is how many requests of one HTTP verb a user may make per
	// minute (0: DefaultAPIRate; negative: no limit).
	APIRate int
	// Compute replaces the local qemu driver (OpenStack mode: Nova).
	Compute compute.Driver
	// Images replaces the local image store (OpenStack mode: Glance).
	// In the embedded mode the local store is also served as a Glance v2
	// subset (controller/api/glance) and listed as the image service.
	Images imagestore.Store
	// HTTP bounds what one API client can hold: zero fields take the
	// defaults shown on HTTPLimits.
	HTTP HTTPLimits
	// RecoveryInterval is how often stopped servers are looked for (60s;
	// a local VM that exits is noticed at once).
	RecoveryInterval time.Duration
	// VMsDieWithController ties the local VMs to this process (tests that
	// must leave no qemu behind): they die when it exits, and Stop kills
	// them. Without it the VMs outlive the controller, killed or stopped.
	VMsDieWithController bool
	// PublicAddresses is the local driver's pool of public addresses
	// (--public-addresses); empty: instances cannot be made public.
	PublicAddresses []netip.Prefix
	// ConfigureWait bounds how long a configuration change waits for the
	// instances it touches to apply it before answering (30s).
	ConfigureWait time.Duration
	// AgentTimings tunes the agent endpoint's SSH server (tests).
	AgentTimings agentendpoint.ServerConfig
	// EngineTuning tunes the task engine (tests).
	EngineTuning func(*tasks.Engine)
	// BackupStore holds backups (default: the local driver in
	// StateDir/backups); BackupStoreName names its driver in backup
	// records ("local", "swift", "s3").
	BackupStore     objectstore.Store
	BackupStoreName string
	// BackupKEKFile is the key-encryption key that wraps every backup's
	// data key (default StateDir/backup.kek, created 0600 on first use).
	BackupKEKFile string
	// BackupGCInterval is how often the objects of dead backups are
	// collected (default 1h; also once at start).
	BackupGCInterval time.Duration
	// BackupTuning adjusts the backup manager (tests).
	BackupTuning func(*backups.Manager)
	// GuestLogTuning adjusts the guest log publisher (tests).
	GuestLogTuning func(*guestlogs.Manager)
	Logger         *slog.Logger
}

// HTTPLimits bound the API's connections, so that slow or abusive clients
// cannot hold the controller's connections, goroutines or memory.
type HTTPLimits struct {
	// ReadTimeout bounds reading a request, headers and body (30s): a body
	// announced and never sent does not hold its connection. An image
	// upload is exempt as long as its data keeps coming (UploadIdle).
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the end
	// of the answer (2m: requests Trove answers with 202 wait up to a
	// minute for the agent).
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request (60s).
	IdleTimeout time.Duration
	// MaxConns caps the connections served at once (512); more wait in
	// the listen backlog until one ends.
	MaxConns int
	// UploadIdle cuts an image upload that sends nothing for this long
	// (60s); MaxImageBytes is the largest image accepted (64 GiB);
	// MaxPendingImages the images created but not uploaded yet (32).
	UploadIdle       time.Duration
	MaxImageBytes    int64
	MaxPendingImages int
}

func (l HTTPLimits) withDefaults() HTTPLimits {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadTimeout, 30*time.Second)
	def(&l.WriteTimeout, 2*time.Minute)
	def(&l.IdleTimeout, time.Minute)
	def(&l.UploadIdle, time.Minute)
	if l.MaxConns <= 0 {
		l.MaxConns = 512
	}
	if l.MaxImageBytes <= 0 {
		l.MaxImageBytes = 64 << 30
	}
	if l.MaxPendingImages <= 0 {
		l.MaxPendingImages = 32
	}
	return l
}

// Controller is a running controller.
type Controller struct {
	// APIURL is the API's base URL; AgentAddr the endpoint's address.
	APIURL    string
	AgentAddr string
	DB        *store.DB
	Identity  *identity.Store
	Lifecycle *lifecycle.Manager
	Endpoint  *agentendpoint.Endpoint
	Engine    *tasks.Engine
	Backups   *backups.Manager
	// AdminPassword is set when this start created the admin user.
	AdminPassword string

	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// LocalComputeDir is where the local qemu driver keeps its VMs and
// address claims in a state directory.
func LocalComputeDir(stateDir string) string { return filepath.Join(stateDir, "compute", "qemu") }

// apiTLS loads the API's certificate and key (nil, nil: plain HTTP).
func apiTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, errors.New("API TLS: --tls-cert and --tls-key go together (a certificate and its private key, PEM)")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("API TLS: certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}, nil
}

// DefaultDSN is the SQLite database in a state directory.
func DefaultDSN(stateDir string) string { return filepath.Join(stateDir, "controller.db") }

// PrepareStateDir makes the state directory, or checks an existing one:
// it holds the database, the agent host key, openrc and the VMs' disks, so
// it must be this user's and no one else's. A directory that others may
// read or enter is tightened to 0700 (tightened reports it); one that
// belongs to another user, or is not a directory, is refused.
func PrepareStateDir(dir string) (tightened bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("state directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return false, fmt.Errorf("state directory: %w", err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("state directory %s is not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return false, fmt.Errorf("state directory %s belongs to uid %d, not to this user (uid %d): refusing to keep the controller's secrets there; use a directory of your own (--state-dir)", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o077 == 0 {
		return false, nil
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return false, fmt.Errorf("state directory %s has mode %o and could not be tightened to 0700: %w", dir, fi.Mode().Perm(), err)
	}
	return true, nil
}

// OpenState opens the database named by dsn (default in stateDir).
func OpenState(ctx context.Context, stateDir, dsn string) (*store.DB, error) {
	if dsn == "" {
		if stateDir == "" {
			return nil, errors.New("a state directory (--state-dir) or a database (--db) is required")
		}
		if _, err := PrepareStateDir(stateDir); err != nil {
			return nil, err
		}
		dsn = DefaultDSN(stateDir)
	}
	return store.Open(ctx, dsn)
}

// Start opens the state and starts serving.
func Start(ctx context.Context, cfg Config) (*Controller, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.StateDir == "" {
		return nil, errors.New("controller: --state-dir is required")
	}
	if cfg.DefaultDatastoreVersion != "" && cfg.DefaultDatastore == "" {
		return nil, errors.New("controller: --default-datastore-version needs --default-datastore")
	}
	tightened, err := PrepareStateDir(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if tightened {
		log.Warn("the state directory was readable by others; its mode is now 0700", "dir", cfg.StateDir)
	}
	db, err := OpenState(ctx, cfg.StateDir, cfg.DSN)
	if err != nil {
		return nil, err
	}
	c, err := start(ctx, cfg, db, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	return c, nil
}

func start(ctx context.Context, cfg Config, db *store.DB, log *slog.Logger) (*Controller, error) {
	reg := &registry.Registry{DB: db}
	if err := reg.EnsureDefaultFlavors(ctx); err != nil {
		return nil, fmt.Errorf("default flavors: %w", err)
	}
	ids := &identity.Store{DB: db}
	c := &Controller{DB: db, Identity: ids, done: make(chan struct{})}

	tlsConfig, err := apiTLS(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, err
	}
	apiLn, err := net.Listen("tcp", orDefault(cfg.Listen, "127.0.0.1:8779"))
	if err != nil {
		return nil, fmt.Errorf("API listener: %w", err)
	}
	agentLn, err := net.Listen("tcp", orDefault(cfg.AgentListen, "127.0.0.1:2222"))
	if err != nil {
		apiLn.Close()
		return nil, fmt.Errorf("agent listener: %w", err)
	}
	closeListeners := func() { apiLn.Close(); agentLn.Close() }
	c.APIURL = cfg.PublicURL
	if c.APIURL == "" {
		scheme := "http://"
		if tlsConfig != nil {
			scheme = "https://"
		}
		c.APIURL = scheme + reachable(apiLn.Addr().String())
	}
	c.APIURL = strings.TrimRight(c.APIURL, "/")
	c.AgentAddr = agentLn.Addr().String()

	var authn auth.Authenticator = ids
	var ks *keystone.Handler
	if cfg.Keystone != nil {
		authn = cfg.Keystone
	} else {
		pw, err := ids.Bootstrap(ctx)
		if err != nil {
			closeListeners()
			return nil, fmt.Errorf("admin user: %w", err)
		}
		if pw != "" {
			c.AdminPassword = pw
			if err := WriteOpenrc(filepath.Join(cfg.StateDir, "openrc"), c.APIURL, "admin", pw, "admin", cfg.Region); err != nil {
				closeListeners()
				return nil, err
			}
			log.Info("created the admin user and project; credentials are in openrc", "openrc", filepath.Join(cfg.StateDir, "openrc"))
		}
		ks = &keystone.Handler{Identity: ids, PublicURL: cfg.PublicURL, Region: cfg.Region, ImageService: true, NetworkService: true, ObjectService: true,
			ProjectInUse: ProjectInUse(db), Logger: log}
	}

	hostKeyFile := cfg.HostKeyFile
	if hostKeyFile == "" {
		hostKeyFile = filepath.Join(cfg.StateDir, agentendpoint.HostKeyFile)
	}
	hostKey, err := agentendpoint.LoadOrCreateHostKey(hostKeyFile)
	if err != nil {
		closeListeners()
		return nil, err
	}
	ep, err := agentendpoint.New(agentendpoint.Config{HostKey: hostKey, DB: db, Logger: log, Timings: cfg.AgentTimings,
		OnRefused: func(instanceID, message string) { recordAgentRefusal(db, log, instanceID, message) }})
	if err != nil {
		closeListeners()
		return nil, err
	}
	c.Endpoint = ep

	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	driver := cfg.Compute
	var qd *qemu.Driver
	var lcRef atomic.Pointer[lifecycle.Manager]
	if driver == nil {
		qd, err = qemu.New(life, qemu.Config{Dir: LocalComputeDir(cfg.StateDir), Logger: log,
			DieWithController: cfg.VMsDieWithController, AgentEndpoint: c.AgentAddr,
			PublicAddresses: cfg.PublicAddresses, RelayCommand: relayCommand(),
			// A VM that exits is looked at at once, not at the next round.
			OnExit: func(string) {
				if lc := lcRef.Load(); lc != nil {
					lc.RecoverSoon()
				}
			}})
		if err != nil {
			cancel()
			closeListeners()
			return nil, err
		}
		driver = qd
	}
	var killVM func(string) error
	if qd != nil {
		killVM = qd.Kill
	}
	if err := chaos.Init(cfg.StateDir, killVM, log); err != nil {
		cancel()
		closeListeners()
		return nil, err
	}
	advertise := cfg.AgentAdvertise
	switch {
	case qd != nil && len(advertise) > 0:
		// Local guests are fenced in: their one way out is the driver's.
		cancel()
		closeListeners()
		return nil, fmt.Errorf("--agent-advertise %s: the local qemu driver's guests reach the agent endpoint only at %s (their one way out); the flag is for the Nova driver", strings.Join(advertise, ","), qd.GuestEndpoint())
	case qd != nil:
		advertise = []string{qd.GuestEndpoint()}
	case len(advertise) == 0:
		_, port, _ := net.SplitHostPort(c.AgentAddr)
		advertise = []string{"10.0.2.2:" + port}
	}
	engine := &tasks.Engine{DB: db, Logger: log}
	images := cfg.Images
	if images == nil {
		images = &local.Store{DB: db, Dir: filepath.Join(cfg.StateDir, "images")}
	}
	lc := &lifecycle.Manager{
		DB: db, Registry: reg, Images: images,
		Compute: driver, Agents: ep, Engine: engine, Controllers: advertise, HostKey: ep.HostKeyLine(),
		HeartbeatSeconds: cfg.HeartbeatSeconds, MaxVolumeGB: cfg.MaxVolumeGB, GuestCallTimeout: cfg.GuestCallTimeout,
		ConfigureWait: cfg.ConfigureWait, Logger: log,
		Quotas:           &quotas.Quotas{DB: db, Defaults: cfg.Quotas},
		DefaultDatastore: cfg.DefaultDatastore, DefaultVersion: cfg.DefaultDatastoreVersion,
	}
	bm, err := openBackups(cfg, db, reg, lc, ep, engine, log)
	if err != nil {
		cancel()
		closeListeners()
		return nil, err
	}
	lc.Restores = bm
	lc.Seeds = bm
	lcRef.Store(lc)
	engine.Kinds = lc.Kinds()
	maps.Copy(engine.Kinds, bm.Kinds())
	if cfg.EngineTuning != nil {
		cfg.EngineTuning(engine)
	}
	c.Lifecycle, c.Engine, c.Backups = lc, engine, bm

	var gl *glance.Handler
	var nt *neutron.Handler
	if ks != nil {
		gl = &glance.Handler{Images: images, Registry: reg, Auth: authn, Logger: log}
		nt = &neutron.Handler{Networks: driver.Networks, Auth: authn, Logger: log}
	}
	// Every URL handed out is built from the public URL, never from a
	// request's Host header.
	if ks != nil {
		ks.PublicURL = c.APIURL
	}
	limits := cfg.HTTP.withDefaults()
	if gl != nil {
		gl.PublicURL = c.APIURL
		gl.UploadIdle, gl.MaxImageBytes, gl.MaxPending = limits.UploadIdle, limits.MaxImageBytes, limits.MaxPendingImages
	}
	apiSrv := &api.Server{DB: db, Registry: reg, Lifecycle: lc, Backups: bm, Auth: authn, Keystone: ks, Glance: gl, Neutron: nt,
		PublicURL: cfg.PublicURL, Region: cfg.Region, Logger: log, APIRate: apiRate(cfg.APIRate)}
	// Guest logs are published to the backups' object store, beside them.
	apiSrv.GuestLogs = &guestlogs.Manager{Agents: ep, Store: bm.Store}
	if cfg.GuestLogTuning != nil {
		cfg.GuestLogTuning(apiSrv.GuestLogs)
	}
	apiSrv.PublicURL = c.APIURL
	httpSrv := &http.Server{Handler: apiSrv.Handler(), ReadHeaderTimeout: min(10*time.Second, limits.ReadTimeout),
		ReadTimeout: limits.ReadTimeout, WriteTimeout: limits.WriteTimeout, IdleTimeout: limits.IdleTimeout, MaxHeaderBytes: 64 << 10,
		// Failed TLS handshakes (scanners, plain HTTP) are noise: debug.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}

	// Recovery runs before the API answers: it adopts the VMs that still
	// run and marks those to boot again (REBOOT), so no client sees an
	// instance ACTIVE whose server is down.
	if err := lc.Recover(ctx); err != nil {
		log.Error("recovering stopped servers", "err", err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	wg.Go(func() {
		if err := ep.Serve(life, agentLn); err != nil {
			errs <- err
		}
	})
	wg.Go(func() { engine.Run(life) })
	interval := cfg.RecoveryInterval
	if interval <= 0 {
		interval = time.Minute
	}
	wg.Go(func() { lc.RunRecovery(life, interval) })
	gcInterval := cfg.BackupGCInterval
	if gcInterval <= 0 {
		gcInterval = time.Hour
	}
	wg.Go(func() { bm.RunCollector(life, gcInterval) })
	wg.Go(func() {
		ln := limitListener(apiLn, limits.MaxConns)
		if tlsConfig != nil {
			ln = tls.NewListener(ln, tlsConfig)
		}
		if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("API: %w", err)
		}
	})
	log.Info("controller serving", "api", c.APIURL, "agent_endpoint", c.AgentAddr, "agents_dial", advertise,
		"database", db.String(), "mode", map[bool]string{true: "openstack", false: "embedded"}[cfg.Keystone != nil])

	go func() {
		select {
		case <-ctx.Done():
		case <-life.Done():
		case err := <-errs:
			c.err = err
		}
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		if httpSrv.Shutdown(sctx) != nil {
			// Requests still waiting (a configuration change waiting to be
			// applied): their contexts end, they answer what they know.
			httpSrv.Close()
		}
		scancel()
		cancel()
		wg.Wait()
		// The VMs live on (the data plane does not depend on the
		// controller), unless tests asked for them to die with it.
		if qd != nil && cfg.VMsDieWithController {
			qd.StopAll(context.Background(), 0)
		}
		db.Close()
		log.Info("controller stopped")
		close(c.done)
	}()
	return c, nil
}

// openBackups makes the backup manager over the configured object store
// and key-encryption key.
func openBackups(cfg Config, db *store.DB, reg *registry.Registry, lc *lifecycle.Manager, ep *agentendpoint.Endpoint,
	engine *tasks.Engine, log *slog.Logger) (*backups.Manager, error) {
	st, name := cfg.BackupStore, cfg.BackupStoreName
	if st == nil {
		local, err := objlocal.New(filepath.Join(cfg.StateDir, "backups"))
		if err != nil {
			return nil, fmt.Errorf("backup store: %w", err)
		}
		st, name = local, "local"
	}
	if name == "" {
		return nil, errors.New("backup store: BackupStoreName is required with BackupStore")
	}
	kekFile := cfg.BackupKEKFile
	if kekFile == "" {
		kekFile = filepath.Join(cfg.StateDir, "backup.kek")
	}
	kek, created, err := format.LoadOrCreateKEK(kekFile)
	if err != nil {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	if created {
		log.Warn("created the backup key-encryption key; keep a copy safe: without it no backup can be restored", "file", kekFile)
	}
	bm := &backups.Manager{DB: db, Registry: reg, Lifecycle: lc, Agents: ep, Store: st, StoreName: name, KEK: kek,
		Engine: engine, Logger: log}
	if cfg.BackupTuning != nil {
		cfg.BackupTuning(bm)
	}
	return bm, nil
}

// projectInUse names what a project still owns: instances (also those
// being deleted) and configuration groups.
// ProjectInUse names what a project still owns (instances, backups and
// configuration groups not deleted), "" when nothing: a project is deleted
// only when it owns nothing, through the identity API and the CLI alike.
func ProjectInUse(db *store.DB) keystone.ProjectInUseFunc {
	return func(ctx context.Context, project string) (string, error) {
		ins, err := instances.List(ctx, db, instances.ListOptions{Project: project})
		if err != nil {
			return "", err
		}
		cfgs, err := configurations.List(ctx, db, project)
		if err != nil {
			return "", err
		}
		bks, err := backups.List(ctx, db, backups.ListOptions{Project: project})
		if err != nil {
			return "", err
		}
		var what []string
		if len(ins) > 0 {
			what = append(what, fmt.Sprintf("%d instance(s)", len(ins)))
		}
		if len(bks) > 0 {
			what = append(what, fmt.Sprintf("%d backup(s)", len(bks)))
		}
		if len(cfgs) > 0 {
			what = append(what, fmt.Sprintf("%d configuration group(s)", len(cfgs)))
		}
		return strings.Join(what, ", "), nil
	}
}

// Stop stops the controller and waits for it.
func (c *Controller) Stop() error {
	c.cancel()
	<-c.done
	return c.err
}

// Wait waits until the controller stops (its context ended or a server
// failed).
func (c *Controller) Wait() error {
	<-c.done
	return c.err
}

// WriteOpenrc writes the OS_* variables that let `openstack` use the
// controller (0600: it holds a password).
func WriteOpenrc(path, apiURL, user, password, project, region string) error {
	if region == "" {
		region = "RegionOne"
	}
	content := fmt.Sprintf(`# strata controller at %[1]s: source this file, then use `+"`openstack database ...`"+`.
export OS_AUTH_URL=%[1]s/v3
export OS_IDENTITY_API_VERSION=3
export OS_AUTH_TYPE=password
export OS_USERNAME=%[2]s
export OS_PASSWORD=%[3]s
export OS_PROJECT_NAME=%[4]s
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_REGION_NAME=%[5]s
export OS_INTERFACE=public
`, apiURL, user, shellQuote(password), project, region)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return fmt.Errorf("openrc: %w", err)
	}
	return os.Rename(tmp, path)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// reachable turns a listen address into one a local client can dial.
func reachable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// DefaultAPIRate is the default of Config.APIRate: generous (Trove's
// default is 200 per verb and project), so that no client polling an
// instance's status trips it; it stops a runaway client, not a busy one.
const DefaultAPIRate = 6000

func apiRate(n int) int {
	switch {
	case n == 0:
		return DefaultAPIRate
	case n < 0:
		return 0
	}
	return n
}

// relayCommand runs the local driver's publish relay: this program.
func relayCommand() []string {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	return []string{exe, "controller", "publish-relay"}
}

// recordAgentRefusal shows an agent refused for its protocol version as
// the instance's fault (`instance show`), keeping its status: the
// instance is not lost, a rebuild onto a right image fixes it.
func recordAgentRefusal(db *store.DB, log *slog.Logger, instanceID, message string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now()
	if err := instances.Update(ctx, db, instanceID, now, `fault_message = ?, fault_details = ?, fault_at = ?`,
		message, "", store.Millis(now)); err != nil && !errors.Is(err, instances.ErrNotFound) {
		log.Error("recording an agent's refusal as the instance's fault failed", "instance", instanceID, "err", err)
	}
}

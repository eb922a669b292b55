// Package daemon wires the agent together: identity, operation journal,
// datastore manager, dispatch, heartbeats and the controller connection,
// plus systemd readiness and watchdog notifications. It owns the order of
// start-up and shut-down and nothing else: every decision lives in the
// package that does the work.
package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	sdaemon "github.com/coreos/go-systemd/v22/daemon"

	"strata/agent/datastore"
	"strata/agent/datastore/mariadb"
	"strata/agent/datastore/postgresql"
	"strata/agent/datastore/redis"
	"strata/agent/datastore/volume"
	"strata/agent/dispatch"
	"strata/agent/heartbeat"
	"strata/agent/identity"
	"strata/agent/ops"
	"strata/agent/transport"
	"strata/agent/wire"
)

// Config is what Run needs. Bootstrap must be validated already.
type Config struct {
	Bootstrap wire.Bootstrap
	StateDir  string
	Version   string
	Logger    *slog.Logger
	// Manager replaces the one NewManager would build (tests).
	Manager  datastore.Manager
	AgentLog dispatch.AgentLog
	// Notify sends an sd_notify state (default: to systemd, if any).
	Notify func(state string)
	// Tune adjusts the transport before it starts (tests: short timings).
	Tune func(*transport.ClientConfig)
	// ShutdownGrace bounds waiting for a running operation at shutdown
	// (default 60s); an operation cut off then is reported interrupted.
	ShutdownGrace time.Duration
}

// JournalFile is the operation journal's name in the state directory.
const JournalFile = "operations.journal"

// NewManager builds the datastore manager the bootstrap names.
func NewManager(b wire.Bootstrap, stateDir string, log *slog.Logger) (datastore.Manager, error) {
	switch b.Datastore.Manager {
	case "mariadb":
		return mariadb.New(mariadb.GuestConfig(stateDir, b.DataDevice, b.MountPoint, log))
	case "postgresql":
		// The bootstrap's version is the datastore version ("15"); the
		// cluster is Debian's <major>/main.
		major, _, _ := strings.Cut(b.Datastore.Version, ".")
		cfg, err := postgresql.GuestConfig(major, stateDir, b.DataDevice, b.MountPoint, log)
		if err != nil {
			return nil, err
		}
		return postgresql.New(cfg)
	case "redis":
		return redis.New(redis.GuestConfig(stateDir, b.DataDevice, b.MountPoint, log))
	}
	return nil, fmt.Errorf("this agent build has no datastore manager for %s (it has: mariadb, postgresql, redis)", b.Datastore.Manager)
}

// Run runs the agent until ctx ends, then shuts down in order: stop taking
// operations, let a running one finish (up to ShutdownGrace), close.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	notify := cfg.Notify
	if notify == nil {
		notify = func(state string) { sdaemon.SdNotify(false, state) }
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 60 * time.Second
	}
	b := cfg.Bootstrap
	hostKey, err := b.HostKey()
	if err != nil {
		return fmt.Errorf("bootstrap: controller_host_key: %w", err)
	}
	id, err := identity.Load(cfg.StateDir, b.InstanceID)
	if err != nil {
		return err
	}
	journal, err := ops.OpenJournal(filepath.Join(cfg.StateDir, JournalFile), 0)
	if err != nil {
		return err
	}
	defer journal.Close()
	if cut := journal.Interrupted(); len(cut) > 0 {
		log.Warn("operations were cut short by the last stop; they are reported interrupted, and the controller runs the idempotent ones again", "ops", cut)
	}
	mgr := cfg.Manager
	if mgr == nil {
		if mgr, err = NewManager(b, cfg.StateDir, log); err != nil {
			return err
		}
		if c, ok := mgr.(io.Closer); ok {
			defer c.Close()
		}
	}

	streams := &lateStreams{}
	disp := &dispatch.Dispatcher{Manager: mgr, AgentLog: cfg.AgentLog, Streams: streams, Datastore: b.Datastore.Manager}
	if b.DataDevice != "" {
		disp.Volume = volume.Volume{Device: b.DataDevice, MountPoint: mgr.DataPath()}
	}
	exec := ops.NewExecutor(journal, disp.Run, log)
	ccfg := transport.ClientConfig{
		Controllers:     b.Controllers,
		HostKey:         hostKey,
		Key:             id.Signer,
		EnrollmentToken: b.EnrollmentToken,
		Enrolled:        id.Enrolled,
		OnEnrolled:      id.MarkEnrolled,
		OnConnected: func(controller string) {
			if controller == "" {
				notify("STATUS=reconnecting to the controller")
			} else {
				notify("STATUS=connected to " + controller)
			}
		},
		InstanceID:        b.InstanceID,
		AgentVersion:      cfg.Version,
		Handler:           exec,
		Heartbeats:        heartbeatBuilder(mgr, exec.LastCompleted),
		HeartbeatInterval: b.HeartbeatInterval(),
		Logger:            log,
	}
	if cfg.Tune != nil {
		cfg.Tune(&ccfg)
	}
	client, err := transport.NewClient(ccfg)
	if err != nil {
		return err
	}
	streams.client = client

	execCtx, stopExec := context.WithCancel(context.Background())
	defer stopExec()
	execDone := make(chan struct{})
	go func() { exec.Run(execCtx); close(execDone) }()

	log.Info("strata-agent running", "version", cfg.Version, "instance", b.InstanceID,
		"datastore", b.Datastore.Manager+" "+b.Datastore.Version, "key", id.Fingerprint(), "enrolled", id.Enrolled,
		"controllers", b.Controllers)
	notify("READY=1\nSTATUS=connecting to the controller")
	go watchdog(ctx, notify, log)

	err = client.Run(ctx)
	notify("STOPPING=1")
	stopExec()
	select {
	case <-execDone:
	case <-time.After(cfg.ShutdownGrace):
		log.Warn("an operation is still running at shutdown; the next start reports it interrupted", "grace", cfg.ShutdownGrace)
	}
	log.Info("strata-agent stopped")
	return err
}

// lateStreams hands the dispatcher the transport's data channels; the
// client is made after the dispatcher (it needs the executor), so it is
// filled in before the first operation can arrive.
type lateStreams struct{ client *transport.Client }

func (l *lateStreams) OpenStream(ctx context.Context, opID string, index int) (dispatch.Stream, error) {
	return l.client.OpenStream(ctx, opID, index)
}

// watchdog pings systemd at a third of WatchdogSec while the process runs.
func watchdog(ctx context.Context, notify func(string), log *slog.Logger) {
	interval, err := sdaemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	log.Debug("systemd watchdog enabled", "interval", interval)
	t := time.NewTicker(interval / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			notify("WATCHDOG=1")
		}
	}
}

// heartbeatBuilder reports a replica's link too when the datastore can
// replicate (datastore.Replicator), and its users' digest when it can
// (datastore.UsersDigester).
func heartbeatBuilder(mgr datastore.Manager, lastCompleted func() string) heartbeat.Builder {
	b := heartbeat.Builder{Status: mgr, VolumePath: mgr.DataPath(), LastCompleted: lastCompleted}
	if r, ok := mgr.(datastore.Replicator); ok {
		b.Replication = r.ReplicationStatus
	}
	if d, ok := mgr.(datastore.UsersDigester); ok {
		b.UsersDigest = d.UsersDigest
	}
	return b
}

// Package redistest runs a private Redis server for tests: Debian's real
// redis-server with its own configuration, data directory, ACL file,
// socket and log under a temporary directory, no TCP port, prepared
// through the manager's own Prepare and stopped when the test (or test
// binary) ends.
//
// It is for tests only and must never be imported by the agent binary.
package redistest

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"strata/agent/datastore/redis"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// Binary returns the path of redis-server, or an error that says how to
// install it.
func Binary() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/bin/redis-server", "/usr/sbin/redis-server"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", errors.New("redis-server not found: these tests run a real Redis server; " +
		"install Debian's redis-server with `ci/deps.sh test` (as root) or `make test`")
}

// Instance is one private server and its manager.
type Instance struct {
	Dir     string
	Config  redis.Config
	Process *Process
	Manager *redis.Manager
	cleanup []func()
}

// New lays out a private server under dir (the socket goes to a short
// directory of its own if dir's path is too long for a unix socket) and
// returns an unprepared manager for it.
func New(dir string, log *slog.Logger) (*Instance, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	sockDir, removeSockDir, err := servertest.ShortDir(filepath.Join(dir, "run"), "rds")
	if err != nil {
		return nil, err
	}
	inst := &Instance{Dir: dir, cleanup: []func(){removeSockDir}}
	// The unit's RuntimeDirectory in the guest.
	if err := os.MkdirAll(sockDir, 0o755); err != nil {
		return nil, err
	}
	me, err := user.Current()
	if err != nil {
		return nil, err
	}
	cfg := redis.Config{
		MountPoint:    dir,
		DataDir:       filepath.Join(dir, "data"),
		Socket:        filepath.Join(sockDir, "redis.sock"),
		ConfigFile:    filepath.Join(dir, "etc", "redis.conf"),
		OverridesFile: filepath.Join(dir, "etc", "strata-overrides.conf"),
		ACLFile:       filepath.Join(dir, "data", "users.acl"),
		PidFile:       filepath.Join(sockDir, "redis.pid"),
		LogFile:       filepath.Join(dir, "log", "redis.log"),
		StateFile:     filepath.Join(dir, "state", "redis.json"),
		SecretFile:    filepath.Join(dir, "state", "redis-admin.secret"),
		OSUser:        me.Username,
		StartTimeout:  30 * time.Second,
		Logger:        log,
	}
	inst.Process = &Process{Binary: bin, ConfigFile: cfg.ConfigFile}
	inst.Process.Process = &servertest.Process{Command: inst.Process.command, Output: filepath.Join(dir, "redis-server.out")}
	cfg.Service = inst.Process
	inst.Config = cfg
	inst.Manager, err = redis.New(cfg)
	if err != nil {
		return nil, err
	}
	return inst, nil
}

// Close stops the server and releases everything.
func (i *Instance) Close() {
	i.Manager.Close()
	i.Process.Stop(context.Background())
	for _, f := range i.cleanup {
		f()
	}
}

// NewT is New in t.TempDir(), closed when t ends; a missing server binary
// fails the test with installation instructions.
func NewT(t testing.TB) *Instance {
	t.Helper()
	inst, err := New(t.TempDir(), Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		inst.Close()
		if t.Failed() {
			inst.LogTail(t)
		}
	})
	return inst
}

// LogTail writes the end of the server's log and output to the test log:
// what a failed test needs to say why.
func (i *Instance) LogTail(t testing.TB) { servertest.LogTail(t, i.Config.LogFile, i.Process.Output) }

// Prepared is New in dir followed by a successful Prepare(args); when
// prepare fails, the server is closed.
func Prepared(dir string, args wire.PrepareArgs) (*Instance, wire.PrepareResult, error) {
	inst, err := New(dir, Logger())
	if err != nil {
		return nil, wire.PrepareResult{}, err
	}
	res, err := servertest.Prepare(inst.Manager, args, time.Minute)
	if err != nil {
		inst.Close()
		return nil, res, err
	}
	return inst, res, nil
}

// PreparedT is NewT followed by a successful Prepare(args).
func PreparedT(t testing.TB, args wire.PrepareArgs) (*Instance, wire.PrepareResult) {
	t.Helper()
	inst := NewT(t)
	return inst, servertest.MustPrepare(t, inst.Manager, args, time.Minute)
}

// Logger logs to stderr under go test -v, else nowhere.
func Logger() *slog.Logger { return servertest.Logger() }

// Process runs redis-server directly: the tests' stand-in for the systemd
// unit. Redis saves a snapshot on SIGTERM if save points are set, then
// exits.
type Process struct {
	*servertest.Process
	Binary string
	// ConfigFile is the redis.conf the server reads.
	ConfigFile string
}

func (p *Process) command() *exec.Cmd {
	raiseFileLimit()
	cmd := exec.Command(p.Binary, p.ConfigFile, "--daemonize", "no")
	cmd.Dir = "/"
	return cmd
}

// guestFileLimit is the open-files limit Debian's redis-server.service
// gives the server (LimitNOFILE=65535); maxclients depends on it.
const guestFileLimit = 65535

var raiseOnce sync.Once

// raiseFileLimit gives this process, and so the servers it starts, the
// guest's open-files limit where the test may (as root); elsewhere the
// limit stays as it is.
func raiseFileLimit() {
	raiseOnce.Do(func() {
		var lim syscall.Rlimit
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil || lim.Cur >= guestFileLimit {
			return
		}
		want := syscall.Rlimit{Cur: guestFileLimit, Max: max(lim.Max, guestFileLimit)}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
			want.Max = lim.Max
			want.Cur = lim.Max
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
		}
	})
}

// UseConfigTemplate gives the (unprepared) instance's manager the image's
// default configuration template at path, as the guest's agent has it.
func (i *Instance) UseConfigTemplate(path string) error {
	i.Manager.Close()
	i.Config.ConfigTemplate = path
	m, err := redis.New(i.Config)
	if err != nil {
		return err
	}
	i.Manager = m
	return nil
}

// UseTCP makes the (unprepared) instance's server listen on 127.0.0.1 at
// port too, as a guest's does on its address: a replica reaches its
// primary over TCP.
func (i *Instance) UseTCP(port int) error {
	i.Manager.Close()
	i.Config.BindAddress = "127.0.0.1"
	i.Config.Port = port
	m, err := redis.New(i.Config)
	if err != nil {
		return err
	}
	i.Manager = m
	return nil
}

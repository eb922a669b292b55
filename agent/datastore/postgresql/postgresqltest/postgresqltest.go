// Package postgresqltest runs a private PostgreSQL server for tests:
// Debian's real postgres binary with its own data directory, socket,
// configuration and log under a temporary directory, no TCP port, prepared
// through the manager's own Prepare and stopped when the test (or test
// binary) ends. PostgreSQL refuses to run as root, so a root test run
// starts it as Debian's "postgres" account.
//
// It is for tests only and must never be imported by the agent binary.
package postgresqltest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"strata/agent/datastore"
	"strata/agent/datastore/postgresql"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// Binaries returns the paths of postgres and initdb from Debian's newest
// installed PostgreSQL, or an error that says how to install them.
func Binaries() (postgres, initdb string, err error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		return len(dirs[i]) > len(dirs[j]) || (len(dirs[i]) == len(dirs[j]) && dirs[i] > dirs[j])
	})
	for _, d := range dirs {
		p, i := filepath.Join(d, "postgres"), filepath.Join(d, "initdb")
		if isFile(p) && isFile(i) {
			return p, i, nil
		}
	}
	return "", "", errors.New("postgres / initdb not found under /usr/lib/postgresql/*/bin: these tests run a real PostgreSQL server; " +
		"install Debian's postgresql with `ci/deps.sh test` (as root) or `make test`")
}

// Instance is one private server and its manager.
type Instance struct {
	Dir     string
	Config  postgresql.Config
	Process *Process
	Manager *postgresql.Manager
}

// New lays out a private server under dir, which must be reachable by the
// server's account, and returns an unprepared manager for it.
func New(dir string, log *slog.Logger) (*Instance, error) {
	postgres, initdb, err := Binaries()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	me, err := user.Current()
	if err != nil {
		return nil, err
	}
	osUser := me.Username
	if os.Getuid() == 0 {
		osUser = "postgres"
		if _, err := user.Lookup(osUser); err != nil {
			return nil, fmt.Errorf("the tests run as root, so the server runs as %q, which does not exist (Debian's postgresql package creates it: `ci/deps.sh test`): %w", osUser, err)
		}
	}
	cfg := postgresql.Config{
		MountPoint:    dir,
		DataDir:       filepath.Join(dir, "pgdata"),
		SocketDir:     filepath.Join(dir, "run"),
		Port:          5432,
		ConfigFile:    filepath.Join(dir, "etc", "postgresql.conf"),
		HBAFile:       filepath.Join(dir, "etc", "pg_hba.conf"),
		IdentFile:     filepath.Join(dir, "etc", "pg_ident.conf"),
		OverridesFile: filepath.Join(dir, "etc", "strata-overrides.conf"),
		PidFile:       filepath.Join(dir, "run", "postgres.pid"),
		LogFile:       filepath.Join(dir, "log", "postgresql.log"),
		StateFile:     filepath.Join(dir, "state", "postgresql.json"),
		OSUser:        osUser,
		AgentOSUser:   me.Username,
		InitDB:        initdb,
		StartTimeout:  60 * time.Second,
		Logger:        log,
	}
	runAs, err := datastore.LookupOSUser(osUser)
	if err != nil {
		return nil, err
	}
	inst := &Instance{Dir: dir}
	inst.Process = &Process{Binary: postgres, ConfigFile: cfg.ConfigFile, User: runAs}
	// SIGINT is a fast shutdown: sessions are ended, as pg_ctlcluster -m
	// fast does.
	inst.Process.Process = &servertest.Process{Command: inst.Process.command, Output: cfg.LogFile, StopSignal: syscall.SIGINT}
	cfg.Service = inst.Process
	inst.Config = cfg
	inst.Manager, err = postgresql.New(cfg)
	if err != nil {
		return nil, err
	}
	return inst, nil
}

// Close stops the server and releases the manager's connections.
func (i *Instance) Close() {
	i.Manager.Close()
	i.Process.Stop(context.Background())
}

// TempDir makes a directory the server's account can reach (t.TempDir's
// parents are private to the test's user) and removes it when t ends.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "strata-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// NewT is New in a TempDir, closed when t ends; a missing server binary
// fails the test with installation instructions.
func NewT(t testing.TB) *Instance {
	t.Helper()
	inst, err := New(TempDir(t), Logger())
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

// LogTail writes the end of the server's log to the test log: what a
// failed test needs to say why.
func (i *Instance) LogTail(t testing.TB) { servertest.LogTail(t, i.Config.LogFile) }

// Prepared is New in dir followed by a successful Prepare(args); when
// prepare fails, the server is closed.
func Prepared(dir string, args wire.PrepareArgs) (*Instance, wire.PrepareResult, error) {
	inst, err := New(dir, Logger())
	if err != nil {
		return nil, wire.PrepareResult{}, err
	}
	res, err := servertest.Prepare(inst.Manager, args, 2*time.Minute)
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
	return inst, servertest.MustPrepare(t, inst.Manager, args, 2*time.Minute)
}

// Logger logs to stderr under go test -v, else nowhere.
func Logger() *slog.Logger { return servertest.Logger() }

// Process runs postgres directly as User: the tests' stand-in for the
// systemd unit.
type Process struct {
	*servertest.Process
	Binary string
	// ConfigFile is the postgresql.conf the server reads.
	ConfigFile string
	User       datastore.OSUser
}

func (p *Process) command() *exec.Cmd {
	cmd := exec.Command(p.Binary, "-c", "config_file="+p.ConfigFile)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.User.Credential()}
	return cmd
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// UseConfigTemplate gives the (unprepared) instance's manager the image's
// default configuration template at path, as the guest's agent has it.
func (i *Instance) UseConfigTemplate(path string) error {
	i.Manager.Close()
	i.Config.ConfigTemplate = path
	m, err := postgresql.New(i.Config)
	if err != nil {
		return err
	}
	i.Manager = m
	return nil
}

// ListenTCP makes the (unprepared) instance's server listen on
// 127.0.0.1:port too, as a guest's listens on its address: a replica's
// WAL receiver reaches its primary over TCP.
func (i *Instance) ListenTCP(port int) error {
	i.Manager.Close()
	i.Config.ListenAddresses = "127.0.0.1"
	i.Config.Port = port
	m, err := postgresql.New(i.Config)
	if err != nil {
		return err
	}
	i.Manager = m
	return nil
}

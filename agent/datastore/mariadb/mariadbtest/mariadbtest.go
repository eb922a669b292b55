// Package mariadbtest runs a private MariaDB server for tests: Debian's
// real mariadbd with its own data directory, socket and logs under a
// temporary directory, no TCP port, prepared through the manager's own
// Prepare and stopped when the test (or test binary) ends.
//
// It is for tests only and must never be imported by the agent binary.
package mariadbtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/agent/datastore/mariadb"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// Binaries returns the paths of mariadbd and mariadb-install-db, or an
// error that says how to install them.
func Binaries() (mariadbd, installDB string, err error) {
	find := func(name string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
			if p := filepath.Join(dir, name); fileExists(p) {
				return p
			}
		}
		return ""
	}
	mariadbd, installDB = find("mariadbd"), find("mariadb-install-db")
	if mariadbd == "" || installDB == "" {
		return "", "", errors.New("mariadbd / mariadb-install-db not found: these tests run a real MariaDB server; " +
			"install Debian's mariadb-server with `ci/deps.sh test` (as root) or `make test`")
	}
	return mariadbd, installDB, nil
}

// Instance is one private server and its manager.
type Instance struct {
	Dir     string
	Config  mariadb.Config
	Process *Process
	Manager *mariadb.Manager
	cleanup []func()
}

// New lays out a private server under dir (the socket goes to a short
// directory of its own if dir's path is too long for a unix socket) and
// returns an unprepared manager for it.
func New(dir string, log *slog.Logger) (*Instance, error) { return newInstance(dir, log, 0) }

// NewTCPT is NewT for a server that also listens on 127.0.0.1 at a free
// port (Config.Port), for tests where servers talk to each other
// (replication).
func NewTCPT(t testing.TB) *Instance {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	inst, err := newInstance(t.TempDir(), Logger(), port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Close)
	return inst
}

func newInstance(dir string, log *slog.Logger, port int) (*Instance, error) {
	mariadbd, installDB, err := Binaries()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	sockDir, removeSockDir, err := servertest.ShortDir(dir, "mdb")
	if err != nil {
		return nil, err
	}
	inst := &Instance{Dir: dir, cleanup: []func(){removeSockDir}}
	me, err := user.Current()
	if err != nil {
		return nil, err
	}
	defaults := filepath.Join(dir, "my.cnf")
	cfg := mariadb.Config{
		MountPoint:     dir,
		DataDir:        filepath.Join(dir, "data"),
		Socket:         filepath.Join(sockDir, "mysqld.sock"),
		PidFile:        filepath.Join(dir, "mysqld.pid"),
		ConfigFile:     filepath.Join(dir, "conf.d", "90-strata.cnf"),
		OverridesFile:  filepath.Join(dir, "conf.d", "95-strata-overrides.cnf"),
		ErrorLog:       filepath.Join(dir, "log", "error.log"),
		SlowQueryLog:   filepath.Join(dir, "log", "slow.log"),
		TmpDir:         filepath.Join(dir, "tmp"),
		StateFile:      filepath.Join(dir, "state", "mariadb.json"),
		OSUser:         me.Username,
		AdminUser:      me.Username,
		SkipNetworking: port == 0,
		Port:           port,
		BindAddress:    "127.0.0.1",
		InstallDB:      installDB,
		DefaultsFile:   defaults,
		StartTimeout:   60 * time.Second,
		Logger:         log,
	}
	for _, d := range []string{"log", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	// The server reads exactly the files the manager writes, in the
	// guest's order (its conf.d): base, log switches, group.
	root := fmt.Sprintf("!includedir %s\n", filepath.Dir(cfg.OverridesFile))
	if err := os.WriteFile(defaults, []byte(root), 0o644); err != nil {
		return nil, err
	}
	inst.Process = &Process{Binary: mariadbd, DefaultsFile: defaults}
	inst.Process.Process = &servertest.Process{Command: inst.Process.command, Output: filepath.Join(dir, "log", "mariadbd.out")}
	cfg.Service = inst.Process
	inst.Config = cfg
	inst.Manager, err = mariadb.New(cfg)
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
	t.Cleanup(inst.Close)
	return inst
}

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

// Process runs mariadbd directly: the tests' stand-in for the systemd unit.
type Process struct {
	*servertest.Process
	Binary string
	// DefaultsFile is the one option file mariadbd reads.
	DefaultsFile string
}

func (p *Process) command() *exec.Cmd {
	args := []string{"--defaults-file=" + p.DefaultsFile}
	if os.Getuid() == 0 {
		args = append(args, "--user=root")
	}
	return exec.Command(p.Binary, args...)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && !strings.HasSuffix(p, "/")
}

// UseConfigTemplate gives the (unprepared) instance's manager the image's
// default configuration template at path, as the guest's agent has it.
func (i *Instance) UseConfigTemplate(path string) error {
	i.Manager.Close()
	i.Config.ConfigTemplate = path
	m, err := mariadb.New(i.Config)
	if err != nil {
		return err
	}
	i.Manager = m
	return nil
}

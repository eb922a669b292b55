// Package ostest starts the private OpenStack of ci/openstack/start.sh —
// Debian's keystone, glance-api and trove-api on 127.0.0.1 with SQLite —
// for Go tests, and stops it by PID (ci/openstack/stop.sh) afterwards.
// One stack serves a whole test binary: Shared starts it on first use and
// Main stops it when the tests are done.
//
// A missing package is a test failure that names the ci/deps.sh group
// installing it; nothing is installed from here.
package ostest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Stack is a running private OpenStack.
type Stack struct {
	Dir         string // state: configs, databases, logs
	KeystoneURL string // with /v3
	GlanceURL   string
	TroveURL    string
	Password    string // of admin, in project admin
	ProjectID   string // of project admin
	// CloudsYAML holds cloud "strata-test" (admin): OS_CLIENT_CONFIG_FILE.
	CloudsYAML string
	// Seconds it took to start.
	Seconds float64
	// attached: started by someone else (StateEnv); not stopped here.
	attached bool
}

// StateEnv names a variable that points the tests at a stack already
// running in that state directory (ci/openstack/start.sh, and
// compute-start.sh for the compute tier), which they then leave running.
const StateEnv = "STRATA_OPENSTACK_STATE"

// Cloud is the clouds.yaml entry of the stack.
const Cloud = "strata-test"

var (
	once    sync.Mutex
	shared  *Stack
	failure error
)

// Root is the repository's root (where go.mod is).
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Missing lists the programs the stack needs that are not installed.
func Missing() []string {
	var out []string
	for _, bin := range []string{"uwsgi", "keystone-manage", "glance-api", "glance-manage", "trove-api", "sqlite3", "curl"} {
		if _, err := exec.LookPath(bin); err != nil {
			out = append(out, bin)
		}
	}
	return out
}

// Shared returns the package's stack, starting it on first use.
func Shared(t testing.TB) *Stack {
	t.Helper()
	once.Lock()
	defer once.Unlock()
	if shared == nil && failure == nil {
		if dir := os.Getenv(StateEnv); dir != "" {
			shared, failure = attach(dir)
		} else {
			shared, failure = start()
		}
	}
	if failure != nil {
		t.Fatalf("private OpenStack: %v", failure)
	}
	return shared
}

// Main runs the tests and stops the shared stack, if one was started.
func Main(m *testing.M) int {
	return After(m.Run())
}

// After stops the shared stack, if this binary started one, and returns
// code, or 1 when stopping failed: for a TestMain that runs the tests
// through another wrapper (os.Exit(ostest.After(storetest.Main(m)))).
func After(code int) int {
	once.Lock()
	defer once.Unlock()
	if shared != nil && !shared.attached {
		if err := shared.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "ostest:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

func start() (*Stack, error) {
	if miss := Missing(); len(miss) > 0 {
		return nil, fmt.Errorf("%s not installed: run `ci/deps.sh openstack` (as root) to install Debian's keystone, glance-api and trove-api", strings.Join(miss, ", "))
	}
	root, err := Root()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "strata-openstack-")
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "ci/openstack/start.sh"), dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		exec.Command(filepath.Join(root, "ci/openstack/stop.sh"), dir).Run()
		return nil, fmt.Errorf("ci/openstack/start.sh: %v\n%s", err, out.String())
	}
	s := &Stack{Dir: dir, CloudsYAML: filepath.Join(dir, "clouds.yaml"), Seconds: time.Since(t0).Seconds()}
	if err := s.readEnv(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// attach uses the stack running in dir.
func attach(dir string) (*Stack, error) {
	s := &Stack{Dir: dir, CloudsYAML: filepath.Join(dir, "clouds.yaml"), attached: true}
	if err := s.readEnv(); err != nil {
		return nil, fmt.Errorf("%s=%s: %w", StateEnv, dir, err)
	}
	return s, nil
}

// readEnv reads the URLs and credentials of stack.env.
func (s *Stack) readEnv() error {
	f, err := os.Open(filepath.Join(s.Dir, "stack.env"))
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "KEYSTONE_URL":
			s.KeystoneURL = v
		case "GLANCE_URL":
			s.GlanceURL = v
		case "TROVE_URL":
			s.TroveURL = v
		case "ADMIN_PASSWORD":
			s.Password = v
		case "PROJECT_ID":
			s.ProjectID = v
		}
	}
	return sc.Err()
}

// Stop kills the stack's processes by PID and removes its state.
func (s *Stack) Stop() error {
	root, err := Root()
	if err != nil {
		return err
	}
	out, err := exec.Command(filepath.Join(root, "ci/openstack/stop.sh"), s.Dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ci/openstack/stop.sh: %v: %s", err, out)
	}
	return nil
}

// Log returns the end of a service's log (keystone, glance, trove), for
// failure messages.
func (s *Stack) Log(service string) string {
	data, _ := os.ReadFile(filepath.Join(s.Dir, "logs", service+".log"))
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// Compute is the compute tier of ci/openstack/compute-start.sh, running
// on top of a Stack: Nova, Cinder, Neutron (one flat network) and
// Placement. Stack.Stop stops it too.
type Compute struct {
	NovaURL, CinderURL, NeutronURL, PlacementURL string
	// NetworkID is the flat network guests get a port on; GuestCIDR its
	// subnet, HostAddress the host's address on it.
	NetworkID, SubnetID, GuestCIDR, HostAddress string
	// NetnsPID holds the compute namespace (libvirtd, nova-compute,
	// cinder-volume run there).
	NetnsPID string
	// Seconds it took to start.
	Seconds float64
}

var (
	computeOnce    sync.Mutex
	computeShared  *Compute
	computeFailure error
)

// ComputeEnv names the variable that opts in to the compute tier: it
// needs root and `ci/deps.sh nova`, which make test-openstack does not
// install.
const ComputeEnv = "STRATA_OPENSTACK_COMPUTE"

// SharedCompute starts the compute tier on the shared stack on first use.
// Without STRATA_OPENSTACK_COMPUTE=1 the test is skipped.
func SharedCompute(t testing.TB) (*Stack, *Compute) {
	t.Helper()
	if os.Getenv(ComputeEnv) != "1" {
		t.Skipf("the compute tier is opt-in: %s=1 (needs root and ci/deps.sh nova)", ComputeEnv)
	}
	s := Shared(t)
	computeOnce.Lock()
	defer computeOnce.Unlock()
	if computeShared == nil && computeFailure == nil {
		if s.attached {
			computeShared, computeFailure = s.readComputeEnv(&Compute{})
		} else {
			computeShared, computeFailure = s.startCompute()
		}
	}
	if computeFailure != nil {
		t.Fatalf("compute tier: %v", computeFailure)
	}
	return s, computeShared
}

func (s *Stack) startCompute() (*Compute, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "ci/openstack/compute-start.sh"), s.Dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// A daemon that kept the script's output open would block Wait.
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		exec.Command(filepath.Join(root, "ci/openstack/compute-stop.sh"), s.Dir).Run()
		return nil, fmt.Errorf("ci/openstack/compute-start.sh: %v\n%s", err, out.String())
	}
	return s.readComputeEnv(&Compute{Seconds: time.Since(t0).Seconds()})
}

// readComputeEnv reads compute/compute.env into c.
func (s *Stack) readComputeEnv(c *Compute) (*Compute, error) {
	data, err := os.ReadFile(filepath.Join(s.Dir, "compute", "compute.env"))
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "NOVA_URL":
			c.NovaURL = v
		case "CINDER_URL":
			c.CinderURL = v
		case "NEUTRON_URL":
			c.NeutronURL = v
		case "PLACEMENT_URL":
			c.PlacementURL = v
		case "NETWORK_ID":
			c.NetworkID = v
		case "SUBNET_ID":
			c.SubnetID = v
		case "GUEST_CIDR":
			c.GuestCIDR = v
		case "HOST_ADDRESS":
			c.HostAddress = v
		case "NETNS_PID":
			c.NetnsPID = v
		}
	}
	return c, nil
}

// ComputeLog returns the end of a compute tier service's log (nova-api,
// nova-compute, cinder-volume, neutron-server, ...), for failure messages.
func (s *Stack) ComputeLog(service string) string {
	data, _ := os.ReadFile(filepath.Join(s.Dir, "compute", "logs", service+".log"))
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// Virsh runs virsh against the compute namespace's libvirtd (what Nova's
// guests look like to libvirt) and returns its output.
func (c *Compute) Virsh(ctx context.Context, args ...string) (string, error) {
	if c.NetnsPID == "" {
		return "", errors.New("compute.env names no NETNS_PID")
	}
	argv := append([]string{"-t", c.NetnsPID, "--net", "--mount", "--", "virsh", "-c", "qemu:///system"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", argv...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("virsh %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

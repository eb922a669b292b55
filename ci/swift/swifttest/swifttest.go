// Package swifttest starts the private Swift of ci/swift/start.sh —
// Debian's swift-proxy (with s3api), swift-account, swift-container,
// swift-object and memcached on 127.0.0.1 — for Go tests, and stops it by
// PID (ci/swift/stop.sh) afterwards. One server serves a whole test
// binary: Shared starts it on first use and Main stops it when the tests
// are done.
//
// A missing package is a test failure that names the ci/deps.sh group
// installing it; nothing is installed from here.
package swifttest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"strata/ci/openstack/ostest"
)

// Server is a running private Swift.
type Server struct {
	Dir string // state: configuration, rings, data, logs

	AuthURL string // tempauth's /auth/v1.0
	User    string // account:user
	Key     string
	// Proxy is the proxy's host:port (Swift and S3 API).
	Proxy string

	S3Endpoint  string
	S3AccessKey string
	S3SecretKey string
	S3Region    string

	// Seconds it took to start.
	Seconds float64
}

var (
	once    sync.Mutex
	shared  *Server
	failure error
)

// Missing lists the programs the server needs that are not installed.
func Missing() []string {
	var out []string
	for _, bin := range []string{"/usr/bin/swift-proxy-server", "/usr/bin/swift-object-server",
		"/usr/bin/swift-container-server", "/usr/bin/swift-account-server", "memcached", "curl"} {
		if _, err := exec.LookPath(bin); err != nil {
			out = append(out, filepath.Base(bin))
		}
	}
	return out
}

// Shared returns the package's server, starting it on first use.
func Shared(t testing.TB) *Server {
	t.Helper()
	once.Lock()
	defer once.Unlock()
	if shared == nil && failure == nil {
		shared, failure = Start()
	}
	if failure != nil {
		t.Fatalf("private Swift: %v", failure)
	}
	return shared
}

// Main runs the tests and stops the shared server, if one was started.
func Main(m *testing.M) int {
	code := m.Run()
	once.Lock()
	defer once.Unlock()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "swifttest:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Start starts a server of its own; the caller stops it.
func Start() (*Server, error) {
	if miss := Missing(); len(miss) > 0 {
		return nil, fmt.Errorf("%s not installed: run `ci/deps.sh swift` (as root) to install Debian's Swift and memcached", strings.Join(miss, ", "))
	}
	root, err := ostest.Root()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "strata-swift-")
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "ci/swift/start.sh"), dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), fmt.Sprintf("STRATA_SWIFT_WATCH_PID=%d", os.Getpid()))
	if err := cmd.Run(); err != nil {
		exec.Command(filepath.Join(root, "ci/swift/stop.sh"), dir).Run()
		return nil, fmt.Errorf("ci/swift/start.sh: %v\n%s", err, out.String())
	}
	s := &Server{Dir: dir, Seconds: time.Since(t0).Seconds()}
	f, err := os.Open(filepath.Join(dir, "swift.env"))
	if err != nil {
		s.Stop()
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "SWIFT_AUTH_URL":
			s.AuthURL = v
		case "SWIFT_USER":
			s.User = v
		case "SWIFT_KEY":
			s.Key = v
		case "SWIFT_PROXY":
			s.Proxy = v
		case "S3_ENDPOINT":
			s.S3Endpoint = v
		case "S3_ACCESS_KEY":
			s.S3AccessKey = v
		case "S3_SECRET_KEY":
			s.S3SecretKey = v
		case "S3_REGION":
			s.S3Region = v
		}
	}
	return s, nil
}

// Stop kills the server's processes by PID and removes its state.
func (s *Server) Stop() error {
	root, err := ostest.Root()
	if err != nil {
		return err
	}
	out, err := exec.Command(filepath.Join(root, "ci/swift/stop.sh"), s.Dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ci/swift/stop.sh: %v: %s", err, out)
	}
	return nil
}

// PIDs are the server's processes (memcached, the four servers and the
// watchdog).
func (s *Server) PIDs() []int {
	data, _ := os.ReadFile(filepath.Join(s.Dir, "pids"))
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// RSS is the resident memory of the server's processes, in bytes.
func (s *Server) RSS() int64 {
	var total int64
	for _, pid := range s.PIDs() {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

// Log returns the end of a server's log (proxy, account, container,
// object, memcached), for failure messages.
func (s *Server) Log(name string) string {
	data, _ := os.ReadFile(filepath.Join(s.Dir, "logs", name+".log"))
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

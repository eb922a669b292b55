package publish_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"strata/builder/manifest"
	"strata/ci/openstack/ostest"
)

// The rig: a real strata binary (built once per test run), started as a
// controller process per test and stopped by PID; tiny qcow2 images with
// the .sha256, manifest and recipe a build writes; and, for the tests
// against OpenStack, the private keystone/glance-api/trove-api stack of
// ci/openstack (ostest).

var strataBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "strata-publish-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	root, err := ostest.Root()
	if err == nil {
		strataBin = filepath.Join(dir, "strata")
		cmd := exec.Command("go", "build", "-o", strataBin, ".")
		cmd.Dir, cmd.Stderr = root, os.Stderr
		err = cmd.Run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "building strata:", err)
		os.Exit(1)
	}
	code := ostest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// controller is a strata controller process.
type controller struct {
	URL   string
	State string
	cmd   *exec.Cmd
	log   *os.File
}

var apiLine = regexp.MustCompile(`strata controller: API (\S+),`)

// startController runs `strata controller serve` with extra flags and
// stops it (SIGTERM to its PID, then SIGKILL) when the test ends.
func startController(t *testing.T, extra ...string) *controller {
	t.Helper()
	state := t.TempDir()
	logf, err := os.Create(filepath.Join(state, "controller.log"))
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"controller", "serve", "--state-dir", state, "--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"}, extra...)
	cmd := exec.Command(strataBin, args...)
	// If this test binary dies, the controller dies with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &controller{State: state, cmd: cmd, log: logf}
	t.Cleanup(c.stop)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := apiLine.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case c.URL = <-found:
	case <-time.After(30 * time.Second):
		data, _ := os.ReadFile(logf.Name())
		t.Fatalf("the controller did not start within 30 s:\n%s", data)
	}
	return c
}

func (c *controller) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
	c.log.Close()
}

func (c *controller) logText() string {
	data, _ := os.ReadFile(c.log.Name())
	return string(data)
}

// useOpenrc sets the OS_* variables of the embedded controller's openrc.
func useOpenrc(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	clearOS(t)
	for _, line := range strings.Split(string(data), "\n") {
		line, ok := strings.CutPrefix(line, "export ")
		if !ok {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		t.Setenv(k, strings.Trim(v, "'"))
	}
}

// clearOS unsets every OS_* variable for the test.
func clearOS(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OS_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// fixture is a built image as `strata build` leaves it.
type fixture struct {
	Dir, Recipe, Image, SHA256 string
}

// makeImage writes NAME.qcow2 (a blank qcow2 of sizeMB: the size makes
// the content), its .sha256 and manifest, and a recipe for datastore
// mariadb VERSION with the rules file (may be "").
func makeImage(t *testing.T, dir, version string, sizeMB int, rules string) fixture {
	t.Helper()
	name := "mariadb-" + version
	f := fixture{Dir: dir, Image: filepath.Join(dir, name+".qcow2"), Recipe: filepath.Join(dir, name+".yaml")}
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", f.Image, fmt.Sprintf("%dM", sizeMB)).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img (install qemu-utils: ci/deps.sh build): %v: %s", err, out)
	}
	data, err := os.ReadFile(f.Image)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	f.SHA256 = hex.EncodeToString(sum[:])
	if err := os.WriteFile(f.Image+".sha256", []byte(f.SHA256+"  "+name+".qcow2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{FormatVersion: manifest.Version, Image: name, Builder: "test", Created: time.Now().UTC(), Arch: "amd64",
		Agent:     &manifest.Agent{Version: "test", SHA256: strings.Repeat("a", 64)},
		Datastore: &manifest.Datastore{Name: "mariadb", Version: version, Manager: "mariadb", Port: 3306},
		Outputs:   []manifest.Output{{File: name + ".qcow2", Format: "qcow2", SHA256: f.SHA256, Size: int64(len(data)), VirtualSize: int64(sizeMB) << 20}}}
	if err := m.Write(filepath.Join(dir, name+".manifest.json")); err != nil {
		t.Fatal(err)
	}
	rulesLine := ""
	if rules != "" {
		abs, _ := filepath.Abs(rules)
		rulesLine = "  rules: " + abs + "\n"
	}
	recipe := fmt.Sprintf(`name: %s
elements: [vm, debian-minimal]
datastore:
  name: mariadb
  version: "%s"
  manager: mariadb
  port: 3306
  packages: [mariadb-server]
  boot_timeout: 600
%s`, name, version, rulesLine)
	if err := os.WriteFile(f.Recipe, []byte(recipe), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return c
}

//go:build e2e && packer

// The Packer plugin's end-to-end tests: a real packer binary (built from
// the Go module proxy by `make packer-bin`, named by $STRATA_PACKER) loads
// bin/packer-plugin-strata, installed with `packer plugins install --path`,
// and runs the example template ci/packer/strata.pkr.hcl. Run them with
// `make test-packer`:
//
//	go test -tags 'e2e packer' -run Packer -timeout 60m ./ci/e2e/

package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/builder/qemu"
)

// pluginSource is the plugin's source address in the example template.
const pluginSource = "strata.local/strata/strata"

var buildPluginOnce sync.Once
var buildPluginErr error

// packerRig runs the packer binary under test with a private plugin
// directory holding this tree's plugin.
type packerRig struct {
	t      *testing.T
	packer string
	env    []string
	log    string // PACKER_LOG_PATH
}

func newPackerRig(t *testing.T) *packerRig {
	t.Helper()
	bin := os.Getenv("STRATA_PACKER")
	if bin == "" {
		t.Fatal("STRATA_PACKER is not set: run `make test-packer` (it builds packer with `make packer-bin` and sets it)")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("STRATA_PACKER=%s: %v (make packer-bin builds it)", bin, err)
	}
	buildPluginOnce.Do(func() {
		for _, b := range [][2]string{{"bin/packer-plugin-strata", "./builder/packer/cmd/packer-plugin-strata"}, {"bin/strata-agent", "./agent/cmd/strata-agent"}} {
			cmd := exec.Command("go", "build", "-o", b[0], b[1])
			cmd.Dir = repo
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildPluginErr = fmt.Errorf("go build %s: %v\n%s", b[1], err, out)
				return
			}
		}
	})
	if buildPluginErr != nil {
		t.Fatal(buildPluginErr)
	}
	dir := t.TempDir()
	r := &packerRig{t: t, packer: bin, log: filepath.Join(dir, "packer.log")}
	r.env = append(os.Environ(),
		"PACKER_PLUGIN_PATH="+filepath.Join(dir, "plugins"),
		"PACKER_CONFIG_DIR="+filepath.Join(dir, "config"),
		"PACKER_CACHE_DIR="+filepath.Join(dir, "cache"),
		"CHECKPOINT_DISABLE=1",
		"PACKER_LOG=1", "PACKER_LOG_PATH="+r.log,
		"DIB_IMAGE_CACHE="+cache,
	)
	out, err := r.run("plugins", "install", "--path", filepath.Join(repo, "bin", "packer-plugin-strata"), pluginSource)
	if err != nil || !strings.Contains(out, "Successfully installed plugin "+pluginSource) {
		t.Fatalf("packer plugins install: %v\n%s", err, out)
	}
	return r
}

// run runs packer in the repository root (the example's relative paths
// are the repository's) and returns its combined output.
func (r *packerRig) run(args ...string) (string, error) {
	cmd := exec.Command(r.packer, args...)
	cmd.Dir = repo
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// build runs `packer build` on the example with vars and fails the test
// unless it succeeds; it returns the output and the wall time.
func (r *packerRig) build(only string, vars ...string) (string, time.Duration) {
	r.t.Helper()
	start := time.Now()
	out, err := r.run(r.args("build", only, vars...)...)
	d := time.Since(start)
	r.t.Logf("packer build -only %s (%.1fs):\n%s", only, d.Seconds(), tail(out, 60))
	if err != nil {
		logTail, _ := os.ReadFile(r.log)
		r.t.Fatalf("packer build -only %s: %v\nPACKER_LOG tail:\n%s", only, err, tail(string(logTail), 40))
	}
	return out, d
}

// fail runs packer (build or validate) expecting an error whose output
// contains every one of want.
func (r *packerRig) fail(verb, only string, want []string, vars ...string) string {
	r.t.Helper()
	out, err := r.run(r.args(verb, only, vars...)...)
	if err == nil {
		r.t.Fatalf("packer %s -only %s %v succeeded, want an error naming %q:\n%s", verb, only, vars, want, tail(out, 40))
	}
	r.t.Logf("packer %s -only %s failed as it should:\n%s", verb, only, tail(out, 25))
	for _, w := range want {
		if !strings.Contains(out, w) {
			r.t.Errorf("packer %s -only %s %v: output does not name %q:\n%s", verb, only, vars, w, tail(out, 40))
		}
	}
	return out
}

func (r *packerRig) args(verb, only string, vars ...string) []string {
	args := []string{verb}
	if verb == "build" {
		args = append(args, "-color=false", "-on-error=cleanup", "-timestamp-ui")
	}
	if only != "" {
		args = append(args, "-only", only)
	}
	for _, v := range vars {
		args = append(args, "-var", v)
	}
	return append(args, "ci/packer/strata.pkr.hcl")
}

// sshKey returns a test key pair, kept in the image cache so the image
// built with its public half stays cached between runs.
func sshKey(t *testing.T) (private, public string, signer ssh.Signer) {
	t.Helper()
	dir := filepath.Join(cache, "e2e", "packer-ssh")
	private, public = filepath.Join(dir, "id_ed25519"), filepath.Join(dir, "id_ed25519.pub")
	if _, err := os.Stat(public); err != nil {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		block, err := ssh.MarshalPrivateKey(priv, "strata packer e2e")
		if err != nil {
			t.Fatal(err)
		}
		sp, _ := ssh.NewPublicKey(pub)
		if err := os.WriteFile(private, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(public, ssh.MarshalAuthorizedKey(sp), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(private)
	if err != nil {
		t.Fatal(err)
	}
	if signer, err = ssh.ParsePrivateKey(b); err != nil {
		t.Fatal(err)
	}
	return private, public, signer
}

// freePortNumber is a free TCP port on the loopback.
func freePortNumber(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestPackerStrataBuilderBuildsARecipeAndStrataRegisterRegistersItIntoALocalController
// is (a): `packer build` of the example's image build — the strata builder
// on a small recipe (debian-minimal with a datastore section), then
// strata-register, which publishes through builder/publish (the code of
// `strata image publish`) into a running strata controller found through
// its openrc — and the version is then visible through that controller's
// Trove API with the registered image. The same build against an
// unreachable identity endpoint fails naming it.
func TestPackerStrataBuilderBuildsARecipeAndStrataRegisterRegistersItIntoALocalController(t *testing.T) {
	r := newPackerRig(t)
	work := t.TempDir()
	rcp := filepath.Join(work, "packer-minimal.yaml")
	if err := os.WriteFile(rcp, []byte(`# The debian-minimal image, registered as a (never launched) datastore version.
name: packer-minimal
elements: [vm, debian-minimal, config-drive]
env:
  DIB_RELEASE: bookworm
formats: [qcow2]
datastore:
  name: mariadb
  version: packer-e2e
  manager: mariadb
  port: 3306
  packages: [mariadb-server]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(work, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	ctl := startController(t, state)
	api := ctl.login(t)
	env := r.env
	for k, v := range ctl.openrc(t) {
		r.env = append(r.env, k+"="+v)
	}

	out := filepath.Join(work, "out")
	res, d := r.build("image.*", "recipe="+rcp, "output_dir="+out)
	t.Logf("(a) wall time: %.1fs", d.Seconds())

	img := filepath.Join(out, "packer-minimal.qcow2")
	for _, f := range []string{img, img + ".sha256", filepath.Join(out, "packer-minimal.manifest.json"), filepath.Join(out, "packer-minimal.spdx.json")} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("artifact file missing: %v", err)
		}
	}
	digest := "sha256:" + fileSHA256(t, img)
	if !strings.Contains(res, digest) {
		t.Errorf("packer's artifact summary does not carry the image digest %s", digest)
	}
	m := regexp.MustCompile(`strata-register: image (\S+) \(uploaded: true\), datastore version (\S+) \(created: true\)`).FindStringSubmatch(res)
	if m == nil {
		t.Fatalf("strata-register did not report a new version with an uploaded image")
	}
	imageID, versionID := m[1], m[2]

	version := api.must(t, 200, "GET", "/datastores/mariadb/versions/packer-e2e", nil)["version"].(map[string]any)
	if version["id"] != versionID || version["image"] != imageID || version["name"] != "packer-e2e" {
		t.Errorf("the controller's API shows %v, want version %s with image %s", version, versionID, imageID)
	}

	// Unreachable identity service: a Packer error naming it.
	r.env = append(append([]string{}, env...), "OS_AUTH_URL=http://127.0.0.1:1/v3", "OS_USERNAME=admin", "OS_PASSWORD=x",
		"OS_PROJECT_NAME=admin", "OS_USER_DOMAIN_NAME=Default", "OS_PROJECT_DOMAIN_NAME=Default")
	r.fail("build", "image.*", []string{"strata-register", "127.0.0.1:1"}, "recipe="+rcp, "output_dir="+out)
}

// TestPackerElementsProvisionerAppliesElementsAndTheAgentOverSSHToAVM is
// (b): an image built by strata with sshd and a key baked in by a test
// element is booted under qemu; `packer build` of the example's machine
// build — the null builder, SSH to that VM as a sudo user — applies a test
// element and strata-agent (with its config-drive dependency) through
// strata-elements. Over SSH the test then sees every hook's effect, in
// DIB's order, as root and with DIB's environment, the agent installed
// read-only with its unit enabled, and the hooks directory gone. A second
// build applying an element whose hook fails must fail naming the hook
// and the element, again leaving no hooks directory behind.
func TestPackerElementsProvisionerAppliesElementsAndTheAgentOverSSHToAVM(t *testing.T) {
	r := newPackerRig(t)
	key, pub, signer := sshKey(t)
	work := t.TempDir()
	img := filepath.Join(work, "packer-sshd")
	t0 := time.Now()
	run(t, []string{"ELEMENTS_PATH=" + filepath.Join(repo, "ci/e2e/elements"), "DIB_PACKER_SSH_PUBKEY=" + pub},
		"build", "-f", "images/debian-minimal.yaml", "-o", img, "--image-cache", cache, "packer-sshd")
	t.Logf("image with sshd built in %.1fs", time.Since(t0).Seconds())

	port := freePortNumber(t)
	// Cleanups run last-in first-out: the VM is asked to stop before its
	// context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	t.Cleanup(cancel)
	t1 := time.Now()
	vm, err := qemu.Start(ctx, qemu.Config{
		Name: "strata-packer-e2e", Disk: qemu.Drive{Path: img + ".qcow2", Format: "qcow2", Snapshot: true},
		Forwards: []qemu.Forward{{HostPort: port, GuestPort: 22}}, SerialLog: filepath.Join(work, "serial.log"),
		MemoryMiB: 1024, CPUs: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := vm.Stop(30 * time.Second); err != nil {
			t.Logf("VM stop: %v", err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(work, "serial.log"))
			t.Logf("serial console:\n%s", tail(string(b), 40))
		}
	})
	t.Logf("VM booting (%s), SSH forwarded from 127.0.0.1:%d", vm.Accel(), port)

	machine := []string{"ssh_port=" + itoa(port), "ssh_private_key_file=" + key, `elements_path=["ci/e2e/elements"]`}
	out, d := r.build("machine.*", append(machine, `elements=["packer-test","strata-agent"]`,
		`element_env={DIB_PACKER_TEST_VALUE="from-packer"}`)...)
	t.Logf("(b) wall time: %.1fs (from VM start: %.1fs)", d.Seconds(), time.Since(t1).Seconds())
	for _, want := range []string{"install.d/01-package-installs", "install.d/50-packer-test", "post-install.d/80-strata-agent",
		"strata-agent: installing agent sha256", "PROFILING"} {
		if !strings.Contains(out, want) {
			t.Errorf("packer's output lacks %q (hook progress and output must reach Packer's UI)", want)
		}
	}

	c := dialSSH(t, port, signer)
	defer c.Close()
	order := sshRun(t, c, "cat /etc/strata-packer-test/order")
	wantOrder := regexp.MustCompile(`^pre-install\.d uid=0
install\.d greeting=hello-from-environment-d value=from-packer image=\S+ hooks=/tmp/strata-hooks\.\w{10} static=static-content uid=0
post-install\.d helper-ran
$`)
	if !wantOrder.MatchString(order) {
		t.Errorf("the test element's hooks left:\n%s", order)
	}
	// The hooks ran from a private directory made for the build (root's,
	// unpredictable name) and the upload was staged in one of the SSH
	// user's; neither stays.
	const leftovers = "ls -d /tmp/strata-hooks.* /tmp/strata-upload.* /tmp/in_target.d 2>/dev/null | wc -l"
	agent := fileSHA256(t, filepath.Join(repo, "bin", "strata-agent"))
	checks := map[string]string{
		"sha256sum /usr/sbin/strata-agent | cut -d' ' -f1": agent,
		"stat -c %a:%U /usr/sbin/strata-agent":             "555:root",
		"systemctl is-enabled strata-agent.service":        "enabled",
		"systemctl is-enabled strata-config-drive.service": "enabled",
		"jq --version >/dev/null && echo jq-installed":     "jq-installed",
		leftovers: "0",
	}
	for cmd, want := range checks {
		if got := strings.TrimSpace(sshRun(t, c, cmd)); got != want {
			t.Errorf("%s: got %q, want %q", cmd, got, want)
		}
	}

	// A failing hook fails the build, naming the hook and its element;
	// nothing of the upload stays on the machine.
	r.fail("build", "machine.*", []string{"hook install.d/50-packer-fail of element packer-fail failed", "exit status 3", "packer-fail: failing on purpose"},
		append(machine, `elements=["packer-fail"]`)...)
	if got := strings.TrimSpace(sshRun(t, c, leftovers)); got != "0" {
		t.Errorf("after the failed build, %s hooks directories or uploads are left on the machine", got)
	}
	// An unknown element is refused before any machine is touched.
	r.fail("validate", "machine.*", []string{"element no-such-element not found"}, append(machine, `elements=["no-such-element"]`)...)

	// Ctrl-C while a hook runs: packer stops, and on the machine neither
	// the hook nor what it started in the background keeps running, and
	// the upload is gone.
	r.interrupt("machine.*", "--> install.d/50-packer-slow", append(machine, `elements=["packer-slow"]`)...)
	// Packer kills the plugin right after cancelling: the machine cleans up
	// by itself once the plugin's SSH sessions end.
	deadline := time.Now().Add(30 * time.Second)
	for {
		procs := strings.TrimSpace(sshRun(t, c, "pgrep -c -f 'sleep 60[01]' || true"))
		left := strings.TrimSpace(sshRun(t, c, leftovers))
		if procs == "0" && left == "0" {
			t.Logf("the machine was clean %.1fs after packer stopped", 30-time.Until(deadline).Seconds())
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("30s after Ctrl-C, %s processes of the interrupted hook still run and %s hooks directories or uploads are left", procs, left)
			break
		}
		time.Sleep(time.Second)
	}
}

// interrupt runs packer build, sends it SIGINT once its output contains
// marker, and checks it stops, unsuccessfully, soon. The signal goes to
// packer's process group, as a terminal's Ctrl-C does: packer's outer
// process (panicwrap) leaves interrupts to the inner one, which gets them
// from the terminal too.
func (r *packerRig) interrupt(only, marker string, vars ...string) {
	r.t.Helper()
	cmd := exec.Command(r.packer, r.args("build", only, vars...)...)
	cmd.Dir, cmd.Env = repo, r.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	kill := func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Minute)
	for !strings.Contains(out.String(), marker) {
		if time.Now().After(deadline) {
			kill()
			<-done
			r.t.Fatalf("packer never reached %q:\n%s", marker, tail(out.String(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t0 := time.Now()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	select {
	case err := <-done:
		r.t.Logf("packer stopped %.1fs after Ctrl-C (%v):\n%s", time.Since(t0).Seconds(), err, tail(out.String(), 15))
		if err == nil {
			r.t.Error("an interrupted packer build succeeded")
		}
	case <-time.After(2 * time.Minute):
		kill()
		<-done
		r.t.Fatalf("packer did not stop within 2 minutes of Ctrl-C:\n%s", tail(out.String(), 40))
	}
}

// lockedBuffer is an io.Writer the test can read while a command writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func dialSSH(t *testing.T, port int, signer ssh.Signer) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &ssh.ClientConfig{
		User: "packer", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		// The VM made its host key at first boot; nothing to pin it to.
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sshRun runs a command as root (sudo) on the VM and returns its stdout.
func sshRun(t *testing.T, c *ssh.Client, cmd string) string {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var stdout, stderr bytes.Buffer
	s.Stdout, s.Stderr = &stdout, &stderr
	if err := s.Run("sudo -n sh -c " + shellQuote(cmd)); err != nil {
		t.Errorf("ssh %s: %v: %s", cmd, err, stderr.String())
	}
	return stdout.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// TestPackerRefusesBadInputNamingIt: an unknown recipe and an unknown
// element in a recipe are Packer errors naming them at `packer validate`;
// a hook failing in the strata builder fails `packer build` naming the hook
// and its element, and leaves no image file and no build directory.
func TestPackerRefusesBadInputNamingIt(t *testing.T) {
	r := newPackerRig(t)
	key, _, _ := sshKey(t)
	work := t.TempDir()
	common := []string{"ssh_private_key_file=" + key}

	r.fail("validate", "image.*", []string{"images/no-such-recipe.yaml"}, append(common, "recipe=images/no-such-recipe.yaml")...)

	bad := filepath.Join(work, "bad-element.yaml")
	os.WriteFile(bad, []byte("name: bad-element\nelements: [vm, debian-minimal, no-such-element]\ndatastore: {name: mariadb, version: bad, manager: mariadb}\n"), 0o644)
	r.fail("validate", "image.*", []string{"no-such-element"}, append(common, "recipe="+bad)...)

	failing := filepath.Join(work, "failing.yaml")
	os.WriteFile(failing, []byte("name: failing\nelements: [vm, debian-minimal, config-drive, packer-fail]\nenv: {DIB_RELEASE: bookworm}\ndatastore: {name: mariadb, version: failing, manager: mariadb}\n"), 0o644)
	out := filepath.Join(work, "out")
	before, _ := filepath.Glob(filepath.Join(cache, "tmp", "build-*"))
	failed := r.fail("build", "image.*", []string{"hook install.d/50-packer-fail of element packer-fail failed", "exit status 3"},
		append(common, "recipe="+failing, "output_dir="+out, `elements_path=["ci/e2e/elements"]`)...)
	if left, _ := os.ReadDir(out); len(left) > 0 {
		var names []string
		for _, e := range left {
			names = append(names, e.Name())
		}
		t.Errorf("the failed build left files in the output directory: %v", names)
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(mi), " "+cache) {
		t.Errorf("something is mounted below the cache %s after the failed build", cache)
	}
	after, _ := filepath.Glob(filepath.Join(cache, "tmp", "build-*"))
	for _, d := range after {
		if !containsString(before, d) {
			t.Errorf("the failed build left its build directory %s", d)
		}
	}
	if strings.Contains(failed, "Publishing") {
		t.Errorf("strata-register ran after a failed build")
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestPackerInterruptedStrataBuildLeavesNothingBehind: Ctrl-C while a hook
// of the strata builder runs stops `packer build`; the build's hook
// processes, mounts, build directory and outputs are all gone.
func TestPackerInterruptedStrataBuildLeavesNothingBehind(t *testing.T) {
	r := newPackerRig(t)
	key, _, _ := sshKey(t)
	work := t.TempDir()
	slow := filepath.Join(work, "slow.yaml")
	os.WriteFile(slow, []byte("name: slow\nelements: [vm, debian-minimal, config-drive, packer-slow]\nenv: {DIB_RELEASE: bookworm}\ndatastore: {name: mariadb, version: slow, manager: mariadb}\n"), 0o644)
	out := filepath.Join(work, "out")
	before, _ := filepath.Glob(filepath.Join(cache, "tmp", "build-*"))
	r.interrupt("image.*", "packer-slow: started", "ssh_private_key_file="+key,
		"recipe="+slow, "output_dir="+out, `elements_path=["ci/e2e/elements"]`)
	if left, _ := os.ReadDir(out); len(left) > 0 {
		t.Errorf("the interrupted build left files in the output directory: %v", left)
	}
	after, _ := filepath.Glob(filepath.Join(cache, "tmp", "build-*"))
	for _, d := range after {
		if !containsString(before, d) {
			t.Errorf("the interrupted build left its build directory %s", d)
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(mi), " "+cache) {
		t.Errorf("something is mounted below the cache %s after the interrupted build", cache)
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && bytes.HasPrefix(b, []byte("sleep\x0060")) {
			t.Errorf("process %s of the interrupted hook still runs: %q", e.Name(), bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"strata/agent/datastore"
)

// The image side of the agent: the strata-agent element's unit file and
// host hook.
const elementDir = "../../../elements/strata-agent"

func unitDirectives(t *testing.T) map[string][]string {
	t.Helper()
	return unitDirectivesOf(t, "strata-agent.service")
}

func unitDirectivesOf(t *testing.T, name string) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(elementDir, "static/usr/lib/systemd/system", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[k] = append(out[k], v)
		}
	}
	return out
}

func TestUnitIsNotifyWatchdogRestartingAndSandboxed(t *testing.T) {
	d := unitDirectives(t)
	want := map[string]string{
		"Type": "notify", "ExecStart": "/usr/sbin/strata-agent", "Restart": "always", "RestartSec": "2s",
		"WatchdogSec": "60s", "StateDirectory": "strata-agent", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
		"ProtectHome": "yes", "PrivateTmp": "yes", "StartLimitIntervalSec": "0", "WantedBy": "multi-user.target",
	}
	for k, v := range want {
		if len(d[k]) != 1 || d[k][0] != v {
			t.Errorf("%s = %v, want %s", k, d[k], v)
		}
	}
	if !strings.Contains(strings.Join(d["After"], " "), "strata-config-drive.service") ||
		!strings.Contains(strings.Join(d["Wants"], " "), "strata-config-drive.service") {
		t.Error("unit does not want and order after strata-config-drive.service")
	}
	// Each datastore's configuration and data directories are writable,
	// nothing else of the system is.
	rw := strings.Fields(strings.Join(d["ReadWritePaths"], " "))
	for _, p := range []string{"-/etc/mysql", "-/var/lib/mysql", "-/etc/postgresql", "-/var/lib/postgresql", "-/etc/redis", "-/var/lib/redis", "/etc/systemd/system"} {
		if !slices.Contains(rw, p) {
			t.Errorf("ReadWritePaths %v lacks %s", rw, p)
		}
	}
	for _, p := range rw {
		if p == "/" || p == "-/" || strings.HasPrefix(strings.TrimPrefix(p, "-"), "/usr") || strings.TrimPrefix(p, "-") == "/etc" {
			t.Errorf("ReadWritePaths opens %s", p)
		}
	}
	if caps := strings.Join(d["CapabilityBoundingSet"], " "); strings.Contains(caps, "CAP_SYS_ADMIN") || caps == "" {
		t.Errorf("CapabilityBoundingSet = %q", caps)
	}
	// Any end of the agent restarts it (Restart=always: a kill by any
	// signal, SIGTERM included, is no "failure" to on-failure); a
	// bootstrap error still waits for the slow retry before it exits.
	if exitConfig == 0 || configRetryWait < 10*time.Second {
		t.Errorf("config errors must exit non-zero (%d) after a wait well above RestartSec (%s)", exitConfig, configRetryWait)
	}
}

func TestUnitsPassSystemdAnalyzeVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze not found: install Debian's systemd package (ci/deps.sh test)")
	}
	for _, name := range []string{"strata-agent.service", "strata-network.service"} {
		data, err := os.ReadFile(filepath.Join(elementDir, "static/usr/lib/systemd/system", name))
		if err != nil {
			t.Fatal(err)
		}
		// The binary is not installed on the test host: point ExecStart at
		// one that is, to verify everything else.
		unit := filepath.Join(t.TempDir(), name)
		execStart := regexp.MustCompile(`(?m)^ExecStart=/usr/sbin/strata-agent.*$`)
		if !execStart.Match(data) {
			t.Fatalf("%s does not run /usr/sbin/strata-agent", name)
		}
		os.WriteFile(unit, execStart.ReplaceAll(data, []byte("ExecStart=/bin/true")), 0o644)
		out, err := exec.Command("systemd-analyze", "verify", "--recursive-errors=one", unit).CombinedOutput()
		var ours []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			// Complaints about the host's own units (whatever packages the
			// test machine has) say nothing about ours.
			if m := otherUnitLine.FindStringSubmatch(line); m != nil && m[1] != name {
				t.Logf("ignored, not about %s: %s", name, line)
				continue
			}
			if strings.TrimSpace(line) != "" {
				ours = append(ours, line)
			}
		}
		if err != nil || len(ours) > 0 {
			t.Fatalf("systemd-analyze verify %s: %v\n%s", name, err, strings.Join(ours, "\n"))
		}
	}
}

// strata-network.service runs the agent's -network-config after the config
// drive is copied and before systemd-networkd reads its units, with no
// network and no capabilities; the install hook enables it.
func TestNetworkUnitRunsBetweenTheConfigDriveAndNetworkd(t *testing.T) {
	d := unitDirectivesOf(t, "strata-network.service")
	if got := strings.Join(d["ExecStart"], " "); got != "/usr/sbin/strata-agent -network-config /run/systemd/network" {
		t.Errorf("ExecStart = %q", got)
	}
	after, before := strings.Fields(strings.Join(d["After"], " ")), strings.Fields(strings.Join(d["Before"], " "))
	if !slices.Contains(after, "strata-config-drive.service") || !slices.Contains(before, "systemd-networkd.service") || !slices.Contains(before, "network-pre.target") {
		t.Errorf("After=%v Before=%v: must run after strata-config-drive.service and before systemd-networkd.service and network-pre.target", after, before)
	}
	for k, v := range map[string]string{"Type": "oneshot", "DefaultDependencies": "no", "PrivateNetwork": "yes", "ProtectSystem": "strict", "ReadWritePaths": "/run/systemd", "CapabilityBoundingSet": "", "WantedBy": "multi-user.target"} {
		if len(d[k]) != 1 || d[k][0] != v {
			t.Errorf("%s = %v, want %q", k, d[k], v)
		}
	}
	hook, err := os.ReadFile(filepath.Join(elementDir, "post-install.d/80-strata-agent"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(hook), "systemctl enable strata-agent.service strata-network.service") {
		t.Error("80-strata-agent does not enable strata-network.service")
	}
}

var otherUnitLine = regexp.MustCompile(`^([A-Za-z0-9@._\\-]+\.(?:service|socket|target|mount|automount|swap|timer|path|slice|scope)): `)

// The install hook refuses a missing or non-ELF agent before touching the
// image. (Its success path runs inside an image root: the end-to-end image
// tests install and boot the agent.)
func TestInstallHookRefusesAMissingOrNonELFAgent(t *testing.T) {
	hook, _ := filepath.Abs(filepath.Join(elementDir, "post-install.d/80-strata-agent"))
	inputs := t.TempDir()
	runHook := func() (string, error) {
		cmd := exec.Command(hook)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "STRATA_INPUTS=" + inputs}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := runHook(); err == nil || !strings.Contains(out, "no agent binary") || !strings.Contains(out, "DIB_STRATA_AGENT_BINARY") {
		t.Fatalf("missing binary: %v %s", err, out)
	}
	os.WriteFile(filepath.Join(inputs, "DIB_STRATA_AGENT_BINARY"), []byte("#!/bin/sh\n"), 0o755)
	if out, err := runHook(); err == nil || !strings.Contains(out, "not an ELF") {
		t.Fatalf("non-ELF: %v %s", err, out)
	}
}

// The template hook installs the recipe's default configuration template
// where the agent reads it (datastore.GuestConfigTemplate, below a test
// image root here), refuses a template that did not reach the hooks tree
// naming it, and leaves an image without one alone.
func TestConfigTemplateHookInstallsTheRecipesTemplate(t *testing.T) {
	hook, _ := filepath.Abs(filepath.Join(elementDir, "post-install.d/81-strata-config-template"))
	inputs, root := t.TempDir(), t.TempDir()
	runHook := func(env ...string) (string, error) {
		cmd := exec.Command(hook)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "STRATA_INPUTS=" + inputs, "STRATA_IMAGE_ROOT=" + root}, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	installed := filepath.Join(root, datastore.GuestConfigTemplate)
	if out, err := runHook(); err != nil {
		t.Fatalf("no template: %v %s", err, out)
	}
	if _, err := os.Stat(installed); !os.IsNotExist(err) {
		t.Fatalf("without a template the hook installed %s: %v", installed, err)
	}
	named := "DIB_STRATA_CONFIG_TEMPLATE=/src/images/config-templates/x.json.tmpl"
	if out, err := runHook(named); err == nil || !strings.Contains(out, "x.json.tmpl") || !strings.Contains(out, "did not reach the image") {
		t.Fatalf("missing template: %v %s", err, out)
	}
	want, err := os.ReadFile("../../../images/config-templates/mariadb-10.11.json.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(inputs, "DIB_STRATA_CONFIG_TEMPLATE"), want, 0o600)
	if out, err := runHook(named); err != nil {
		t.Fatalf("template: %v %s", err, out)
	}
	got, err := os.ReadFile(installed)
	if err != nil || string(got) != string(want) {
		t.Fatalf("installed template: %v, %q", err, got)
	}
	if fi, _ := os.Stat(installed); fi.Mode().Perm() != 0o644 {
		t.Errorf("installed template mode %v", fi.Mode())
	}
}

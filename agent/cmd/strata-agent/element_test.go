package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The image side of the agent: the strata-agent element's unit file and
// host hook.
const elementDir = "../../../elements/strata-agent"

func unitDirectives(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(elementDir, "static/usr/lib/systemd/system/strata-agent.service"))
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
		"Type": "notify", "ExecStart": "/usr/sbin/strata-agent", "Restart": "on-failure", "RestartSec": "15s",
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
	if caps := strings.Join(d["CapabilityBoundingSet"], " "); strings.Contains(caps, "CAP_SYS_ADMIN") || caps == "" {
		t.Errorf("CapabilityBoundingSet = %q", caps)
	}
	// The watchdog must be well above the agent's ping interval (a third).
	// And the bootstrap-error exit status is not one systemd treats as
	// success, so Restart=on-failure retries it.
	if exitConfig == 0 {
		t.Error("config errors must exit non-zero")
	}
}

func TestUnitPassesSystemdAnalyzeVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze not found: install Debian's systemd package (ci/deps.sh test)")
	}
	data, err := os.ReadFile(filepath.Join(elementDir, "static/usr/lib/systemd/system/strata-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	// The binary is not installed on the test host: point ExecStart at one
	// that is, to verify everything else.
	unit := filepath.Join(t.TempDir(), "strata-agent.service")
	os.WriteFile(unit, []byte(strings.Replace(string(data), "ExecStart=/usr/sbin/strata-agent", "ExecStart=/bin/true", 1)), 0o644)
	out, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestExtraDataHookCopiesTheBinaryAndFailsClearly(t *testing.T) {
	hook, _ := filepath.Abs(filepath.Join(elementDir, "extra-data.d/50-strata-agent-binary"))
	runHook := func(env ...string) (string, error) {
		cmd := exec.Command(hook)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	hooks := t.TempDir()
	if out, err := runHook("TMP_HOOKS_PATH=" + hooks); err == nil || !strings.Contains(out, "DIB_STRATA_AGENT_BINARY is not set") {
		t.Fatalf("unset variable: %v %s", err, out)
	}
	if out, err := runHook("TMP_HOOKS_PATH="+hooks, "DIB_STRATA_AGENT_BINARY=/nonexistent"); err == nil || !strings.Contains(out, "not a non-empty file") {
		t.Fatalf("missing binary: %v %s", err, out)
	}
	script := filepath.Join(t.TempDir(), "script")
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)
	if out, err := runHook("TMP_HOOKS_PATH="+hooks, "DIB_STRATA_AGENT_BINARY="+script); err == nil || !strings.Contains(out, "not an ELF") {
		t.Fatalf("non-ELF: %v %s", err, out)
	}
	self, _ := os.Executable() // any ELF binary will do
	out, err := runHook("TMP_HOOKS_PATH="+hooks, "DIB_STRATA_AGENT_BINARY="+self)
	if err != nil {
		t.Fatalf("%v %s", err, out)
	}
	st, err := os.Stat(filepath.Join(hooks, "strata-agent", "strata-agent"))
	if err != nil || st.Mode().Perm() != 0o555 {
		t.Fatalf("copied binary: %v %v", st, err)
	}
	if !strings.Contains(out, "sha256") {
		t.Fatalf("hook does not log the digest: %s", out)
	}
}

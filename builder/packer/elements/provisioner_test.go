package elements

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"strata/builder/build"
	"strata/builder/packer/internal/localcomm"
)

// These tests run the provisioner as Packer would call it, against this
// host through a local communicator; the Packer end-to-end tests
// (ci/e2e, make test-packer) run it from a real packer over SSH to a VM.

var repo = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}()

func setup(t *testing.T) (elements string) {
	t.Helper()
	t.Setenv("STRATA_ELEMENTS_DIR", filepath.Join(repo, "elements"))
	t.Setenv("ELEMENTS_PATH", "")
	dir := t.TempDir()
	write := func(p, content string, mode os.FileMode) {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("probe/install.d/50-probe", "#!/bin/bash\nset -eu\necho \"probe ran as $(id -u) with $DIB_PROBE in $TMP_HOOKS_PATH\"\necho \"$DIB_PROBE\" >\"$DIB_PROBE_OUT\"\n", 0o755)
	write("probe/post-install.d/10-probe", "#!/bin/bash\necho post-probe\n", 0o755)
	write("probe-fail/install.d/40-boom", "#!/bin/bash\necho going down\nexit 5\n", 0o755)
	return dir
}

func prepare(t *testing.T, raw map[string]interface{}) (*Provisioner, error) {
	t.Helper()
	p := &Provisioner{}
	return p, p.Prepare(raw)
}

func TestPrepareRefusesBadConfigurationNamingIt(t *testing.T) {
	dir := setup(t)
	agent := filepath.Join(t.TempDir(), "agent")
	os.WriteFile(agent, []byte("\x7fELF"), 0o755)
	for name, tc := range map[string]struct {
		raw  map[string]interface{}
		want string
	}{
		"no elements":     {map[string]interface{}{}, "elements: name at least one element"},
		"unknown element": {map[string]interface{}{"elements": []string{"no-such-element"}}, "element no-such-element not found"},
		"unknown phase":   {map[string]interface{}{"elements": []string{"probe"}, "elements_path": []string{dir}, "phases": []string{"install", "bogus"}}, "bogus"},
		"host phase":      {map[string]interface{}{"elements": []string{"probe"}, "elements_path": []string{dir}, "phases": []string{"root.d"}}, "root.d runs on the build host"},
		"agent not found": {map[string]interface{}{"elements": []string{"strata-agent"}, "agent": "/no/such/agent"}, "agent: /no/such/agent is not a file"},
		"agent missing":   {map[string]interface{}{"elements": []string{"strata-agent"}}, "element strata-agent needs DIB_STRATA_AGENT_BINARY"},
		"agent twice": {map[string]interface{}{"elements": []string{"strata-agent"}, "agent": agent,
			"env": map[string]string{AgentVar: "/elsewhere"}}, "disagree"},
		"bad elements_path": {map[string]interface{}{"elements": []string{"probe"}, "elements_path": []string{"/no/such/dir"}}, "elements_path: /no/such/dir"},
		"relative remote":   {map[string]interface{}{"elements": []string{"probe"}, "elements_path": []string{dir}, "remote_dir": "tmp/x"}, "remote_dir"},
		"root remote":       {map[string]interface{}{"elements": []string{"probe"}, "elements_path": []string{dir}, "remote_dir": "/"}, "remote_dir"},
		"an os element":     {map[string]interface{}{"elements": []string{"debian-minimal"}}, "operating-system"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := prepare(t, tc.raw)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestPrepareTakesTheAgentAsTheStrataAgentElementsInput(t *testing.T) {
	setup(t)
	agent := filepath.Join(t.TempDir(), "strata-agent")
	os.WriteFile(agent, []byte("\x7fELF"), 0o755)
	p, err := prepare(t, map[string]interface{}{"elements": []string{"strata-agent"}, "agent": agent, "packer_build_name": "machine"})
	if err != nil {
		t.Fatal(err)
	}
	if p.apply.Env[AgentVar] != agent || !p.apply.SkipBase || p.apply.RemoteHooksDir != "/tmp/in_target.d" || p.apply.ImageName != "machine" {
		t.Errorf("apply config = %+v", p.apply)
	}
	names, err := p.apply.ElementSet()
	if err != nil || strings.Join(names, " ") != "config-drive strata-agent" {
		t.Errorf("element set = %v, %v", names, err)
	}
}

// ui records what the provisioner shows.
type ui struct {
	packersdk.MockUi
	lines []string
}

func (u *ui) Say(m string)     { u.lines = append(u.lines, "say: "+m) }
func (u *ui) Message(m string) { u.lines = append(u.lines, m) }
func (u *ui) Error(m string)   { u.lines = append(u.lines, "error: "+m) }

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the provisioner tests run hooks as root on this host: run them as root (make test does)")
	}
}

func TestProvisionRunsTheHooksOverTheCommunicatorStreamsThemAndCleansUp(t *testing.T) {
	requireRoot(t)
	dir := setup(t)
	remote := filepath.Join(t.TempDir(), "in_target.d")
	out := filepath.Join(t.TempDir(), "probe.out")
	p, err := prepare(t, map[string]interface{}{
		"elements": []string{"probe"}, "elements_path": []string{dir}, "remote_dir": remote,
		"env": map[string]string{"DIB_PROBE": "it's here", "DIB_PROBE_OUT": out},
	})
	if err != nil {
		t.Fatal(err)
	}
	u := &ui{}
	if err := p.Provision(context.Background(), u, localcomm.Comm{}, map[string]interface{}{"Host": "10.1.2.3", "Port": 22, "User": "root", "ConnType": "ssh"}); err != nil {
		t.Fatalf("%v\n%s", err, strings.Join(u.lines, "\n"))
	}
	all := strings.Join(u.lines, "\n")
	for _, want := range []string{
		"say: Applying strata elements probe to ssh root@10.1.2.3:22",
		"--> install.d/50-probe (probe) in ssh root@10.1.2.3:22",
		"probe ran as 0 with it's here in " + remote,
		"post-probe",
		"PROFILING",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("UI lacks %q:\n%s", want, all)
		}
	}
	if b, _ := os.ReadFile(out); string(b) != "it's here\n" {
		t.Errorf("the hook wrote %q", b)
	}
	if _, err := os.Stat(remote); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the remote hooks directory was not removed: %v", err)
	}
}

func TestProvisionFailsNamingTheHookAndElementAndStillCleansUp(t *testing.T) {
	requireRoot(t)
	dir := setup(t)
	remote := filepath.Join(t.TempDir(), "in_target.d")
	p, err := prepare(t, map[string]interface{}{"elements": []string{"probe-fail"}, "elements_path": []string{dir}, "remote_dir": remote})
	if err != nil {
		t.Fatal(err)
	}
	u := &ui{}
	err = p.Provision(context.Background(), u, localcomm.Comm{}, nil)
	var he *build.HookError
	if !errors.As(err, &he) || !strings.Contains(err.Error(), "strata-elements: hook install.d/40-boom of element probe-fail failed") || !strings.Contains(err.Error(), "exit status 5") {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(strings.Join(u.lines, "\n"), "going down") {
		t.Error("the failing hook's output did not reach the UI")
	}
	if _, err := os.Stat(remote); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the remote hooks directory was not removed: %v", err)
	}
}

func TestMachineName(t *testing.T) {
	for want, data := range map[string]map[string]interface{}{
		"ssh packer@127.0.0.1:2222": {"Host": "127.0.0.1", "Port": 2222, "User": "packer", "ConnType": "ssh"},
		"winrm 10.0.0.1:5986":       {"Host": "10.0.0.1", "Port": "5986", "ConnType": "winrm"},
		"the build's machine":       {"Host": "<no value>"},
	} {
		if got := machineName(data); got != want {
			t.Errorf("machineName(%v) = %q, want %q", data, got, want)
		}
	}
}

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
	if p.apply.Env[AgentVar] != agent || !p.apply.SkipBase || p.config.RemoteDir != "" || p.apply.ImageName != "machine" {
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

// The machine's /tmp is shared with its other users: the hooks, which run
// as root, must come from a directory none of them could have prepared.
func TestProvisionRunsHooksFromAFreshPrivateDirectory(t *testing.T) {
	requireRoot(t)
	dir := setup(t)
	out := filepath.Join(t.TempDir(), "where")
	os.MkdirAll(filepath.Join(dir, "where/install.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "where/install.d/10-where"),
		[]byte("#!/bin/bash\nstat -c '%n %a %u' \"$TMP_HOOKS_PATH\" >>\"$DIB_WHERE_OUT\"\n"), 0o755)
	p, err := prepare(t, map[string]interface{}{"elements": []string{"where"}, "elements_path": []string{dir},
		"env": map[string]string{"DIB_WHERE_OUT": out}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := p.Provision(context.Background(), &ui{}, localcomm.Comm{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(out)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[0] == lines[1] {
		t.Fatalf("the hooks ran from %q: want two different directories", lines)
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 || !strings.HasPrefix(f[0], "/tmp/strata-hooks.") || len(f[0]) < len("/tmp/strata-hooks.")+10 || f[1] != "700" || f[2] != "0" {
			t.Errorf("hooks directory %q: want /tmp/strata-hooks.<10 random characters>, mode 700, owned by root", l)
		}
		if _, err := os.Stat(f[0]); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was not removed: %v", f[0], err)
		}
	}
}

// A remote_dir that exists already (made by another user, or left by
// someone) is neither used nor removed: the build stops, naming it.
func TestProvisionRefusesARemoteDirItDidNotMake(t *testing.T) {
	requireRoot(t)
	dir := setup(t)
	remote := filepath.Join(t.TempDir(), "in_target.d")
	os.MkdirAll(filepath.Join(remote, "install.d"), 0o777)
	planted := filepath.Join(remote, "install.d", "50-probe")
	os.WriteFile(planted, []byte("#!/bin/sh\ntouch /tmp/owned\n"), 0o777)
	os.Chown(remote, 65534, 65534)
	out := filepath.Join(t.TempDir(), "probe.out")
	p, err := prepare(t, map[string]interface{}{"elements": []string{"probe"}, "elements_path": []string{dir}, "remote_dir": remote,
		"env": map[string]string{"DIB_PROBE": "x", "DIB_PROBE_OUT": out}})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Provision(context.Background(), &ui{}, localcomm.Comm{}, nil)
	if err == nil || !strings.Contains(err.Error(), remote) || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("err = %v, want a refusal naming %s", err, remote)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a hook ran")
	}
	if b, err := os.ReadFile(planted); err != nil || !strings.Contains(string(b), "owned") {
		t.Errorf("the existing directory was changed: %q %v", b, err)
	}
}

// The upload goes to a private staging directory: a symlink planted where
// an archive beside the hooks directory would go is not followed.
func TestProvisionUploadFollowsNoPlantedSymlink(t *testing.T) {
	requireRoot(t)
	dir := setup(t)
	base := t.TempDir()
	remote := filepath.Join(base, "in_target.d")
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("precious"), 0o644)
	for _, name := range []string{remote + ".upload.tar", filepath.Join(base, "hooks.tar")} {
		os.Symlink(victim, name)
	}
	out := filepath.Join(t.TempDir(), "probe.out")
	p, err := prepare(t, map[string]interface{}{"elements": []string{"probe"}, "elements_path": []string{dir}, "remote_dir": remote,
		"env": map[string]string{"DIB_PROBE": "x", "DIB_PROBE_OUT": out}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Provision(context.Background(), &ui{}, localcomm.Comm{}, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the upload wrote through a planted symlink: the victim file now holds %d bytes", len(b))
	}
}

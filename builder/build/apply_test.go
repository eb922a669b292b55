package build

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"strata/builder/element"
	"strata/builder/executor"
)

// The Apply tests apply elements to "a machine" that is this host, through
// executor.Host, with hooks that only write below the test's directory.

// applyElements are elements for a live machine: no operating system, hooks
// in every phase, an environment.d file, a bin/ helper, an element-inputs
// file and a dependency.
func applyElements(out string) map[string]string {
	log := out + "/order.log"
	return map[string]string{
		"app/element-deps":            "helper\n",
		"app/element-inputs":          "DIB_TEST_INPUT\n",
		"app/environment.d/20-app.sh": "export APP_VAR=from-app-envd\n",
		"app/root.d/10-never*":        "#!/bin/bash\necho root.d >>" + log + "\n",
		"app/pre-install.d/50-pre*":   "#!/bin/bash\necho pre-install.d/50-pre >>" + log + "\n",
		"app/install.d/20-app*": `#!/bin/bash
set -eu
echo "install.d/20-app APP_VAR=$APP_VAR ARCH=$ARCH IMAGE_ELEMENT=$IMAGE_ELEMENT DIB_X=$DIB_X input=$(cat "$STRATA_INPUTS/DIB_TEST_INPUT") helper=$(app-helper) hooks=$TMP_HOOKS_PATH static=$(cat "$TMP_HOOKS_PATH/static/app-file")" >>` + log + "\n",
		"app/static/app-file":               "app-static",
		"app/post-install.d/10-post*":       "#!/bin/bash\necho post-install.d/10-post >>" + log + "\n",
		"app/finalise.d/10-fin*":            "#!/bin/bash\necho finalise.d >>" + log + "\n",
		"helper/bin/app-helper*":            "#!/bin/sh\necho helped\n",
		"helper/install.d/10-helper*":       "#!/bin/bash\necho install.d/10-helper >>" + log + "\n",
		"failing/install.d/50-fail*":        "#!/bin/bash\necho about to fail\nexit 4\n",
		"failing/install.d/90-never*":       "#!/bin/bash\necho never >>" + log + "\n",
		"pkgs/package-installs.yaml":        "curl:\nlibfoo:\n  phase: post-install.d\n",
		"pkgs/pkg-map":                      `{"family": {"debian": {"libfoo": "libfoo1 libfoo-data"}}}`,
		"pkgs/environment.d/10-pkgs.bash":   "export DISTRO_NAME=debian DIB_RELEASE=bookworm\n",
		"needs-os/element-deps":             "some-os\n",
		"some-os/element-provides":          "operating-system\n",
		"some-os/install.d/10-some-os*":     "#!/bin/bash\n",
		"hidden-by-machine/element-deps":    "operating-system\n",
		"hidden-by-machine/install.d/10-x*": "#!/bin/bash\n",
	}
}

type applyFixture struct {
	elements, out string
	log           strings.Builder
}

func newApplyFixture(t *testing.T) *applyFixture {
	requireRoot(t)
	f := &applyFixture{elements: t.TempDir(), out: t.TempDir()}
	writeElements(t, f.elements, applyElements(f.out))
	if err := os.WriteFile(filepath.Join(f.out, "input"), []byte("input-content"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *applyFixture) config(elements ...string) ApplyConfig {
	return ApplyConfig{
		Elements: elements, SkipBase: true, ElementsPath: []string{f.elements},
		Env:      map[string]string{"DIB_X": "x", "DIB_TEST_INPUT": filepath.Join(f.out, "input")},
		Executor: &executor.Host{Dir: f.out}, Out: &f.log,
	}
}

func TestApplyRunsTheTargetPhasesInDIBOrderOnTheMachineWithDIBsEnvironment(t *testing.T) {
	f := newApplyFixture(t)
	remote := filepath.Join(t.TempDir(), "in_target.d")
	var uploaded []string
	cfg := f.config("app")
	cfg.RemoteHooksDir = remote
	// The "upload" copies the merged tree, as a communicator would.
	cfg.Upload = func(ctx context.Context, local, dst string) error {
		for _, p := range []string{"install.d/20-app", ".strata/bin/install-packages", ".strata/inputs/DIB_TEST_INPUT", "bin/app-helper", "environment.d/20-app.sh"} {
			if _, err := os.Stat(filepath.Join(local, p)); err != nil {
				t.Errorf("merged hooks dir lacks %s", p)
			}
		}
		uploaded = append(uploaded, dst)
		return exec.CommandContext(ctx, "cp", "-a", local, dst).Run()
	}
	res, err := Apply(context.Background(), cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	if !slices.Equal(uploaded, []string{remote}) {
		t.Errorf("uploads = %v", uploaded)
	}
	got, err := os.ReadFile(filepath.Join(f.out, "order.log"))
	if err != nil {
		t.Fatal(err)
	}
	want := "pre-install.d/50-pre\n" +
		"install.d/10-helper\n" +
		"install.d/20-app APP_VAR=from-app-envd ARCH=amd64 IMAGE_ELEMENT=app helper DIB_X=x input=input-content helper=helped hooks=" + remote + " static=app-static\n" +
		"post-install.d/10-post\n"
	if string(got) != want {
		t.Fatalf("order.log =\n%s\nwant\n%s", got, want)
	}
	if !slices.Equal(res.Elements, []string{"app", "helper"}) {
		t.Errorf("elements = %v", res.Elements)
	}
	var names []string
	for _, h := range res.Hooks {
		names = append(names, h.Phase+"/"+h.Name+":"+h.Element+":"+h.Where+":"+h.Status)
	}
	wantHooks := []string{"pre-install.d/50-pre:app:machine:ok", "install.d/10-helper:helper:machine:ok",
		"install.d/20-app:app:machine:ok", "post-install.d/10-post:app:machine:ok"}
	if !slices.Equal(names, wantHooks) {
		t.Errorf("hooks = %v\nwant %v", names, wantHooks)
	}
	if !strings.Contains(f.log.String(), "PROFILING") {
		t.Error("no timing table")
	}
}

func TestApplyRunsFinaliseOnlyWhenAsked(t *testing.T) {
	f := newApplyFixture(t)
	cfg := f.config("app")
	cfg.Phases = []element.Phase{element.PostInstallPhase, element.FinalisePhase}
	if _, err := Apply(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, f.log.String())
	}
	got, _ := os.ReadFile(filepath.Join(f.out, "order.log"))
	if string(got) != "post-install.d/10-post\nfinalise.d\n" {
		t.Fatalf("order.log = %q", got)
	}
}

func TestApplyStopsAtAFailingHookNamingItAndItsElement(t *testing.T) {
	f := newApplyFixture(t)
	_, err := Apply(context.Background(), f.config("failing", "helper"))
	var he *HookError
	if !errors.As(err, &he) || he.Hook.Path() != "install.d/50-fail" || he.Hook.Element != "failing" {
		t.Fatalf("err = %v, want a HookError for install.d/50-fail of failing", err)
	}
	var ee *executor.ExitError
	if !errors.As(err, &ee) || ee.Code != 4 {
		t.Errorf("exit status not reported: %v", err)
	}
	if !strings.Contains(f.log.String(), "about to fail") {
		t.Error("the hook's output was not streamed")
	}
	got, _ := os.ReadFile(filepath.Join(f.out, "order.log"))
	if strings.Contains(string(got), "never") {
		t.Error("a hook after the failing one ran")
	}
}

// recorder is an executor that runs nothing and records what it was asked.
type recorder struct {
	mu   sync.Mutex
	cmds []executor.Command
}

func (r *recorder) Where() string { return "recorder" }
func (r *recorder) Run(ctx context.Context, c executor.Command) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cmds = append(r.cmds, c)
	return nil
}

func TestApplyRunsPackageInstallsThroughTheExecutorWithPkgMap(t *testing.T) {
	f := newApplyFixture(t)
	rec := &recorder{}
	cfg := f.config("pkgs")
	cfg.Executor = rec
	cfg.Upload = func(ctx context.Context, local, remote string) error { return nil }
	if _, err := Apply(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range rec.cmds {
		if c.Path != "/bin/bash" || len(c.Args) < 5 {
			t.Fatalf("command %v", c)
		}
		// bash -c WRAPPER strata-hook PROGRAM N ENVFILES... ARGS...
		n, _ := strconv.Atoi(c.Args[4])
		got = append(got, strings.Join(append([]string{c.Args[3]}, c.Args[5+n:]...), " "))
		if !slices.Contains(c.Env, "PATH="+targetPath("/tmp/in_target.d")) || !slices.Contains(c.Env, "STRATA_INPUTS=/tmp/in_target.d/.strata/inputs") {
			t.Errorf("env lacks the target's PATH or STRATA_INPUTS: %v", c.Env)
		}
	}
	want := []string{
		"/tmp/in_target.d/.strata/bin/install-packages curl",
		"/tmp/in_target.d/.strata/bin/install-packages libfoo-data libfoo1",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("commands =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestApplyRefusesBadRequestsBeforeRunningAnything(t *testing.T) {
	f := newApplyFixture(t)
	for name, tc := range map[string]struct {
		cfg  func() ApplyConfig
		want string
	}{
		"unknown element": {func() ApplyConfig { return f.config("app", "no-such-element") }, "no-such-element"},
		"host phase": {func() ApplyConfig {
			c := f.config("app")
			c.Phases = []element.Phase{element.RootPhase}
			return c
		}, "root.d runs on the build host"},
		"phases out of order": {func() ApplyConfig {
			c := f.config("app")
			c.Phases = []element.Phase{element.PostInstallPhase, element.InstallPhase}
			return c
		}, "install.d is out of place"},
		"an operating system": {func() ApplyConfig { return f.config("needs-os") }, "operating-system"},
		"missing input":       {func() ApplyConfig { c := f.config("app"); delete(c.Env, "DIB_TEST_INPUT"); return c }, "DIB_TEST_INPUT"},
		"root as hooks dir": {func() ApplyConfig {
			c := f.config("app")
			c.RemoteHooksDir = "/"
			return c
		}, "below /"},
	} {
		t.Run(name, func(t *testing.T) {
			rec := &recorder{}
			cfg := tc.cfg()
			cfg.Executor = rec
			_, err := Apply(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			if len(rec.cmds) > 0 {
				t.Errorf("ran %d commands", len(rec.cmds))
			}
		})
	}
	// The machine is its own operating system: an element that merely
	// depends on one applies.
	if names, err := (&ApplyConfig{Elements: []string{"hidden-by-machine"}, ElementsPath: []string{f.elements}, SkipBase: true}).ElementSet(); err != nil || !slices.Equal(names, []string{"hidden-by-machine"}) {
		t.Errorf("ElementSet = %v, %v", names, err)
	}
}

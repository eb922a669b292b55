package ci

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// goModVersion is the version go.mod's go line asks for.
func goModVersion(t *testing.T) string {
	t.Helper()
	f, err := os.Open("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("go.mod has no go line")
	return ""
}

// fakeGo writes a go that reports version (GOVERSION) and fails, recording
// the call, for anything else: a build that starts is visible in calls.
// envFails makes `go env GOVERSION` fail as a toolchain switch that cannot
// download would.
func fakeGo(t *testing.T, version string, envFails bool) (goPath, calls string) {
	t.Helper()
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls")
	env := `echo "` + version + `"`
	if envFails {
		env = `echo "go: downloading go` + "9.9.9" + `: toolchain not available" >&2; exit 1`
	}
	script := `#!/bin/sh
case "$1" in
version) echo "go version ` + version + ` linux/amd64" ;;
env) ` + env + ` ;;
*) echo "$*" >>'` + calls + `'; exit 3 ;;
esac
`
	goPath = filepath.Join(dir, "go")
	if err := os.WriteFile(goPath, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return goPath, calls
}

func runMake(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("make", append([]string{"--no-print-directory"}, args...)...)
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The README's commands stop at once, before installing or compiling
// anything, when Go is missing or older than go.mod asks, with a message
// that names the Go needed and how to get it.
func TestMakeStopsAtOnceWithoutTheGoGoModAsks(t *testing.T) {
	need := goModVersion(t)
	old, oldCalls := fakeGo(t, "go1.19.13", false)
	rc, rcCalls := fakeGo(t, "go"+strings.TrimSuffix(need, ".0")+"rc1", false)
	broken, brokenCalls := fakeGo(t, "go1.21.0", true)
	for _, c := range []struct {
		name, goBin, calls string
		says               []string
	}{
		{"missing", "strata-no-such-go", "", []string{"Go is not installed", "no strata-no-such-go on PATH"}},
		{"too old", old, oldCalls, []string{"is go1.19.13"}},
		{"release candidate of the version needed", rc, rcCalls, []string{"rc1"}},
		{"toolchain switch fails", broken, brokenCalls, []string{"not a usable Go", "toolchain not available"}},
	} {
		for _, target := range []string{"image", "build", "go-check"} {
			t.Run(c.name+"/make "+target, func(t *testing.T) {
				out, err := runMake(t, target, "GO="+c.goBin)
				if err == nil {
					t.Fatalf("make %s with %s succeeded:\n%s", target, c.name, out)
				}
				for _, s := range append([]string{"Go " + need + " or newer", "/usr/local/go/bin", "make GO="}, c.says...) {
					if !strings.Contains(out, s) {
						t.Errorf("make %s: output does not say %q:\n%s", target, s, out)
					}
				}
				if strings.Contains(out, "ci/deps.sh") {
					t.Errorf("make %s installed packages before checking Go:\n%s", target, out)
				}
				if c.calls != "" {
					if b, err := os.ReadFile(c.calls); err == nil {
						t.Errorf("make %s ran the old go past the check: %s", target, b)
					}
				}
			})
		}
	}
}

func TestGoCheckAcceptsTheGoGoModAsksAndNewer(t *testing.T) {
	need := goModVersion(t)
	for _, v := range []string{"go" + need, "go" + strings.TrimSuffix(need, ".0"), "go1.99.1", "devel go1.99-abcdef"} {
		goBin, _ := fakeGo(t, v, false)
		if out, err := runMake(t, "go-check", "GO="+goBin); err != nil {
			t.Errorf("make go-check with %s: %v\n%s", v, err, out)
		}
	}
}

// Every target that installs packages checks Go first: in the order make
// runs the recipes, ci/go-check.sh comes before the first ci/deps.sh.
func TestGoIsCheckedBeforeAnyPackageIsInstalled(t *testing.T) {
	for _, target := range []string{"image", "test", "boot-test", "e2e", "bench", "test-packer", "test-fresh-host", "test-openstack"} {
		out, err := runMake(t, "-n", target)
		if err != nil {
			t.Fatalf("make -n %s: %v\n%s", target, err, out)
		}
		check := strings.Index(out, "ci/go-check.sh")
		deps := strings.Index(out, "ci/deps.sh")
		if check < 0 || (deps >= 0 && deps < check) {
			t.Errorf("make %s: ci/go-check.sh (at %d) does not run before ci/deps.sh (at %d):\n%s", target, check, deps, out)
		}
	}
}

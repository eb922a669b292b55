package ci

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"strata/ci/shlint"
)

// repoScripts lists the repository's shell scripts (tracked and new files,
// found by shebang; elements' hooks and static scripts included).
func repoScripts(t *testing.T) []shlint.Script {
	t.Helper()
	out, err := exec.Command("git", "-C", "..", "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("listing the repository's files with git ls-files: %v", err)
	}
	files := strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	scripts, err := shlint.Find("..", files)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, s := range scripts {
		paths = append(paths, s.Path)
	}
	// Guard against a listing that silently finds nothing to check.
	for _, must := range []string{"ci/deps.sh", "ci/go-check.sh", "elements/base/pre-install.d/00-base-policy-rc",
		"elements/growroot/static/usr/lib/strata/growroot", "elements/debian-minimal/environment.d/10-debian-minimal.bash"} {
		if !slices.Contains(paths, must) {
			t.Fatalf("the script listing misses %s (found %v)", must, paths)
		}
	}
	return scripts
}

// Every shell script of the repository passes shellcheck, at shellcheck's
// default severity (style): findings are fixed, or disabled in place with
// a reason.
func TestScriptsPassShellcheck(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Fatal("shellcheck is not installed: ci/deps.sh test installs it (Debian package shellcheck)")
	}
	var withShebang, sourced []string
	for _, s := range repoScripts(t) {
		if filepath.Base(filepath.Dir(s.Path)) == "environment.d" {
			sourced = append(sourced, s.Path)
		} else {
			withShebang = append(withShebang, s.Path)
		}
	}
	run := func(extra []string, files []string) {
		if len(files) == 0 {
			return
		}
		args := append([]string{"--external-sources", "--format=gcc"}, extra...)
		cmd := exec.Command(sc, append(args, files...)...)
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("shellcheck %s: %v\n%s", strings.Join(extra, " "), err, out)
		}
	}
	run(nil, withShebang)
	// DIB's environment.d files are sourced by bash and have no shebang.
	run([]string{"--shell=bash"}, sourced)
	t.Logf("shellcheck: %d scripts, %d environment.d files", len(withShebang), len(sourced))
}

// No function, trap or script of the repository ends in an && list, and no
// ERR trap goes without set -E: the bugs shellcheck does not flag (see
// ci/shlint).
func TestScriptsPassShlint(t *testing.T) {
	for _, s := range repoScripts(t) {
		src, err := os.ReadFile(filepath.Join("..", s.Path))
		if err != nil {
			t.Fatal(err)
		}
		findings, err := shlint.Check(s.Path, s.Shell, src)
		if err != nil {
			t.Errorf("%v", err)
		}
		for _, f := range findings {
			t.Error(f)
		}
	}
}

package build

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"

	"strata/ci/shlint"
)

// The scripts the builder writes into every image root (install-packages,
// pkg-map) and the ones it runs hooks and environment.d files with pass
// shellcheck and ci/shlint, like the repository's own scripts
// (ci/scripts_test.go): they run as root inside images.
func TestBuilderScriptsPassShellcheckAndShlint(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Fatal("shellcheck is not installed: ci/deps.sh test installs it (Debian package shellcheck)")
	}
	scripts := map[string]string{"hook-wrapper": hookWrapper, "environment": envScript}
	for name, body := range toolScripts {
		scripts[name] = body
	}
	names := make([]string, 0, len(scripts))
	for n := range scripts {
		names = append(names, n)
	}
	sort.Strings(names)
	dir := t.TempDir()
	var files []string
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, []byte(scripts[n]), 0o755); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
		findings, err := shlint.Check(n, "bash", []byte(scripts[n]))
		if err != nil {
			t.Errorf("%s: %v", n, err)
		}
		for _, f := range findings {
			t.Error(f)
		}
	}
	// The wrappers are bash -c scripts without a shebang.
	out, err := exec.Command(sc, append([]string{"--shell=bash", "--format=gcc"}, files...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

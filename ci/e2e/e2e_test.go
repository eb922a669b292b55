//go:build e2e

// Package e2e holds the end-to-end tests: real images built by the real
// strata binary from the repository's recipes, booted under qemu. Each
// test's name says what it proves. They take minutes (a TCG boot alone
// takes 40-100 s) and run with `make e2e` and as part of `make test`:
//
//	go test -tags e2e -timeout 60m ./ci/e2e/
//
// Under TCG a guest with one vCPU keeps one host core busy while it boots
// and works, and the CI machine has two. The light tests, which run one
// VM at most (the UEFI agent boot, the minimal image's BIOS boot, the
// controller's MariaDB instance, the DIB compatibility builds), call
// t.Parallel: Go runs them after the sequential ones, two at a time
// (-parallel defaults to the core count), so two guests share the two
// cores. The heavy tests (backups, replicas, rebuild: two or three VMs, or
// a chain of boots whose downtime they measure) run alone. The mariadb
// image they all build is one cache entry: the first sequential test
// builds it, the parallel ones find it.
package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"strata/ci/openstack/ostest"
	"strata/controller/store/storetest"
)

var (
	repo   string // repository root
	strata string // the strata binary under test
	cache  string // image cache shared with make (CACHE_DIR)
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repo = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	cache = os.Getenv("STRATA_CACHE_DIR")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "strata")
	}
	strata = filepath.Join(repo, "bin", "strata")
	build := exec.Command("go", "build", "-o", strata, ".")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building strata: %v\n%s", err, out)
		os.Exit(1)
	}
	// storetest.Main stops the private PostgreSQL server the chaos test's
	// long form may start; ostest.After the private OpenStack the Nova
	// test starts (unless STRATA_OPENSTACK_STATE named a running one).
	os.Exit(ostest.After(storetest.Main(m)))
}

// run runs strata with args and extra environment, streaming its output
// into the test log.
func run(t *testing.T, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command(strata, args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("strata %v:\n%s", args, tail(string(out), 60))
	if err != nil {
		t.Fatalf("strata %v: %v", args, err)
	}
}

// buildAndRegister builds images/<name>-<version>.yaml into out and
// registers it in a controller state directory under out, with its
// validation rules, as the datastore's default version. The controller's
// boot timeout is bootTimeout: tests that boot several TCG guests at once
// wait longer than a recipe's 15 minutes (one restore here ended in
// ERROR, still booting, at 15 minutes with five TCG guests on two cores).
// It returns the state directory.
func buildAndRegister(t *testing.T, out, name, version, bootTimeout string) string {
	t.Helper()
	recipe := "images/" + name + "-" + version + ".yaml"
	img := filepath.Join(out, name)
	run(t, nil, "build", "-f", recipe, "-o", img, "--image-cache", cache)
	state := filepath.Join(out, "state")
	imageID := strings.TrimSpace(stdout(t, "image", "register", "--state-dir", state, img+".qcow2"))
	stdout(t, "datastore", "update", "--state-dir", state, name)
	stdout(t, "datastore", "version", "update", "--state-dir", state, name, version, "--image", imageID, "--from-recipe", recipe,
		"--boot-timeout", bootTimeout)
	stdout(t, "datastore", "version", "load-rules", "--state-dir", state, name, version, "validation-rules/"+name+"-"+version+".json")
	stdout(t, "datastore", "update", "--state-dir", state, name, version)
	return state
}

func tail(s string, n int) string {
	lines := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			lines++
			if lines > n {
				return s[i+1:]
			}
		}
	}
	return s
}

func nonce(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func itoa(n int) string { return strconv.Itoa(n) }

package ci

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// The three rooms, builder/, agent/ and controller/, meet only in the wire
// contract, strata/agent/wire: each end of the agent protocol lives with its
// owner (agent/transport dials, controller/agentendpoint listens), and a
// room that needs another's code says so with a small interface that main
// (or ci/) fills in. This test holds the shape with `go list`, for every
// build tag the repository uses.
//
// The documented exceptions, each test-only support (a package that
// imports "testing", which nothing shipped may depend on):
var testSupportCrossings = map[string][]string{
	// Checks each image recipe's rules and configuration template against
	// a real datastore server, so it reads the recipe as the builder does.
	"strata/agent/datastore/servertest": {"strata/builder/recipe"},
	// The controller's end as a test rig, for the agent's tests too; it
	// uses the contract's own test helpers (proxy, keys).
	"strata/controller/agentendpoint/endpointtest": {"strata/agent/wire/wiretest"},
}

// What test files (_test.go) may import from another room besides
// agent/wire. An agent test reaches the controller only through its test
// rig; a controller test may run the agent's real client to drive the
// server end (both ends of one protocol under one test).
var testFileCrossings = map[string][]string{
	"agent":      {"strata/controller/agentendpoint/endpointtest"},
	"controller": {"strata/agent/transport", "strata/agent/wire/wiretest"},
	"builder":    nil,
}

type listedPackage struct {
	path                             string
	imports, deps, testImports       []string
	importsTesting, hasNonTestGoFile bool
}

func room(path string) string {
	rest, ok := strings.CutPrefix(path, "strata/")
	if !ok {
		return ""
	}
	r, _, _ := strings.Cut(rest, "/")
	switch r {
	case "agent", "builder", "controller":
		return r
	}
	return ""
}

const wirePkg = "strata/agent/wire"

func goList(t *testing.T, tags string) []listedPackage {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	const sep = "\x1f"
	format := strings.Join([]string{
		"{{.ImportPath}}", `{{join .Imports " "}}`, `{{join .Deps " "}}`,
		`{{join .TestImports " "}} {{join .XTestImports " "}}`, `{{len .GoFiles}}`,
	}, sep)
	cmd := exec.Command(goBin, "list", "-tags", tags, "-f", format, "./...")
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -tags %q ./...: %v\n%s", tags, err, stderr.String())
	}
	var pkgs []listedPackage
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, sep)
		if len(f) != 5 {
			t.Fatalf("go list: unexpected line %q", line)
		}
		p := listedPackage{
			path: f[0], imports: strings.Fields(f[1]), deps: strings.Fields(f[2]),
			testImports: strings.Fields(f[3]), hasNonTestGoFile: f[4] != "0",
		}
		p.importsTesting = slices.Contains(p.imports, "testing")
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 20 || !slices.ContainsFunc(pkgs, func(p listedPackage) bool { return p.path == wirePkg }) {
		t.Fatalf("go list found %d packages and no %s: not run from the repository?", len(pkgs), wirePkg)
	}
	return pkgs
}

// crossing reports whether dep, used by a package of room r, leaves the
// room other than into the contract.
func crossing(r, dep string) bool {
	dr := room(dep)
	if dr == "" || dr == r || dep == wirePkg {
		return false
	}
	// The controller may use the builder's libraries (qemu, disk, recipe);
	// only the agent is walled off from it.
	return !(r == "controller" && dr == "builder")
}

func TestRoomsMeetOnlyInAgentWire(t *testing.T) {
	for _, tags := range []string{"", "e2e packer openstack"} {
		pkgs := goList(t, tags)
		support := map[string]bool{}
		for _, p := range pkgs {
			if p.importsTesting && strings.HasPrefix(p.path, "strata/") {
				support[p.path] = true
			}
		}
		for path := range testSupportCrossings {
			if !support[path] {
				t.Errorf("tags %q: %s is listed as a test-support crossing but is not a test-support package (or no longer exists)", tags, path)
			}
		}
		for _, p := range pkgs {
			r := room(p.path)
			if p.path == wirePkg {
				for _, d := range p.deps {
					if strings.HasPrefix(d, "strata/") {
						t.Errorf("tags %q: %s must import nothing of strata, but depends on %s", tags, wirePkg, d)
					}
				}
			}
			if !support[p.path] && p.hasNonTestGoFile {
				for _, d := range p.deps {
					if support[d] {
						t.Errorf("tags %q: %s is not test code but depends on the test-support package %s", tags, p.path, d)
					}
				}
			}
			if r == "" {
				continue // main, ci/: the wiring may use every room
			}
			// Every dependency path out of a room has a first step, a
			// direct import by a package of the room: checking those
			// checks all of its packages' dependencies.
			for _, d := range p.imports {
				if crossing(r, d) && !slices.Contains(testSupportCrossings[p.path], d) {
					t.Errorf("tags %q: %s (%s) imports %s: rooms meet only in %s", tags, p.path, r, d, wirePkg)
				}
			}
			for _, d := range p.testImports {
				if crossing(r, d) && !slices.Contains(testFileCrossings[r], d) && !slices.Contains(testSupportCrossings[p.path], d) {
					t.Errorf("tags %q: tests of %s import %s: a test reaches another room only through %v", tags, p.path, d, testFileCrossings[r])
				}
			}
		}
	}
}

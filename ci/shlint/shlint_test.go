package shlint

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The shape of ci/deps.sh before issue 11's fix: a pre-existing policy-rc.d
// made the trap's test false, and the script exit 1 after a good install.
const depsBefore = `#!/usr/bin/env bash
set -euo pipefail
made_policy=0
cleanup() {
	[ "$made_policy" = 1 ] && rm -f /nonexistent/policy
}
trap cleanup EXIT
echo installed
exit 0
`

const depsAfter = `#!/usr/bin/env bash
set -euo pipefail
made_policy=0
cleanup() {
	if [ "$made_policy" = 1 ]; then
		rm -f /nonexistent/policy
	fi
}
trap cleanup EXIT
echo installed
exit 0
`

// The pattern is a real failure, not a matter of taste: bash exits 1 with
// the first script and 0 with the second.
func TestTheFlaggedPatternFailsInBash(t *testing.T) {
	for _, c := range []struct {
		src  string
		want int
	}{{depsBefore, 1}, {depsAfter, 0}} {
		cmd := exec.Command("bash", "-c", c.src)
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.want {
			t.Errorf("bash exited %d, want %d, for:\n%s", code, c.want, c.src)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		name  string
		shell string
		src   string
		want  []string // "line what"
	}{
		{"deps.sh before the fix", "bash", depsBefore, []string{"5 function cleanup"}},
		{"deps.sh after the fix", "bash", depsAfter, nil},
		{"script ends in &&", "sh", "set -e\necho a\n[ -n \"$x\" ] && echo x\n", []string{"3 the script"}},
		{"script ends in ||", "sh", "set -e\n[ -n \"$x\" ] || echo x\n", nil},
		{"&& then ||", "bash", "f() { a && b || c; }\n", nil},
		{"|| then &&", "bash", "f() { a || b && c; }\n", []string{"1 function f"}},
		{"&& not last", "bash", "f() {\n\ta && b\n\techo done\n}\n", nil},
		{"in an if branch", "bash", "f() {\n\tif x; then\n\t\techo\n\telse\n\t\ta && b\n\tfi\n}\n", []string{"5 function f"}},
		{"in an elif branch", "bash", "f() {\n\tif x; then echo; elif y; then a && b; fi\n}\n", []string{"2 function f"}},
		{"in a case item", "bash", "f() {\n\tcase $1 in\n\tx) a && b ;;\n\tesac\n}\n", []string{"3 function f"}},
		{"in a loop body", "bash", "f() {\n\tfor p in a b; do\n\t\t[ -e \"$p\" ] && rm \"$p\"\n\tdone\n}\n", []string{"3 function f"}},
		{"in a subshell body", "bash", "f() (\n\tcd /x && ls\n)\n", []string{"2 function f"}},
		{"backgrounded", "bash", "f() { a && b & }\n", nil},
		{"single-quoted trap", "bash", "trap 'rm -f \"$t\"; [ -d \"$d\" ] && rmdir \"$d\"' EXIT\necho\n", []string{"1 trap EXIT"}},
		{"double-quoted trap", "bash", "trap \"[ -n $pid ] && kill $pid\" EXIT INT\necho\n", []string{"1 trap EXIT INT"}},
		{"good trap", "sh", "trap 'umount \"$m\" 2>/dev/null || true; rmdir \"$m\"' EXIT\necho\n", nil},
		{"trap reset", "bash", "trap - EXIT\necho\n", nil},
		{"nested function", "bash", "outer() {\n\tinner() { a && b; }\n\tinner || true\n}\n", []string{"2 function inner"}},
		{"ERR trap without -E", "bash", "set -eu\ntrap 'echo failed' ERR\nf() { false; }\nf\n", []string{"2 trap ERR"}},
		{"ERR trap with -E", "bash", "set -Eeu\ntrap 'echo failed' ERR\nf() { false; }\nf\n", nil},
		{"ERR trap with set -E later", "bash", "set -eu\nset -E\ntrap 'echo failed' ERR\necho\n", nil},
		{"ERR trap with errtrace", "bash", "set -euo errtrace\ntrap 'echo failed' ERR\necho\n", nil},
		{"ERR trap with -o errtrace", "bash", "set -o errtrace\ntrap 'echo failed' ERR\necho\n", nil},
		{"ERR trap reset", "bash", "trap - ERR\necho\n", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs, err := Check("x", c.shell, []byte(c.src))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range fs {
				got = append(got, strconv.Itoa(f.Line)+" "+f.What)
			}
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestCheckReportsParseErrors(t *testing.T) {
	if _, err := Check("bad.sh", "bash", []byte("if then fi\n")); err == nil || !strings.Contains(err.Error(), "bad.sh") {
		t.Errorf("want a parse error naming bad.sh, got %v", err)
	}
}

func TestFindByShebang(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"a.sh":                         "#!/bin/sh\necho\n",
		"hook":                         "#!/bin/bash\necho\n",
		"envbash":                      "#!/usr/bin/env bash\necho\n",
		"py":                           "#!/usr/bin/env python3\nprint()\n",
		"notes.sh":                     "no shebang here\n",
		"el/environment.d/10-x.bash":   "export X=1\n",
		"el/environment.d/README.bash": "export Y=1\n",
		"el/other/10-x.bash":           "export Z=1\n",
	}
	var names []string
	for n, body := range files {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	names = append(names, "deleted-in-worktree")
	got, err := Find(dir, names)
	if err != nil {
		t.Fatal(err)
	}
	var gotS []string
	for _, s := range got {
		gotS = append(gotS, s.Path+":"+s.Shell)
	}
	slices.Sort(gotS)
	want := []string{"a.sh:sh", "el/environment.d/10-x.bash:bash", "el/environment.d/README.bash:bash", "envbash:bash", "hook:bash"}
	if !slices.Equal(gotS, want) {
		t.Errorf("Find: got %q, want %q", gotS, want)
	}
}

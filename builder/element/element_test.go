package element

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// tree writes files below root. A path ending in "*" is made executable
// (the "*" is dropped); "->target" values make symlinks.
func tree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(p, "*") {
			p, mode = strings.TrimSuffix(p, "*"), 0o755
		}
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(content, "->") {
			if err := os.Symlink(strings.TrimPrefix(content, "->"), full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
}

// osElement is a minimal operating-system provider used by most tests.
var osElement = map[string]string{
	"os/element-provides": "operating-system\n",
	"os/root.d/10-root*":  "#!/bin/sh\n",
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func scan(t *testing.T, files map[string]string) *Library {
	t.Helper()
	dir := t.TempDir()
	tree(t, dir, files)
	lib, err := Scan([]string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return lib
}

func TestDepsExpandTransitively(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/element-deps": "b\n\n# comment\nos\n",
		"b/element-deps": "c\n",
		"c/README.md":    "c",
		"unused/x":       "",
	}))
	set, err := lib.Expand([]string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := set.Names(), []string{"a", "b", "c", "os"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("elements = %v, want %v", got, want)
	}
}

func TestProvidesSatisfiesDependencyAndIsNotAnElement(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"app/element-deps":          "database\n",
		"mariadb/element-provides":  "database\n",
		"postgres/element-provides": "database\n",
	}))
	set, err := lib.Expand([]string{"os", "mariadb", "app"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := set.Names(), []string{"app", "mariadb", "os"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("elements = %v, want %v (the virtual name must not pull in postgres)", got, want)
	}
	if set.ProvidedBy["database"] != "mariadb" || set.ProvidedBy[OperatingSystem] != "os" {
		t.Fatalf("ProvidedBy = %v", set.ProvidedBy)
	}
	if !set.Has("database") || set.Has("postgres") {
		t.Fatal("Has does not reflect provides")
	}
}

func TestMissingDependencyNamesBothElements(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/element-deps": "os\nghost\n",
	}))
	_, err := lib.Expand([]string{"a"})
	var me *MissingError
	if !errors.As(err, &me) || me.Name != "ghost" || me.RequiredBy != "a" {
		t.Fatalf("err = %v, want MissingError ghost required by a", err)
	}
	if !strings.Contains(err.Error(), "ghost") || !strings.Contains(err.Error(), "a") {
		t.Fatalf("message does not name the elements: %v", err)
	}
	_, err = lib.Expand([]string{"os", "nope"})
	if !errors.As(err, &me) || me.Name != "nope" || me.RequiredBy != "" {
		t.Fatalf("err = %v, want MissingError for a requested element", err)
	}
}

func TestTwoProvidersOfOneName(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"mariadb/element-provides":  "database\n",
		"postgres/element-provides": "database\n",
	}))
	_, err := lib.Expand([]string{"os", "mariadb", "postgres"})
	var ap *AlreadyProvidedError
	if !errors.As(err, &ap) || ap.Name != "database" || !reflect.DeepEqual(ap.Providers, []string{"mariadb", "postgres"}) {
		t.Fatalf("err = %v, want database provided by mariadb and postgres", err)
	}
}

func TestRequestedElementAlsoProvided(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"mariadb/element-provides": "mysql\n",
		"mysql/README":             "",
	}))
	_, err := lib.Expand([]string{"os", "mariadb", "mysql"})
	var ap *AlreadyProvidedError
	if !errors.As(err, &ap) || !ap.Requested || ap.Name != "mysql" {
		t.Fatalf("err = %v, want requested-but-provided error", err)
	}
}

func TestNoOperatingSystem(t *testing.T) {
	lib := scan(t, map[string]string{
		"a/element-deps": "b\n",
		"b/README":       "",
	})
	_, err := lib.Expand([]string{"a"})
	var ne *NoOperatingSystemError
	if !errors.As(err, &ne) || !reflect.DeepEqual(ne.Elements, []string{"a", "b"}) {
		t.Fatalf("err = %v, want NoOperatingSystemError naming a, b", err)
	}
}

func TestDependencyCycle(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/element-deps": "b\n",
		"b/element-deps": "c\n",
		"c/element-deps": "a\n",
	}))
	_, err := lib.Expand([]string{"os", "a"})
	var ce *CycleError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want CycleError", err)
	}
	if got := strings.Join(ce.Path, ">"); got != "a>b>c>a" {
		t.Fatalf("cycle path = %s, want a>b>c>a", got)
	}
}

func TestDuplicateHookNamesBothElements(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/install.d/50-setup*": "#!/bin/sh\n",
		"b/install.d/50-setup*": "#!/bin/sh\n",
	}))
	_, err := lib.Expand([]string{"os", "a", "b"})
	var de *DuplicateFileError
	if !errors.As(err, &de) || de.Path != "install.d/50-setup" || !reflect.DeepEqual(de.Elements, []string{"a", "b"}) {
		t.Fatalf("err = %v, want duplicate install.d/50-setup from a and b", err)
	}
	// The same name in different phases is fine.
	lib = scan(t, merge(osElement, map[string]string{
		"a/install.d/50-setup*":  "#!/bin/sh\n",
		"b/finalise.d/50-setup*": "#!/bin/sh\n",
	}))
	if _, err := lib.Expand([]string{"os", "a", "b"}); err != nil {
		t.Fatal(err)
	}
}

func TestDuplicateEnvironmentFile(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/environment.d/10-x": "export X=1\n",
		"b/environment.d/10-x": "export X=2\n",
	}))
	_, err := lib.Expand([]string{"os", "a", "b"})
	var de *DuplicateFileError
	if !errors.As(err, &de) || de.Path != "environment.d/10-x" {
		t.Fatalf("err = %v, want duplicate environment.d/10-x", err)
	}
}

func TestElementsPathEarlierWinsAndOverrideIsLogged(t *testing.T) {
	first, second := t.TempDir(), t.TempDir()
	tree(t, first, map[string]string{"a/install.d/10-first*": "#!/bin/sh\n"})
	tree(t, second, merge(osElement, map[string]string{"a/install.d/10-second*": "#!/bin/sh\n"}))
	var logs bytes.Buffer
	lib, err := Scan([]string{first, second}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if got := lib.Get("a").Hooks[InstallPhase]; !reflect.DeepEqual(got, []string{"10-first"}) {
		t.Fatalf("a's hooks = %v, want the first path's", got)
	}
	if len(lib.Overrides) != 1 || lib.Overrides[0].Name != "a" {
		t.Fatalf("overrides = %+v", lib.Overrides)
	}
	if !strings.Contains(logs.String(), "element override") || !strings.Contains(logs.String(), second) {
		t.Fatalf("override not logged: %q", logs.String())
	}
}

func TestScanRejectsMissingPathEntry(t *testing.T) {
	if _, err := Scan([]string{filepath.Join(t.TempDir(), "nope")}, nil); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("err = %v", err)
	}
}

func TestHooksSortAcrossElementsLikeRunParts(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/install.d/20-b*":        "#!/bin/sh\n",
		"a/install.d/9-early*":     "#!/bin/sh\n",
		"b/install.d/10-a*":        "#!/bin/sh\n",
		"b/install.d/100-late*":    "#!/bin/sh\n",
		"b/install.d/10-A*":        "#!/bin/sh\n",
		"b/install.d/README.md*":   "not a hook: has a dot",
		"b/install.d/30-noexec":    "not executable",
		"c/install.d/zz-nonumber*": "#!/bin/sh\n",
	}))
	set, err := lib.Expand([]string{"os", "a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range set.Hooks(InstallPhase) {
		got = append(got, h.Element+":"+h.Name)
	}
	want := []string{"c:zz-nonumber", "a:9-early", "b:10-A", "b:10-a", "a:20-b", "b:100-late"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("order = %v\nwant    %v", got, want)
	}
	ign := strings.Join(set.Get("b").Ignored, "|")
	if !strings.Contains(ign, "README.md") || !strings.Contains(ign, "30-noexec (not executable)") {
		t.Fatalf("ignored = %q", ign)
	}
}

func TestSortRunPartsMatchesSortN(t *testing.T) {
	names := []string{"10", "-5-neg", "2", "0010-padded", "99999999999999999999999-huge", "abc", "1",
		"10-a", "10-A", "9-b", "00-base", "01-x", "1-x", "100", "-", "--x", "Z", "_under", "20-b", "05"}
	SortRunParts(names)
	want := []string{"-5-neg", "-", "--x", "00-base", "Z", "_under", "abc", "01-x", "1", "1-x", "2", "05",
		"9-b", "0010-padded", "10", "10-A", "10-a", "20-b", "100", "99999999999999999999999-huge"}
	// Cross-check against the real thing dib-run-parts uses.
	cmd := exec.Command("sort", "-n")
	cmd.Env = append(os.Environ(), "LANG=C", "LC_ALL=C")
	cmd.Stdin = strings.NewReader(strings.Join(names, "\n") + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sort -n: %v", err)
	}
	if real := strings.Fields(string(out)); !reflect.DeepEqual(names, real) {
		t.Fatalf("SortRunParts = %v\nsort -n      = %v", names, real)
	}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("got %v, want %v", names, want)
	}
}

func TestPhasesInDIBOrderAndWhereTheyRun(t *testing.T) {
	want := "root.d extra-data.d pre-install.d install.d post-install.d post-root.d block-device.d pre-finalise.d finalise.d cleanup.d"
	var got []string
	var inTarget []string
	for _, p := range Phases {
		got = append(got, string(p))
		if p.InTarget() {
			inTarget = append(inTarget, string(p))
		}
	}
	if strings.Join(got, " ") != want {
		t.Fatalf("phases = %v", got)
	}
	if strings.Join(inTarget, " ") != "pre-install.d install.d post-install.d finalise.d" {
		t.Fatalf("in-target phases = %v", inTarget)
	}
	if p, err := ParsePhase("install"); err != nil || p != InstallPhase {
		t.Fatalf("ParsePhase = %v, %v", p, err)
	}
	if _, err := ParsePhase("bogus.d"); err == nil {
		t.Fatal("ParsePhase accepted a bogus phase")
	}
}

func TestEnvFilesSortedAcrossElements(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/environment.d/20-a.bash": "",
		"b/environment.d/10-b":      "",
		"b/environment.d/bad name":  "",
	}))
	set, err := lib.Expand([]string{"os", "a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := set.EnvFiles(), []string{"environment.d/10-b", "environment.d/20-a.bash"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("env files = %v, want %v", got, want)
	}
}

func TestFirstPhase(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"late/post-install.d/80-x*":      "#!/bin/sh\n",
		"late/finalise.d/10-y*":          "#!/bin/sh\n",
		"pkgs/package-installs.yaml":     "foo:\n  phase: pre-install.d\n",
		"pkgs/post-install.d/10-z*":      "#!/bin/sh\n",
		"envonly/environment.d/10-e":     "export E=1\n",
		"envhook/environment.d/10-f":     "export F=1\n",
		"envhook/install.d/10-envhook*":  "#!/bin/sh\n",
		"withbin/bin/tool*":              "#!/bin/sh\n",
		"withbin/finalise.d/10-withbin*": "#!/bin/sh\n",
		"nothing/README":                 "",
	}))
	cases := map[string]Phase{
		"late": PostInstallPhase, "pkgs": PreInstallPhase, "envonly": RootPhase,
		"withbin": RootPhase, "nothing": RootPhase, "os": RootPhase, "envhook": InstallPhase,
	}
	for name, want := range cases {
		if got := lib.Get(name).FirstPhase(); got != want {
			t.Errorf("%s.FirstPhase() = %s, want %s", name, got, want)
		}
	}
}

func TestMergeIntoBuildsOneHooksTree(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/install.d/10-a*":         "#!/bin/sh\necho a\n",
		"a/static/etc/a.conf":       "a",
		"a/bin/helper*":             "#!/bin/sh\n",
		"a/install.d/20-link":       "->../bin/helper",
		"b/install.d/10-b*":         "#!/bin/sh\necho b\n",
		"b/static/etc/b.conf":       "b",
		"b/tests/should-not-appear": "",
	}))
	set, err := lib.Expand([]string{"os", "a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if _, err := set.MergeInto(dst); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"install.d/10-a", "install.d/10-b", "static/etc/a.conf", "static/etc/b.conf", "root.d/10-root", "bin/helper"} {
		if _, err := os.Stat(filepath.Join(dst, p)); err != nil {
			t.Errorf("merged tree lacks %s", p)
		}
	}
	if fi, err := os.Stat(filepath.Join(dst, "install.d/10-a")); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Errorf("hook lost its exec bit: %v %v", fi, err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "install.d/20-link")); err != nil || l != "../bin/helper" {
		t.Errorf("symlink not preserved: %q %v", l, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "tests")); err == nil {
		t.Error("tests/ was copied")
	}
}

func TestDIBsOwnTreeIsSearchedAfterEveryOtherEntry(t *testing.T) {
	root := t.TempDir()
	// A tree laid out as diskimage-builder installs it: elements/ beside
	// lib/ with disk-image-create's shell library.
	tree(t, root, map[string]string{
		"dib/lib/disk-image-create":        "",
		"dib/lib/img-functions":            "",
		"dib/lib/die":                      "",
		"dib/elements/vm/finalise.d/50-x*": "#!/bin/sh\n",
		"dib/elements/only-dib/README.rst": "",
		"mine/vm/finalise.d/50-y*":         "#!/bin/sh\n",
		"user/custom/README.md":            "",
	})
	dibTree := filepath.Join(root, "dib/elements")
	if !IsDIBTree(dibTree) || IsDIBTree(filepath.Join(root, "mine")) {
		t.Fatal("IsDIBTree does not tell DIB's tree from another")
	}
	order := SearchOrder([]string{dibTree, filepath.Join(root, "user"), filepath.Join(root, "mine"), dibTree})
	want := []string{filepath.Join(root, "user"), filepath.Join(root, "mine"), dibTree}
	if !reflect.DeepEqual(order, want) {
		t.Fatalf("order = %v, want %v (DIB's tree last, once)", order, want)
	}
	lib, err := Scan([]string{dibTree, filepath.Join(root, "user"), filepath.Join(root, "mine")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := lib.Get("vm").Dir; !strings.HasSuffix(got, "mine/vm") {
		t.Errorf("vm = %s, want the one outside DIB's tree", got)
	}
	if lib.Get("only-dib") == nil {
		t.Error("DIB's tree no longer offers its own elements")
	}
}

func TestBuiltinNamesMayBeRequestedAndDependedOn(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/element-deps": "package-installs\n",
	}))
	set, err := lib.ExpandWith([]string{"os", "a", "pkg-map", "dib-run-parts"}, []string{"package-installs", "pkg-map", "dib-run-parts"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(set.Names(), []string{"a", "os"}) {
		t.Errorf("names = %v", set.Names())
	}
	for _, b := range []string{"package-installs", "pkg-map", "dib-run-parts"} {
		if !set.Builtins[b] {
			t.Errorf("builtin %s not recorded as wanted: %v", b, set.Builtins)
		}
	}
}

func TestMentionsFindsWordsAndVariableFamilies(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/install.d/10-a*": "#!/bin/bash\necho ${DIB_RELEASE:-x}-updates $(svc-map foo)\nenv | grep ^DIB_INSTALLTYPE_\n",
	}))
	a := lib.Get("a")
	for _, w := range []string{"DIB_RELEASE", "svc-map", "updates", "DIB_INSTALLTYPE_guest_agent"} {
		if !a.Mentions(w) {
			t.Errorf("Mentions(%q) = false", w)
		}
	}
	for _, w := range []string{"DIB_DEV_USER_USERNAME", "DIB_RELEASE_X"} {
		if a.Mentions(w) {
			t.Errorf("Mentions(%q) = true", w)
		}
	}
}

func TestMergeIntoRecordsWhichElementEachFileCameFrom(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/install.d/a-source-install/31-a*": "#!/bin/sh\n",
		"b/static/etc/b.conf":                "b",
	}))
	set, err := lib.Expand([]string{"os", "a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	owners, err := set.MergeInto(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"install.d/a-source-install/31-a": "a", "static/etc/b.conf": "b", "root.d/10-root": "os"} {
		if owners[p] != want {
			t.Errorf("owner of %s = %q, want %q", p, owners[p], want)
		}
	}
}

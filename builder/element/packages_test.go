package element

import (
	"reflect"
	"strings"
	"testing"
)

func envOf(m map[string]string) Env {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func refs(rs []PackageRef) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Element+":"+r.Package)
	}
	return out
}

func TestPackageInstallsKeys(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/package-installs.yaml": `
libxml2:
grub2:
  phase: pre-install.d
networkmanager:
  uninstall: True
linux-image-amd64:
  arch: amd64
dmidecode:
  not-arch: ppc64, ppc64le
lshw:
  arch: ppc64, ppc64le
libssl-dev:
  build-only: True
feature-on:
  when: DIB_FEATURE = 1
feature-off:
  when:
    - DIB_FEATURE != 1
    - DIB_RELEASE = bookworm
py3:
  dib_python_version: 3
src-only:
  installtype: source
pkg-only:
  installtype: package
multi:
  - arch: arm64
    phase: post-install.d
  - not-arch: arm64
`,
	}))
	set, err := lib.Expand([]string{"os", "a"})
	if err != nil {
		t.Fatal(err)
	}
	pp, err := SquashPackages(set.Elements, envOf(map[string]string{
		"ARCH": "amd64", "DIB_FEATURE": "1", "DIB_RELEASE": "bookworm", "DIB_PYTHON_VERSION": "3",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := refs(pp[InstallPhase].Install), []string{
		"a:libxml2", "a:linux-image-amd64", "a:dmidecode", "a:libssl-dev", "a:feature-on", "a:py3", "a:src-only", "a:multi",
	}; !reflect.DeepEqual(got, want) {
		t.Fatalf("install.d install = %v\nwant %v", got, want)
	}
	if got, want := refs(pp[InstallPhase].Uninstall), []string{"a:networkmanager", "a:libssl-dev"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("install.d uninstall = %v, want %v", got, want)
	}
	if got := refs(pp[PreInstallPhase].Install); !reflect.DeepEqual(got, []string{"a:grub2"}) {
		t.Fatalf("pre-install.d = %v", got)
	}
	if pp[PostInstallPhase] != nil {
		t.Fatalf("post-install.d should be empty on amd64: %+v", pp[PostInstallPhase])
	}

	arm, err := SquashPackages(set.Elements, envOf(map[string]string{
		"ARCH": "arm64", "DIB_FEATURE": "0", "DIB_RELEASE": "bookworm", "DIB_DEFAULT_INSTALLTYPE": "package",
	}))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(refs(arm[InstallPhase].Install), " ")
	for _, want := range []string{"a:feature-off", "a:pkg-only"} {
		if !strings.Contains(got, want) {
			t.Errorf("arm64 install.d lacks %s: %s", want, got)
		}
	}
	for _, not := range []string{"a:linux-image-amd64", "a:feature-on", "a:src-only", "a:py3", "a:multi"} {
		if strings.Contains(got, not) {
			t.Errorf("arm64 install.d has %s: %s", not, got)
		}
	}
	if got := refs(arm[PostInstallPhase].Install); !reflect.DeepEqual(got, []string{"a:multi"}) {
		t.Errorf("arm64 post-install.d = %v", got)
	}
}

func TestUninstallSkippedWhenAnotherElementInstalls(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/package-installs.yaml": "curl:\n",
		"b/package-installs.yaml": "curl:\n  uninstall: true\nwget:\n  uninstall: true\n",
	}))
	set, err := lib.Expand([]string{"os", "a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	pp, err := SquashPackages(set.Elements, envOf(map[string]string{"ARCH": "amd64"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := refs(pp[InstallPhase].Uninstall); !reflect.DeepEqual(got, []string{"b:wget"}) {
		t.Fatalf("uninstall = %v, want only wget (a installs curl)", got)
	}
}

func TestWhenOnUnsetVariableIsAnError(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/package-installs.yaml": "x:\n  when: DIB_NOT_SET = 1\n",
	}))
	set, err := lib.Expand([]string{"os", "a"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = SquashPackages(set.Elements, envOf(map[string]string{"ARCH": "amd64"}))
	if err == nil || !strings.Contains(err.Error(), "DIB_NOT_SET") || !strings.Contains(err.Error(), "element a") {
		t.Fatalf("err = %v", err)
	}
}

func TestMalformedPackageInstallsNamesFileAndKey(t *testing.T) {
	cases := map[string]string{
		"unknown key":     "foo:\n  phaze: install.d\n",
		"bad phase":       "foo:\n  phase: root.d\n",
		"arch and not":    "foo:\n  arch: amd64\n  not-arch: arm64\n",
		"bad when":        "foo:\n  when: nonsense\n",
		"not a mapping":   "- foo\n- bar\n",
		"broken yaml":     "foo: [\n",
		"uninstall false": "foo:\n  uninstall: false\n",
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			tree(t, dir, merge(osElement, map[string]string{"a/package-installs.yaml": content}))
			_, err := Scan([]string{dir}, nil)
			if err == nil {
				t.Fatal("accepted malformed package-installs.yaml")
			}
			if !strings.Contains(err.Error(), "element a") || !strings.Contains(err.Error(), "package-installs.yaml") {
				t.Fatalf("error does not say where: %v", err)
			}
		})
	}
}

func TestPackageInstallsJSON(t *testing.T) {
	pi, err := ParsePackageInstalls([]byte(`{"libxml2": null, "grub2": {"phase": "pre-install.d"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(pi) != 2 || pi[1].Specs[0].Phase != PreInstallPhase {
		t.Fatalf("parsed = %+v", pi)
	}
}

func TestPkgMap(t *testing.T) {
	lib := scan(t, merge(osElement, map[string]string{
		"a/package-installs.yaml": "db_server:\nclient:\ndropped:\nplain:\n",
		"a/pkg-map": `{
  "release": {"debian": {"trixie": {"db_server": "mariadb-server-11"}}},
  "distro": {"debian": {"client": "mariadb-client"}},
  "family": {"debian": {"db_server": "mariadb-server", "dropped": ""}},
  "default": {"db_server": "mysql-server", "client": "mysql-client"}
}`,
	}))
	set, err := lib.Expand([]string{"os", "a"})
	if err != nil {
		t.Fatal(err)
	}
	pp, err := SquashPackages(set.Elements, envOf(map[string]string{"ARCH": "amd64"}))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		distro, release string
		want            []string
	}{
		{"debian", "bookworm", []string{"mariadb-client", "mariadb-server", "plain"}},
		{"debian", "trixie", []string{"mariadb-client", "mariadb-server-11", "plain"}},
		{"fedora", "40", []string{"dropped", "mysql-client", "mysql-server", "plain"}},
	}
	for _, c := range cases {
		got := ResolvedPackages(pp[InstallPhase].Install, set.ByName(), c.distro, c.release)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s/%s: %v, want %v", c.distro, c.release, got, c.want)
		}
	}
}

func TestMalformedPkgMap(t *testing.T) {
	dir := t.TempDir()
	tree(t, dir, merge(osElement, map[string]string{"a/pkg-map": `{"defaults": {}}`}))
	if _, err := Scan([]string{dir}, nil); err == nil || !strings.Contains(err.Error(), "pkg-map") {
		t.Fatalf("err = %v", err)
	}
}

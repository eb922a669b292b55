package element

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// PackageSpec is one entry of package-installs.yaml for one package. A
// package may carry several specs (a YAML list), each filtered on its own.
type PackageSpec struct {
	Package string
	Phase   Phase
	// Uninstall removes the package in Phase instead of installing it.
	Uninstall bool
	// BuildOnly installs the package in Phase and removes it again at the
	// end of that phase.
	BuildOnly     bool
	Arch          []string
	NotArch       []string
	When          []Condition
	InstallType   string
	PythonVersion string
}

// Condition is a package-installs "when" test: VAR = value or VAR != value.
type Condition struct {
	Var    string
	Negate bool
	Value  string
}

func (c Condition) String() string {
	op := "="
	if c.Negate {
		op = "!="
	}
	return c.Var + " " + op + " " + c.Value
}

// PackageInstalls is an element's package-installs file, in file order.
type PackageInstalls []PackageEntry

// PackageEntry is one package name and its specs.
type PackageEntry struct {
	Package string
	Specs   []PackageSpec
}

// Specs flattens the entries, for callers that only need the specs.
func (pi PackageInstalls) specs() []PackageSpec {
	var out []PackageSpec
	for _, e := range pi {
		out = append(out, e.Specs...)
	}
	return out
}

var whenRE = regexp.MustCompile(`^(\w+)\s*(!=|=)\s*(.*)$`)

var packageKeys = map[string]bool{
	"phase": true, "uninstall": true, "build-only": true, "arch": true,
	"not-arch": true, "when": true, "installtype": true, "dib_python_version": true,
}

// packagePhases are where package-installs can act (DIB's package-installs
// element has hooks only there).
var packagePhases = map[Phase]bool{PreInstallPhase: true, InstallPhase: true, PostInstallPhase: true}

func loadPackageInstalls(dir string) (PackageInstalls, error) {
	var path string
	var data []byte
	for _, name := range []string{"package-installs.yaml", "package-installs.json"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if path != "" {
			return nil, fmt.Errorf("both %s and %s exist: keep one", path, filepath.Join(dir, name))
		}
		path, data = filepath.Join(dir, name), b
	}
	if path == "" {
		return nil, nil
	}
	pi, err := ParsePackageInstalls(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pi, nil
}

// ParsePackageInstalls decodes a package-installs.yaml (JSON is YAML too).
func ParsePackageInstalls(data []byte) (PackageInstalls, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("malformed YAML: %w", err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, nil // empty file
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: expected a mapping of package names, found %s", root.Line, kindName(root))
	}
	var out PackageInstalls
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			return nil, fmt.Errorf("line %d: package name must be a non-empty string", k.Line)
		}
		entry := PackageEntry{Package: k.Value}
		var params []*yaml.Node
		switch {
		case v.Kind == yaml.ScalarNode && (v.Tag == "!!null" || v.Value == ""):
			params = []*yaml.Node{nil}
		case v.Kind == yaml.MappingNode:
			params = []*yaml.Node{v}
		case v.Kind == yaml.SequenceNode:
			params = v.Content
			if len(params) == 0 {
				params = []*yaml.Node{nil}
			}
		default:
			return nil, fmt.Errorf("line %d: package %s: expected nothing, a mapping or a list of mappings, found %s", v.Line, k.Value, kindName(v))
		}
		for _, p := range params {
			spec, err := parseSpec(k.Value, p)
			if err != nil {
				return nil, err
			}
			entry.Specs = append(entry.Specs, spec)
		}
		out = append(out, entry)
	}
	return out, nil
}

func parseSpec(pkg string, n *yaml.Node) (PackageSpec, error) {
	s := PackageSpec{Package: pkg, Phase: InstallPhase}
	if n == nil {
		return s, nil
	}
	if n.Kind != yaml.MappingNode {
		return s, fmt.Errorf("line %d: package %s: expected a mapping, found %s", n.Line, pkg, kindName(n))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		where := fmt.Sprintf("line %d: package %s: key %q", k.Line, pkg, k.Value)
		if !packageKeys[k.Value] {
			return s, fmt.Errorf("%s: unknown key (known: phase, uninstall, build-only, arch, not-arch, when, installtype, dib_python_version)", where)
		}
		switch k.Value {
		case "phase":
			p := Phase(v.Value)
			if !packagePhases[p] {
				return s, fmt.Errorf("%s: %q is not one of pre-install.d, install.d, post-install.d", where, v.Value)
			}
			s.Phase = p
		case "uninstall", "build-only":
			var b bool
			if err := v.Decode(&b); err != nil {
				return s, fmt.Errorf("%s: expected true or false", where)
			}
			// DIB tests for the key's presence, not its value; a "false"
			// would surprise everybody, so refuse it.
			if !b {
				return s, fmt.Errorf("%s: only true is meaningful (DIB acts on the key's presence); remove the key instead", where)
			}
			if k.Value == "uninstall" {
				s.Uninstall = true
			} else {
				s.BuildOnly = true
			}
		case "arch", "not-arch":
			list, err := commaList(v)
			if err != nil {
				return s, fmt.Errorf("%s: %w", where, err)
			}
			if k.Value == "arch" {
				s.Arch = list
			} else {
				s.NotArch = list
			}
		case "when":
			var lines []string
			switch v.Kind {
			case yaml.ScalarNode:
				lines = []string{v.Value}
			case yaml.SequenceNode:
				for _, c := range v.Content {
					if c.Kind != yaml.ScalarNode {
						return s, fmt.Errorf("%s: each condition must be a string", where)
					}
					lines = append(lines, c.Value)
				}
			default:
				return s, fmt.Errorf("%s: expected a string or a list of strings", where)
			}
			for _, l := range lines {
				m := whenRE.FindStringSubmatch(strings.TrimSpace(l))
				if m == nil {
					return s, fmt.Errorf("%s: malformed condition %q (expected VAR = value or VAR != value)", where, l)
				}
				s.When = append(s.When, Condition{Var: m[1], Negate: m[2] == "!=", Value: strings.TrimSpace(m[3])})
			}
		case "installtype":
			s.InstallType = v.Value
		case "dib_python_version":
			s.PythonVersion = v.Value
		}
	}
	if len(s.Arch) > 0 && len(s.NotArch) > 0 {
		return s, fmt.Errorf("line %d: package %s: arch and not-arch cannot both be given", n.Line, pkg)
	}
	return s, nil
}

func commaList(v *yaml.Node) ([]string, error) {
	if v.Kind != yaml.ScalarNode {
		return nil, errors.New("expected a comma-separated string")
	}
	var out []string
	for _, a := range strings.Split(v.Value, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out, nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

// PackageRef is a package to act on and the element that asked for it.
type PackageRef struct {
	Package string `json:"package"`
	Element string `json:"element"`
}

// PhasePackages is what package-installs does in one phase: install, then
// (at the end of the phase) uninstall.
type PhasePackages struct {
	Install   []PackageRef `json:"install,omitempty"`
	Uninstall []PackageRef `json:"uninstall,omitempty"`
}

// Env looks variables up for "when" conditions, arch and installtype.
type Env func(string) (string, bool)

// SquashPackages merges the package-installs files of the elements (visited
// in the order given) into per-phase install and uninstall lists, applying
// arch/not-arch, when, installtype and dib_python_version filters the way
// DIB's package-installs-squash does, including its rule that a package
// someone installs without uninstalling is not uninstalled for somebody else.
func SquashPackages(elements []*Element, env Env) (map[Phase]*PhasePackages, error) {
	out := map[Phase]*PhasePackages{}
	get := func(p Phase) *PhasePackages {
		if out[p] == nil {
			out[p] = &PhasePackages{}
		}
		return out[p]
	}
	arch, _ := env("ARCH")
	for _, el := range elements {
		for _, spec := range el.Packages.specs() {
			pp := get(spec.Phase)
			installs, uninstalls := true, false
			if spec.Uninstall || spec.BuildOnly {
				inInstall := containsPkg(pp.Install, spec.Package)
				notInUninstall := !containsPkg(pp.Uninstall, spec.Package)
				if inInstall && notInUninstall {
					if !spec.BuildOnly {
						continue
					}
				} else {
					if spec.Uninstall {
						installs, uninstalls = false, true
					}
					if spec.BuildOnly {
						installs, uninstalls = true, true
					}
				}
			} else {
				pp.Uninstall = removePkg(pp.Uninstall, spec.Package)
			}
			if spec.InstallType != "" && spec.InstallType != installType(el.Name, env) {
				continue
			}
			if len(spec.Arch) > 0 && !contains(spec.Arch, arch) {
				continue
			}
			if len(spec.NotArch) > 0 && contains(spec.NotArch, arch) {
				continue
			}
			if spec.PythonVersion != "" {
				if v, _ := env("DIB_PYTHON_VERSION"); v != spec.PythonVersion {
					continue
				}
			}
			ok, err := evalWhen(spec.When, env)
			if err != nil {
				return nil, fmt.Errorf("element %s: package-installs: package %s: %w", el.Name, spec.Package, err)
			}
			if !ok {
				continue
			}
			ref := PackageRef{Package: spec.Package, Element: el.Name}
			if installs {
				pp.Install = append(pp.Install, ref)
			}
			if uninstalls {
				pp.Uninstall = append(pp.Uninstall, ref)
			}
		}
	}
	for p, pp := range out {
		if len(pp.Install) == 0 && len(pp.Uninstall) == 0 {
			delete(out, p)
		}
	}
	return out, nil
}

func installType(element string, env Env) string {
	if v, ok := env("DIB_INSTALLTYPE_" + strings.ReplaceAll(element, "-", "_")); ok {
		return v
	}
	if v, ok := env("DIB_DEFAULT_INSTALLTYPE"); ok {
		return v
	}
	return "source"
}

func evalWhen(conds []Condition, env Env) (bool, error) {
	for _, c := range conds {
		v, ok := env(c.Var)
		if !ok {
			return false, fmt.Errorf("when %q: the variable %s is not set (give it a default in an environment.d file)", c.String(), c.Var)
		}
		if (v == c.Value) == c.Negate {
			return false, nil
		}
	}
	return true, nil
}

func containsPkg(refs []PackageRef, pkg string) bool {
	for _, r := range refs {
		if r.Package == pkg {
			return true
		}
	}
	return false
}

func removePkg(refs []PackageRef, pkg string) []PackageRef {
	out := refs[:0]
	for _, r := range refs {
		if r.Package != pkg {
			out = append(out, r)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// PkgMap is an element's pkg-map file: package name translations by
// release, distro, family and default, most specific first.
type PkgMap struct {
	Release map[string]map[string]map[string]string `json:"release"`
	Distro  map[string]map[string]string            `json:"distro"`
	Family  map[string]map[string]string            `json:"family"`
	Default map[string]string                       `json:"default"`
}

func loadPkgMap(path string) (*PkgMap, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m PkgMap
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: malformed pkg-map (expected JSON with release/distro/family/default sections): %w", path, err)
	}
	return &m, nil
}

// family is pkg-map's distro family table.
func family(distro string) string {
	switch distro {
	case "fedora", "rhel", "centos", "openeuler", "rocky", "almalinux":
		return "redhat"
	case "debian", "ubuntu":
		return "debian"
	case "opensuse", "sles":
		return "suse"
	case "gentoo":
		return "gentoo"
	}
	return ""
}

// Table flattens the map for one distro and release: default, then family,
// then distro, then release entries, later ones winning.
func (m *PkgMap) Table(distro, release string) map[string]string {
	t := map[string]string{}
	if m == nil {
		return t
	}
	for k, v := range m.Default {
		t[k] = v
	}
	for k, v := range m.Family[family(distro)] {
		t[k] = v
	}
	for k, v := range m.Distro[distro] {
		t[k] = v
	}
	for k, v := range m.Release[distro][release] {
		t[k] = v
	}
	return t
}

// Map translates a package name with the element's pkg-map. A mapping may
// name several packages (space separated) or none; an unmapped name is
// returned unchanged, as pkg-map --missing-ok does.
func (m *PkgMap) Map(pkg, distro, release string) []string {
	if v, ok := m.Table(distro, release)[pkg]; ok {
		return strings.Fields(v)
	}
	return []string{pkg}
}

// ResolvedPackages maps the squashed references through each element's
// pkg-map and returns sorted, de-duplicated package names.
func ResolvedPackages(refs []PackageRef, byName map[string]*Element, distro, release string) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range refs {
		var names []string
		if el := byName[r.Element]; el != nil {
			names = el.PkgMap.Map(r.Package, distro, release)
		} else {
			names = []string{r.Package}
		}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out
}

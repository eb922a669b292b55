package element

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Library is every element found on a search path, by name.
type Library struct {
	byName map[string]*Element
	// Overrides records each element hidden by one of the same name found
	// earlier on the path.
	Overrides []Override
}

// Override says that the element at Winner hides the one at Hidden.
type Override struct {
	Name, Winner, Hidden string
}

// Scan reads every element directory in paths. As with DIB's ELEMENTS_PATH,
// an element found in an earlier path hides one of the same name in a later
// path; each such override is recorded (and logged at debug level: the
// builder reports those of the elements a build uses). diskimage-builder's own
// element tree is searched after every other entry (see SearchOrder).
func Scan(paths []string, log *slog.Logger) (*Library, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lib := &Library{byName: map[string]*Element{}}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no element search path: set ELEMENTS_PATH or pass element directories")
	}
	for _, dir := range SearchOrder(paths) {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("ELEMENTS_PATH entry %q is not a directory", dir)
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("ELEMENTS_PATH entry %q: %w", dir, err)
		}
		for _, de := range entries {
			p := filepath.Join(dir, de.Name())
			if fi, err := os.Stat(p); err != nil || !fi.IsDir() || strings.HasPrefix(de.Name(), ".") {
				continue
			}
			el, err := Load(de.Name(), p)
			if err != nil {
				return nil, err
			}
			if prev, ok := lib.byName[el.Name]; ok {
				lib.Overrides = append(lib.Overrides, Override{Name: el.Name, Winner: prev.Dir, Hidden: el.Dir})
				log.Debug("element override", "element", el.Name, "using", prev.Dir, "hiding", el.Dir)
				continue
			}
			lib.byName[el.Name] = el
		}
	}
	return lib, nil
}

// SearchOrder is the order Scan searches paths in: every entry in the
// order given, except that diskimage-builder's own element tree (see
// IsDIBTree) goes last. disk-image-create always searches its own tree
// after ELEMENTS_PATH; strata's elements stand in for that tree's base,
// vm and debian-minimal (they build on strata's loopless disk assembly),
// so naming DIB's tree in ELEMENTS_PATH adds its elements without hiding
// strata's, as it adds them without hiding the user's under DIB.
func SearchOrder(paths []string) []string {
	var first, last []string
	seen := map[string]bool{}
	for _, p := range paths {
		key := p
		if real, err := filepath.EvalSymlinks(p); err == nil {
			key = real
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		if IsDIBTree(p) {
			last = append(last, p)
		} else {
			first = append(first, p)
		}
	}
	return append(first, last...)
}

// IsDIBTree reports whether dir is the element tree of an installed
// diskimage-builder: it sits beside DIB's lib/ directory with
// disk-image-create's shell library in it.
func IsDIBTree(dir string) bool {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false
	}
	lib := filepath.Join(filepath.Dir(real), "lib")
	for _, f := range []string{"disk-image-create", "img-functions", "die"} {
		if fi, err := os.Stat(filepath.Join(lib, f)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return filepath.Base(real) == "elements"
}

// Get returns the named element, or nil.
func (l *Library) Get(name string) *Element { return l.byName[name] }

// Names lists every element in the library, sorted.
func (l *Library) Names() []string {
	var out []string
	for n := range l.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// MissingError: an element was asked for (directly or as a dependency) but
// is not on the search path.
type MissingError struct {
	Name       string
	RequiredBy string // empty when requested directly
}

func (e *MissingError) Error() string {
	if e.RequiredBy == "" {
		return fmt.Sprintf("element %s not found on the element search path", e.Name)
	}
	return fmt.Sprintf("element %s (a dependency of %s) not found on the element search path", e.Name, e.RequiredBy)
}

// AlreadyProvidedError: two elements provide the same name, or an element
// requested by name is also provided by another element.
type AlreadyProvidedError struct {
	Name      string
	Providers []string
	Requested bool // Name was itself requested as an element
}

func (e *AlreadyProvidedError) Error() string {
	if e.Requested {
		return fmt.Sprintf("element %s was requested but is already provided by %s: drop one of them", e.Name, strings.Join(e.Providers, ", "))
	}
	return fmt.Sprintf("%s is provided by more than one element: %s", e.Name, strings.Join(e.Providers, " and "))
}

// NoOperatingSystemError: no element in the set provides operating-system.
type NoOperatingSystemError struct {
	Elements []string
}

func (e *NoOperatingSystemError) Error() string {
	return fmt.Sprintf("no element provides operating-system among %s: add a distribution element such as debian-minimal", strings.Join(e.Elements, ", "))
}

// CycleError: element-deps form a loop.
type CycleError struct {
	Path []string
}

func (e *CycleError) Error() string {
	return "element dependency cycle: " + strings.Join(e.Path, " -> ")
}

// DuplicateFileError: two elements ship a file of the same name in the same
// hook directory (a hook, an environment.d file, a bin/ helper...).
type DuplicateFileError struct {
	Path     string // e.g. "install.d/50-foo"
	Elements []string
}

func (e *DuplicateFileError) Error() string {
	return fmt.Sprintf("%s is shipped by more than one element: %s", e.Path, strings.Join(e.Elements, " and "))
}

// OperatingSystem is DIB's virtual element every build needs a provider of.
const OperatingSystem = "operating-system"

// Set is an expanded, validated element set.
type Set struct {
	// Elements are the real elements of the build, sorted by name.
	Elements []*Element
	// Requested are the names the user asked for, in order.
	Requested []string
	// ProvidedBy maps each provided (virtual) name to the element providing it.
	ProvidedBy map[string]string
	// Builtins are the builder-provided names (see ExpandWith) that were
	// requested or depended upon.
	Builtins map[string]bool
}

// Expand resolves the requested elements and their element-deps
// transitively, honouring element-provides, and checks the result: every
// dependency exists, no name is provided twice, an operating-system element
// is present, there is no dependency cycle, and no two elements ship a file
// of the same name in the same hook directory.
func (l *Library) Expand(requested []string) (*Set, error) {
	return l.ExpandWith(requested, nil)
}

// BuiltinProvider is the provider name recorded for names the builder
// itself provides (see ExpandWith).
const BuiltinProvider = "(builtin)"

// ExpandWith is Expand where the builder itself provides the names in
// builtin (DIB's package-installs, for instance): dependencies on them are
// satisfied without looking for an element.
func (l *Library) ExpandWith(requested, builtin []string) (*Set, error) {
	if len(requested) == 0 {
		return nil, fmt.Errorf("no elements given")
	}
	final := map[string]bool{}
	provided := map[string][]string{}
	for _, b := range builtin {
		provided[b] = []string{BuiltinProvider}
	}
	requiredBy := map[string]string{}
	wanted := map[string]bool{}
	var queue []string
	for _, r := range requested {
		if containsName(builtin, r) {
			wanted[r] = true // asked for by name, as DIB users do: the builder has it
			continue
		}
		if !final[r] {
			final[r] = true
			queue = append(queue, r)
		}
	}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if len(provided[name]) > 0 {
			continue
		}
		el := l.byName[name]
		if el == nil {
			return nil, &MissingError{Name: name, RequiredBy: requiredBy[name]}
		}
		for _, p := range el.Provides {
			if len(provided[p]) > 0 {
				return nil, &AlreadyProvidedError{Name: p, Providers: append(append([]string{}, provided[p]...), name)}
			}
			provided[p] = append(provided[p], name)
		}
		for _, d := range el.Deps {
			if containsName(builtin, d) {
				wanted[d] = true
			}
			if final[d] || len(provided[d]) > 0 {
				continue
			}
			final[d] = true
			requiredBy[d] = name
			queue = append(queue, d)
		}
	}
	for _, r := range requested {
		if containsName(builtin, r) {
			continue
		}
		if ps := provided[r]; len(ps) > 0 {
			return nil, &AlreadyProvidedError{Name: r, Providers: ps, Requested: true}
		}
	}
	set := &Set{Requested: append([]string{}, requested...), ProvidedBy: map[string]string{}, Builtins: wanted}
	for p, ps := range provided {
		set.ProvidedBy[p] = ps[0]
	}
	var names []string
	for n := range final {
		if len(provided[n]) == 0 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		set.Elements = append(set.Elements, l.byName[n])
	}
	if len(provided[OperatingSystem]) == 0 {
		return nil, &NoOperatingSystemError{Elements: names}
	}
	if err := set.checkCycles(); err != nil {
		return nil, err
	}
	if err := set.checkDuplicates(); err != nil {
		return nil, err
	}
	return set, nil
}

func containsName(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Get returns the element of that name in the set, or nil.
func (s *Set) Get(name string) *Element {
	for _, e := range s.Elements {
		if e.Name == name {
			return e
		}
	}
	return nil
}

// Has reports whether name is an element of the set or provided by one.
func (s *Set) Has(name string) bool {
	_, ok := s.ProvidedBy[name]
	return ok || s.Get(name) != nil
}

// Names lists the set's elements, sorted.
func (s *Set) Names() []string {
	var out []string
	for _, e := range s.Elements {
		out = append(out, e.Name)
	}
	return out
}

// ByName indexes the set's elements.
func (s *Set) ByName() map[string]*Element {
	m := map[string]*Element{}
	for _, e := range s.Elements {
		m[e.Name] = e
	}
	return m
}

// resolve maps a dependency name to the element that satisfies it.
func (s *Set) resolve(name string) string {
	if p, ok := s.ProvidedBy[name]; ok {
		return p
	}
	return name
}

func (s *Set) checkCycles() error {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	byName := s.ByName()
	var stack []string
	var visit func(string) error
	visit = func(n string) error {
		color[n] = grey
		stack = append(stack, n)
		for _, d := range byName[n].Deps {
			d = s.resolve(d)
			if d == n || byName[d] == nil {
				continue // an element providing what it depends on is not a loop
			}
			switch color[d] {
			case grey:
				i := len(stack) - 1
				for stack[i] != d {
					i--
				}
				return &CycleError{Path: append(append([]string{}, stack[i:]...), d)}
			case white:
				if err := visit(d); err != nil {
					return err
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
		return nil
	}
	for _, e := range s.Elements {
		if color[e.Name] == white {
			if err := visit(e.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

// skipDirs are element subdirectories DIB does not copy into the hooks tree.
var skipDirs = map[string]bool{"tests": true, "__pycache__": true, "test-elements": true}

// checkDuplicates applies DIB's rule: within any subdirectory of the merged
// hooks tree (phase dirs, environment.d, bin, static...), a file name may be
// shipped by one element only.
func (s *Set) checkDuplicates() error {
	owner := map[string]string{}
	for _, e := range s.Elements {
		files, err := topFiles(e.Dir)
		if err != nil {
			return fmt.Errorf("element %s: %w", e.Name, err)
		}
		for _, f := range files {
			if prev, ok := owner[f]; ok {
				return &DuplicateFileError{Path: f, Elements: []string{prev, e.Name}}
			}
			owner[f] = e.Name
		}
	}
	return nil
}

// topFiles lists "<subdir>/<file>" for the files directly inside each of the
// element's subdirectories.
func topFiles(dir string) ([]string, error) {
	subs, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, sd := range subs {
		p := filepath.Join(dir, sd.Name())
		fi, err := os.Stat(p)
		if err != nil || !fi.IsDir() || skipDirs[sd.Name()] {
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		for _, f := range entries {
			fi, err := os.Stat(filepath.Join(p, f.Name()))
			if err != nil {
				return nil, err
			}
			if fi.Mode().IsRegular() {
				out = append(out, sd.Name()+"/"+f.Name())
			}
		}
	}
	return out, nil
}

// Hook is one hook to run: its phase, file name and owning element.
type Hook struct {
	Phase   Phase
	Name    string
	Element string
	// Builtin hooks are supplied by the builder itself (package-installs).
	Builtin bool
}

// Path is the hook's path relative to the merged hooks directory.
func (h Hook) Path() string { return string(h.Phase) + "/" + h.Name }

// Hooks lists the phase's hooks of every element, sorted as dib-run-parts
// sorts them.
func (s *Set) Hooks(p Phase) []Hook {
	var out []Hook
	for _, e := range s.Elements {
		for _, h := range e.Hooks[p] {
			out = append(out, Hook{Phase: p, Name: h, Element: e.Name})
		}
	}
	SortHooks(out)
	return out
}

// SortHooks orders hooks by name the way dib-run-parts does.
func SortHooks(hooks []Hook) {
	sort.SliceStable(hooks, func(i, j int) bool { return runPartsLess(hooks[i].Name, hooks[j].Name) })
}

// EnvFiles lists every element's environment.d files in the order
// dib-run-parts sources them, as paths relative to the merged hooks dir.
func (s *Set) EnvFiles() []string {
	var names []string
	for _, e := range s.Elements {
		names = append(names, e.EnvFiles...)
	}
	SortRunParts(names)
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "environment.d/" + n
	}
	return out
}

// MergeInto copies every element's subdirectories into dst the way DIB
// builds TMP_HOOKS_PATH: one tree in which each phase directory holds the
// hooks of all elements. Top-level files are copied too (later elements in
// name order win, as nothing reads them by name). File modes and symlinks are
// preserved. It returns which element each file (path relative to dst)
// came from.
func (s *Set) MergeInto(dst string) (map[string]string, error) {
	owners := map[string]string{}
	for _, e := range s.Elements {
		entries, err := os.ReadDir(e.Dir)
		if err != nil {
			return nil, fmt.Errorf("element %s: %w", e.Name, err)
		}
		for _, de := range entries {
			src := filepath.Join(e.Dir, de.Name())
			fi, err := os.Stat(src)
			if err != nil {
				return nil, fmt.Errorf("element %s: %w", e.Name, err)
			}
			if fi.IsDir() && skipDirs[de.Name()] {
				continue
			}
			err = copyTree(src, filepath.Join(dst, de.Name()), func(rel string) {
				owners[filepath.ToSlash(filepath.Join(de.Name(), rel))] = e.Name
			})
			if err != nil {
				return nil, fmt.Errorf("element %s: copying %s: %w", e.Name, de.Name(), err)
			}
		}
	}
	return owners, nil
}

// copyTree copies src (file, dir or symlink) to dst, merging directories.
// A src that is a symlink to a directory is followed; symlinks below it are
// copied as symlinks, as cp -a does.
func copyTree(src, dst string, copied func(rel string)) error {
	if fi, err := os.Stat(src); err == nil && fi.IsDir() {
		if real, err := filepath.EvalSymlinks(src); err == nil {
			src = real
		}
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != src && d.IsDir() && d.Name() == "__pycache__" {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		copied(rel)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			_ = os.Remove(target)
			return os.Symlink(link, target)
		case info.IsDir():
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case info.Mode().IsRegular():
			return copyFile(p, target, info.Mode().Perm())
		}
		return nil
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	_ = os.Remove(dst)
	return os.WriteFile(dst, b, mode)
}

package element

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Phase is one of DIB's hook directories.
type Phase string

// The phases in the order DIB runs them.
const (
	RootPhase        Phase = "root.d"
	ExtraDataPhase   Phase = "extra-data.d"
	PreInstallPhase  Phase = "pre-install.d"
	InstallPhase     Phase = "install.d"
	PostInstallPhase Phase = "post-install.d"
	PostRootPhase    Phase = "post-root.d"
	BlockDevicePhase Phase = "block-device.d"
	PreFinalisePhase Phase = "pre-finalise.d"
	FinalisePhase    Phase = "finalise.d"
	CleanupPhase     Phase = "cleanup.d"
)

// Phases lists every phase in run order.
var Phases = []Phase{
	RootPhase, ExtraDataPhase, PreInstallPhase, InstallPhase, PostInstallPhase,
	PostRootPhase, BlockDevicePhase, PreFinalisePhase, FinalisePhase, CleanupPhase,
}

// InTarget reports whether DIB runs the phase's hooks inside the image root
// (chroot) rather than on the build host.
func (p Phase) InTarget() bool {
	switch p {
	case PreInstallPhase, InstallPhase, PostInstallPhase, FinalisePhase:
		return true
	}
	return false
}

// Index is the phase's position in Phases, or -1 if it is not a phase.
func (p Phase) Index() int {
	for i, q := range Phases {
		if q == p {
			return i
		}
	}
	return -1
}

// ParsePhase accepts a phase name with or without the ".d" suffix.
func ParsePhase(s string) (Phase, error) {
	if !strings.HasSuffix(s, ".d") {
		s += ".d"
	}
	p := Phase(s)
	if p.Index() < 0 {
		return "", fmt.Errorf("unknown phase %q (phases: %s)", s, phaseList())
	}
	return p, nil
}

func phaseList() string {
	var names []string
	for _, p := range Phases {
		names = append(names, string(p))
	}
	return strings.Join(names, ", ")
}

// hookName is dib-run-parts' rule for which files in a phase directory run.
var hookName = regexp.MustCompile(`^[0-9A-Za-z_-]+$`)

// envFileName is dib-run-parts' rule for which environment.d files are sourced.
var envFileName = regexp.MustCompile(`^[0-9A-Za-z_.-]+$`)

// Element is one element directory and what it declares.
type Element struct {
	Name string
	// Dir is the element's directory, symlinks resolved.
	Dir string
	// Deps and Provides come from element-deps and element-provides.
	Deps     []string
	Provides []string
	// Hooks maps a phase to the names of the element's runnable hooks there.
	Hooks map[Phase][]string
	// EnvFiles are the names of the element's environment.d files.
	EnvFiles []string
	// Ignored lists files in phase directories that dib-run-parts would not
	// run (not executable, or a name with characters it rejects), with why.
	Ignored []string
	// Inputs lists environment variables (from the strata extension file
	// element-inputs) whose values name host files the element consumes;
	// their contents are part of the element's identity for caching.
	Inputs []string
	// OptionalInputs are the Inputs listed with a trailing "?": a build
	// without the variable goes on without the file (a variable that
	// names a missing file still fails it).
	OptionalInputs map[string]bool
	// HasBin is set when the element ships a bin/ directory of helpers that
	// hooks of any element and phase may call.
	HasBin bool
	// Packages is the parsed package-installs file, nil if there is none.
	Packages PackageInstalls
	// PkgMap is the parsed pkg-map file, nil if there is none.
	PkgMap *PkgMap
	// Words are the shell-identifier-like words of the element's text
	// files: a variable (or a command) an element never names cannot
	// change what its hooks do, which is how the builder decides what
	// enters a cache key (see Mentions).
	Words map[string]bool
	// BinNames are the helpers in bin/, which DIB puts on every hook's PATH.
	BinNames []string
}

// Mentions reports whether any of the element's text files names word,
// or a prefix of it ending in "_" (DIB_INSTALLTYPE_ stands for every
// DIB_INSTALLTYPE_<name>: elements read such families by prefix).
func (e *Element) Mentions(word string) bool {
	if e.Words[word] {
		return true
	}
	for i := strings.IndexByte(word, '_'); i >= 0; {
		if i >= 3 && e.Words[word[:i+1]] {
			return true
		}
		j := strings.IndexByte(word[i+1:], '_')
		if j < 0 {
			break
		}
		i += j + 1
	}
	return false
}

// FirstPhase is the earliest phase the element takes part in: it has hooks
// there or packages installed or removed there. An element shipping bin/
// helpers (which any hook of any phase may call), or with no hooks at all,
// takes part from RootPhase on. (environment.d files reach every phase
// through the environment itself, so they do not move the first phase.)
func (e *Element) FirstPhase() Phase {
	first := -1
	mark := func(p Phase) {
		if i := p.Index(); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	for p, hooks := range e.Hooks {
		if len(hooks) > 0 {
			mark(p)
		}
	}
	for _, s := range e.Packages.specs() {
		mark(s.Phase)
	}
	if first < 0 || e.HasBin {
		return RootPhase
	}
	return Phases[first]
}

// Load reads the element in dir. name is the element's name (the directory's
// base name as found on the search path).
func Load(name, dir string) (*Element, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("element %s: %w", name, err)
	}
	e := &Element{Name: name, Dir: real, Hooks: map[Phase][]string{}}
	if e.Deps, err = readList(filepath.Join(real, "element-deps")); err != nil {
		return nil, fmt.Errorf("element %s: %w", name, err)
	}
	if e.Provides, err = readList(filepath.Join(real, "element-provides")); err != nil {
		return nil, fmt.Errorf("element %s: %w", name, err)
	}
	if e.Inputs, err = readList(filepath.Join(real, "element-inputs")); err != nil {
		return nil, fmt.Errorf("element %s: %w", name, err)
	}
	for i, v := range e.Inputs {
		if name, ok := strings.CutSuffix(v, "?"); ok {
			if e.OptionalInputs == nil {
				e.OptionalInputs = map[string]bool{}
			}
			e.Inputs[i], e.OptionalInputs[name] = name, true
		}
	}
	for _, p := range Phases {
		hooks, ignored, err := scanHooks(filepath.Join(real, string(p)))
		if err != nil {
			return nil, fmt.Errorf("element %s: %w", name, err)
		}
		if len(hooks) > 0 {
			e.Hooks[p] = hooks
		}
		for _, ig := range ignored {
			e.Ignored = append(e.Ignored, string(p)+"/"+ig)
		}
	}
	if fi, err := os.Stat(filepath.Join(real, "bin")); err == nil && fi.IsDir() {
		e.HasBin = true
		entries, err := os.ReadDir(filepath.Join(real, "bin"))
		if err != nil {
			return nil, fmt.Errorf("element %s: %w", name, err)
		}
		for _, de := range entries {
			e.BinNames = append(e.BinNames, de.Name())
		}
	}
	if e.Words, err = scanWords(real); err != nil {
		return nil, fmt.Errorf("element %s: %w", name, err)
	}
	if e.EnvFiles, err = scanEnvFiles(filepath.Join(real, "environment.d")); err != nil {
		return nil, fmt.Errorf("element %s: %w", name, err)
	}
	if e.Packages, err = loadPackageInstalls(real); err != nil {
		return nil, fmt.Errorf("element %s: %w", name, err)
	}
	if e.PkgMap, err = loadPkgMap(filepath.Join(real, "pkg-map")); err != nil {
		return nil, fmt.Errorf("element %s: %w", name, err)
	}
	return e, nil
}

// wordRE matches what could be a shell variable or command name.
var wordRE = regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_-]*`)

// maxWordFile bounds how much of one file is scanned for words: element
// files are scripts and small data; anything larger is a payload.
const maxWordFile = 1 << 20

// scanWords collects the words of every text file below dir (binary files,
// those with a NUL byte, are skipped). A name with a dash yields the whole
// name and its dash-separated parts, so both "svc-map" and "DIB_X" match.
func scanWords(dir string) (map[string]bool, error) {
	words := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && skipDirs[d.Name()] {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			return nil // dangling links name nothing
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxWordFile))
		if err != nil {
			return err
		}
		if bytes.IndexByte(b[:min(len(b), 8000)], 0) >= 0 {
			return nil
		}
		for _, w := range wordRE.FindAll(b, -1) {
			words[string(w)] = true
			if bytes.IndexByte(w, '-') >= 0 {
				for _, part := range bytes.Split(w, []byte("-")) {
					if len(part) > 0 {
						words[string(part)] = true
					}
				}
			}
		}
		return nil
	})
	return words, err
}

// readList reads a one-name-per-line file; a missing file is an empty list.
// Blank lines and lines starting with '#' are skipped.
func readList(path string) ([]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.ContainsAny(line, " \t/") {
			return nil, fmt.Errorf("%s:%d: %q is not an element name", path, n, line)
		}
		if !seen[line] {
			seen[line] = true
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sort.Strings(out)
	return out, nil
}

// ScanHooks lists the runnable hooks of one phase directory the way
// dib-run-parts selects them: regular files (symlinks followed) that are
// executable and whose names match ^[0-9A-Za-z_-]+$, sorted as it runs
// them. A missing directory has none.
func ScanHooks(dir string) (hooks, ignored []string, err error) { return scanHooks(dir) }

func scanHooks(dir string) (hooks, ignored []string, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	for _, de := range entries {
		fi, err := os.Stat(filepath.Join(dir, de.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // a dangling link: find -xtype f skips it too
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, de.Name()), err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		switch {
		case fi.Mode().Perm()&0o111 == 0:
			ignored = append(ignored, de.Name()+" (not executable)")
		case !hookName.MatchString(de.Name()):
			ignored = append(ignored, de.Name()+" (name has characters other than 0-9 A-Z a-z _ -)")
		default:
			hooks = append(hooks, de.Name())
		}
	}
	SortRunParts(hooks)
	return hooks, ignored, nil
}

// ScanEnvFiles lists the files of an environment.d directory that
// dib-run-parts sources, in the order it sources them.
func ScanEnvFiles(dir string) ([]string, error) { return scanEnvFiles(dir) }

func scanEnvFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, de := range entries {
		fi, err := os.Stat(filepath.Join(dir, de.Name()))
		if err != nil {
			return nil, err
		}
		if fi.Mode().IsRegular() && envFileName.MatchString(de.Name()) {
			out = append(out, de.Name())
		}
	}
	SortRunParts(out)
	return out, nil
}

// SortRunParts orders names the way `LANG=C sort -n` does in dib-run-parts:
// by the leading (optionally negative) integer, names without one counting
// as 0, and byte order between equal numbers. So "9-b" runs before "10-a",
// and "10-a" of one element before "20-b" of another.
func SortRunParts(names []string) {
	sort.SliceStable(names, func(i, j int) bool { return runPartsLess(names[i], names[j]) })
}

func runPartsLess(a, b string) bool {
	na, nb := leadingNumber(a), leadingNumber(b)
	if c := na.Cmp(nb); c != 0 {
		return c < 0
	}
	return a < b
}

// number is an arbitrary-length decimal prefix, compared without overflow.
type number struct {
	neg    bool
	digits string // without leading zeros
}

func leadingNumber(s string) number {
	var n number
	if strings.HasPrefix(s, "-") {
		n.neg = true
		s = s[1:]
	}
	end := 0
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	n.digits = strings.TrimLeft(s[:end], "0")
	if n.digits == "" {
		n.neg = false // -0 and 0 are equal
	}
	return n
}

func (a number) Cmp(b number) int {
	if a.neg != b.neg {
		if a.neg {
			return -1
		}
		return 1
	}
	c := 0
	switch {
	case len(a.digits) != len(b.digits):
		c = len(a.digits) - len(b.digits)
	default:
		c = strings.Compare(a.digits, b.digits)
	}
	if a.neg {
		c = -c
	}
	switch {
	case c < 0:
		return -1
	case c > 0:
		return 1
	}
	return 0
}

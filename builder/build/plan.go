package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"strata/builder/element"
)

// schema changes whenever the builder changes what a cached tree contains
// for the same inputs (the builtin tools, the environment it sets...).
const schema = "strata-build-v1"

// builtinProvides are elements diskimage-builder ships that strata
// implements itself; elements depending on them resolve without them.
var builtinProvides = []string{"package-installs", "pkg-map", "dib-run-parts"}

// plan is everything decided before the first hook runs.
type plan struct {
	set *element.Set
	// env is the environment every hook starts from (host paths).
	env map[string]string
	// evaluated is env after sourcing every environment.d file, used to
	// evaluate package-installs conditions and pkg-map.
	evaluated map[string]string
	// inputs are the element-inputs files, by variable.
	inputs map[string]inputFile
	// elementDigest hashes each element's directory and inputs.
	elementDigest map[string]string
	envDigest     string
	// startKey is the key of the (empty) tree before the first hook.
	startKey string
	phases   []*phasePlan
	// bootable: the set contains vm, so the disk gets partitions and GRUB.
	bootable bool
	// distro and release from the evaluated environment, for pkg-map.
	distro, release string
}

type inputFile struct {
	Var, Path, SHA256 string
	Size              int64
}

// phasePlan is one phase: its hooks in run order.
type phasePlan struct {
	phase element.Phase
	hooks []*hookPlan
}

// hookPlan is one hook to run.
type hookPlan struct {
	element.Hook
	// program is the path below the hooks dir; args follow it.
	program string
	args    []string
	digest  string
	// elements are the elements whose content this hook acts on: its own
	// element, or for package-installs those whose packages it installs.
	elements []string
	// fstab marks strata's own step that writes /etc/fstab.
	fstab bool
	// index is the hook's position in the whole build, key the cache key
	// of the tree after it: equal keys mean equal trees.
	index int
	key   string
	// checkpoint: the tree is saved after this hook, because an element
	// takes part for the first time in the next one (changing that element
	// restarts the build there).
	checkpoint bool
}

// planRequest is what a plan is made from: by Run from a Config, by Apply
// from an ApplyConfig.
type planRequest struct {
	elements     []string
	skipBase     bool
	elementsPath []string
	// packages are installed after install.d (DIB's -p).
	packages []string
	// live: the elements are applied to a running machine, which is its own
	// operating system.
	live bool
}

// expand scans the search path and expands the requested elements (plus
// the default base unless skipped), checking the set before anything runs.
func (r planRequest) expand(log *slog.Logger) (*element.Set, error) {
	lib, err := element.Scan(r.elementsPath, log)
	if err != nil {
		return nil, err
	}
	requested := append([]string{}, r.elements...)
	if !r.skipBase && !containsStr(requested, DefaultBase) {
		requested = append([]string{DefaultBase}, requested...)
	}
	builtin := builtinProvides
	if r.live {
		builtin = append(append([]string{}, builtinProvides...), element.OperatingSystem)
	}
	return lib.ExpandWith(requested, builtin)
}

// makePlan scans and expands the elements, evaluates the environment,
// squashes package-installs and computes every phase's cache key.
func makePlan(ctx context.Context, req planRequest, env map[string]string, log *slog.Logger) (*plan, error) {
	set, err := req.expand(log)
	if err != nil {
		return nil, err
	}
	for _, e := range set.Elements {
		for _, ig := range e.Ignored {
			log.Warn("file in a phase directory will not run (as in DIB)", "element", e.Name, "file", ig)
		}
	}
	p := &plan{set: set, env: env, bootable: set.Has("vm")}

	p.env["IMAGE_ELEMENT"] = strings.Join(set.Names(), " ")
	var yml strings.Builder
	for _, e := range set.Elements {
		fmt.Fprintf(&yml, "%s: %s\n", e.Name, e.Dir)
	}
	p.env["IMAGE_ELEMENT_YAML"] = yml.String()

	if p.inputs, err = readInputs(set, env); err != nil {
		return nil, err
	}
	if p.elementDigest, err = digestElements(set, p.inputs); err != nil {
		return nil, err
	}
	if p.evaluated, err = evaluateEnv(ctx, set, env); err != nil {
		return nil, err
	}
	p.distro, p.release = p.evaluated["DISTRO_NAME"], p.evaluated["DIB_RELEASE"]
	p.envDigest = digestEnv(env, set, p.inputs)

	squashed, err := element.SquashPackages(set.Elements, func(k string) (string, bool) {
		v, ok := p.evaluated[k]
		return v, ok
	})
	if err != nil {
		return nil, err
	}
	byName := set.ByName()
	for _, ph := range element.Phases {
		pp := &phasePlan{phase: ph}
		for _, h := range set.Hooks(ph) {
			d, err := fileDigest(filepath.Join(byName[h.Element].Dir, string(ph), h.Name))
			if err != nil {
				return nil, fmt.Errorf("element %s: hook %s: %w", h.Element, h.Path(), err)
			}
			pp.hooks = append(pp.hooks, &hookPlan{Hook: h, program: h.Path(), digest: d, elements: []string{h.Element}})
		}
		if pk := squashed[ph]; pk != nil {
			pp.hooks = append(pp.hooks, packageHooks(ph, pk, byName, p.distro, p.release)...)
		}
		sortHookPlans(pp.hooks)
		if ph == element.InstallPhase && len(req.packages) > 0 {
			// DIB installs -p packages after install.d, before post-install.d.
			pp.hooks = append(pp.hooks, builtinHook(ph, "extra-packages", installTool, sortedCopy(req.packages), nil))
		}
		if ph == element.BlockDevicePhase && p.bootable {
			// strata writes /etc/fstab once the block-device.d hooks ran.
			pp.hooks = append(pp.hooks, &hookPlan{
				Hook: element.Hook{Phase: ph, Name: "fstab", Element: "strata", Builtin: true}, fstab: true,
			})
		}
		p.phases = append(p.phases, pp)
	}
	p.chainKeys()
	p.markCheckpoints()
	return p, nil
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedCopy(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	return out
}

func hookList(hs []*hookPlan) []element.Hook {
	out := make([]element.Hook, len(hs))
	for i, h := range hs {
		out[i] = h.Hook
	}
	return out
}

// sortHookPlans orders hook plans as element.SortHooks orders hooks.
func sortHookPlans(hs []*hookPlan) {
	list := hookList(hs)
	element.SortHooks(list)
	pos := map[element.Hook]int{}
	for i, h := range list {
		pos[h] = i
	}
	sort.SliceStable(hs, func(i, j int) bool { return pos[hs[i].Hook] < pos[hs[j].Hook] })
}

// Where DIB's package-installs element puts its hooks in each phase.
var packageHookNames = map[element.Phase][2]string{
	element.PreInstallPhase:  {"10-package-installs", "99-package-uninstalls"},
	element.InstallPhase:     {"01-package-installs", "99-package-uninstalls"},
	element.PostInstallPhase: {"00-package-installs", "95-package-uninstalls"},
}

func packageHooks(ph element.Phase, pk *element.PhasePackages, byName map[string]*element.Element, distro, release string) []*hookPlan {
	names := packageHookNames[ph]
	var out []*hookPlan
	if pkgs := element.ResolvedPackages(pk.Install, byName, distro, release); len(pkgs) > 0 {
		out = append(out, builtinHook(ph, names[0], installTool, pkgs, refElements(pk.Install)))
	}
	if pkgs := element.ResolvedPackages(pk.Uninstall, byName, distro, release); len(pkgs) > 0 {
		out = append(out, builtinHook(ph, names[1], installTool, append([]string{"-e"}, pkgs...), refElements(pk.Uninstall)))
	}
	return out
}

func builtinHook(ph element.Phase, name, tool string, args []string, elements []string) *hookPlan {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s", tool, toolScripts[tool], strings.Join(args, "\x00"))
	return &hookPlan{
		Hook:    element.Hook{Phase: ph, Name: name, Element: "package-installs", Builtin: true},
		program: toolsDir + "/bin/" + tool, args: args,
		digest: hex.EncodeToString(h.Sum(nil)), elements: elements,
	}
}

func refElements(refs []element.PackageRef) []string {
	var out []string
	for _, r := range refs {
		if !containsStr(out, r.Element) {
			out = append(out, r.Element)
		}
	}
	sort.Strings(out)
	return out
}

// hooks lists every hook of the build in run order.
func (p *plan) hooks() []*hookPlan {
	var out []*hookPlan
	for _, pp := range p.phases {
		out = append(out, pp.hooks...)
	}
	return out
}

// chainKeys gives every hook the key of the tree after it: the previous
// key, the hook (content and arguments, resolved package lists included)
// and the full content of every element taking part for the first time
// (all its files and inputs: its hooks may read any of them). The chain
// starts from the environment (every environment.d file included) and the
// elements that can affect any hook: those shipping bin/ helpers, and those
// with no hooks of their own.
func (p *plan) chainKeys() {
	seen := map[string]bool{}
	h0 := sha256.New()
	fmt.Fprintf(h0, "%s\x00%s\n", schema, p.envDigest)
	used := map[string]bool{}
	for _, hk := range p.hooks() {
		for _, e := range hk.elements {
			used[e] = true
		}
	}
	for _, e := range p.set.Elements {
		if e.HasBin || !used[e.Name] {
			fmt.Fprintf(h0, "element %s %s\n", e.Name, p.elementDigest[e.Name])
			seen[e.Name] = true
		}
	}
	prev := hex.EncodeToString(h0.Sum(nil))
	p.startKey = prev
	for i, hk := range p.hooks() {
		hk.index = i
		h := sha256.New()
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00%q\n", prev, hk.Phase, hk.Name, hk.Element, hk.digest, hk.args)
		for _, e := range hk.elements {
			if !seen[e] {
				seen[e] = true
				fmt.Fprintf(h, "element %s %s\n", e, p.elementDigest[e])
			}
		}
		if hk.fstab {
			fmt.Fprintf(h, "fstab %s\n", prev)
		}
		hk.key = hex.EncodeToString(h.Sum(nil))
		prev = hk.key
	}
}

// idSeed derives the disk's UUIDs: the tree as it is when strata writes
// /etc/fstab, so they change exactly when the image content does.
func (p *plan) idSeed() string {
	seed := p.startKey
	for _, hk := range p.hooks() {
		if hk.fstab {
			return seed
		}
		seed = hk.key
	}
	return seed
}

// markCheckpoints picks the hooks after which the tree is saved: the end of
// root.d (the base system is the most expensive thing to remake) and, for
// every element, the hook just before the one where the element takes part
// for the first time, so that changing that element restarts there.
func (p *plan) markCheckpoints() {
	all := p.hooks()
	if len(all) == 0 {
		return
	}
	if root := p.phases[0].hooks; len(root) > 0 {
		root[len(root)-1].checkpoint = true
	}
	seen := map[string]bool{}
	for i, hk := range all {
		for _, e := range hk.elements {
			if !seen[e] {
				seen[e] = true
				if i > 0 {
					all[i-1].checkpoint = true
				}
			}
		}
	}
	// The last hook never needs saving: finished outputs are cached.
	all[len(all)-1].checkpoint = false
}

// finalKey identifies the finished tree.
func (p *plan) finalKey() string {
	all := p.hooks()
	if len(all) == 0 {
		return p.startKey
	}
	return all[len(all)-1].key
}

// phaseKey is the key of the tree after a phase (after its last hook, or
// the previous phase's when it has none).
func (p *plan) phaseKey(ph element.Phase) string {
	key := p.startKey
	for _, hk := range p.hooks() {
		if hk.Phase.Index() > ph.Index() {
			break
		}
		key = hk.key
	}
	return key
}

func readInputs(set *element.Set, env map[string]string) (map[string]inputFile, error) {
	out := map[string]inputFile{}
	for _, e := range set.Elements {
		for _, v := range e.Inputs {
			path, ok := env[v]
			if !ok || path == "" {
				return nil, fmt.Errorf("element %s needs %s (listed in its element-inputs) to name a file on the build host; set it in the environment or the recipe", e.Name, v)
			}
			fi, err := os.Stat(path)
			if err != nil {
				return nil, fmt.Errorf("element %s: %s=%s: %w", e.Name, v, path, err)
			}
			if !fi.Mode().IsRegular() {
				return nil, fmt.Errorf("element %s: %s=%s is not a regular file", e.Name, v, path)
			}
			d, err := fileDigest(path)
			if err != nil {
				return nil, err
			}
			out[v] = inputFile{Var: v, Path: path, SHA256: d, Size: fi.Size()}
		}
	}
	return out, nil
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// digestElements hashes every file of every element (path, mode, content or
// link target), plus the contents of the host files it declares as inputs.
func digestElements(set *element.Set, inputs map[string]inputFile) (map[string]string, error) {
	out := map[string]string{}
	for _, e := range set.Elements {
		h := sha256.New()
		err := filepath.WalkDir(e.Dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(e.Dir, p)
			info, err := os.Lstat(p)
			if err != nil {
				return err
			}
			switch {
			case info.Mode()&os.ModeSymlink != 0:
				l, _ := os.Readlink(p)
				fmt.Fprintf(h, "L %s %s\n", rel, l)
			case info.IsDir():
				fmt.Fprintf(h, "D %s %o\n", rel, info.Mode().Perm())
			default:
				c, err := fileDigest(p)
				if err != nil {
					return err
				}
				fmt.Fprintf(h, "F %s %o %s\n", rel, info.Mode().Perm(), c)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("element %s: %w", e.Name, err)
		}
		for _, v := range e.Inputs {
			fmt.Fprintf(h, "I %s %s\n", v, inputs[v].SHA256)
		}
		out[e.Name] = hex.EncodeToString(h.Sum(nil))
	}
	return out, nil
}

// volatileEnv are variables that differ between identical builds (paths of
// this build, tracing, the image's file name); they are left out of keys.
// IMAGE_ELEMENT is left out too, so images made of different element sets
// share cached phases (the base system above all): what the other elements
// contribute is in the key through their own content and environment.d
// files, and a hook should not change what it does by peeking at the list.
var volatileEnv = map[string]bool{
	"PATH": true, "HOME": true, "TMP_HOOKS_PATH": true, "TARGET_ROOT": true, "TMP_MOUNT_PATH": true,
	"TMP_BUILD_DIR": true, "IMAGE_NAME": true, "DIB_IMAGE_CACHE": true, "DIB_DEBUG_TRACE": true,
	"DIB_OFFLINE": true, "STRATA_APT_ARCHIVES": true, "STRATA_INPUTS": true, "SOURCE_DATE_EPOCH": true, "ELEMENTS_PATH": true,
	"IMAGE_ELEMENT_YAML": true, "IMAGE_ELEMENT": true, "http_proxy": true, "https_proxy": true, "no_proxy": true,
	"HTTP_PROXY": true, "HTTPS_PROXY": true, "NO_PROXY": true, "DIB_ARGS": true,
}

func digestEnv(env map[string]string, set *element.Set, inputs map[string]inputFile) string {
	var keys []string
	for k := range env {
		if _, isInput := inputs[k]; !volatileEnv[k] && !isInput {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%q\n", k, env[k])
	}
	byName := set.ByName()
	for _, e := range set.Elements {
		for _, f := range e.EnvFiles {
			d, _ := fileDigest(filepath.Join(byName[e.Name].Dir, "environment.d", f))
			fmt.Fprintf(h, "envfile %s %s %s\n", e.Name, f, d)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// envScript sources the environment.d files given as arguments and prints
// the environment that results, NUL-separated.
const envScript = `set -eu; set -o pipefail
# shellcheck source=/dev/null # the elements' files, named by the arguments
for f in "$@"; do source "$f"; done
env -0`

// evaluateEnv sources every environment.d file in dib-run-parts order (with
// set -eu, as DIB does) and returns the exported environment that results.
func evaluateEnv(ctx context.Context, set *element.Set, env map[string]string) (map[string]string, error) {
	byName := set.ByName()
	var files []string
	var names []string
	for _, e := range set.Elements {
		for _, f := range e.EnvFiles {
			names = append(names, f)
		}
	}
	element.SortRunParts(names)
	owner := map[string]string{}
	for _, e := range set.Elements {
		for _, f := range e.EnvFiles {
			owner[f] = e.Name
		}
	}
	for _, n := range names {
		files = append(files, filepath.Join(byName[owner[n]].Dir, "environment.d", n))
	}
	cmd := exec.CommandContext(ctx, "bash", append([]string{"-c", envScript, "strata-env"}, files...)...)
	cmd.Env = envList(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("sourcing environment.d files: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	out := map[string]string{}
	for _, kv := range strings.Split(stdout.String(), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = v
		}
	}
	return out, nil
}

func envList(env map[string]string) []string {
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

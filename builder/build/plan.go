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
// for the same inputs (the builtin tools, the environment it sets, how
// keys are chained...).
const schema = "strata-build-v3"

// builtinProvides are elements diskimage-builder ships that strata
// implements itself; elements depending on them (or users naming them)
// resolve without them.
var builtinProvides = []string{"package-installs", "pkg-map", "dib-run-parts", "install-bin"}

// plan is everything decided before a hook runs. Phases are planned from
// the merged hooks directory, as dib-run-parts scans a phase's directory
// when the phase starts; a phase whose directory changed while the build
// ran (install-types links hooks into install.d during extra-data.d) is
// planned again when it starts (see planFrom).
type plan struct {
	req planRequest
	set *element.Set
	// env is the environment every hook starts from (host paths).
	env map[string]string
	// evaluated is env after sourcing the elements' environment.d files,
	// for pkg-map's distro and release and the manifest.
	evaluated map[string]string
	// inputs are the element-inputs files, by variable.
	inputs map[string]inputFile
	// elementDigest hashes each element's directory and inputs.
	elementDigest map[string]string
	// owners maps each file of the merged hooks directory (relative path)
	// to the element it came from; created, to the element whose hook made
	// it during the build.
	owners, created map[string]string
	// startKey is the key of the (empty) tree before the first hook,
	// endKey the key of the finished tree.
	startKey, endKey string
	phases           []*phasePlan
	// participation is the index of the hook where each element first
	// takes part: its content and the variables it mentions enter the
	// cache key there.
	participation map[string]int
	// bootable: the set contains vm, so the disk gets partitions and GRUB.
	bootable bool
	// distro and release from the evaluated environment, for pkg-map.
	distro, release string
	// evalCache avoids sourcing the same environment.d files twice.
	evalCache map[string]map[string]string
}

type inputFile struct {
	Var, Path, SHA256 string
	Size              int64
}

// phasePlan is one phase: its hooks in run order and the environment.d
// files sourced before each of them.
type phasePlan struct {
	phase element.Phase
	hooks []*hookPlan
	// envFiles are relative to the hooks directory ("environment.d/x").
	envFiles []string
	// evaluated is the environment after sourcing envFiles.
	evaluated map[string]string
	// dynamicEnv describes environment.d files that no element shipped
	// (made by a hook while the build ran): "name sha256" lines.
	dynamicEnv []string
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
	// dynamic: the hook was not shipped by an element; a hook added it to
	// the hooks directory while the build ran.
	dynamic bool
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
	set, err := lib.ExpandWith(requested, builtin)
	if err != nil {
		return nil, err
	}
	for _, o := range lib.Overrides {
		if set.Get(o.Name) != nil {
			log.Info("element override", "element", o.Name, "using", o.Winner, "hiding", o.Hidden)
		}
	}
	if err := checkContracts(set); err != nil {
		return nil, err
	}
	return set, nil
}

// makePlan scans and expands the elements, evaluates the environment and
// merges the hooks directory into hooksDir. Phases are planned afterwards
// (planFrom, or simulate when cached hooks-directory changes are known).
func makePlan(ctx context.Context, req planRequest, env map[string]string, hooksDir string, log *slog.Logger) (*plan, error) {
	set, err := req.expand(log)
	if err != nil {
		return nil, err
	}
	for _, e := range set.Elements {
		for _, ig := range e.Ignored {
			log.Warn("file in a phase directory will not run (as in DIB)", "element", e.Name, "file", ig)
		}
	}
	p := &plan{req: req, set: set, env: env, bootable: set.Has("vm"), created: map[string]string{},
		evalCache: map[string]map[string]string{}}
	setElementEnv(p.env, set)
	if p.inputs, err = readInputs(set, env); err != nil {
		return nil, err
	}
	if p.elementDigest, err = digestElements(set, p.inputs); err != nil {
		return nil, err
	}
	var envFiles []string
	byName := set.ByName()
	for _, rel := range set.EnvFiles() {
		name := strings.TrimPrefix(rel, "environment.d/")
		for _, e := range set.Elements {
			if containsStr(e.EnvFiles, name) {
				envFiles = append(envFiles, filepath.Join(byName[e.Name].Dir, "environment.d", name))
			}
		}
	}
	if p.evaluated, err = evaluateEnv(ctx, envFiles, env); err != nil {
		return nil, err
	}
	p.distro, p.release = p.evaluated["DISTRO_NAME"], p.evaluated["DIB_RELEASE"]
	if err := p.writeHooksDir(hooksDir); err != nil {
		return nil, fmt.Errorf("merging hooks: %w", err)
	}
	return p, nil
}

// setElementEnv gives hooks DIB's view of the element set: IMAGE_ELEMENT,
// IMAGE_ELEMENT_YAML and the exported bash function
// get_image_element_array (bash exports functions through the
// environment as BASH_FUNC_<name>%%).
func setElementEnv(env map[string]string, set *element.Set) {
	env["IMAGE_ELEMENT"] = strings.Join(set.Names(), " ")
	var yml, arr strings.Builder
	for _, e := range set.Elements {
		fmt.Fprintf(&yml, "%s: %s\n", e.Name, e.Dir)
		fmt.Fprintf(&arr, "[%s]=%s ", e.Name, e.Dir)
	}
	env["IMAGE_ELEMENT_YAML"] = yml.String()
	env["BASH_FUNC_get_image_element_array%%"] = "() {  echo \"" + arr.String() + "\"\n}"
	env["BASH_FUNC_die%%"] = dieFunction
}

// dieFunction is DIB's die, which disk-image-create exports to every hook.
const dieFunction = `() {  local status=$?;
 [ "$status" -ne 0 ] || status=1;
 set +o xtrace;
 echo "$@" 1>&2;
 exit "$status"
}`

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

// planFrom plans phases from..end from the hooks directory dir as it is
// now, then chains every hook's cache key and picks the checkpoints.
// Phases before from are kept.
func (p *plan) planFrom(ctx context.Context, from int, dir string) error {
	p.phases = p.phases[:min(from, len(p.phases))]
	for i := from; i < len(element.Phases); i++ {
		pp, err := p.planPhase(ctx, element.Phases[i], dir)
		if err != nil {
			return err
		}
		p.phases = append(p.phases, pp)
	}
	p.chainKeys()
	p.markCheckpoints()
	return nil
}

// planPhase lists one phase's hooks from dir: the runnable files of the
// phase directory (whoever put them there), the package-installs steps
// and strata's own steps, in dib-run-parts order.
func (p *plan) planPhase(ctx context.Context, ph element.Phase, dir string) (*phasePlan, error) {
	pp := &phasePlan{phase: ph}
	names, err := element.ScanEnvFiles(filepath.Join(dir, "environment.d"))
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, n := range names {
		rel := "environment.d/" + n
		pp.envFiles = append(pp.envFiles, rel)
		paths = append(paths, filepath.Join(dir, rel))
		if _, ok := p.owners[rel]; !ok {
			d, err := fileDigest(filepath.Join(dir, rel))
			if err != nil {
				return nil, err
			}
			pp.dynamicEnv = append(pp.dynamicEnv, n+" "+d)
		}
	}
	if len(pp.dynamicEnv) == 0 {
		pp.evaluated = p.evaluated
	} else if pp.evaluated, err = p.evaluate(ctx, paths); err != nil {
		return nil, err
	}

	hooks, _, err := element.ScanHooks(filepath.Join(dir, string(ph)))
	if err != nil {
		return nil, err
	}
	for _, name := range hooks {
		rel := string(ph) + "/" + name
		d, err := fileDigest(filepath.Join(dir, rel))
		if err != nil {
			return nil, fmt.Errorf("hook %s: %w", rel, err)
		}
		owner, dynamic := p.ownerOf(dir, rel)
		hp := &hookPlan{Hook: element.Hook{Phase: ph, Name: name, Element: owner}, program: rel, digest: d, dynamic: dynamic}
		if p.set.Get(owner) != nil {
			hp.elements = []string{owner}
		}
		pp.hooks = append(pp.hooks, hp)
	}
	squashed, err := element.SquashPackages(p.set.Elements, func(k string) (string, bool) {
		v, ok := pp.evaluated[k]
		return v, ok
	})
	if err != nil {
		return nil, err
	}
	byName := p.set.ByName()
	if pk := squashed[ph]; pk != nil {
		pp.hooks = append(pp.hooks, packageHooks(ph, pk, byName, p.distro, p.release)...)
	}
	pp.hooks = append(pp.hooks, p.builtinHooks(ph)...)
	sortHookPlans(pp.hooks)
	if ph == element.InstallPhase && len(p.req.packages) > 0 {
		// DIB installs -p packages after install.d, before post-install.d.
		pp.hooks = append(pp.hooks, builtinHook(ph, "extra-packages", "package-installs", installTool, sortedCopy(p.req.packages), nil, ""))
	}
	if ph == element.BlockDevicePhase && p.bootable {
		// strata writes /etc/fstab once the block-device.d hooks ran.
		pp.hooks = append(pp.hooks, &hookPlan{
			Hook: element.Hook{Phase: ph, Name: "fstab", Element: "strata", Builtin: true}, fstab: true,
		})
	}
	return pp, nil
}

// ownerOf names the element a file of the hooks directory belongs to:
// the one it was merged from, or, for a link (install-types links hooks
// out of install.d/<x>-source-install/), the one its target came from, or
// the one whose hook created it. dynamic is set when no element shipped
// the file at that path.
func (p *plan) ownerOf(dir, rel string) (owner string, dynamic bool) {
	if o, ok := p.owners[rel]; ok {
		return o, false
	}
	if real, err := filepath.EvalSymlinks(filepath.Join(dir, rel)); err == nil {
		if root, err := filepath.EvalSymlinks(dir); err == nil {
			if r, err := filepath.Rel(root, real); err == nil && !strings.HasPrefix(r, "..") {
				if o, ok := p.owners[filepath.ToSlash(r)]; ok {
					return o, true
				}
			}
		}
	}
	if o, ok := p.created[rel]; ok {
		return o, true
	}
	return "(added during the build)", true
}

// evaluate sources environment.d files (memoised by their paths and
// contents).
func (p *plan) evaluate(ctx context.Context, files []string) (map[string]string, error) {
	h := sha256.New()
	for _, f := range files {
		d, err := fileDigest(f)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(h, "%s %s\n", filepath.Base(f), d)
	}
	k := hex.EncodeToString(h.Sum(nil))
	if v, ok := p.evalCache[k]; ok {
		return v, nil
	}
	v, err := evaluateEnv(ctx, files, p.env)
	if err != nil {
		return nil, err
	}
	p.evalCache[k] = v
	return v, nil
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
		out = append(out, builtinHook(ph, names[0], "package-installs", installTool, pkgs, refElements(pk.Install), ""))
	}
	if pkgs := element.ResolvedPackages(pk.Uninstall, byName, distro, release); len(pkgs) > 0 {
		out = append(out, builtinHook(ph, names[1], "package-installs", installTool, append([]string{"-e"}, pkgs...), refElements(pk.Uninstall), ""))
	}
	return out
}

// builtinHook is a step strata runs through one of its tools; content is
// whatever else the step reads (files it copies), for its digest.
func builtinHook(ph element.Phase, name, owner, tool string, args []string, elements []string, content string) *hookPlan {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s", tool, toolScripts[tool], strings.Join(args, "\x00"), content)
	return &hookPlan{
		Hook:    element.Hook{Phase: ph, Name: name, Element: owner, Builtin: true},
		program: toolsDir + "/bin/" + tool, args: args,
		digest: hex.EncodeToString(h.Sum(nil)), elements: elements,
	}
}

// builtinHooks are the steps strata runs in place of DIB's pkg-map,
// install-bin and dib-run-parts elements, at the names DIB gives them.
// They prepare an image; a live machine (Apply) gets none of them.
func (p *plan) builtinHooks(ph element.Phase) []*hookPlan {
	var out []*hookPlan
	if p.req.live {
		return nil
	}
	switch ph {
	case element.ExtraDataPhase:
		// DIB's pkg-map element copies every element's pkg-map into the
		// image, for pkg-map calls at run time.
		var content strings.Builder
		for _, e := range p.set.Elements {
			if e.PkgMap != nil {
				d, _ := fileDigest(filepath.Join(e.Dir, "pkg-map"))
				fmt.Fprintf(&content, "%s %s\n", e.Name, d)
			}
		}
		if content.Len() > 0 {
			out = append(out, builtinHook(ph, "10-create-pkg-map-dir", "pkg-map", "copy-pkg-maps", nil, nil, content.String()))
		}
	case element.PreInstallPhase:
		// DIB's install-bin element installs every element's bin/ into
		// the image's /usr/local/bin.
		var content strings.Builder
		for _, e := range p.set.Elements {
			for _, b := range e.BinNames {
				d, _ := fileDigest(filepath.Join(e.Dir, "bin", b))
				fmt.Fprintf(&content, "%s/%s %s\n", e.Name, b, d)
			}
		}
		if p.set.Builtins["dib-run-parts"] {
			fmt.Fprintf(&content, "dib-run-parts\n")
		}
		if content.Len() > 0 {
			var args []string
			if p.set.Builtins["dib-run-parts"] {
				args = []string{"--with-dib-run-parts"}
			}
			out = append(out, builtinHook(ph, "01-install-bin", "install-bin", "install-bin", args, nil, content.String()))
		}
	}
	return out
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

// phaseOf returns the plan of the phase a hook belongs to.
func (p *plan) phaseOf(ph element.Phase) *phasePlan {
	for _, pp := range p.phases {
		if pp.phase == ph {
			return pp
		}
	}
	return nil
}

// computeParticipation finds where each element first takes part:
//   - at its first hook, or the package-installs step installing its
//     packages;
//   - an element with bin/ helpers, at the first hook of an element that
//     names one of them, and at the latest after root.d (install-bin
//     copies them into the image);
//   - an element with neither hooks nor packages (static files, an
//     environment.d file), at the first hook after root.d: what root.d
//     builds depends on root.d's hooks and the variables they mention,
//     not on every element of the image.
func (p *plan) computeParticipation() {
	all := p.hooks()
	afterRoot := len(all)
	for i, hk := range all {
		if hk.Phase != element.RootPhase {
			afterRoot = i
			break
		}
	}
	part := map[string]int{}
	for i, hk := range all {
		for _, e := range hk.elements {
			if _, ok := part[e]; !ok {
				part[e] = i
			}
		}
	}
	byName := p.set.ByName()
	for _, e := range p.set.Elements {
		first, ok := part[e.Name]
		if !ok {
			first = afterRoot
		}
		if e.HasBin {
			first = min(first, afterRoot)
			for i := 0; i < first; i++ {
				if p.hookNames(all[i], byName, e.BinNames) {
					first = i
					break
				}
			}
		}
		part[e.Name] = first
	}
	p.participation = part
}

// hookNames reports whether a hook (or an element it acts for) mentions
// any of names.
func (p *plan) hookNames(hk *hookPlan, byName map[string]*element.Element, names []string) bool {
	for _, e := range hk.elements {
		el := byName[e]
		if el == nil {
			continue
		}
		for _, n := range names {
			if el.Mentions(n) {
				return true
			}
		}
	}
	return false
}

// chainKeys gives every hook the key of the tree after it: the previous
// key, the hook (content and arguments, resolved package lists included),
// for every element taking part for the first time its full content and
// the values of the variables it mentions (after environment.d files are
// sourced), and environment.d files hooks added while the build ran.
// A variable no element taking part so far mentions does not change the
// key: adding an element with an environment.d file does not re-run
// root.d unless a root.d hook's element names one of its variables.
func (p *plan) chainKeys() {
	p.computeParticipation()
	all := p.hooks()
	at := map[int][]string{}
	for e, i := range p.participation {
		at[i] = append(at[i], e)
	}
	h0 := sha256.New()
	fmt.Fprintf(h0, "%s\n", schema)
	prev := hex.EncodeToString(h0.Sum(nil))
	p.startKey = prev
	byName := p.set.ByName()
	i := 0
	for _, pp := range p.phases {
		for j, hk := range pp.hooks {
			hk.index = i
			h := sha256.New()
			fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00%q\n", prev, hk.Phase, hk.Name, hk.Element, hk.digest, hk.args)
			if j == 0 {
				for _, d := range pp.dynamicEnv {
					fmt.Fprintf(h, "envfile %s\n", d)
				}
			}
			names := at[i]
			sort.Strings(names)
			for _, e := range names {
				fmt.Fprintf(h, "element %s %s\n", e, p.elementDigest[e])
				p.keyEnv(h, byName[e], pp.evaluated)
			}
			if hk.fstab {
				fmt.Fprintf(h, "fstab %s\n", prev)
			}
			hk.key = hex.EncodeToString(h.Sum(nil))
			prev = hk.key
			i++
		}
	}
	// Elements taking part after the last hook still make an image.
	if names := at[len(all)]; len(names) > 0 {
		h := sha256.New()
		fmt.Fprintf(h, "%s\x00end\n", prev)
		sort.Strings(names)
		for _, e := range names {
			fmt.Fprintf(h, "element %s %s\n", e, p.elementDigest[e])
		}
		p.endKey = hex.EncodeToString(h.Sum(nil))
	} else {
		p.endKey = prev
	}
}

// keyEnv writes the values of the variables el mentions.
func (p *plan) keyEnv(w io.Writer, el *element.Element, env map[string]string) {
	if el == nil {
		return
	}
	var keys []string
	for k := range env {
		if !volatileEnv[k] && el.Mentions(k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "env %s=%q\n", k, stableValue(env, env[k]))
	}
	if el.Mentions("IMAGE_ELEMENT") || el.Mentions("IMAGE_ELEMENT_YAML") || el.Mentions("get_image_element_array") {
		fmt.Fprintf(w, "elements %s\n", strings.Join(p.set.Names(), " "))
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

// lastCheckpointPhase is the last phase whose trees are saved. The later
// phases are cheap, and their host hooks may leave results outside the
// tree (DIB's manifests and baremetal elements write beside the image),
// which a restored tree would not bring back.
const lastCheckpointPhase = element.PostInstallPhase

// markCheckpoints picks the hooks after which the tree is saved: the end of
// root.d (the base system is the most expensive thing to remake) and, for
// every element, the hook just before the one where the element takes part
// for the first time, so that changing that element restarts there.
func (p *plan) markCheckpoints() {
	all := p.hooks()
	for _, hk := range all {
		hk.checkpoint = false
	}
	if len(all) == 0 {
		return
	}
	if root := p.phases[0].hooks; len(root) > 0 {
		root[len(root)-1].checkpoint = true
	}
	for _, i := range p.participation {
		if i > 0 && i <= len(all) {
			all[i-1].checkpoint = true
		}
	}
	for _, hk := range all {
		if hk.Phase.Index() > lastCheckpointPhase.Index() {
			hk.checkpoint = false
		}
	}
	// The last hook never needs saving: finished outputs are cached.
	all[len(all)-1].checkpoint = false
}

// finalKey identifies the finished tree.
func (p *plan) finalKey() string { return p.endKey }

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
			if (!ok || path == "") && e.OptionalInputs[v] {
				continue
			}
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
			if d.IsDir() && d.Name() == "__pycache__" {
				return filepath.SkipDir
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
// this build and of the host, tracing, the image's file name, the command
// line) or that only say how to reach the network; they never enter a
// cache key, even when an element mentions them.
var volatileEnv = map[string]bool{
	"PATH": true, "HOME": true, "PWD": true, "OLDPWD": true, "SHLVL": true, "_": true, "TERM": true,
	"TMP_HOOKS_PATH": true, "TARGET_ROOT": true, "TMP_MOUNT_PATH": true, "TMP_BUILD_DIR": true, "TMP_IMAGE_DIR": true,
	"IMAGE_NAME": true, "DIB_IMAGE_CACHE": true, "DIB_DEBUG_TRACE": true, "DIB_OFFLINE": true, "DIB_LOCKFILES": true,
	"_LIB": true, "DIB_PYTHON_EXEC": true, "DIB_ARGS": true, "ELEMENTS_PATH": true,
	"STRATA_APT_ARCHIVES": true, "STRATA_INPUTS": true, "SOURCE_DATE_EPOCH": true,
	"IMAGE_ELEMENT_YAML": true, "IMAGE_ELEMENT": true, // keyed by element names instead (keyEnv)
	"BASH_FUNC_get_image_element_array%%": true, "BASH_FUNC_die%%": true,
	"http_proxy": true, "https_proxy": true, "no_proxy": true, "HTTP_PROXY": true, "HTTPS_PROXY": true, "NO_PROXY": true,
}

// buildPathVars are the volatile variables whose values are this build's
// own paths, innermost first. A value derived from one of them (DIB's
// manifests element sets DIB_MANIFEST_SAVE_DIR to ${IMAGE_NAME}.d/) enters
// a key with the variable's name in its place, so that it is the same in
// every build, as the variable itself is left out.
var buildPathVars = []string{"TMP_MOUNT_PATH", "TARGET_ROOT", "TMP_HOOKS_PATH", "TMP_IMAGE_DIR", "TMP_BUILD_DIR", "IMAGE_NAME", "DIB_IMAGE_CACHE"}

// stableValue is v with this build's paths replaced by their variables'
// names (absolute paths only: a relative -o name such as "x" is no path
// to look for inside other values).
func stableValue(env map[string]string, v string) string {
	for _, name := range buildPathVars {
		if p := env[name]; len(p) > 1 && filepath.IsAbs(p) {
			v = strings.ReplaceAll(v, p, "${"+name+"}")
		}
	}
	return v
}

// envScript sources the environment.d files given as arguments and prints
// the environment that results, NUL-separated.
const envScript = `set -eu; set -o pipefail
# shellcheck source=/dev/null # the elements' files, named by the arguments
for f in "$@"; do source "$f"; done
env -0`

// evaluateEnv sources environment.d files in order (with set -eu, as DIB
// does) and returns the exported environment that results.
func evaluateEnv(ctx context.Context, files []string, env map[string]string) (map[string]string, error) {
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

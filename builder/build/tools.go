package build

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"strata/builder/element"
)

// toolsDir holds strata's own helpers inside the merged hooks directory;
// its bin/ is on every hook's PATH after the elements' own bin/.
const toolsDir = ".strata"

const installTool = "install-packages"

// toolScripts are the helpers DIB elements call by name. They run inside
// the image root, so they are shell, not Go.
var toolScripts = map[string]string{
	installTool: `#!/bin/bash
# install-packages [-e] [-u] [-m ELEMENT] PACKAGE...
#   install (default), -e erase (purge), -u update and upgrade everything,
#   -m ELEMENT translate names through that element's pkg-map first.
# strata's implementation for Debian-family images.
set -eu
set -o pipefail
[ "${DIB_DEBUG_TRACE:-0}" -gt 0 ] && set -x
mode=install
map=
while getopts "eum:d:" opt; do
	case $opt in
	e) mode=erase ;;
	u) mode=upgrade ;;
	m) map=$OPTARG ;;
	d) ;; # DIB's deprecated package-installs-<element> files: not supported
	*) echo "usage: install-packages [-e] [-u] [-m element] package..." >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
if [ -n "$map" ]; then
	mapfile -t mapped < <(pkg-map --element "$map" --missing-ok "$@")
	set -- "${mapped[@]}"
fi
export DEBIAN_FRONTEND=noninteractive
opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
	-o APT::Install-Recommends=false -o APT::Install-Suggests=false -o Acquire::Retries=3
	-o DPkg::Lock::Timeout=300)
offline=0
if [ "${DIB_OFFLINE:-0}" != 0 ]; then
	offline=1
	opts+=(--no-download)
fi
update() {
	if [ "$offline" = 1 ]; then
		echo "install-packages: offline build: not refreshing package lists" >&2
		return 0
	fi
	apt-get -q -o Acquire::Retries=3 update
}
lists_present() { compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; }
case $mode in
install)
	[ $# -eq 0 ] && exit 0
	lists_present || update
	if ! apt-get "${opts[@]}" install "$@"; then
		# Cached package lists go stale as the mirror moves on: refresh once.
		[ "$offline" = 1 ] && exit 1
		echo "install-packages: install failed; refreshing package lists and retrying once" >&2
		update
		apt-get "${opts[@]}" install "$@"
	fi
	;;
erase)
	[ $# -eq 0 ] && exit 0
	apt-get "${opts[@]}" purge --auto-remove "$@"
	;;
upgrade)
	update
	apt-get "${opts[@]}" dist-upgrade
	;;
esac
`,
	"pkg-map": `#!/bin/bash
# pkg-map --element ELEMENT [--missing-ok] [--prefix P] NAME...
# Translates package names with the element's pkg-map, resolved by strata
# for this image's distro and release.
set -eu
element='' missing_ok=0 prefix=''
names=()
while [ $# -gt 0 ]; do
	case $1 in
	--element) element=$2; shift 2 ;;
	--element=*) element=${1#*=}; shift ;;
	--missing-ok) missing_ok=1; shift ;;
	--prefix) prefix=$2; shift 2 ;;
	--distro|--release|--pkg-map) shift 2 ;;
	--debug) shift ;;
	*) names+=("$1"); shift ;;
	esac
done
table="$(dirname "$0")/../pkg-map/${element}"
for n in "${names[@]}"; do
	line=
	[ -f "$table" ] && line=$(awk -F'\t' -v n="$n" '$1 == n { print; exit }' "$table")
	if [ -n "$line" ]; then
		for p in ${line#*$'\t'}; do echo "$prefix$p"; done
	elif [ "$missing_ok" = 1 ]; then
		echo "$prefix$n"
	else
		echo "pkg-map: no mapping for $n in element $element" >&2
		exit 1
	fi
done
`,
}

// inputsDir holds copies of the host files elements declare in
// element-inputs, named after their variable, so that hooks inside the image
// root can read them: $STRATA_INPUTS/<VAR>.
const inputsDir = toolsDir + "/inputs"

// copyInputs puts every element-inputs file into the hooks directory.
func copyInputs(hooksDir string, inputs map[string]inputFile) error {
	dir := filepath.Join(hooksDir, inputsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for v, f := range inputs {
		b, err := os.ReadFile(f.Path)
		if err != nil {
			return fmt.Errorf("%s=%s: %w", v, f.Path, err)
		}
		fi, err := os.Stat(f.Path)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, v), b, fi.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}

// writeTools installs strata's helpers and each element's resolved pkg-map
// table into the merged hooks directory.
func writeTools(hooksDir string, set *element.Set, distro, release string) error {
	bin := filepath.Join(hooksDir, toolsDir, "bin")
	maps := filepath.Join(hooksDir, toolsDir, "pkg-map")
	for _, d := range []string{bin, maps} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for name, script := range toolScripts {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			return err
		}
	}
	for _, e := range set.Elements {
		if e.PkgMap == nil {
			continue
		}
		t := e.PkgMap.Table(distro, release)
		var keys []string
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s\t%s\n", k, t[k])
		}
		if err := os.WriteFile(filepath.Join(maps, e.Name), []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeHooksDir fills dir the way DIB fills TMP_HOOKS_PATH: every element's
// files merged into one tree, plus strata's helpers (.strata/bin), the
// resolved pkg-map tables and the element-inputs files (.strata/inputs).
func (p *plan) writeHooksDir(dir string) error {
	if err := p.set.MergeInto(dir); err != nil {
		return err
	}
	if err := writeTools(dir, p.set, p.distro, p.release); err != nil {
		return err
	}
	return copyInputs(dir, p.inputs)
}

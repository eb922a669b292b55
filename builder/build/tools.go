package build

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"strata/builder/dib"
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

func init() {
	toolScripts["sudo"] = sudoShim
	toolScripts["dib-run-parts"] = dibRunParts
	toolScripts["install-bin"] = installBin
	toolScripts["copy-pkg-maps"] = copyPkgMaps
}

// sudoShim stands in for sudo in hooks: DIB's host hooks call sudo because
// disk-image-create runs as a user; strata runs every hook as root, so the
// command runs directly (as another user with -u, through runuser). Hooks
// then need neither sudo on the build host nor a sudoers entry, and do not
// depend on the host's PAM configuration.
const sudoShim = `#!/bin/bash
# strata's sudo for hooks (they run as root): sudo [-EHnSkis] [-u USER] [--] COMMAND...
user=root login=0
while [ $# -gt 0 ]; do
	case $1 in
	--) shift; break ;;
	-u) user=$2; shift 2 ;;
	-u*) user=${1#-u}; shift ;;
	--user=*) user=${1#--user=}; shift ;;
	-i | --login) login=1; shift ;;
	-E | -H | -n | -S | -k | -s | --preserve-env | --preserve-env=* | --set-home | --non-interactive) shift ;;
	-[EHnSkis]*)
		flags=${1#-}
		shift
		while [ -n "$flags" ]; do
			f=${flags:0:1} flags=${flags:1}
			case $f in
			i) login=1 ;;
			u)
				if [ -n "$flags" ]; then user=$flags; flags=; else user=$1; shift; fi
				;;
			esac
		done
		;;
	-*) echo "sudo (strata): option $1 is not supported" >&2; exit 1 ;;
	*) break ;;
	esac
done
if [ "$user" = root ] || [ "$user" = "#0" ]; then
	if [ "$login" = 1 ]; then
		exec bash -l ${1:+-c "$*"}
	fi
	exec "$@"
fi
if [ "$login" = 1 ]; then
	exec runuser -l "$user" ${1:+-c "$*"}
fi
exec runuser -u "$user" -- "$@"
`

// dibRunParts is strata's dib-run-parts, on every hook's PATH (and, with
// DIB's dib-run-parts element, in the image): run a directory's
// executables in dib-run-parts order after sourcing ../environment.d.
const dibRunParts = `#!/bin/bash
# dib-run-parts [--list] DIRECTORY
# Runs the executable files of DIRECTORY whose names match ^[0-9A-Za-z_-]+$,
# sorted by their leading number (LC_ALL=C sort -n), after sourcing the
# files of DIRECTORY/../environment.d. --list prints them instead.
set -eu
set -o pipefail
list=0
if [ "${1:-}" = --list ]; then
	list=1
	shift
fi
dir=${1:-}
if [ ! -d "$dir" ]; then
	echo "usage: dib-run-parts [--list] DIRECTORY (${dir:-none given} is not a directory)" >&2
	exit 1
fi
mapfile -t targets < <(find "$dir" -maxdepth 1 -xtype f -executable -printf '%f
' |
	grep -E "${RUN_PARTS_REGEX:-^[0-9A-Za-z_-]+\$}" | LC_ALL=C sort -n || true)
if [ "$list" = 1 ]; then
	for t in "${targets[@]}"; do echo "$dir/$t"; done
	exit 0
fi
(
	envdir=$dir/../environment.d
	if [ -d "$envdir" ]; then
		mapfile -t envs < <(find "$envdir" -maxdepth 1 -xtype f -printf '%f
' | grep -E '^[0-9A-Za-z_.-]+$' | LC_ALL=C sort -n || true)
		for e in "${envs[@]}"; do
			echo "dib-run-parts: sourcing $envdir/$e" >&2
			# shellcheck disable=SC1090
			source "$envdir/$e"
		done
	fi
	for t in "${targets[@]}"; do
		echo "dib-run-parts: running $dir/$t" >&2
		start=$(date +%s.%N)
		"$dir/$t"
		echo "dib-run-parts: $t completed in $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')s" >&2
	done
)
`

// installBin copies every element's bin/ helpers into the image's
// /usr/local/bin, as DIB's install-bin element does (pre-install.d, in the
// image root).
const installBin = `#!/bin/bash
set -eu
set -o pipefail
[ "${DIB_DEBUG_TRACE:-0}" -gt 0 ] && set -x
hooks=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p /usr/local/bin
shopt -s nullglob
bins=("$hooks"/bin/*)
if [ ${#bins[@]} -gt 0 ]; then
	install -m 0755 "${bins[@]}" /usr/local/bin/
fi
if [ "${1:-}" = --with-dib-run-parts ]; then
	install -m 0755 "$(dirname "$0")/dib-run-parts" /usr/local/bin/dib-run-parts
fi
`

// copyPkgMaps copies every element's pkg-map file into the image's
// /usr/share/pkg-map/<element>, as DIB's pkg-map element does
// (extra-data.d, on the host).
const copyPkgMaps = `#!/bin/bash
set -eu
set -o pipefail
[ "${DIB_DEBUG_TRACE:-0}" -gt 0 ] && set -x
mkdir -p "$TMP_MOUNT_PATH/usr/share/pkg-map"
eval "declare -A elements=($(get_image_element_array))"
# shellcheck disable=SC2154 # declared by the eval above
for e in "${!elements[@]}"; do
	if [ -f "${elements[$e]}/pkg-map" ]; then
		install -m 0644 "${elements[$e]}/pkg-map" "$TMP_MOUNT_PATH/usr/share/pkg-map/$e"
	fi
done
`

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

// libDir holds strata's own implementation of DIB's shell library, which
// $_LIB names when diskimage-builder is not installed.
const libDir = toolsDir + "/lib"

// writeHooksDir fills dir the way DIB fills TMP_HOOKS_PATH: every element's
// files merged into one tree, plus strata's helpers (.strata/bin), the
// resolved pkg-map tables, the element-inputs files (.strata/inputs) and
// strata's DIB shell library (.strata/lib).
func (p *plan) writeHooksDir(dir string) error {
	owners, err := p.set.MergeInto(dir)
	if err != nil {
		return err
	}
	p.owners = owners
	// Every phase directory exists, as under disk-image-create, whose base
	// element always brings some: elements (DIB's install-types) cd there.
	for _, ph := range element.Phases {
		if err := os.MkdirAll(filepath.Join(dir, string(ph)), 0o755); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "environment.d"), 0o755); err != nil {
		return err
	}
	if err := writeTools(dir, p.set, p.distro, p.release); err != nil {
		return err
	}
	if err := dib.WriteLibrary(filepath.Join(dir, libDir)); err != nil {
		return err
	}
	return copyInputs(dir, p.inputs)
}

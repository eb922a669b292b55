#!/bin/bash
# test-in-root.sh ROOT PACKAGE [TEST FLAG...] — run a Go package's tests
# inside ROOT, a Debian root made by ci/debian-root.sh (e.g. trixie's):
# the test binary is built here (static, CGO_ENABLED=0), then run with
# chroot in a private mount namespace where the checkout and the temporary
# directory are bound at their own paths (and /dev, /proc). The tests then
# start that release's servers (/usr/lib/postgresql/<v>/bin, mariadbd...)
# as they start the host's, by PID, as that release's accounts. The bind
# mounts end with the namespace; nothing is mounted on the host.
#
# TEST FLAGs are the test binary's (-test.run=..., -test.v).
set -euo pipefail

if [ "$#" -lt 2 ]; then
	echo "usage: $0 ROOT PACKAGE [TEST FLAG...]" >&2
	exit 2
fi
root=$1
pkg=$2
shift 2
if [ ! -f "$root/.strata-complete" ]; then
	echo "$0: $root is not a root made by ci/debian-root.sh" >&2
	exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "$0: running tests in a root needs root (chroot, mount)" >&2
	exit 1
fi
go=${GO:-go}
repo=$(cd "$(dirname "$0")/.." && pwd -P)
tmp=$(cd "${TMPDIR:-/tmp}" && pwd -P)
dir=$(cd "$repo" && "$go" list -f '{{.Dir}}' "$pkg")
work=$(mktemp -d "$tmp/strata-in-root.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$repo" && CGO_ENABLED=0 "$go" test -c -o "$work/pkg.test" "$pkg")
mkdir -p "$root$tmp" "$root$repo"

# shellcheck disable=SC2016 # expanded by the inner shells, from their arguments
unshare --mount --propagation private /bin/sh -c '
	root=$1 tmp=$2 repo=$3
	shift 3
	mount --bind "$tmp" "$root$tmp" &&
	mount --bind "$repo" "$root$repo" &&
	mount --rbind /dev "$root/dev" &&
	mount -t proc proc "$root/proc" &&
	exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 TMPDIR="$tmp" \
		/bin/sh -c "cd \"\$1\" && shift && exec \"\$@\"" sh "$@"
' sh "$root" "$tmp" "$repo" "$dir" "$work/pkg.test" "$@"

#!/bin/bash
# debian-root.sh RELEASE PACKAGE... — print the path of a Debian RELEASE root
# with PACKAGEs installed, made once by mmdebstrap and cached under
# CACHE_DIR/roots (default ~/.cache/strata): the servers of another Debian
# release (trixie's MariaDB, PostgreSQL, Redis) for tests that run them with
# chroot (make verify-rules-trixie). The root is built beside its final
# name and renamed into place, so a failed or interrupted run leaves no
# half root to be reused.
#
# The mirror is the host's own (apt's index targets), or
# DIB_DISTRIBUTION_MIRROR as for image builds; no mirror is named here.
set -euo pipefail

if [ "$#" -lt 2 ]; then
	echo "usage: $0 RELEASE PACKAGE..." >&2
	exit 2
fi
release=$1
shift
cache=${CACHE_DIR:-$HOME/.cache/strata}

key=$(printf '%s\n' "$release" "$@" | sort | sha256sum | cut -c1-16)
root="$cache/roots/$release-$key"
if [ -f "$root/.strata-complete" ]; then
	echo "$root"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "$0: making a $release root needs root (mmdebstrap, chroot)" >&2
	exit 1
fi
command -v mmdebstrap >/dev/null || {
	echo "$0: mmdebstrap is missing: ci/deps.sh build (as root) installs it" >&2
	exit 1
}

mirror=${DIB_DISTRIBUTION_MIRROR:-}
if [ -z "$mirror" ]; then
	# The first Debian archive the host's apt uses for a release suite
	# (not -security, -updates).
	# shellcheck disable=SC2016 # apt's own $(FIELD) placeholders
	mirror=$(apt-get indextargets --format '$(REPO_URI) $(SUITE) $(COMPONENT)' |
		awk '$3 == "main" && $2 !~ /-/ { print $1; exit }')
fi
if [ -z "$mirror" ]; then
	echo "$0: the host's apt sources name no Debian archive; set DIB_DISTRIBUTION_MIRROR" >&2
	exit 1
fi

mkdir -p "$cache/roots"
tmp=$(mktemp -d "$cache/roots/.$release-$key.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
include=$(IFS=,; echo "$*")
echo "$0: making a $release root with $include in $root (once)" >&2
# shellcheck disable=SC2016 # $1 is the hook's argument, the root
if ! mmdebstrap --variant=apt --include="$include" \
	--essential-hook='echo "#!/bin/sh" > "$1/usr/sbin/policy-rc.d"; echo "exit 101" >> "$1/usr/sbin/policy-rc.d"; chmod 755 "$1/usr/sbin/policy-rc.d"' \
	"$release" "$tmp/root" "deb $mirror $release main" >"$tmp/log" 2>&1; then
	tail -n 30 "$tmp/log" >&2
	echo "$0: mmdebstrap of $release with $include failed (log above)" >&2
	exit 1
fi
touch "$tmp/root/.strata-complete"
rm -rf "$root"
mv "$tmp/root" "$root"
echo "$root"

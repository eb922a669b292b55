#!/usr/bin/env bash
# Checks, before any make target compiles or installs anything, that the Go
# toolchain GO (default: go on PATH) is at least the version go.mod's `go`
# line asks for, and says which Go is needed and how to get it when not.
#
#   ci/go-check.sh [GO]
#
# The version is the one `GO env GOVERSION` reports in this module: with
# GOTOOLCHAIN=auto (Go's default) a Go >= 1.21 may switch to the newer
# toolchain go.mod asks for by itself, and that is then the one checked.
# Pure bash on purpose: it must run on a machine with nothing installed.
set -euo pipefail

go=${1:-go}
cd "$(dirname "$0")/.."

need=
while read -r word version _; do
	if [ "$word" = go ]; then
		need=$version
		break
	fi
done <go.mod
if [ -z "$need" ]; then
	echo "make: go.mod has no go line" >&2
	exit 1
fi

how="Install Go $need or newer from the official Go release tarball for your
platform (unpack it to /usr/local, so that /usr/local/go/bin/go exists) and
put /usr/local/go/bin on PATH, or run in the golang:${need%.*}-bookworm
container image; Debian 12's own golang package is older. A Go elsewhere is
used with: make GO=/path/to/go ..."

if ! command -v "$go" >/dev/null 2>&1; then
	printf 'make: Go is not installed (no %s on PATH); strata needs Go %s or newer (go.mod).\n%s\n' "$go" "$need" "$how" >&2
	exit 1
fi
if ! have=$("$go" env GOVERSION 2>&1) || [ -z "$have" ]; then
	# Go before 1.16 has no GOVERSION; a toolchain switch that fails lands
	# here too, and its own message says why.
	version=$("$go" version 2>&1 || true)
	printf 'make: %s (%s) is not a usable Go %s or newer: %s\n%s\n' "$go" "$version" "$need" "$have" "$how" >&2
	exit 1
fi

# older A B: A is an older version than B (go1.26rc1 < 1.26.0 < 1.26.1).
older() {
	local a=${1#go} b=${2#go} i x y
	local -a av bv
	# A release candidate or beta sorts before its release.
	local apre=1 bpre=1
	case $a in *rc* | *beta*) apre=0 ;; esac
	case $b in *rc* | *beta*) bpre=0 ;; esac
	a=${a%%[!0-9.]*} b=${b%%[!0-9.]*}
	IFS=. read -ra av <<<"$a"
	IFS=. read -ra bv <<<"$b"
	for i in 0 1 2; do
		x=${av[i]:-0} y=${bv[i]:-0}
		if [ "$((10#$x))" -ne "$((10#$y))" ]; then
			[ "$((10#$x))" -lt "$((10#$y))" ]
			return
		fi
	done
	[ "$apre" -lt "$bpre" ]
}

case $have in
go[0-9]*) ;;
*)
	# A development build (devel go1.27-...) is taken as new enough.
	exit 0
	;;
esac
if older "$have" "$need"; then
	printf 'make: %s is %s; strata needs Go %s or newer (go.mod).\n%s\n' "$(command -v "$go")" "$have" "$need" "$how" >&2
	exit 1
fi
exit 0

#!/usr/bin/env bash
# Builds the Packer tools strata's plugin is tested and generated with, from
# the Go module proxy, once, and prints the binary's path:
#
#   ci/packer/tools.sh packer VERSION TOOLS_DIR       # e.g. 1.12.0
#   ci/packer/tools.sh packer-sdc VERSION TOOLS_DIR   # the SDK's, e.g. v0.6.7
#
# Each tool gets a small module of its own under TOOLS_DIR that requires the
# tool's module at that version (`go install pkg@version` needs the proxy's
# version list, which is not always served; a require does not). Packer's own
# go.mod replaces github.com/zclconf/go-cty with a fork, and a replace only
# counts in the main module, so packer's tools module repeats it (packer-sdc
# builds with its module's requirements as they are). Nothing here is
# committed: the binaries stay in TOOLS_DIR and are reused while present.
set -euo pipefail

if [ $# -ne 3 ]; then
	echo "usage: $0 packer|packer-sdc VERSION TOOLS_DIR" >&2
	exit 2
fi
tool=$1 version=$2 tools=$3
case $tool in
packer)
	module=github.com/hashicorp/packer
	pkg=github.com/hashicorp/packer
	version=v${version#v}
	# As in packer's own go.mod: the SDK needs go-cty's gob encoding, which
	# upstream go-cty dropped.
	replace='replace github.com/zclconf/go-cty => github.com/nywilken/go-cty v1.13.3'
	;;
packer-sdc)
	module=github.com/hashicorp/packer-plugin-sdk
	pkg=github.com/hashicorp/packer-plugin-sdk/cmd/packer-sdc
	version=v${version#v}
	replace=
	;;
*)
	echo "$0: unknown tool '$tool' (packer or packer-sdc)" >&2
	exit 2
	;;
esac
command -v go >/dev/null || { echo "$0: Go is not installed (need Go >= 1.26 on PATH)" >&2; exit 1; }

dir=$tools/$tool-$version
bin=$dir/$tool
if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi
mkdir -p "$dir"
cat >"$dir/go.mod" <<EOF
module strata/tools/$tool

go 1.26.0

require $module $version

$replace
EOF
cat >"$dir/tools.go" <<EOF
//go:build tools

// Package tools pins $pkg at $version.
package tools

import _ "$pkg"
EOF
echo "$0: building $tool $version into $dir (once; packer takes a few minutes)" >&2
start=$(date +%s)
(
	cd "$dir"
	# -mod=mod resolves exactly the packages the binary needs and records
	# their checksums; the proxy's version lists are never asked for.
	CGO_ENABLED=0 go build -mod=mod -trimpath -o "$bin.tmp" "$pkg"
)
mv "$bin.tmp" "$bin"
echo "$0: built $bin in $(($(date +%s) - start))s" >&2
echo "$bin"

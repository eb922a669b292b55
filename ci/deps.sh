#!/usr/bin/env bash
# Installs the Debian packages a strata make target needs, and nothing else.
#
#   ci/deps.sh GROUP...     GROUP: build boot test openstack dib
#
# Packages already installed are not touched, so a second run costs one
# dpkg-query. Missing packages are installed non-interactively with
# --no-install-recommends; maintainer scripts are kept from starting
# services (policy-rc.d) because the tests start their own private servers.
set -euo pipefail

declare -A group
# One package per line, so that changes from different work merge cleanly.
group[build]="
	mmdebstrap
	debootstrap
	qemu-utils
	grub-common
	grub-pc-bin
	grub-efi-amd64-bin
	dosfstools
	mtools
	fdisk
	e2fsprogs
	zstd
	tar
	util-linux
	ca-certificates
	libcap2-bin
	squashfs-tools
"
group[boot]="
	qemu-system-x86
	seabios
	ovmf
"
group[test]="
	mariadb-server
	mariadb-client
	postgresql
	redis-server
	redis-tools
	e2fsprogs
	util-linux
	systemd
	python3-openstackclient
	python3-troveclient
"
# Debian's diskimage-builder: its element tree and shell library, which
# strata offers to DIB elements, and the compatibility suite builds from.
group[dib]="
	python3-diskimage-builder
"
group[openstack]="
	keystone
	glance-api
	trove-api
	python3-openstackclient
	uwsgi-core
	uwsgi-plugin-python3
	sqlite3
	qemu-utils
	curl
"

if [ $# -eq 0 ]; then
	echo "usage: $0 GROUP... (groups: ${!group[*]})" >&2
	exit 2
fi

want=()
for g in "$@"; do
	if [ -z "${group[$g]+set}" ]; then
		echo "ci/deps.sh: unknown group '$g' (known: ${!group[*]})" >&2
		exit 2
	fi
	# shellcheck disable=SC2206
	want+=(${group[$g]})
done

# The openstack group's services are started by the tests, privately, on
# free ports: never at boot (their default ports clash with strata's, and
# Debian's keystone.service orders itself after itself, which
# `systemd-analyze verify` of any other unit then reports).
disable_openstack_units() {
	local u
	for u in keystone glance-api trove-api; do
		find /etc/systemd/system -path "*.wants/$u.service" -type l -delete 2>/dev/null || true
	done
}

missing=()
for p in "${want[@]}"; do
	st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$st" = installed ] || missing+=("$p")
done
openstack_wanted=0
for g in "$@"; do [ "$g" = openstack ] && openstack_wanted=1; done
if [ ${#missing[@]} -eq 0 ]; then
	[ "$openstack_wanted" = 1 ] && [ "$(id -u)" -eq 0 ] && disable_openstack_units
	exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
	echo "ci/deps.sh: missing packages (${missing[*]}) and no apt-get: strata needs a Debian or Ubuntu build host" >&2
	exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "ci/deps.sh: missing packages: ${missing[*]}" >&2
	echo "ci/deps.sh: run as root (or install them yourself) to continue" >&2
	exit 1
fi

echo "ci/deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	made_policy=1
fi
# An if, not an &&-list: as the trap's last command a false test would
# become the script's exit status after a successful install.
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	if [ "$made_policy" = 1 ]; then
		rm -f "$policy"
	fi
}
trap cleanup EXIT

if ! apt-get update -q >/tmp/strata-apt-update.log 2>&1; then
	cat /tmp/strata-apt-update.log >&2
	echo "ci/deps.sh: apt-get update failed (see above); check the host's apt sources and network" >&2
	exit 1
fi
if ! apt-get install -y -q --no-install-recommends \
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
	"${missing[@]}"; then
	echo "ci/deps.sh: could not install: ${missing[*]}" >&2
	exit 1
fi
[ "$openstack_wanted" = 1 ] && disable_openstack_units
exit 0

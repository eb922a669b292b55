#!/usr/bin/env bash
# Installs the Debian packages a strata make target needs, and nothing else.
#
#   ci/deps.sh GROUP...          GROUP: build boot test openstack swift tempest dib nova
#   ci/deps.sh --list GROUP...   print the groups' packages, one a line
#
# Packages already installed are not touched, so a second run costs one
# dpkg-query per package and runs no apt. Missing packages are installed
# non-interactively with --no-install-recommends; maintainer scripts are kept
# from starting services (a policy-rc.d, made for the install and removed
# after it, unless the host has its own, which is left exactly as it is)
# because the tests start their own private servers. A package name the
# host's apt sources do not have stops the run before anything is installed,
# with a message naming it.
#
# For tests only: STRATA_DEPS_EXTRA="NAME..." adds package names to those
# the groups want (ci/freshhost uses a name that does not exist to see
# apt fail, and a small real one to see an install without a policy-rc.d).
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
	socat
"
group[test]="
	mariadb-server
	mariadb-client
	mariadb-backup
	postgresql
	redis-server
	redis-tools
	e2fsprogs
	util-linux
	systemd
	python3-openstackclient
	python3-troveclient
	gcc
	libc6-dev
	git
	shellcheck
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
# Trove's own test suite (make test-tempest): tempest and Debian's
# trove-tempest-plugin, run unmodified; the drivers the plugin's SQLAlchemy
# clients connect with.
group[tempest]="
	tempest
	trove-tempest-plugin
	python3-pymysql
	python3-psycopg2
	python3-sqlalchemy
	sqlite3
	curl
"
# The private Swift of ci/swift/start.sh (object-store tests: Swift and,
# through s3api, S3); memcached holds tempauth's tokens.
group[swift]="
	swift-proxy
	swift-object
	swift-container
	swift-account
	memcached
	python3-swiftclient
	curl
"
# The compute tier of ci/openstack/compute-start.sh (opt-in, never part of
# make test): RabbitMQ, Placement, Nova with the qemu/libvirt driver, Cinder
# (NFS driver, hence nfs-common for mount.nfs), Neutron with the linuxbridge
# agent and its database in a private MariaDB (SQLite's locking breaks
# Neutron's two processes); genisoimage writes Nova's config drives.
group[nova]="
	rabbitmq-server
	placement-api
	nova-api
	nova-conductor
	nova-scheduler
	nova-compute-qemu
	cinder-api
	cinder-scheduler
	cinder-volume
	neutron-server
	neutron-linuxbridge-agent
	genisoimage
	nfs-common
	iproute2
	iptables
	ebtables
	mariadb-server
	python3-pymysql
	uwsgi-core
	uwsgi-plugin-python3
	python3-openstackclient
	sqlite3
	curl
"
# Debconf answers given before a group's install: the packages' own set-up
# of databases, message bus, keystone_authtoken and catalog endpoints stays
# off (ci/openstack/compute-start.sh writes its own configuration).
# "PACKAGE QUESTION TYPE VALUE" a line, as debconf-set-selections reads them.
declare -A preseed
preseed[nova]="
nova-common nova/configure_db boolean false
nova-common nova/configure_rabbit boolean false
nova-common nova/configure_ksat boolean false
nova-common nova/configure_neutron boolean false
nova-common nova/configure_placement boolean false
nova-api novaapi/configure_db boolean false
nova-api nova/configure_api-endpoint boolean false
placement-common placement/configure_db boolean false
placement-common placement/configure_ksat boolean false
placement-api placement/configure_api-endpoint boolean false
cinder-common cinder/configure_db boolean false
cinder-common cinder/configure_rabbit boolean false
cinder-common cinder/configure_ksat boolean false
cinder-api cinder/configure_api-endpoint boolean false
neutron-common neutron/configure_db boolean false
neutron-common neutron/configure_rabbit boolean false
neutron-common neutron/configure_ksat boolean false
neutron-common neutron/configure_nova boolean false
"

list=0
if [ "${1:-}" = --list ]; then
	list=1
	shift
fi
if [ $# -eq 0 ]; then
	echo "usage: $0 [--list] GROUP... (groups: ${!group[*]})" >&2
	exit 2
fi

want=()
for g in "$@"; do
	if [ -z "${group[$g]+set}" ]; then
		echo "ci/deps.sh: unknown group '$g' (known: ${!group[*]})" >&2
		exit 2
	fi
	# shellcheck disable=SC2206 # one package name a word
	want+=(${group[$g]})
done
# shellcheck disable=SC2206 # one package name a word
want+=(${STRATA_DEPS_EXTRA:-})
if [ "$list" = 1 ]; then
	printf '%s\n' "${want[@]}" | awk '!seen[$0]++'
	exit 0
fi

# The openstack, swift and nova groups' services are started by the tests,
# privately, on free ports: never at boot (their default ports clash with
# strata's, and Debian's keystone.service orders itself after itself, which
# `systemd-analyze verify` of any other unit then reports). Only the units
# of the groups asked for: a host's own libvirtd or dnsmasq is left alone
# unless the opt-in nova group is named.
declare -A units
units[openstack]="keystone glance-api trove-api memcached"
units[swift]="swift-*"
units[nova]="rabbitmq-server epmd placement-api nova-* cinder-* neutron-* libvirt* virt* nfs-client rpc-* dnsmasq"
disable_service_units() {
	local g u
	for g in "$@"; do
		# One glob a word, matched by find below, not by the shell.
		set -f
		for u in ${units[$g]:-}; do
			find /etc/systemd/system -path "*.wants/$u.service" -type l -delete 2>/dev/null || true
		done
		set +f
	done
}

# One dpkg-query for all names (it exits 1 when some are unknown to dpkg).
declare -A installed
while read -r p st; do
	if [ "$st" = installed ]; then
		installed[$p]=1
	fi
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${want[@]}" 2>/dev/null || true)
missing=()
for p in "${want[@]}"; do
	if [ -z "${installed[$p]+set}" ]; then
		missing+=("$p")
	fi
done
services_wanted=0
for g in "$@"; do
	case $g in openstack | swift | nova) services_wanted=1 ;; esac
done
if [ ${#missing[@]} -eq 0 ]; then
	if [ "$services_wanted" = 1 ] && [ "$(id -u)" -eq 0 ]; then disable_service_units "$@"; fi
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
update_log=
# An if, not an &&-list: as the trap's last command a false test would
# become the script's exit status after a successful install.
# shellcheck disable=SC2317 # called by the trap
cleanup() {
	if [ -n "$update_log" ]; then
		rm -f "$update_log"
	fi
	if [ "$made_policy" = 1 ]; then
		rm -f "$policy"
	fi
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
	made_policy=1
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
fi
update_log=$(mktemp /tmp/strata-apt-update.XXXXXX)

answers=
for g in "$@"; do
	answers+=${preseed[$g]:-}
done
if [ -n "$answers" ]; then
	if ! printf '%s\n' "$answers" | grep -v '^$' | debconf-set-selections; then
		echo "ci/deps.sh: debconf-set-selections refused the preseeded answers for: $*" >&2
		exit 1
	fi
fi

if ! apt-get update -q >"$update_log" 2>&1; then
	cat "$update_log" >&2
	echo "ci/deps.sh: apt-get update failed (see above); check the host's apt sources and network" >&2
	exit 1
fi
# Names the sources do not offer (a typo, a package of another release)
# stop the run here, named, before apt installs anything.
declare -A offered
while read -r p; do
	offered[$p]=1
done < <(apt-cache policy "${missing[@]}" 2>/dev/null |
	awk '/^[^ ].*:$/ { p = substr($0, 1, length($0) - 1) } /^  Candidate:/ && $2 != "(none)" { print p }')
unavailable=()
for p in "${missing[@]}"; do
	if [ -z "${offered[$p]+set}" ]; then
		unavailable+=("$p")
	fi
done
if [ ${#unavailable[@]} -gt 0 ]; then
	echo "ci/deps.sh: the host's apt sources offer no package named: ${unavailable[*]} (nothing was installed)" >&2
	exit 1
fi
if ! apt-get install -y -q --no-install-recommends \
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
	"${missing[@]}"; then
	echo "ci/deps.sh: could not install: ${missing[*]}" >&2
	exit 1
fi
if [ "$services_wanted" = 1 ]; then disable_service_units "$@"; fi
exit 0

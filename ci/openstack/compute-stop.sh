#!/usr/bin/env bash
# Stops the compute tier that ci/openstack/compute-start.sh started on top
# of STATE_DIR: each PID in STATE_DIR/compute/pids, its descendants, and
# every process left in the compute namespace (qemu guests, which libvirtd
# detaches from itself), get SIGTERM, then SIGKILL after 10 s. The
# namespace goes with its last process, and with it its mounts, bridges,
# taps, iptables rules and the veth's host end (deleted here if it is
# still there). STATE_DIR itself is left for ci/openstack/stop.sh.
#
#   ci/openstack/compute-stop.sh STATE_DIR
set -uo pipefail

state=${1:?usage: $0 STATE_DIR}/compute
[ -d "$state" ] || exit 0

# shellcheck source=ci/openstack/lib.sh
. "$(dirname "$0")/lib.sh"

all=()
ns=
if [ -f "$state/pids" ]; then
	first=1
	while read -r pid; do
		[ -n "$pid" ] || continue
		kill -0 "$pid" 2>/dev/null || { first=0; continue; }
		# The first PID holds the compute namespace.
		if [ "$first" = 1 ]; then ns=$(readlink "/proc/$pid/ns/net" 2>/dev/null); fi
		first=0
		mapfile -t kids < <(descendants "$pid")
		all+=("$pid" "${kids[@]}")
	done <"$state/pids"
fi
if [ -n "$ns" ] && [ "$ns" != "$(readlink /proc/self/ns/net)" ]; then
	for d in /proc/[0-9]*; do
		[ "$(readlink "$d/ns/net" 2>/dev/null)" = "$ns" ] && all+=("${d#/proc/}")
	done
fi
# stop PID...: SIGTERM, up to 10 s, SIGKILL.
stop() {
	local p alive
	kill -TERM "$@" 2>/dev/null
	for _ in $(seq 1 40); do
		alive=()
		for p in "$@"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
		[ ${#alive[@]} -eq 0 ] && return 0
		sleep 0.25
	done
	for p in "$@"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
	return 0
}
if [ ${#all[@]} -gt 0 ]; then stop "${all[@]}"; fi
# epmd last: RabbitMQ shutting down without it starts an epmd -daemon.
if [ -s "$state/epmd.pid" ]; then
	epmd_pid=$(cat "$state/epmd.pid")
	if kill -0 "$epmd_pid" 2>/dev/null; then stop "$epmd_pid"; fi
	rm -f "$state/epmd.pid"
fi
# The host's end of the veth: compute.env names it after a start, the
# host_if file as soon as it exists (a start that failed half-way).
host_if=
if [ -f "$state/compute.env" ]; then
	host_if=$(sed -n 's/^HOST_IF=//p' "$state/compute.env")
fi
if [ -z "$host_if" ] && [ -s "$state/host_if" ]; then
	host_if=$(cat "$state/host_if")
fi
if [ -n "$host_if" ] && ip link show "$host_if" >/dev/null 2>&1; then
	ip link del "$host_if"
fi
rm -f "$state/host_if"
: >"$state/pids"
rm -f "$state"/fwd/*.sock
exit 0

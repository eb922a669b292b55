#!/usr/bin/env bash
# Stops the private OpenStack that ci/openstack/start.sh started in
# STATE_DIR: each PID in STATE_DIR/pids (and its children: uwsgi workers,
# API workers) gets SIGTERM, then SIGKILL after 10 s; then STATE_DIR is
# removed (kept with --keep, for reading the logs). A compute tier started
# on top by compute-start.sh is stopped first (compute-stop.sh).
#
#   ci/openstack/stop.sh [--keep] STATE_DIR
set -uo pipefail

keep=0
if [ "${1:-}" = --keep ]; then
	keep=1
	shift
fi
state=${1:?usage: $0 [--keep] STATE_DIR}
[ -d "$state" ] || exit 0
# The compute tier of compute-start.sh, if one runs on top, goes first.
"$(dirname "$0")/compute-stop.sh" "$state"

# shellcheck source=ci/openstack/lib.sh
. "$(dirname "$0")/lib.sh"

all=()
if [ -f "$state/pids" ]; then
	while read -r pid; do
		[ -n "$pid" ] || continue
		kill -0 "$pid" 2>/dev/null || continue
		mapfile -t kids < <(descendants "$pid")
		all+=("$pid" "${kids[@]}")
	done <"$state/pids"
fi
if [ ${#all[@]} -gt 0 ]; then
	kill -TERM "${all[@]}" 2>/dev/null
	for _ in $(seq 1 40); do
		alive=()
		for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
		[ ${#alive[@]} -eq 0 ] && break
		sleep 0.25
	done
	for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
fi
: >"$state/pids"
[ "$keep" = 1 ] || rm -rf "$state"
exit 0

#!/usr/bin/env bash
# Shell functions shared by ci/openstack's stop scripts (sourced).

# descendants PID: PID's children, grandchildren, ...
descendants() {
	local c
	for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
		echo "$c"
		descendants "$c"
	done
}

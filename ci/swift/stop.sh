#!/usr/bin/env bash
# Stops the private Swift that ci/swift/start.sh started in STATE_DIR: the
# same PID-file protocol as the private OpenStack, so the same stopper.
#
#   ci/swift/stop.sh [--keep] STATE_DIR
exec "$(dirname "$0")/../openstack/stop.sh" "$@"

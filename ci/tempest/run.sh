#!/usr/bin/env bash
# Runs Trove's own test suite — Debian's trove-tempest-plugin, unmodified —
# against a strata controller on 127.0.0.1 (make test-tempest).
#
#   ci/tempest/run.sh WORK_DIR
#
# Environment:
#   STRATA               the strata binary (default bin/strata)
#   OUT_DIR              where make image left mariadb-10.11.qcow2 and
#                        postgresql-15.qcow2 (default out)
#   TEMPEST_CONCURRENCY  test classes run at once (default 2; each boots VMs)
#   TEMPEST_REGEX        which tests (default trove_tempest_plugin: all)
#   KEEP=1               keep WORK_DIR (logs, tempest.conf, results) afterwards
#
# It starts a controller with a state directory of its own and free ports,
# publishes both images as datastore versions (the embedded Glance and
# management API, as an operator would), writes tempest.conf for tempest's
# default dynamic credentials (a project, a user and a role assignment per
# test class, made and removed through the controller's Keystone API), runs
#
#   tempest run --regex trove_tempest_plugin
#
# and hands the results to ci/tempest/results.py, which prints the plugin's
# table and fails the run for a failure not on ci/tempest/expected-failures.txt
# or a listed test that did not fail as listed. Afterwards no project, user
# or instance the suite made may be left. The controller and every VM of its
# state directory are stopped by PID on the way out, whatever happened.
set -euo pipefail

# The whole script is one block, read before it runs: editing this file
# during a run (which takes tens of minutes) cannot change the run.
{
work=${1:?usage: $0 WORK_DIR}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
strata=${STRATA:-$repo/bin/strata}
out=${OUT_DIR:-$repo/out}
concurrency=${TEMPEST_CONCURRENCY:-2}
regex=${TEMPEST_REGEX:-trove_tempest_plugin}
py=/usr/bin/python3 # Debian's python with tempest's modules, not a pyenv one

for bin in tempest stestr sqlite3 curl "$py" "$strata"; do
	command -v "$bin" >/dev/null || {
		echo "ci/tempest/run.sh: $bin is missing; install with: ci/deps.sh tempest openstack (and make build)" >&2
		exit 1
	}
done
for img in mariadb-10.11 postgresql-15; do
	[ -f "$out/$img.qcow2" ] || {
		echo "ci/tempest/run.sh: $out/$img.qcow2 is missing; build it with: make image RECIPE=images/$img.yaml" >&2
		exit 1
	}
done

# The judge first: a broken results.py would pass or fail the run for
# nothing, after tens of minutes.
"$py" "$here/results_test.py" 2>"$work.judge.log" || {
	cat "$work.judge.log" >&2
	echo "ci/tempest/run.sh: ci/tempest/results_test.py failed" >&2
	exit 1
}
rm -f "$work.judge.log"

rm -rf "$work"
mkdir -p "$work"/{state,logs,home}
work=$(cd "$work" && pwd)
state=$work/state
started=$(date +%s)
phase() { echo "== $(($(date +%s) - started))s: $*"; }

controller_pid=
# shellcheck disable=SC2317 # stop_all and finish run from the EXIT trap
# stop_all stops the controller and every qemu and publish relay whose
# command line names the state directory (both outlive their controller),
# by PID.
stop_all() {
	if [ -n "$controller_pid" ] && kill -0 "$controller_pid" 2>/dev/null; then
		kill -TERM "$controller_pid" 2>/dev/null || true
		for _ in $(seq 1 120); do
			kill -0 "$controller_pid" 2>/dev/null || break
			sleep 0.25
		done
		kill -KILL "$controller_pid" 2>/dev/null || true
	fi
	local pid
	# shellcheck disable=SC2013 # one pid per line
	for pid in $(grep -l -s -F "$state/" /proc/[0-9]*/cmdline | cut -d/ -f3); do
		case $(cat "/proc/$pid/comm" 2>/dev/null) in
		qemu*) ;;
		strata) grep -q -a -F publish-relay "/proc/$pid/cmdline" 2>/dev/null || continue ;;
		*) continue ;; # grep itself, or no longer there
		esac
		echo "ci/tempest/run.sh: stopping VM or relay process $pid of this run" >&2
		kill -KILL "$pid" 2>/dev/null || true
	done
}
# shellcheck disable=SC2317
finish() {
	local rc=$?
	stop_all
	if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
		echo "ci/tempest/run.sh: logs, tempest.conf and results are in $work" >&2
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap finish EXIT

free_port() {
	"$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
api_port=$(free_port)
agent_port=$(free_port)
api=http://127.0.0.1:$api_port

phase "starting the controller (API $api, state $state)"
# Every class of the plugin creates its instance public and connects to
# the public address at the standard port: 127.200.0.0/16 (loopback, apart
# from the instances' own 127.10.0.0/16) stands in for a cloud's floating
# addresses on this one-address host.
"$strata" controller serve --state-dir "$state" --listen "127.0.0.1:$api_port" \
	--agent-listen "127.0.0.1:$agent_port" --public-addresses 127.200.0.0/16 >"$work/logs/controller.log" 2>&1 &
controller_pid=$!
for _ in $(seq 1 120); do
	curl -s -o /dev/null --max-time 2 "$api/" && break
	kill -0 "$controller_pid" 2>/dev/null || {
		tail -n 20 "$work/logs/controller.log" >&2
		echo "ci/tempest/run.sh: the controller exited during start-up" >&2
		exit 1
	}
	sleep 0.25
done
# shellcheck disable=SC1091 # written by the controller just now
. "$state/openrc"

phase "publishing mariadb 10.11 and postgresql 15 (embedded Glance and management API)"
for img in mariadb-10.11 postgresql-15; do
	"$strata" image publish "$repo/images/$img.yaml" --image "$out/$img.qcow2" >"$work/logs/publish-$img.log" 2>&1 || {
		cat "$work/logs/publish-$img.log" >&2
		exit 1
	}
done
db=$state/controller.db
q() { sqlite3 -batch -noheader "$db" "$1"; }
flavor=$(q "SELECT id FROM flavors WHERE name = 'strata.small'")
resize_flavor=$(q "SELECT id FROM flavors WHERE name = 'strata.medium'")
rebuild_image=$(q "SELECT image_id FROM datastore_versions WHERE name = '10.11'")
rebuild_image_pg=$(q "SELECT image_id FROM datastore_versions WHERE name = '15'")
if [ -z "$flavor" ] || [ -z "$resize_flavor" ] || [ -z "$rebuild_image" ] || [ -z "$rebuild_image_pg" ]; then
	echo "ci/tempest/run.sh: flavors or the mariadb and postgresql versions are missing from the controller" >&2
	exit 1
fi

phase "writing tempest.conf"
export HOME=$work/home # tempest init records its workspace under HOME
# tempest init logs to tempest.log in the current directory: run it in the
# work directory, never in the checkout.
(cd "$work" && tempest init "$work/tempest" >/dev/null)
cat >"$work/tempest/etc/tempest.conf" <<EOF
[DEFAULT]
log_dir = $work/logs
log_file = tempest.log
debug = true

[auth]
# tempest's default: a project and users of its own per test class, made
# through the controller's Keystone API with the admin below.
use_dynamic_credentials = true
admin_username = $OS_USERNAME
admin_password = $OS_PASSWORD
admin_project_name = $OS_PROJECT_NAME
admin_domain_name = Default

[identity]
uri_v3 = $OS_AUTH_URL
auth_version = v3
region = $OS_REGION_NAME
v3_endpoint_type = public

[identity-feature-enabled]
api_v2 = false

[service_available]
trove = true
nova = false
neutron = false
cinder = false
glance = false
swift = false

[database]
enabled_datastores = mariadb,postgresql
default_datastore_versions = mariadb:10.11,postgresql:15
# Not postgresql: the plugin's PostgreSQL upgrade test connects to its new
# instance with the root password of its class's first instance, which
# fails before any upgrade (observed: password authentication failed for
# user "root"), against any server.
pre_upgrade_datastore_versions = mariadb:10.11
flavor_id = $flavor
resize_flavor_id = $resize_flavor
# The plugin looks this name up in the catalog's network service: the
# local driver's default network.
shared_network = private
volume_type =
rebuild_image_id = $rebuild_image
database_build_timeout = 900
database_restore_timeout = 900
backup_wait_timeout = 600
remove_swift_account = false
EOF

count_identity() { q "SELECT (SELECT COUNT(*) FROM projects) || ' projects, ' || (SELECT COUNT(*) FROM users) || ' users'"; }
before=$(count_identity)

cd "$work/tempest"
tempest run --list-tests --regex trove_tempest_plugin 2>/dev/null | grep -E '^trove_tempest_plugin\.' >"$work/all.txt" || true
tempest run --list-tests --regex "$regex" 2>/dev/null | grep -E '^trove_tempest_plugin\.' >"$work/listed.txt" || true
if [ ! -s "$work/all.txt" ] || [ ! -s "$work/listed.txt" ]; then
	echo "ci/tempest/run.sh: tempest lists no test of trove_tempest_plugin for --regex '$regex'" >&2
	exit 1
fi
phase "running $(wc -l <"$work/listed.txt") tests of trove-tempest-plugin ($(dpkg-query -W -f='${Version}' trove-tempest-plugin), tempest $(dpkg-query -W -f='${Version}' tempest)), $concurrency classes at once"
run_start=$(date +%s)
# tempest.conf has one rebuild_image_id for every datastore, and a rebuild
# refuses another datastore's image: the PostgreSQL tests that rebuild (the
# rebuild test, and the replication test, which rebuilds its new primary and
# a replica at its end) run on their own, after the others, with a copy of
# tempest.conf naming the PostgreSQL image. Both runs' results are judged
# together.
pg_rebuild='TestInstanceActionsPostgreSQL\.test_rebuild|TestReplicationPostgreSQL\.test_replication'
tempest run --regex "$regex" --exclude-regex "$pg_rebuild" --concurrency "$concurrency" >"$work/logs/tempest-run.log" 2>&1 || true
stestr last --subunit >"$work/results.subunit" 2>/dev/null || true
# Only those of them the caller's regex listed.
grep -E "$pg_rebuild" "$work/listed.txt" >"$work/listed-postgresql-rebuild.txt" || true
if [ -s "$work/listed-postgresql-rebuild.txt" ]; then
	sed "s/^rebuild_image_id = .*/rebuild_image_id = $rebuild_image_pg/" "$work/tempest/etc/tempest.conf" >"$work/tempest/etc/tempest-postgresql.conf"
	tempest run --config-file "$work/tempest/etc/tempest-postgresql.conf" --load-list "$work/listed-postgresql-rebuild.txt" --concurrency "$concurrency" >"$work/logs/tempest-run-postgresql-rebuild.log" 2>&1 || true
	stestr last --subunit >>"$work/results.subunit" 2>/dev/null || true
fi
run_seconds=$(($(date +%s) - run_start))
phase "tempest run finished in ${run_seconds}s"

rc=0
"$py" "$here/results.py" --listed "$work/listed.txt" --all "$work/all.txt" --expected "$here/expected-failures.txt" <"$work/results.subunit" || rc=1

after=$(count_identity)
live=$(q "SELECT COUNT(*) FROM instances WHERE deleted_at IS NULL")
if [ "$before" != "$after" ]; then
	echo "FAIL: the suite left identity behind: before $before, after $after" >&2
	rc=1
else
	echo "identity after the run: $after, as before (dynamic credentials removed)"
fi
if [ "$live" != 0 ]; then
	echo "FAIL: $live instance(s) left after the suite:" >&2
	q "SELECT id, name, project_id, task FROM instances WHERE deleted_at IS NULL" >&2
	rc=1
fi
phase "done: tempest run ${run_seconds}s, whole run $(($(date +%s) - started))s"
exit $rc
}

#!/usr/bin/env bash
# Starts a private OpenStack on 127.0.0.1 for strata's tests: Debian's
# keystone (under uwsgi), glance-api (file store) and trove-api, each with
# its own SQLite database, all state below one directory.
#
#   ci/openstack/start.sh STATE_DIR
#
# Writes, in STATE_DIR:
#   clouds.yaml   cloud "strata-test" (admin in project admin): OS_CLIENT_CONFIG_FILE
#   stack.env     KEYSTONE_URL GLANCE_URL TROVE_URL ADMIN_PASSWORD PROJECT_ID (shell syntax)
#   pids          one PID per line: what ci/openstack/stop.sh kills
#   logs/         each service's log
#
# Nothing listens beyond 127.0.0.1; ports are free ones picked at start.
# Install the packages first with `ci/deps.sh openstack`. Stop with
# `ci/openstack/stop.sh STATE_DIR`. Takes about 30 s on two cores.
set -euo pipefail

state=${1:?usage: $0 STATE_DIR}
for bin in uwsgi keystone-manage glance-api glance-manage trove-api sqlite3 curl /usr/bin/python3; do
	command -v "$bin" >/dev/null || {
		echo "ci/openstack/start.sh: $bin is missing; install it with: ci/deps.sh openstack" >&2
		exit 1
	}
done
mkdir -p "$state"
state=$(cd "$state" && pwd)
mkdir -p "$state"/{logs,keystone,glance/images,glance/staging,glance/tasks,trove}
: >"$state/pids"

# On any failure, wherever it happens (a failing command inside a function
# exits under set -e without running a plain ERR trap): show the logs and
# stop what was started. -E gives the ERR trap to functions for the line.
set -E
started=0
# shellcheck disable=SC2317 # called by the trap
on_exit() {
	local rc=$?
	if [ "$rc" -ne 0 ] && [ "$started" = 0 ]; then
		for f in "$state"/logs/*.log; do
			if [ -s "$f" ]; then
				echo "--- last lines of $f" >&2
				tail -n 15 "$f" >&2
			fi
		done
		"$(dirname "$0")/stop.sh" --keep "$state" || true
	fi
}
trap on_exit EXIT
trap 'echo "ci/openstack/start.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
fail() {
	echo "ci/openstack/start.sh: $*" >&2
	exit 1
}

free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
ks_port=$(free_port)
glance_port=$(free_port)
trove_port=$(free_port)
keystone="http://127.0.0.1:$ks_port/v3"
glance="http://127.0.0.1:$glance_port"
trove="http://127.0.0.1:$trove_port"
password=$(/usr/bin/python3 -c 'import secrets; print(secrets.token_urlsafe(18))')

# Waits until URL answers HTTP (any status), or fails after $2 seconds.
wait_http() {
	local url=$1 limit=$2 name=$3 pid=$4 i
	for ((i = 0; i < limit * 4; i++)); do
		if curl -s -o /dev/null --max-time 2 "$url"; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || fail "$name exited during start-up"
		sleep 0.25
	done
	fail "$name did not answer on $url within ${limit}s"
}

# ---- Keystone ---------------------------------------------------------------
# uwsgi with one process and one thread: SQLite objects may not cross
# threads, and WAL mode keeps readers from blocking the writer.
cat >"$state/keystone/keystone.conf" <<EOF
[DEFAULT]
log_file = $state/logs/keystone-app.log
[database]
connection = sqlite:///$state/keystone/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = $state/keystone/fernet-keys
[fernet_receipts]
key_repository = $state/keystone/fernet-keys
[credential]
key_repository = $state/keystone/credential-keys
EOF
ksm() { keystone-manage --config-file "$state/keystone/keystone.conf" "$@"; }
{
	ksm db_sync
	sqlite3 "$state/keystone/keystone.db" 'PRAGMA journal_mode=WAL;' >/dev/null
	ksm fernet_setup --keystone-user root --keystone-group root
	ksm credential_setup --keystone-user root --keystone-group root
	ksm bootstrap --bootstrap-password "$password" --bootstrap-username admin --bootstrap-project-name admin \
		--bootstrap-role-name admin --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
		--bootstrap-admin-url "$keystone" --bootstrap-internal-url "$keystone" --bootstrap-public-url "$keystone"
} >>"$state/logs/keystone-manage.log" 2>&1

OS_KEYSTONE_CONFIG_DIR=$state/keystone OS_KEYSTONE_CONFIG_FILES=keystone.conf \
	uwsgi --plugin python3 --http-socket "127.0.0.1:$ks_port" --wsgi-file /usr/bin/keystone-wsgi-public \
	--master --processes 1 --threads 1 --die-on-term --no-orphans --lazy-apps --buffer-size 65535 \
	--add-header "Connection: close" --logto "$state/logs/keystone.log" --pidfile "$state/keystone/uwsgi.pid" &
ks_pid=$!
echo "$ks_pid" >>"$state/pids"

# ---- Glance -------------------------------------------------------------------
authtoken() {
	cat <<EOF
[keystone_authtoken]
www_authenticate_uri = $keystone
auth_url = $keystone
auth_type = password
username = admin
password = $password
project_name = admin
user_domain_name = Default
project_domain_name = Default
service_token_roles_required = false
EOF
}
cat >"$state/glance/glance-api.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $glance_port
workers = 1
log_file = $state/logs/glance.log
node_staging_uri = file://$state/glance/staging
enabled_import_methods = []
[database]
connection = sqlite:///$state/glance/glance.db
[glance_store]
stores = file
default_store = file
filesystem_store_datadir = $state/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $state/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $state/glance/tasks
[task]
work_dir = $state/glance/tasks
[paste_deploy]
flavor = keystone
config_file = /etc/glance/glance-api-paste.ini
[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
$(authtoken)
EOF
glance-manage --config-file "$state/glance/glance-api.conf" db_sync >>"$state/logs/glance-manage.log" 2>&1
sqlite3 "$state/glance/glance.db" 'PRAGMA journal_mode=WAL;' >/dev/null
glance-api --config-file "$state/glance/glance-api.conf" >>"$state/logs/glance-stdout.log" 2>&1 &
glance_pid=$!
echo "$glance_pid" >>"$state/pids"

# ---- Trove (API only) -----------------------------------------------------------
# The management calls strata makes (datastore versions, configuration
# parameters) touch only trove-api's database and Glance: no message bus,
# taskmanager or conductor is started ("fake" transport).
cat >"$state/trove/trove.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $trove_port
trove_api_workers = 1
api_paste_config = /etc/trove/api-paste.ini
log_file = $state/logs/trove.log
transport_url = fake:/
control_exchange = trove
[database]
connection = sqlite:///$state/trove/trove.db
[service_credentials]
auth_url = $keystone
username = admin
password = $password
project_name = admin
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
$(authtoken)
EOF
# trove-manage db_sync breaks on Python 3.11 (inspect.getargspec); call the
# same migration directly.
/usr/bin/python3 - "$state/trove/trove.conf" >>"$state/logs/trove-manage.log" 2>&1 <<'EOF'
import sys
from trove.common import cfg
cfg.CONF(["--config-file", sys.argv[1]], project="trove")
from trove.db import get_db_api
get_db_api().db_sync(cfg.CONF)
EOF
sqlite3 "$state/trove/trove.db" 'PRAGMA journal_mode=WAL;' >/dev/null
trove-api --config-file "$state/trove/trove.conf" >>"$state/logs/trove-stdout.log" 2>&1 &
trove_pid=$!
echo "$trove_pid" >>"$state/pids"

# ---- Catalog ------------------------------------------------------------------------
wait_http "$keystone" 60 keystone "$ks_pid"
token=$(curl -sf -D - -o /dev/null -H 'Content-Type: application/json' -d @- "$keystone/auth/tokens" <<EOF | awk 'tolower($1)=="x-subject-token:"{print $2}' | tr -d '\r'
{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"$password"}}},
 "scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}
EOF
)
[ -n "$token" ] || fail "could not get a token from keystone at $keystone"
api() { curl -sf -H "X-Auth-Token: $token" -H 'Content-Type: application/json' "$@"; }
json_id() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[sys.argv[1]]["id"])' "$1"; }
project_id=$(api "$keystone/auth/projects" | /usr/bin/python3 -c 'import json,sys; print([p["id"] for p in json.load(sys.stdin)["projects"] if p["name"]=="admin"][0])')
add_service() { # TYPE NAME URL
	local sid iface
	sid=$(api -d "{\"service\":{\"type\":\"$1\",\"name\":\"$2\",\"enabled\":true}}" "$keystone/services" | json_id service)
	for iface in public internal admin; do
		api -d "{\"endpoint\":{\"service_id\":\"$sid\",\"interface\":\"$iface\",\"region_id\":\"RegionOne\",\"url\":\"$3\",\"enabled\":true}}" \
			"$keystone/endpoints" >/dev/null
	done
}
add_service image glance "$glance"
add_service database trove "$trove/v1.0/%(tenant_id)s"

cat >"$state/clouds.yaml" <<EOF
# The private test OpenStack in $state (ci/openstack/start.sh).
clouds:
  strata-test:
    auth:
      auth_url: $keystone
      username: admin
      password: "$password"
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
EOF
chmod 600 "$state/clouds.yaml"
cat >"$state/stack.env" <<EOF
KEYSTONE_URL=$keystone
GLANCE_URL=$glance
TROVE_URL=$trove
ADMIN_PASSWORD=$password
PROJECT_ID=$project_id
EOF
chmod 600 "$state/stack.env"

wait_http "$glance/versions" 60 glance-api "$glance_pid"
wait_http "$trove/" 60 trove-api "$trove_pid"
started=1
trap - ERR
echo "ci/openstack/start.sh: keystone $keystone, glance $glance, trove $trove (state in $state)"

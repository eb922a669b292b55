#!/usr/bin/env bash
# Starts a private one-node Swift on 127.0.0.1 for strata's tests: Debian's
# swift-proxy (tempauth, SLO, TempURL and the S3 API through s3api),
# swift-account, swift-container and swift-object, and the memcached that
# tempauth keeps its tokens in. Rings with one replica, data in a plain
# directory, configuration private to STATE_DIR (not /etc/swift).
#
#   ci/swift/start.sh STATE_DIR
#
# Writes, in STATE_DIR:
#   swift.env   SWIFT_AUTH_URL SWIFT_USER SWIFT_KEY SWIFT_PROXY S3_ENDPOINT
#               S3_ACCESS_KEY S3_SECRET_KEY S3_REGION (shell syntax)
#   pids        one PID per line: what ci/swift/stop.sh kills
#   logs/       each server's log
#
# Nothing listens beyond 127.0.0.1; ports are free ones picked at start.
# With STRATA_SWIFT_WATCH_PID set, a watchdog stops the server when that
# process ends (a test binary killed by its timeout leaves nothing). Install the packages first with `ci/deps.sh swift`. Stop with
# `ci/swift/stop.sh STATE_DIR`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state=${1:?usage: $0 STATE_DIR}
for bin in /usr/bin/python3 /usr/bin/swift-proxy-server /usr/bin/swift-object-server \
	/usr/bin/swift-container-server /usr/bin/swift-account-server memcached curl; do
	command -v "$bin" >/dev/null || {
		echo "ci/swift/start.sh: $bin is missing; install it with: ci/deps.sh swift" >&2
		exit 1
	}
done
mkdir -p "$state"
state=$(cd "$state" && pwd)
etc=$state/etc
mkdir -p "$etc" "$state/logs" "$state/srv/d1" "$state/run"
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
		"$here/stop.sh" --keep "$state" || true
	fi
}
trap on_exit EXIT
trap 'echo "ci/swift/start.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
fail() {
	echo "ci/swift/start.sh: $*" >&2
	exit 1
}

# Free ports, picked in one Python start-up; the sockets are closed before
# the servers bind them.
read -r proxy_port account_port container_port object_port memcache_port < <(/usr/bin/python3 -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))
for s in ss: s.close()')
read -r key hash_prefix hash_suffix < <(/usr/bin/python3 -c '
import secrets; print(secrets.token_hex(16), secrets.token_hex(8), secrets.token_hex(8))')

cat >"$etc/swift.conf" <<CONF
[swift-hash]
swift_hash_path_prefix = $hash_prefix
swift_hash_path_suffix = $hash_suffix
[storage-policy:0]
name = Policy-0
default = yes
CONF

/usr/bin/python3 "$here/rings.py" "$etc" "$account_port" "$container_port" "$object_port" \
	>"$state/logs/rings.log" 2>&1 || fail "building the rings failed"

# The three storage servers differ only in name and port. workers = 0:
# one process each, which is also the PID stop.sh kills.
storage_conf() {
	local name=$1 port=$2
	cat <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
workers = 0
devices = $state/srv
mount_check = false
swift_dir = $etc
log_name = $name-server
[pipeline:main]
pipeline = $name-server
[app:$name-server]
use = egg:swift#$name
CONF
}
storage_conf account "$account_port" >"$etc/account-server.conf"
storage_conf container "$container_port" >"$etc/container-server.conf"
storage_conf object "$object_port" >"$etc/object-server.conf"

# The pipeline of notes/object-store.md: s3api before tempauth, cache
# before both, slo for S3 multipart uploads.
cat >"$etc/proxy-server.conf" <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $proxy_port
workers = 0
swift_dir = $etc
log_name = proxy-server
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl s3api tempauth copy slo dlo proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = $key .admin
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$memcache_port
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:tempurl]
use = egg:swift#tempurl
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
CONF

# memcached refuses to run as root without a user to switch to.
mc_user=memcache
id -u "$mc_user" >/dev/null 2>&1 || mc_user=nobody
memcached -l 127.0.0.1 -p "$memcache_port" -U 0 -m 64 -c 256 -u "$mc_user" \
	>"$state/logs/memcached.log" 2>&1 &
echo "$!" >>"$state/pids"

for name in account container object proxy; do
	/usr/bin/python3 "$here/launch.py" "$etc" "$etc/$name-server.conf" "$name-server" \
		>"$state/logs/$name.log" 2>&1 &
	echo "$!" >>"$state/pids"
done

# Every server must answer, not only the proxy: the proxy starts fast and
# answers 503 while a storage server is still importing.
wait_port() {
	local port=$1 name=$2 limit=60 i
	for ((i = 0; i < limit * 4; i++)); do
		if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/healthcheck"; then
			return 0
		fi
		sleep 0.25
	done
	fail "$name did not answer on 127.0.0.1:$port within ${limit}s"
}
wait_port "$account_port" account-server
wait_port "$container_port" container-server
wait_port "$object_port" object-server
wait_port "$proxy_port" proxy-server
while read -r pid; do
	kill -0 "$pid" 2>/dev/null || fail "a server (PID $pid) exited during start-up"
done <"$state/pids"

# A token proves tempauth and memcached work together (without memcached
# every token is refused while S3 requests still pass).
hdrs=$(curl -s -D - -o /dev/null --max-time 10 -H "X-Auth-User: test:tester" -H "X-Auth-Key: $key" \
	"http://127.0.0.1:$proxy_port/auth/v1.0") || fail "tempauth did not answer"
token=$(sed -n 's/^X-Auth-Token: *\([^[:space:]]*\).*/\1/Ip' <<<"$hdrs")
url=$(sed -n 's/^X-Storage-Url: *\([^[:space:]]*\).*/\1/Ip' <<<"$hdrs")
if [ -z "$token" ] || [ -z "$url" ]; then
	fail "tempauth gave no token: $hdrs"
fi
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "X-Auth-Token: $token" "$url")
case $code in 2??) ;; *) fail "the account answered HTTP $code with a fresh token" ;; esac

cat >"$state/swift.env" <<ENV
SWIFT_AUTH_URL=http://127.0.0.1:$proxy_port/auth/v1.0
SWIFT_USER=test:tester
SWIFT_KEY=$key
SWIFT_PROXY=127.0.0.1:$proxy_port
S3_ENDPOINT=http://127.0.0.1:$proxy_port
S3_ACCESS_KEY=test:tester
S3_SECRET_KEY=$key
S3_REGION=us-east-1
ENV
if [ -n "${STRATA_SWIFT_WATCH_PID:-}" ]; then
	(
		while kill -0 "$STRATA_SWIFT_WATCH_PID" 2>/dev/null; do sleep 2; done
		"$here/stop.sh" "$state"
	) </dev/null >/dev/null 2>&1 &
	echo "$!" >>"$state/pids"
fi
started=1
trap - ERR

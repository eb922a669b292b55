#!/usr/bin/env bash
# Starts a private compute tier on top of the keystone and glance that
# ci/openstack/start.sh runs in STATE_DIR: RabbitMQ, Placement, Nova (api,
# conductor, scheduler, compute with the libvirt driver, virt_type qemu),
# Cinder (api, scheduler, volume with a test-only NFS driver over a tmpfs) and
# Neutron (server, linuxbridge agent, ML2 flat), each with its own SQLite
# database, all state below STATE_DIR/compute. Registers them in that
# keystone's catalog and makes one shared flat network.
#
#   ci/openstack/compute-start.sh STATE_DIR
#
# Two places run things:
#   - the host's namespaces: RabbitMQ and the API services, on 127.0.0.1
#     (free ports picked at start), like start.sh's;
#   - one private network and mount namespace ("the compute namespace",
#     held by a sleep whose PID is the first in compute/pids): libvirtd,
#     nova-compute, cinder-volume and the linuxbridge agent. Their
#     bridges, taps and iptables rules, libvirt's directories and the NFS
#     mount points exist only there and vanish with it.
#   The namespace reaches the host's services at the same 127.0.0.1:PORT
#   through socat pairs over unix sockets in compute/fwd (keystone, glance,
#   placement, nova, neutron, cinder, rabbitmq).
#
# Guests and the host: a veth pair joins the two. Its host end
# (STRATA_COMPUTE_HOST_IF, address HOST_ADDRESS in GUEST_CIDR) is on the
# same layer-2 segment as the guests: its namespace end is the flat
# network's physical interface. A guest reaches a service that listens on
# HOST_ADDRESS (strata's controller agent endpoint: --agent-advertise
# HOST_ADDRESS:PORT) directly, with no routing or NAT on the host.
# There is no DHCP agent: the subnet has DHCP off and a guest takes its
# fixed address from the config drive's network_data.json.
#
# Writes, in STATE_DIR/compute:
#   compute.env  NOVA_URL CINDER_URL NEUTRON_URL PLACEMENT_URL NETWORK_ID
#                SUBNET_ID GUEST_CIDR HOST_ADDRESS HOST_IF NETNS_PID (shell syntax)
#   pids         one PID per line: what ci/openstack/compute-stop.sh kills
#   epmd.pid     Erlang's port mapper, which compute-stop.sh kills last
#   logs/        each service's log
#
# Every daemon's output goes to logs/: none keeps the caller's stdout open.
# Needs root (namespaces, veth, libvirt) and `ci/deps.sh nova`. Stop with
# ci/openstack/compute-stop.sh STATE_DIR (ci/openstack/stop.sh calls it).
set -euo pipefail

base=${1:?usage: $0 STATE_DIR (where ci/openstack/start.sh runs)}
[ "$(id -u)" -eq 0 ] || {
	echo "ci/openstack/compute-start.sh: needs root (network namespace, veth, libvirtd)" >&2
	exit 1
}
for bin in /usr/lib/rabbitmq/bin/rabbitmq-server epmd placement-manage nova-manage nova-api nova-conductor \
	nova-scheduler nova-compute libvirtd cinder-manage cinder-api cinder-scheduler cinder-volume neutron-server \
	neutron-linuxbridge-agent mariadbd mariadb-install-db genisoimage mount.nfs socat unshare nsenter ip iptables uwsgi sqlite3 curl; do
	command -v "$bin" >/dev/null || {
		echo "ci/openstack/compute-start.sh: $bin is missing; install it with: ci/deps.sh nova" >&2
		exit 1
	}
done
[ -f "$base/stack.env" ] || {
	echo "ci/openstack/compute-start.sh: no $base/stack.env: start ci/openstack/start.sh $base first" >&2
	exit 1
}
base=$(cd "$base" && pwd)
# shellcheck source=/dev/null
. "$base/stack.env"
state=$base/compute
[ ! -s "$state/pids" ] || {
	echo "ci/openstack/compute-start.sh: $state/pids is not empty: the compute tier runs already (stop it with ci/openstack/compute-stop.sh $base)" >&2
	exit 1
}
# What an earlier, stopped compute tier left (databases, logs) goes.
rm -rf "$state"
mkdir -p "$state"/{logs,fwd,rabbit/home,rabbit/mnesia,placement,nova/instances,nova/lock,nova/mnt,cinder/lock,cinder/mnt,neutron/lock}
mkdir -p "$state"/libvirt/{etc,lib,run,log,cache}
: >"$state/pids"
logs=$state/logs
t0=$(date +%s)

set -E
started=0
# shellcheck disable=SC2317 # called by the trap
on_exit() {
	local rc=$?
	if [ "$rc" -ne 0 ] && [ "$started" = 0 ]; then
		for f in "$logs"/*.log; do
			if [ -s "$f" ]; then
				echo "--- last lines of $f" >&2
				tail -n 15 "$f" >&2
			fi
		done
		"$(dirname "$0")/compute-stop.sh" "$base" || true
	fi
}
trap on_exit EXIT
trap 'echo "ci/openstack/compute-start.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
fail() {
	echo "ci/openstack/compute-start.sh: $*" >&2
	exit 1
}
pid() { echo "$1" >>"$state/pids"; }

free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
port_of() { local u=${1#http://127.0.0.1:}; echo "${u%%/*}"; }
ks_port=$(port_of "$KEYSTONE_URL")
glance_port=$(port_of "$GLANCE_URL")
amqp_port=$(free_port)
dist_port=$(free_port)
epmd_port=$(free_port)
placement_port=$(free_port)
nova_port=$(free_port)
cinder_port=$(free_port)
neutron_port=$(free_port)
placement=http://127.0.0.1:$placement_port
nova=http://127.0.0.1:$nova_port/v2.1
cinder=http://127.0.0.1:$cinder_port
neutron=http://127.0.0.1:$neutron_port
keystone=$KEYSTONE_URL
password=$ADMIN_PASSWORD
rabbit_pass=$(/usr/bin/python3 -c 'import secrets; print(secrets.token_hex(12))')
transport=rabbit://strata:$rabbit_pass@127.0.0.1:$amqp_port/
host=strata-compute
mysock=$state/mysql/mysqld.sock
neutron_db="mysql+pymysql://root@localhost/neutron?unix_socket=$mysock&charset=utf8"

# The guests' subnet: a /24 of 10.213.0.0/16 that no address or route of
# the host's uses, and a link name of at most 15 characters.
tag=$(printf '%s' "$base" | md5sum | cut -c1-6)
subnet_n=
for ((i = 0; i < 256; i++)); do
	n=$(((16#${tag:0:2} + i) % 250 + 1))
	if ! ip -4 -o addr show | grep -q " 10\.213\.$n\." && ! ip -4 route show | grep -q "^10\.213\.$n\."; then
		subnet_n=$n
		break
	fi
done
[ -n "$subnet_n" ] || fail "no free /24 in 10.213.0.0/16 for the guests' network"
guest_cidr=10.213.$subnet_n.0/24
host_addr=10.213.$subnet_n.1
host_if=stc$tag
ns_if=physnet0
! ip link show "$host_if" >/dev/null 2>&1 || fail "link $host_if exists already (another compute tier on $base?)"

# Waits until URL answers HTTP (any status), or fails after $2 seconds.
wait_http() {
	local url=$1 limit=$2 name=$3 p=$4 i
	for ((i = 0; i < limit * 4; i++)); do
		if curl -s -o /dev/null --max-time 2 "$url"; then
			return 0
		fi
		kill -0 "$p" 2>/dev/null || fail "$name exited during start-up"
		sleep 0.25
	done
	fail "$name did not answer on $url within ${limit}s"
}

# ---- The compute namespace ------------------------------------------------------
# unshare execs sleep: its PID is the namespaces' holder. Mount propagation
# is private, so nothing mounted inside shows outside.
unshare --net --mount --propagation private -- sleep infinity </dev/null >/dev/null 2>&1 &
ns_pid=$!
pid "$ns_pid"
for _ in $(seq 1 40); do
	[ "$(readlink "/proc/$ns_pid/ns/net")" != "$(readlink /proc/self/ns/net)" ] && break
	sleep 0.05
done
[ "$(readlink "/proc/$ns_pid/ns/net")" != "$(readlink /proc/self/ns/net)" ] || fail "the compute namespace did not appear"
in_ns() { nsenter -t "$ns_pid" --net --mount -- "$@"; }

ip link add "$host_if" type veth peer name "$ns_if" netns "$ns_pid"
# Named at once for compute-stop.sh: a start that fails after this line
# has no compute.env, and the host's end then waited for the kernel's
# slow clean-up of the namespace (a quarter of an hour once).
echo "$host_if" >"$state/host_if"
ip addr add "$host_addr/24" dev "$host_if"
ip link set "$host_if" up

# libvirt's directories are private copies; libvirtd probes every
# qemu-system-* at start (about 30 s more): all but x86_64 are hidden.
cp -a /etc/libvirt/. "$state/libvirt/etc/"
cat >"$state/libvirt/etc/libvirtd.conf" <<EOF
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "2:file:$logs/libvirtd.log"
EOF
cat >"$state/libvirt/etc/qemu.conf" <<'EOF'
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
EOF
rm -f "$state/libvirt/etc/qemu/networks/autostart/"*.xml
mkdir -p /run/libvirt
# The tmpfs stands for the NFS export: cinder-volume and nova-compute find
# it mounted at their hashed mount points and so never call mount.nfs. Nova
# unmounts its point when the last volume leaves the host: the bind is
# stacked so that many detaches leave one in place.
share=127.0.0.1:/strata-volumes
share_hash=$(printf '%s' "$share" | md5sum | cut -c1-32)
echo "$share" >"$state/cinder/nfs_shares"
mkdir -p "$state/cinder/mnt/$share_hash" "$state/nova/mnt/$share_hash"
# shellcheck disable=SC2016 # expanded by the inner sh
in_ns /bin/sh -eu -c '
	state=$1 ns_if=$2 share_hash=$3
	ip link set lo up
	ip link set "$ns_if" up
	# A sysfs of this namespace: the host'"'"'s lists the host'"'"'s links, and the
	# agent finds taps in /sys/class/net.
	mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
	mount --bind "$state/libvirt/etc" /etc/libvirt
	mount --bind "$state/libvirt/lib" /var/lib/libvirt
	mount --bind "$state/libvirt/run" /run/libvirt
	mount --bind "$state/libvirt/log" /var/log/libvirt
	mount --bind "$state/libvirt/cache" /var/cache/libvirt
	for q in /usr/bin/qemu-system-*; do
		[ "$q" = /usr/bin/qemu-system-x86_64 ] || mount --bind /dev/null "$q"
	done
	mount -t tmpfs -o size=8g,mode=0755 strata-volumes "$state/cinder/mnt/$share_hash"
	for _ in $(seq 1 32); do
		mount --bind "$state/cinder/mnt/$share_hash" "$state/nova/mnt/$share_hash"
	done
' sh "$state" "$ns_if" "$share_hash"

# Its pid file in the state too: the default, /run/libvirtd.pid, is the
# host's, and a second tier (or the host's own libvirtd) holds it.
in_ns libvirtd -f "$state/libvirt/etc/libvirtd.conf" -p "$state/libvirt/run/libvirtd.pid" >>"$logs/libvirtd-stdout.log" 2>&1 &
libvirtd_pid=$!
pid "$libvirtd_pid"

# ---- RabbitMQ ---------------------------------------------------------------------
# Run as root without the packaged wrapper (it su's to rabbitmq); epmd is
# started here so that erl leaves no epmd -daemon behind.
cat >"$state/rabbit/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$amqp_port
loopback_users = none
default_user = strata
default_pass = $rabbit_pass
log.file.level = warning
EOF
echo '[].' >"$state/rabbit/enabled_plugins"
rabbit_env() {
	env HOME="$state/rabbit/home" RABBITMQ_MNESIA_BASE="$state/rabbit/mnesia" RABBITMQ_LOG_BASE="$logs" \
		RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$amqp_port" \
		RABBITMQ_DIST_PORT="$dist_port" ERL_EPMD_PORT="$epmd_port" ERL_EPMD_ADDRESS=127.0.0.1 \
		RABBITMQ_CONFIG_FILE="$state/rabbit/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$state/rabbit/enabled_plugins" \
		RABBITMQ_PID_FILE="$state/rabbit/rabbit.pid" RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}' \
		"$@"
}
# Its PID is apart: compute-stop.sh stops it after RabbitMQ, which would
# otherwise start an epmd -daemon of its own while it shuts down.
ERL_EPMD_ADDRESS=127.0.0.1 epmd -port "$epmd_port" >>"$logs/epmd.log" 2>&1 &
echo $! >"$state/epmd.pid"
rabbit_env /usr/lib/rabbitmq/bin/rabbitmq-server >>"$logs/rabbitmq-stdout.log" 2>&1 &
rabbit_pid=$!
pid "$rabbit_pid"

# ---- The namespace's way to the host's services ---------------------------------------
# The same 127.0.0.1:PORT on both sides: socat listens in the namespace and
# hands each connection over a unix socket to a socat on the host. Nova's
# API too: cinder-volume sends it the volume-extended event of an online
# extend.
for p in "$ks_port" "$glance_port" "$placement_port" "$nova_port" "$neutron_port" "$cinder_port" "$amqp_port"; do
	socat "UNIX-LISTEN:$state/fwd/$p.sock,fork,unlink-early,mode=600" "TCP:127.0.0.1:$p" </dev/null >>"$logs/forward.log" 2>&1 &
	pid $!
	in_ns socat "TCP-LISTEN:$p,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$state/fwd/$p.sock" </dev/null >>"$logs/forward.log" 2>&1 &
	pid $!
done

# ---- Configuration ------------------------------------------------------------------
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
[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
EOF
}
# creds SECTION: the admin's password credentials, for calls one service
# makes to another.
creds() {
	cat <<EOF
[$1]
auth_url = $keystone
auth_type = password
username = admin
password = $password
project_name = admin
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
EOF
}

cat >"$state/placement/placement.conf" <<EOF
[DEFAULT]
log_file = $logs/placement-app.log
[api]
auth_strategy = keystone
[placement_database]
connection = sqlite:///$state/placement/placement.db
$(authtoken)
EOF

# One configuration for every Nova service; nova-compute reaches the same
# URLs through the forwarders.
cat >"$state/nova/nova-compute.conf" <<EOF
[DEFAULT]
host = $host
my_ip = 127.0.0.1
state_path = $state/nova
instances_path = $state/nova/instances
transport_url = $transport
enabled_apis = osapi_compute
osapi_compute_listen = 127.0.0.1
osapi_compute_listen_port = $nova_port
osapi_compute_workers = 1
compute_driver = libvirt.LibvirtDriver
# Guests with no OS answer no ACPI shutdown; ports are bound by the agent
# but neutron-server sends Nova no events (notify_nova_* off).
shutdown_timeout = 0
vif_plugging_timeout = 0
vif_plugging_is_fatal = false
heal_instance_info_cache_interval = -1
# One host: a flavor resize stays on it.
allow_resize_to_same_host = true
rootwrap_config = /etc/nova/rootwrap.conf
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = /etc/nova/api-paste.ini
[oslo_concurrency]
lock_path = $state/nova/lock
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = -1
[libvirt]
virt_type = qemu
cpu_mode = none
connection_uri = qemu:///system
nfs_mount_point_base = $state/nova/mnt
[vnc]
enabled = false
[spice]
enabled = false
[os_vif_linux_bridge]
use_ipv6 = false
$(authtoken)
$(creds placement)
$(creds neutron)
$(creds cinder)
os_region_name = RegionOne
$(creds service_user)
send_service_user_token = true
EOF
# nova-compute gets no database (it logs "No DB access allowed" for each
# one it finds configured); the other services do.
cp "$state/nova/nova-compute.conf" "$state/nova/nova.conf"
cat >>"$state/nova/nova.conf" <<EOF
[api_database]
connection = sqlite:///$state/nova/nova_api.db
[database]
connection = sqlite:///$state/nova/nova.db
EOF

cat >"$state/cinder/cinder.conf" <<EOF
[DEFAULT]
host = $host
my_ip = 127.0.0.1
state_path = $state/cinder
transport_url = $transport
auth_strategy = keystone
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = $cinder_port
osapi_volume_workers = 1
# cinder-volume reports its pool to cinder-scheduler at start (lost if the
# scheduler is not listening yet) and then every periodic_interval: 10 s,
# not 60, so a pool the scheduler missed is known before the tier is ready.
periodic_interval = 10
api_paste_config = /etc/cinder/api-paste.ini
rootwrap_config = /etc/cinder/rootwrap.conf
enabled_backends = nfs
[database]
connection = sqlite:///$state/cinder/cinder.db?timeout=30
[oslo_concurrency]
lock_path = $state/cinder/lock
[nfs]
volume_driver = strata_test_nfs.OnlineExtendNfsDriver
volume_backend_name = nfs
nfs_shares_config = $state/cinder/nfs_shares
nfs_mount_point_base = $state/cinder/mnt
nfs_sparsed_volumes = true
nfs_snapshot_support = false
nas_secure_file_operations = false
nas_secure_file_permissions = false
$(authtoken)
$(creds nova)
$(creds service_user)
send_service_user_token = true
EOF

cat >"$state/neutron/neutron.conf" <<EOF
[DEFAULT]
host = $host
state_path = $state/neutron
transport_url = $transport
auth_strategy = keystone
core_plugin = ml2
service_plugins =
bind_host = 127.0.0.1
bind_port = $neutron_port
# The API in the parent process, one RPC worker (Neutron's least) that
# also takes the agents' state reports: two writers to SQLite.
api_workers = 0
rpc_workers = 1
rpc_state_report_workers = 0
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
[database]
connection = $neutron_db
[oslo_concurrency]
lock_path = $state/neutron/lock
[agent]
# Everything runs as root already: no sudo, no rootwrap.
root_helper =
[experimental]
# Zed marks the linuxbridge mechanism driver and agent experimental.
linuxbridge = true
$(authtoken)
EOF
cat >"$state/neutron/ml2.conf" <<EOF
[ml2]
type_drivers = flat
tenant_network_types =
mechanism_drivers = linuxbridge
extension_drivers = port_security
[ml2_type_flat]
# physnet2 is wired to no interface: a second network Neutron holds, with
# ports that can be made but not bound (the Nova driver's fixture recorder).
flat_networks = physnet1,physnet2
[securitygroup]
enable_security_group = true
firewall_driver = iptables
[linux_bridge]
physical_interface_mappings = physnet1:$ns_if
[vxlan]
enable_vxlan = false
EOF

# ---- MariaDB, for Neutron -------------------------------------------------------------
# Neutron's API and RPC worker are two processes writing to one database:
# on SQLite a write after a read in the same transaction fails at once
# with "database is locked" when the other wrote in between (no busy
# timeout helps). A private MariaDB on a unix socket, no TCP.
mkdir -p "$state/mysql/data"
mariadb-install-db --no-defaults --user=root --datadir="$state/mysql/data" --auth-root-authentication-method=normal \
	--skip-test-db >>"$logs/mariadb-install.log" 2>&1
mariadbd --no-defaults --user=root --datadir="$state/mysql/data" --socket="$mysock" --skip-networking \
	--pid-file="$state/mysql/mariadb.pid" --log-error="$logs/mariadb.log" --innodb-buffer-pool-size=32M \
	--performance-schema=off </dev/null >>"$logs/mariadb.log" 2>&1 &
mariadb_pid=$!
pid "$mariadb_pid"

# ---- Databases, in parallel -------------------------------------------------------------
wal() { local db; for db in "$@"; do sqlite3 "$db" 'PRAGMA journal_mode=WAL;' >/dev/null; done; }
nm() { nova-manage --config-file "$state/nova/nova.conf" "$@"; }
(
	placement-manage --config-file "$state/placement/placement.conf" db sync
	wal "$state/placement/placement.db"
) >>"$logs/placement-manage.log" 2>&1 &
db_placement=$!
(
	nm api_db sync
	nm cell_v2 map_cell0 --database_connection "sqlite:///$state/nova/nova_cell0.db"
	nm cell_v2 create_cell --name cell1 --verbose
	nm db sync
	wal "$state/nova/nova_api.db" "$state/nova/nova_cell0.db" "$state/nova/nova.db"
) >>"$logs/nova-manage.log" 2>&1 &
db_nova=$!
(
	cinder-manage --config-file "$state/cinder/cinder.conf" db sync
	wal "$state/cinder/cinder.db"
) >>"$logs/cinder-manage.log" 2>&1 &
db_cinder=$!
# The schema is made from the models (as Neutron's own tests do) and
# stamped: faster than its few hundred migrations.
(
	for _ in $(seq 1 240); do
		[ -S "$mysock" ] && break
		sleep 0.25
	done
	mariadb --no-defaults --socket="$mysock" -u root -e 'CREATE DATABASE neutron CHARACTER SET utf8'
	/usr/bin/python3 - "$neutron_db" <<'EOF'
import sys
import sqlalchemy
from neutron.db.migration.models import head
head.get_metadata().create_all(sqlalchemy.create_engine(sys.argv[1]))
EOF
	neutron-db-manage --config-file "$state/neutron/neutron.conf" --config-file "$state/neutron/ml2.conf" stamp heads
) >>"$logs/neutron-manage.log" 2>&1 &
db_neutron=$!

# ---- Catalog (while the databases are made) ------------------------------------------
token=$(curl -sf -D - -o /dev/null -H 'Content-Type: application/json' -d @- "$keystone/auth/tokens" <<EOF | awk 'tolower($1)=="x-subject-token:"{print $2}' | tr -d '\r'
{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"$password"}}},
 "scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}
EOF
)
[ -n "$token" ] || fail "could not get a token from keystone at $keystone"
api() { curl -sf -H "X-Auth-Token: $token" -H 'Content-Type: application/json' "$@"; }
json_id() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[sys.argv[1]]["id"])' "$1"; }
# A service of the same type left by an earlier compute tier on this
# keystone is replaced (deleting a service deletes its endpoints).
add_service() { # TYPE NAME URL
	local sid iface old
	for old in $(api "$keystone/services?type=$1" | /usr/bin/python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)["services"]))'); do
		api -X DELETE "$keystone/services/$old" >/dev/null
	done
	sid=$(api -d "{\"service\":{\"type\":\"$1\",\"name\":\"$2\",\"enabled\":true}}" "$keystone/services" | json_id service)
	for iface in public internal admin; do
		api -d "{\"endpoint\":{\"service_id\":\"$sid\",\"interface\":\"$iface\",\"region_id\":\"RegionOne\",\"url\":\"$3\",\"enabled\":true}}" \
			"$keystone/endpoints" >/dev/null
	done
}
add_service placement placement "$placement"
add_service compute nova "$nova"
add_service volumev3 cinderv3 "$cinder/v3/%(project_id)s"
add_service network neutron "$neutron"
# Cinder asks for the service role on the token Nova sends with the user's.
user_id=$(api "$keystone/users?name=admin" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["users"][0]["id"])')
role_id=$(api "$keystone/roles?name=service" | /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin)["roles"]; print(r[0]["id"] if r else "")')
if [ -z "$role_id" ]; then
	role_id=$(api -d '{"role":{"name":"service"}}' "$keystone/roles" | json_id role)
fi
api -X PUT "$keystone/projects/$PROJECT_ID/users/$user_id/roles/$role_id" >/dev/null

# nova-compute and the agent use no database: they start now (their
# imports take as long as the databases) and wait for the bus themselves.
for _ in $(seq 1 240); do
	[ -S "$state/libvirt/run/libvirt-sock" ] && break
	kill -0 "$libvirtd_pid" 2>/dev/null || fail "libvirtd exited during start-up"
	sleep 0.25
done
[ -S "$state/libvirt/run/libvirt-sock" ] || fail "libvirtd made no socket within 60 s"
in_ns nova-compute --config-file "$state/nova/nova-compute.conf" --log-file "$logs/nova-compute.log" >>"$logs/nova-stdout.log" 2>&1 &
compute_pid=$!
pid "$compute_pid"
qcf=(--config-file "$state/neutron/neutron.conf" --config-file "$state/neutron/ml2.conf")
in_ns neutron-linuxbridge-agent "${qcf[@]}" --log-file "$logs/neutron-linuxbridge-agent.log" >>"$logs/neutron-stdout.log" 2>&1 &
pid $!

wait "$db_placement" || fail "placement's database sync failed (logs/placement-manage.log)"
wait "$db_nova" || fail "nova's database sync failed (logs/nova-manage.log)"
wait "$db_cinder" || fail "cinder's database sync failed (logs/cinder-manage.log)"
wait "$db_neutron" || fail "neutron's database set-up failed (logs/neutron-manage.log)"
t_db=$(date +%s)

# ---- Services ------------------------------------------------------------------------------
OS_PLACEMENT_CONFIG_DIR=$state/placement \
	uwsgi --plugin python3 --http-socket "127.0.0.1:$placement_port" --wsgi-file /usr/bin/placement-api \
	--master --processes 1 --threads 1 --die-on-term --no-orphans --lazy-apps --buffer-size 65535 \
	--add-header "Connection: close" --logto "$logs/placement.log" </dev/null >>"$logs/placement-stdout.log" 2>&1 &
placement_pid=$!
pid "$placement_pid"
ncf=(--config-file "$state/nova/nova.conf")
nova-api "${ncf[@]}" --log-file "$logs/nova-api.log" >>"$logs/nova-stdout.log" 2>&1 &
nova_api_pid=$!
pid "$nova_api_pid"
nova-conductor "${ncf[@]}" --log-file "$logs/nova-conductor.log" >>"$logs/nova-stdout.log" 2>&1 &
pid $!
nova-scheduler "${ncf[@]}" --log-file "$logs/nova-scheduler.log" >>"$logs/nova-stdout.log" 2>&1 &
pid $!
ccf=(--config-file "$state/cinder/cinder.conf")
cinder-api "${ccf[@]}" --log-file "$logs/cinder-api.log" >>"$logs/cinder-stdout.log" 2>&1 &
cinder_api_pid=$!
pid "$cinder_api_pid"
cinder-scheduler "${ccf[@]}" --log-file "$logs/cinder-scheduler.log" >>"$logs/cinder-stdout.log" 2>&1 &
pid $!
# TEST ONLY: the NFS driver with online extend of attached raw volumes
# (ci/openstack/cinder/strata_test_nfs.py; the stock driver refuses it).
in_ns env PYTHONPATH="$(cd "$(dirname "$0")" && pwd)/cinder" cinder-volume "${ccf[@]}" --log-file "$logs/cinder-volume.log" >>"$logs/cinder-stdout.log" 2>&1 &
pid $!
neutron-server "${qcf[@]}" --log-file "$logs/neutron-server.log" >>"$logs/neutron-stdout.log" 2>&1 &
neutron_pid=$!
pid "$neutron_pid"


wait_http "$placement/" 60 placement "$placement_pid"
wait_http "$neutron/" 60 neutron-server "$neutron_pid"
wait_http "$cinder/" 60 cinder-api "$cinder_api_pid"
wait_http "$nova/" 60 nova-api "$nova_api_pid"

# ---- The flat network ------------------------------------------------------------------
network_id=$(api -d '{"network":{"name":"strata-flat","shared":true,"provider:network_type":"flat","provider:physical_network":"physnet1"}}' \
	"$neutron/v2.0/networks" | json_id network)
subnet_id=$(api -d "{\"subnet\":{\"name\":\"strata-flat\",\"network_id\":\"$network_id\",\"ip_version\":4,\"cidr\":\"$guest_cidr\",\"gateway_ip\":\"$host_addr\",\"enable_dhcp\":false,\"allocation_pools\":[{\"start\":\"10.213.$subnet_n.10\",\"end\":\"10.213.$subnet_n.250\"}]}}" \
	"$neutron/v2.0/subnets" | json_id subnet)

# ---- Ready: the compute host mapped, the agent and cinder-volume up, its pool known ------
# waitfor WHAT SECONDS COMMAND...: until COMMAND succeeds.
waitfor() {
	local what=$1 limit=$2 i
	shift 2
	for ((i = 0; i < limit; i++)); do
		if "$@"; then return 0; fi
		kill -0 "$compute_pid" 2>/dev/null || fail "nova-compute exited during start-up"
		sleep 1
	done
	fail "$what not within ${limit}s"
}
up() { # URL JQ-LIKE-PYTHON-EXPR: true when the expression holds for the JSON answer
	api "$1" | /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if ($2) else 1)" 2>/dev/null
}
waitfor "nova-compute registered" 90 up "$nova/os-services?binary=nova-compute" \
	'any(s["state"]=="up" for s in d["services"])'
mapped() {
	if ! nm cell_v2 discover_hosts --verbose >>"$logs/nova-manage.log" 2>&1; then
		return 1
	fi
	nm cell_v2 list_hosts 2>/dev/null | grep -q " $host "
}
waitfor "compute host mapped" 30 mapped
waitfor "the compute node's inventory in placement" 60 up "$placement/resource_providers" 'len(d["resource_providers"])>0'
waitfor "the linuxbridge agent alive" 60 up "$neutron/v2.0/agents?binary=neutron-linuxbridge-agent" \
	'any(a["alive"] for a in d["agents"])'
waitfor "cinder-volume up" 60 up "$cinder/v3/$PROJECT_ID/os-services?binary=cinder-volume" \
	'any(s["state"]=="up" for s in d["services"])'
# Up is not enough: until cinder-scheduler has the backend's pool, every
# volume create fails with "No weighed backend" (seen under load).
waitfor "cinder-scheduler knows the NFS pool" 60 up "$cinder/v3/$PROJECT_ID/scheduler-stats/get_pools" \
	'len(d["pools"])>0'

cat >"$state/compute.env" <<EOF
NOVA_URL=$nova
CINDER_URL=$cinder/v3/$PROJECT_ID
NEUTRON_URL=$neutron
PLACEMENT_URL=$placement
NETWORK_ID=$network_id
SUBNET_ID=$subnet_id
GUEST_CIDR=$guest_cidr
HOST_ADDRESS=$host_addr
HOST_IF=$host_if
NETNS_PID=$ns_pid
EOF
chmod 600 "$state/compute.env"
started=1
trap - ERR
t1=$(date +%s)
echo "ci/openstack/compute-start.sh: nova $nova, cinder $cinder, neutron $neutron, network $network_id ($guest_cidr, host $host_addr on $host_if); ready in $((t1 - t0)) s (databases $((t_db - t0)) s)"

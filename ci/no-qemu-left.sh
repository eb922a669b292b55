#!/bin/bash
# Fails (exit 1) when a qemu process whose command line names a path under
# DIR still runs — a VM a test left behind — and kills it, so that nothing
# outlives `make test`. Usage: ci/no-qemu-left.sh DIR
set -u
dir=${1:?usage: ci/no-qemu-left.sh DIR}
if [ ! -d "$dir" ]; then
	echo "no-qemu-left: no $dir: no test ran there"
	exit 0
fi
dir=$(cd "$dir" && pwd) || exit 1
left=0
for p in /proc/[0-9]*; do
	cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue # 2> first: a process that ends mid-scan makes the < fail
	case $cmd in
	*qemu-system*"$dir/"*)
		pid=${p#/proc/}
		echo "no-qemu-left: qemu $pid survived the tests: ${cmd:0:300}" >&2
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
		left=$((left + 1))
		;;
	esac
done
if [ "$left" -gt 0 ]; then
	echo "no-qemu-left: $left qemu process(es) under $dir outlived the tests (killed now)" >&2
	exit 1
fi
echo "no-qemu-left: no qemu left under $dir"

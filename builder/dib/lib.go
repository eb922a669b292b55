package dib

import (
	"os"
	"path/filepath"
	"sort"
)

// Library is strata's own implementation of the documented parts of DIB's
// shell library, for hosts without diskimage-builder: file name → bash
// source. Elements source these as "$_LIB/<name>". Written for strata from
// DIB's documented behaviour (developing-elements guide), not copied.
var Library = map[string]string{
	"die": `# die MESSAGE...: print the message and leave with the last command's
# status (1 if that was 0). Exported, as DIB exports it, so hooks inherit it.
die() {
	local status=$?
	[ "$status" -ne 0 ] || status=1
	set +o xtrace
	echo "$@" >&2
	exit "$status"
}
export -f die
`,
	"common-defaults": `# Defaults of DIB's global variables (strata sets them all before hooks run;
# these only fill in what a caller unset).
if [ -z "${ARCH:-}" ]; then
	ARCH=$(dpkg --print-architecture 2>/dev/null || uname -m)
	case $ARCH in x86_64) ARCH=amd64 ;; aarch64) ARCH=arm64 ;; esac
fi
export ARCH
export DIB_CHECKSUM=${DIB_CHECKSUM:-0}
export DIB_NO_TMPFS=${DIB_NO_TMPFS:-0}
export DIB_MIN_TMPFS=${DIB_MIN_TMPFS:-2}
export DIB_OFFLINE=${DIB_OFFLINE:-}
`,
	"img-defaults": `source "$_LIB/common-defaults"
export FS_TYPE=${FS_TYPE:-ext4}
export IMAGE_TYPE=${IMAGE_TYPE:-qcow2}
export IMAGE_NAME=${IMAGE_NAME:-image}
`,
	"common-functions": `# tmpfs_check: strata never builds in a tmpfs (the tree lives in the image
# cache so it can be snapshotted), so the answer is always "no".
tmpfs_check() {
	return 1
}

# unmount_dir DIR: unmount everything mounted below DIR, deepest first.
unmount_dir() {
	local dir m
	dir=$(readlink -e "$1") || return 0
	awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do umount -fl "$m" || true; done
}

# get_image_element_array prints "[element]=path ..." for
# eval declare -A a=($(get_image_element_array)); strata exports it to every
# hook, this definition only covers a caller that unset it.
if ! declare -F get_image_element_array >/dev/null; then
	get_image_element_array() {
		printf '%s\n' "${IMAGE_ELEMENT_YAML:-}" | awk -F': ' 'NF == 2 { printf "[%s]=%s ", $1, $2 }'
		echo
	}
	export -f get_image_element_array
fi
`,
	"img-functions": `source "$_LIB/common-functions"

# run_in_target COMMAND...: run a shell command inside the image root.
run_in_target() {
	local cmd="$*"
	HOME=/root chroot "$TMP_MOUNT_PATH" env -u TMPDIR \
		PATH="$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" sh -c "$cmd"
}

# select_boot_kernel_initrd ROOT: set KERNEL and RAMDISK to the file names
# (in ROOT/boot) of the newest kernel and its initramfs, and BOOTDIR.
select_boot_kernel_initrd() {
	local root=$1 v
	BOOTDIR=$root/boot
	if [ -n "${DIB_BAREMETAL_KERNEL_PATTERN:-}" ] && [ -n "${DIB_BAREMETAL_INITRD_PATTERN:-}" ]; then
		KERNEL=$(basename "$(eval ls -1rv "$BOOTDIR/$DIB_BAREMETAL_KERNEL_PATTERN" | head -1)")
		RAMDISK=$(basename "$(eval ls -1rv "$BOOTDIR/$DIB_BAREMETAL_INITRD_PATTERN" | head -1)")
		return 0
	fi
	KERNEL=$(cd "$BOOTDIR" && ls -1v vmlinu[xz]-* 2>/dev/null | tail -n1)
	[ -n "$KERNEL" ] || { echo "select_boot_kernel_initrd: no kernel in $BOOTDIR" >&2; return 1; }
	v=${KERNEL#vmlinu?-}
	RAMDISK=
	for f in "initrd.img-$v" "initramfs-$v.img" "initrd-$v"; do
		[ -e "$BOOTDIR/$f" ] && RAMDISK=$f && break
	done
	[ -n "$RAMDISK" ] || { echo "select_boot_kernel_initrd: no initramfs for $KERNEL in $BOOTDIR" >&2; return 1; }
}
`,
}

// WriteLibrary writes Library into dir.
func WriteLibrary(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var names []string
	for n := range Library {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/bash\n# strata's implementation of DIB's $_LIB/"+n+"\n"+Library[n]), 0o755); err != nil {
			return err
		}
	}
	return nil
}

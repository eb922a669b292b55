package servertest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// RootEnv names a Debian root (made by ci/debian-root.sh, e.g. trixie's)
// whose server binaries the tests run instead of the host's: the same
// tests then check the manager and the validation rules against another
// release's servers (make verify-rules-trixie). Unset, the host's servers
// run.
const RootEnv = "STRATA_SERVER_ROOT"

// ServerRoot returns the root RootEnv names, "" when unset, or an error
// when it is set but is not a complete root.
func ServerRoot() (string, error) {
	root := os.Getenv(RootEnv)
	if root == "" {
		return "", nil
	}
	if !filepath.IsAbs(root) {
		return "", fmt.Errorf("%s=%s: not an absolute path", RootEnv, root)
	}
	if _, err := os.Stat(filepath.Join(root, ".strata-complete")); err != nil {
		return "", fmt.Errorf("%s=%s: not a root made by ci/debian-root.sh (no .strata-complete): %w", RootEnv, root, err)
	}
	if os.Getuid() != 0 {
		return "", fmt.Errorf("%s=%s: running servers in a root needs root (chroot, mount)", RootEnv, root)
	}
	return root, nil
}

// InRoot writes, in dir, an executable named after binary that runs root's
// binary (an absolute path inside root) with its arguments: in a private
// mount namespace, with the host's temporary directory (where every test
// directory and socket lives), /dev and /proc bound at the same paths
// inside root, then chroot. Every step execs, so the wrapper's process is
// the server's: a test starts and stops it by PID as it does the host's.
// Paths a test passes are the same inside and out; the server reads its
// own release's libraries, share files and accounts.
func InRoot(root, dir, binary string) (string, error) {
	if !filepath.IsAbs(binary) {
		return "", fmt.Errorf("in root %s: %s is not an absolute path", root, binary)
	}
	if _, err := os.Stat(filepath.Join(root, binary)); err != nil {
		return "", fmt.Errorf("in root %s: %w", root, err)
	}
	tmp, err := filepath.EvalSymlinks(os.TempDir())
	if err != nil {
		return "", err
	}
	for _, p := range []string{root, tmp, binary} {
		if strings.ContainsAny(p, "'\n") {
			return "", errors.New("in root: a path with a quote or newline: " + p)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, tmp), 0o1777); err != nil {
		return "", err
	}
	script := fmt.Sprintf(`#!/bin/sh
# Runs %[3]s of %[1]s (servertest.InRoot).
exec unshare --mount --propagation private /bin/sh -c '
mount --bind %[2]s %[1]s%[2]s && mount --rbind /dev %[1]s/dev && mount -t proc proc %[1]s/proc &&
exec chroot %[1]s %[3]s "$@"' %[3]s "$@"
`, root, tmp, binary)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, filepath.Base(binary))
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		return "", err
	}
	return path, nil
}

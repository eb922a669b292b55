package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// DepsHint names the command that installs the host tools this package
// runs.
const DepsHint = "ci/deps.sh build boot"

// Tools lists the host programs Assemble, Convert and their tests run.
var Tools = []string{
	"mkfs.ext4", "debugfs", "mkfs.vfat", "mmd", "mcopy", "grub-mkimage", "qemu-img",
}

// CheckTools returns an error naming every program of names missing from
// PATH and the command that installs them.
func CheckTools(names ...string) error {
	var missing []string
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("host tools missing: %s (install them with `%s`)", strings.Join(missing, ", "), DepsHint)
	}
	return nil
}

// toolEnv is the environment every tool runs with: the caller's, with a
// fixed locale and time zone (FAT stores local time) and any extra
// variables.
func toolEnv(extra ...string) []string {
	env := make([]string, 0, len(os.Environ())+len(extra)+2)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LC_ALL=") || strings.HasPrefix(kv, "TZ=") ||
			strings.HasPrefix(kv, "SOURCE_DATE_EPOCH=") || strings.HasPrefix(kv, "E2FSPROGS_FAKE_TIME=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "LC_ALL=C", "TZ=UTC")
	return append(env, extra...)
}

// run runs a host tool and returns its standard output. A failure carries
// the command line and the tail of its standard error.
func run(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	out, _, err := run2(ctx, env, name, args...)
	return out, err
}

// runStderr is run for tools that report failures on standard error but
// still exit 0 (debugfs): it returns standard error.
func runStderr(ctx context.Context, env []string, name string, args ...string) (string, error) {
	_, errOut, err := run2(ctx, env, name, args...)
	return string(errOut), err
}

func run2(ctx context.Context, env []string, name string, args ...string) ([]byte, []byte, error) {
	if _, err := exec.LookPath(name); err != nil {
		return nil, nil, fmt.Errorf("%s not found on PATH (install the host tools with `%s`)", name, DepsHint)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, ctxErr)
		}
		var ee *exec.ExitError
		msg := strings.TrimSpace(tail(stderr.String(), 2000))
		if msg == "" {
			msg = strings.TrimSpace(tail(stdout.String(), 2000))
		}
		if errors.As(err, &ee) {
			return nil, nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
		}
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return stdout.Bytes(), stderr.Bytes(), nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// CopySparse copies src to dst keeping holes (and sharing extents where
// the filesystem can).
func CopySparse(ctx context.Context, src, dst string) error {
	out, err := exec.CommandContext(ctx, "cp", "--sparse=always", "--reflink=auto", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

package build

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strconv"
	"time"

	"strata/builder/element"
	"strata/builder/executor"
	"strata/builder/manifest"
)

// HookError is a hook that failed.
type HookError struct {
	Hook  element.Hook
	Where string
	Err   error
}

func (e *HookError) Error() string {
	return fmt.Sprintf("hook %s of element %s failed (%s): %v", e.Hook.Path(), e.Hook.Element, e.Where, e.Err)
}

func (e *HookError) Unwrap() error { return e.Err }

// hookWrapper sources the environment.d files (as dib-run-parts does
// before a phase's hooks) and then execs the hook. Its own variables have
// names no environment file will use.
const hookWrapper = `set -eu
set -o pipefail
__strata_hook=$1 __strata_n=$2
shift 2
[ "${DIB_DEBUG_TRACE:-0}" -gt 0 ] && set -x
while [ "$__strata_n" -gt 0 ]; do
	# shellcheck source=/dev/null # the elements' files, named by the arguments
	source "$1"
	shift
	__strata_n=$((__strata_n - 1))
done
set +x
exec "$__strata_hook" "$@"
`

// hookRunner runs hooks through one executor: the chroot or the build host
// for Run, a live machine for Apply. It is the only code that turns a
// planned hook into a command.
type hookRunner struct {
	ex executor.Executor
	// env is the hooks' whole environment, paths as the executor sees them.
	env []string
	// hooksDir is the merged hooks directory as the executor sees it.
	hooksDir string
	// envFiles are the environment.d files, relative to hooksDir, in the
	// order they are sourced.
	envFiles []string
	// where is recorded in the manifest: "host", "chroot", "machine".
	where string
	rep   *reporter
}

// run runs one hook, with the environment.d files sourced first, and
// returns its manifest record (seconds, status, exit code). A failing hook
// is a *HookError naming the hook and its element.
func (r *hookRunner) run(ctx context.Context, h *hookPlan) (manifest.Hook, error) {
	// The hooks dir is a path where the executor runs (always a POSIX
	// system), not on this host: join with path, not filepath.
	args := []string{"-c", hookWrapper, "strata-hook", path.Join(r.hooksDir, h.program), strconv.Itoa(len(r.envFiles))}
	for _, f := range r.envFiles {
		args = append(args, path.Join(r.hooksDir, f))
	}
	args = append(args, h.args...)
	r.rep.hookStart(h.Hook, r.ex.Where())
	t0 := time.Now()
	err := r.ex.Run(ctx, executor.Command{
		Path: "/bin/bash", Args: args, Env: r.env,
		Stdout: r.rep.out, Stderr: r.rep.out,
	})
	secs := time.Since(t0).Seconds()
	rec := manifest.Hook{Phase: string(h.Phase), Name: h.Name, Element: h.Element, Where: r.where, Seconds: secs, Status: "ok"}
	if err != nil {
		rec.Status = "failed"
		var ee *executor.ExitError
		if errors.As(err, &ee) {
			rec.ExitCode = ee.Code
		}
		if ctx.Err() != nil {
			return rec, fmt.Errorf("interrupted in %s (element %s): %w", h.Path(), h.Element, ctx.Err())
		}
		return rec, &HookError{Hook: h.Hook, Where: r.ex.Where(), Err: err}
	}
	r.rep.hookDone(h.Hook, secs)
	return rec, nil
}

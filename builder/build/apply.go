package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"strings"
	"time"

	"strata/builder/element"
	"strata/builder/executor"
	"strata/builder/manifest"
)

// ApplyConfig asks for elements to be applied to a machine that is already
// running (a Packer build's VM reached over its communicator, for
// instance), rather than built into an image root.
type ApplyConfig struct {
	// Elements are the elements to apply. The machine is its own operating
	// system: no operating-system element is needed (or allowed).
	Elements []string
	// ElementsPath is the element search path, earlier entries winning.
	ElementsPath []string
	// SkipBase leaves out the default base element. Callers applying to a
	// live machine usually want it left out: base's policy-rc.d keeps
	// services from starting until its finalise.d hook runs.
	SkipBase bool
	// Env are the hooks' variables (DIB_*, element-inputs files naming
	// files on this host...). DIB's own variables are added.
	Env map[string]string
	// Arch is the Debian architecture (default amd64); ImageName is
	// IMAGE_NAME (default "image"); Trace sets DIB_DEBUG_TRACE=1.
	Arch      string
	ImageName string
	Trace     bool
	// Executor runs the hooks (as root) where the elements are applied.
	Executor executor.Executor
	// Upload copies the merged hooks directory, made on this host, to
	// RemoteHooksDir where the executor runs, replacing whatever is there.
	// nil means the executor sees this host's files: the local directory
	// is used as it is.
	Upload func(ctx context.Context, localDir, remoteDir string) error
	// RemoteHooksDir is where the hooks are on the target (TMP_HOOKS_PATH
	// there); default /tmp/in_target.d, as in DIB's chroot.
	RemoteHooksDir string
	// Phases are the phases to run, in DIB's order; default pre-install.d,
	// install.d and post-install.d. Only phases DIB runs inside the
	// target are allowed.
	Phases []element.Phase
	// Out receives progress and hook output.
	Out io.Writer
}

// DefaultApplyPhases are the phases Apply runs unless told otherwise: the
// ones that install software (finalise.d prepares an image for capture and
// is left to the caller to ask for).
var DefaultApplyPhases = []element.Phase{element.PreInstallPhase, element.InstallPhase, element.PostInstallPhase}

// ApplyResult is what Apply did.
type ApplyResult struct {
	// Elements are the names of the elements applied, dependencies
	// included.
	Elements []string
	// Hooks are every hook run, with its seconds and status.
	Hooks []manifest.Hook
}

func (c *ApplyConfig) planRequest() planRequest {
	return planRequest{elements: c.Elements, skipBase: c.SkipBase, elementsPath: c.ElementsPath, live: true}
}

// validate checks the request and fills defaults; the executor is only
// needed to run.
func (c *ApplyConfig) validate() error {
	if len(c.Elements) == 0 {
		return errors.New("no elements to apply")
	}
	if len(c.ElementsPath) == 0 {
		return errors.New("no element search path")
	}
	if c.Arch == "" {
		c.Arch = "amd64"
	}
	if c.ImageName == "" {
		c.ImageName = "image"
	}
	if c.RemoteHooksDir == "" {
		c.RemoteHooksDir = executor.HooksMountPoint
	}
	if !path.IsAbs(c.RemoteHooksDir) || path.Clean(c.RemoteHooksDir) == "/" {
		return fmt.Errorf("remote hooks directory %q must be an absolute path below /", c.RemoteHooksDir)
	}
	c.RemoteHooksDir = path.Clean(c.RemoteHooksDir)
	if len(c.Phases) == 0 {
		c.Phases = DefaultApplyPhases
	}
	last := -1
	for _, p := range c.Phases {
		if p.Index() < 0 {
			return fmt.Errorf("unknown phase %q", p)
		}
		if !p.InTarget() {
			return fmt.Errorf("phase %s runs on the build host in DIB, not on the target; only pre-install.d, install.d, post-install.d and finalise.d can be applied", p)
		}
		if p.Index() <= last {
			return fmt.Errorf("phases must be given once each, in DIB's order (%s is out of place)", p)
		}
		last = p.Index()
	}
	for k := range c.Env {
		if !validEnvName(k) {
			return fmt.Errorf("environment variable name %q is not valid", k)
		}
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	return nil
}

// ElementSet checks the request (filling defaults) and expands the
// elements the way Apply will, without running anything, and returns the
// names of the elements it would apply. A bad phase, a missing element, a
// bad set or an element-inputs variable in Env that names no file is
// reported here, naming what is wrong.
func (c *ApplyConfig) ElementSet() ([]string, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	set, err := c.planRequest().expand(slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	if _, err := readInputs(set, c.Env); err != nil {
		return nil, err
	}
	return set.Names(), nil
}

// Apply applies elements to a running machine: it plans the element set as
// a build would (dependencies, package-installs, pkg-map, element-inputs),
// merges the hooks, strata's helpers and the input files into a local
// directory, has cfg.Upload copy it to the target, and runs the chosen
// phases' hooks there through cfg.Executor, in DIB's order and with DIB's
// environment, exactly as Run runs them in a chroot. Nothing is cached: a
// live machine is not a tree strata can snapshot.
//
// The first failing hook stops Apply with a *HookError naming the hook and
// its element. The local directory is removed on return; the remote copy
// is the caller's to remove.
func Apply(ctx context.Context, cfg ApplyConfig) (*ApplyResult, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Executor == nil {
		return nil, errors.New("no executor to run hooks with")
	}
	rep := newReporter(cfg.Out, io.Discard, nil)
	log := slog.New(slog.NewTextHandler(rep.out, &slog.HandlerOptions{Level: slog.LevelWarn}))
	start := time.Now()

	local, err := os.MkdirTemp("", "strata-apply-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(local)
	hooksDir := cfg.RemoteHooksDir
	if cfg.Upload == nil {
		hooksDir = local
	}
	p, err := makePlan(ctx, cfg.planRequest(), applyEnv(&cfg, hooksDir), local, log)
	if err != nil {
		return nil, err
	}
	if err := p.planFrom(ctx, 0, local); err != nil {
		return nil, err
	}
	res := &ApplyResult{Elements: p.set.Names()}
	rep.printf("strata: applying elements %s (%s) on %s\n", strings.Join(res.Elements, " "), phaseNames(cfg.Phases), cfg.Executor.Where())
	if cfg.Upload != nil {
		if err := cfg.Upload(ctx, local, cfg.RemoteHooksDir); err != nil {
			return nil, fmt.Errorf("uploading the hooks to %s: %w", cfg.RemoteHooksDir, err)
		}
	}
	r := &hookRunner{
		ex: cfg.Executor, env: envList(inTargetEnv(p.env, hooksDir)),
		hooksDir: hooksDir, where: "machine", rep: rep,
	}
	err = func() error {
		for _, ph := range cfg.Phases {
			pp := p.phases[ph.Index()]
			if len(pp.hooks) == 0 {
				continue
			}
			r.envFiles = pp.envFiles
			rep.phase(ph, len(pp.hooks), 0)
			for _, h := range pp.hooks {
				rec, err := r.run(ctx, h)
				res.Hooks = append(res.Hooks, rec)
				if err != nil {
					return err
				}
			}
		}
		return nil
	}()
	rep.table(res.Hooks, time.Since(start))
	if err != nil {
		return res, err
	}
	return res, nil
}

// applyEnv is DIB's hook environment for a live machine: the caller's
// variables plus DIB's own. There is no TARGET_ROOT: the target is "/".
func applyEnv(cfg *ApplyConfig, hooksDir string) map[string]string {
	env := map[string]string{}
	for k, v := range cfg.Env {
		env[k] = v
	}
	for k, v := range map[string]string{
		"LC_ALL":          "C",
		"DEBIAN_FRONTEND": "noninteractive",
		"ARCH":            cfg.Arch,
		"IMAGE_NAME":      cfg.ImageName,
		"ELEMENTS_PATH":   strings.Join(cfg.ElementsPath, ":"),
		"TMP_HOOKS_PATH":  hooksDir,
	} {
		env[k] = v
	}
	if cfg.Trace {
		env["DIB_DEBUG_TRACE"] = "1"
	} else if env["DIB_DEBUG_TRACE"] == "" {
		env["DIB_DEBUG_TRACE"] = "0"
	}
	// PATH for sourcing environment.d files on this host while planning;
	// inTargetEnv replaces it for the hooks.
	env["PATH"] = os.Getenv("PATH")
	return env
}

func phaseNames(ps []element.Phase) string {
	var out []string
	for _, p := range ps {
		out = append(out, string(p))
	}
	return strings.Join(out, ", ")
}

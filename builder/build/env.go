package build

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"strata/builder/aptsource"
	"strata/builder/dib"
)

// passThrough reports whether a caller's variable reaches the hooks: all
// of them, as disk-image-create runs hooks with the caller's environment
// (sudo -E), except strata's own internals.
func passThrough(k string) bool {
	return !strings.HasPrefix(k, "_STRATA_")
}

// hostPath is the PATH host hooks get: the elements' bin/, strata's tools,
// then the caller's PATH.
func hostPath(hooksDir, callerPath string) string {
	if callerPath == "" {
		callerPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	return filepath.Join(hooksDir, "bin") + ":" + filepath.Join(hooksDir, toolsDir, "bin") + ":" + callerPath
}

// targetPath is the PATH hooks get inside the image root (or on a machine
// elements are applied to): the elements' bin/, strata's tools, the system.
func targetPath(hooksDir string) string {
	return hooksDir + "/bin:" + hooksDir + "/" + toolsDir + "/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

// hookEnv builds the environment every hook starts from: the caller's
// whole environment (none of it with ClearEnv, DIB's -c), the recipe's
// variables where the caller sets none, and DIB's own variables. Paths are
// the host's; inTargetEnv adjusts them for the chroot.
func hookEnv(cfg *Config, dirs buildDirs, aptArchives string) (map[string]string, error) {
	caller := map[string]string{}
	for _, kv := range cfg.HostEnv {
		if k, v, ok := strings.Cut(kv, "="); ok && passThrough(k) {
			caller[k] = v
		}
	}
	if cfg.ClearEnv {
		caller = map[string]string{"HOME": caller["HOME"]}
	}
	// A recipe's variables are defaults; the caller's environment wins,
	// as everything in DIB is configured through the environment.
	env := map[string]string{}
	for k, v := range cfg.Env {
		env[k] = v
	}
	for k, v := range caller {
		env[k] = v
	}
	home := caller["HOME"]
	if home == "" {
		home = "/root"
	}
	lib := filepath.Join(dirs.hooks, libDir)
	if in, ok := dib.Find(); ok {
		lib = in.Lib
	}
	set := map[string]string{
		"PATH":                hostPath(dirs.hooks, caller["PATH"]),
		"HOME":                home,
		"LC_ALL":              "C",
		"DEBIAN_FRONTEND":     "noninteractive",
		"ARCH":                cfg.Arch,
		"IMAGE_NAME":          cfg.Output,
		"ELEMENTS_PATH":       strings.Join(cfg.ElementsPath, ":"),
		"TMP_HOOKS_PATH":      dirs.hooks,
		"TARGET_ROOT":         dirs.root,
		"TMP_MOUNT_PATH":      dirs.root,
		"TMP_BUILD_DIR":       dirs.build,
		"TMP_IMAGE_DIR":       dirs.image,
		"DIB_IMAGE_CACHE":     cfg.CacheDir,
		"STRATA_APT_ARCHIVES": aptArchives,
		"STRATA_INPUTS":       filepath.Join(dirs.hooks, inputsDir),
		"_LIB":                lib,
		"FS_TYPE":             "ext4",
		"DIB_ROOT_FSTYPE":     "ext4",
		"DIB_ROOT_LABEL":      cfg.rootLabel(),
		"DIB_ARGS":            strings.Join(cfg.Args, " "),
		"DIB_ENV":             dibEnv(caller, cfg.Args),
	}
	for k, v := range set {
		env[k] = v
	}
	// DIB's global variables: a flag wins, then the caller's value, then
	// disk-image-create's default.
	def := func(k, flag, dflt string) {
		switch {
		case flag != "":
			env[k] = flag
		case caller[k] != "":
			env[k] = caller[k]
		default:
			env[k] = dflt
		}
	}
	def("DIB_DEFAULT_INSTALLTYPE", cfg.InstallType, "source")
	def("DIB_OFFLINE", boolFlag(cfg.Offline), "")
	def("DIB_CHECKSUM", boolFlag(cfg.Checksum), "0")
	def("DIB_NO_TMPFS", boolFlag(cfg.NoTmpfs), "0")
	def("DIB_MIN_TMPFS", cfg.MinTmpfs, "2")
	def("DIB_LOCKFILES", "", filepath.Join(home, ".cache/dib/lockfiles"))
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		def("DIB_PYTHON_EXEC", "", "/usr/bin/python3")
	}
	if err := os.MkdirAll(env["DIB_LOCKFILES"], 0o755); err != nil {
		return nil, fmt.Errorf("DIB_LOCKFILES: %w", err)
	}
	if cfg.Trace > 0 {
		env["DIB_DEBUG_TRACE"] = strconv.Itoa(cfg.Trace)
	} else if env["DIB_DEBUG_TRACE"] == "" {
		env["DIB_DEBUG_TRACE"] = "0"
	}
	if cfg.ImageSize > 0 {
		env["DIB_IMAGE_SIZE"] = strconv.FormatFloat(float64(cfg.ImageSize)/(1<<30), 'f', -1, 64)
	}
	if cfg.ExtraSize > 0 {
		env["DIB_IMAGE_EXTRA_SIZE"] = strconv.FormatFloat(float64(cfg.ExtraSize)/(1<<30), 'f', -1, 64)
	}
	// The build host's own Debian mirror is the default; elements let
	// DIB_DISTRIBUTION_MIRROR override it.
	if m, err := aptsource.Find("/"); err == nil {
		if m.Debian != "" {
			env["STRATA_HOST_DEBIAN_MIRROR"] = m.Debian
		}
		if m.Security != "" {
			env["STRATA_HOST_DEBIAN_SECURITY_MIRROR"] = m.Security
		}
	} else if !os.IsNotExist(err) {
		return nil, fmt.Errorf("reading the host's apt sources: %w", err)
	}
	return env, nil
}

func boolFlag(b bool) string {
	if b {
		return "1"
	}
	return ""
}

// dibEnv is DIB_ENV: the caller's DIB_* variables (and DIB_ARGS) as bash's
// export prints them, which DIB's manifests element saves in the image.
func dibEnv(caller map[string]string, args []string) string {
	vars := map[string]string{"DIB_ARGS": strings.Join(args, " ")}
	for k, v := range caller {
		if strings.HasPrefix(k, "DIB_") {
			vars[k] = v
		}
	}
	var keys []string
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", `\$`, "`", "\\`")
		fmt.Fprintf(&b, "declare -x %s=\"%s\"", k, r.Replace(vars[k]))
	}
	return b.String()
}

// inTargetEnv is the environment of a hook inside the image root, or on a
// machine elements are applied to, where the merged hooks are at hooksDir:
// the same variables (as DIB passes its environment through sudo -E) with
// the target's PATH and HOME, and no TMPDIR.
func inTargetEnv(env map[string]string, hooksDir string) map[string]string {
	out := make(map[string]string, len(env))
	for k, v := range env {
		out[k] = v
	}
	out["PATH"] = targetPath(hooksDir)
	out["HOME"] = "/root"
	out["STRATA_INPUTS"] = hooksDir + "/" + inputsDir
	// The host's DIB library is not inside the image root; strata's own
	// implementation travels with the hooks.
	out["_LIB"] = hooksDir + "/" + libDir
	delete(out, "TMPDIR")
	return out
}

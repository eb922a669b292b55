package build

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"strata/builder/aptsource"
)

// passThrough reports whether a caller's variable reaches the hooks: DIB's
// own DIB_* namespace and the proxy settings apt needs.
func passThrough(k string) bool {
	if strings.HasPrefix(k, "DIB_") {
		return true
	}
	switch strings.ToLower(k) {
	case "http_proxy", "https_proxy", "no_proxy":
		return true
	}
	return false
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

// hookEnv builds the environment every hook starts from, with DIB's
// variables. Paths are the host's; chrootEnv adjusts them for the chroot.
func hookEnv(cfg *Config, dirs buildDirs, aptArchives string) (map[string]string, error) {
	// A recipe's variables are defaults; the caller's DIB_* win, as
	// everything in DIB is configured through the environment.
	env := map[string]string{}
	for k, v := range cfg.Env {
		env[k] = v
	}
	caller := map[string]string{}
	for _, kv := range cfg.HostEnv {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		caller[k] = v
		if passThrough(k) {
			env[k] = v
		}
	}
	home := caller["HOME"]
	if home == "" {
		home = "/root"
	}
	set := map[string]string{
		"PATH":                hostPath(dirs.hooks, caller["PATH"]),
		"HOME":                home,
		"LC_ALL":              "C",
		"DEBIAN_FRONTEND":     "noninteractive",
		"ARCH":                cfg.Arch,
		"IMAGE_NAME":          filepath.Base(cfg.Output),
		"ELEMENTS_PATH":       strings.Join(cfg.ElementsPath, ":"),
		"TMP_HOOKS_PATH":      dirs.hooks,
		"TARGET_ROOT":         dirs.root,
		"TMP_MOUNT_PATH":      dirs.root,
		"TMP_BUILD_DIR":       dirs.build,
		"DIB_IMAGE_CACHE":     cfg.CacheDir,
		"STRATA_APT_ARCHIVES": aptArchives,
		"STRATA_INPUTS":       filepath.Join(dirs.hooks, inputsDir),
	}
	for k, v := range set {
		env[k] = v
	}
	if cfg.Trace {
		env["DIB_DEBUG_TRACE"] = "1"
	} else if env["DIB_DEBUG_TRACE"] == "" {
		env["DIB_DEBUG_TRACE"] = "0"
	}
	if cfg.Offline {
		env["DIB_OFFLINE"] = "1"
	}
	if cfg.ImageSize > 0 {
		env["DIB_IMAGE_SIZE"] = fmt.Sprintf("%d", cfg.ImageSize/(1<<30))
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
	delete(out, "TMPDIR")
	return out
}

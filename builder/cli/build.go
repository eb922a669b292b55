// Package cli is the `strata build` command: flags in diskimage-builder's
// spelling, or an image recipe, turned into a validated build.Config.
// It parses and wires; building happens in builder/build.
package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"strata/builder/build"
	"strata/builder/recipe"
)

// NewBuildCommand returns `strata build`.
func NewBuildCommand(version string) *cobra.Command {
	var (
		recipePath  string
		output      string
		formats     string
		arch        string
		trace       bool
		uncomp      bool
		skipBase    bool
		packages    []string
		imageSize   string
		cacheDir    string
		offline     bool
		noCache     bool
		qemuImgOpts string
		compression string
		publishIt   bool
		pub         publishFlags
	)
	cmd := &cobra.Command{
		Use:   "build [flags] ELEMENT... | build -f RECIPE [flags] [ELEMENT...]",
		Short: "Build an image from elements (diskimage-builder compatible)",
		Long: `Build a disk image from DIB-style elements, or from an image recipe (-f).

Elements are looked up in ELEMENTS_PATH (a colon list, earlier entries win)
and then in strata's own elements directory. Unless -n is given, the base
element is added. Hooks of every element run phase by phase in DIB's order;
pre-install.d, install.d, post-install.d and finalise.d run inside the image
root, the other phases on the build host.

Outputs appear complete or not at all: NAME.FORMAT, NAME.FORMAT.sha256,
NAME.manifest.json and NAME.spdx.json. The tree after each phase where a later
element starts is cached, so changing a late element rebuilds only from there;
an unchanged build reuses the finished files.`,
		Example: `  strata build -o out/minimal vm debian-minimal
  strata build -f images/mariadb-10.11.yaml -o out/mariadb
  DIB_RELEASE=trixie strata build -t qcow2,tar -o out/trixie vm debian-minimal`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if publishIt && recipePath == "" {
				return errors.New("--publish needs a recipe (-f): its datastore section says what to register")
			}
			cfg := build.Config{}
			if recipePath != "" {
				r, err := recipe.Load(recipePath)
				if err != nil {
					return err
				}
				if cfg, err = build.RecipeConfig(r); err != nil {
					return err
				}
			}
			cfg.Version, cfg.Out = version, cmd.OutOrStdout()
			cfg.Elements = append(cfg.Elements, args...)
			if len(cfg.Elements) == 0 {
				return errors.New("no elements: name elements on the command line or give a recipe with -f")
			}
			if cmd.Flags().Changed("output") {
				cfg.Output = output
			}
			if cmd.Flags().Changed("type") {
				cfg.Formats = splitList(formats)
			}
			if skipBase {
				cfg.SkipBase = true
			}
			cfg.Packages = append(cfg.Packages, packages...)
			if imageSize != "" {
				n, err := recipe.ParseSize(imageSize)
				if err != nil {
					return fmt.Errorf("--image-size: %w", err)
				}
				cfg.ImageSize = n
			}
			cfg.Arch, cfg.Trace, cfg.Uncompressed = arch, trace, uncomp
			cfg.CacheDir, cfg.Offline, cfg.NoCache = cacheDir, offline, noCache
			cfg.Compression = compression
			cfg.QemuImgOptions = splitList(qemuImgOpts)
			path, err := ElementsPath()
			if err != nil {
				return err
			}
			cfg.ElementsPath = path
			res, err := build.Run(cmd.Context(), cfg)
			if err != nil || !publishIt {
				return err
			}
			for _, f := range res.Files {
				if strings.HasSuffix(f, ".qcow2") || strings.HasSuffix(f, ".raw") {
					return pub.run(cmd, recipePath, f)
				}
			}
			return errors.New("--publish: the build wrote no qcow2 or raw image")
		},
	}
	cmd.Flags().BoolVar(&publishIt, "publish", false, "after the build, publish the image as `strata image publish` does (needs -f)")
	pub.register(cmd)
	f := cmd.Flags()
	f.StringVarP(&recipePath, "file", "f", "", "image recipe (images/*.yaml)")
	f.StringVarP(&output, "output", "o", "image", "output path without extension (the recipe's name by default)")
	f.StringVarP(&formats, "type", "t", "qcow2", "comma-separated formats: qcow2, raw, tar, vmdk, vhdx")
	f.StringVarP(&arch, "arch", "a", "amd64", "architecture (amd64)")
	f.BoolVarP(&trace, "trace", "x", false, "trace hooks (DIB_DEBUG_TRACE=1)")
	f.BoolVarP(&uncomp, "uncompressed", "u", false, "do not compress qcow2 output")
	f.BoolVarP(&skipBase, "skip-base", "n", false, "do not add the base element")
	f.StringSliceVarP(&packages, "packages", "p", nil, "extra packages to install after install.d (comma-separated, repeatable)")
	f.StringVar(&imageSize, "image-size", "", "disk size (3GiB, 2048M; a bare number is GiB); automatic by default")
	f.StringVar(&cacheDir, "image-cache", defaultCache(), "cache for downloads, trees and finished images")
	f.BoolVar(&offline, "offline", false, "use only cached trees and packages; download nothing")
	f.BoolVar(&noCache, "no-cache", false, "ignore cached trees and outputs (downloaded packages are still reused)")
	f.StringVar(&qemuImgOpts, "qemu-img-options", "", "extra qemu-img -o options, comma-separated (e.g. cluster_size=2M)")
	f.StringVar(&compression, "compression", "zstd", "qcow2 compression: zstd (fast; needs qemu >= 5.1 to read) or zlib (readable everywhere)")
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func defaultCache() string {
	if v := os.Getenv("DIB_IMAGE_CACHE"); v != "" {
		return v
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".cache/strata"
	}
	return filepath.Join(home, ".cache", "strata")
}

// ElementsPath is ELEMENTS_PATH followed by strata's own elements: the
// elements/ directory beside the binary's bin/ (a source checkout), or
// STRATA_ELEMENTS_DIR, or /usr/share/strata/elements.
func ElementsPath() ([]string, error) {
	var out []string
	for _, p := range filepath.SplitList(os.Getenv("ELEMENTS_PATH")) {
		if p != "" {
			abs, err := filepath.Abs(p)
			if err != nil {
				return nil, err
			}
			out = append(out, abs)
		}
	}
	builtin, err := BuiltinElements()
	if err != nil {
		return nil, err
	}
	return append(out, builtin), nil
}

// BuiltinElements finds strata's own elements directory.
func BuiltinElements() (string, error) {
	var candidates []string
	if d := os.Getenv("STRATA_ELEMENTS_DIR"); d != "" {
		candidates = append(candidates, d)
	}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			candidates = append(candidates, filepath.Join(filepath.Dir(real), "..", "elements"))
		}
	}
	if wd, err := os.Getwd(); err == nil {
		candidates = append(candidates, filepath.Join(wd, "elements"))
	}
	candidates = append(candidates, "/usr/share/strata/elements")
	for _, c := range candidates {
		if fi, err := os.Stat(filepath.Join(c, "debian-minimal")); err == nil && fi.IsDir() {
			return filepath.Abs(c)
		}
	}
	return "", fmt.Errorf("strata's elements directory not found (looked in %s); set STRATA_ELEMENTS_DIR", strings.Join(candidates, ", "))
}

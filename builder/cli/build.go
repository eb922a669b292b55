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
	"strata/builder/dib"
	"strata/builder/recipe"
)

// NewBuildCommand returns `strata build`, which takes every flag of
// diskimage-builder 3.13's disk-image-create (the strata binary called as
// disk-image-create runs it).
func NewBuildCommand(version string) *cobra.Command {
	var (
		recipePath   string
		output       string
		formats      string
		arch         string
		trace        int
		uncomp       bool
		skipBase     bool
		clearEnv     bool
		packages     []string
		imageSize    string
		extraSize    string
		cacheDir     string
		offline      bool
		noCache      bool
		cacheMax     string
		qemuImgOpts  string
		compression  string
		checksum     bool
		installType  string
		rootLabel    string
		mkfsOptions  string
		journalSize  int
		maxResize    int64
		minTmpfs     string
		noTmpfs      bool
		logFile      string
		ramdiskElem  string
		dockerTarget string
		showVersion  bool
		publishIt    bool
		pub          publishFlags
	)
	cmd := &cobra.Command{
		Use:   "build [flags] ELEMENT... | build -f RECIPE [flags] [ELEMENT...]",
		Short: "Build an image from elements (diskimage-builder compatible)",
		Long: `Build a disk image from DIB-style elements, or from an image recipe (-f).

Elements are looked up in ELEMENTS_PATH (a colon list, earlier entries win),
then in strata's own elements directory, then in diskimage-builder's element
tree when python3-diskimage-builder is installed (as disk-image-create
searches its own tree last). Unless -n is given, the base element is added.
Hooks of every element run phase by phase in DIB's order, with the caller's
environment (-c clears it) and DIB's variables; pre-install.d, install.d,
post-install.d and finalise.d run inside the image root, the other phases on
the build host.

Every flag of disk-image-create works; strata called as disk-image-create
(a symlink) runs this command, so DIB command lines run unchanged. See
docs/dib-compat.md for the few flags that change nothing here and why.

Outputs appear complete or not at all: NAME.FORMAT, NAME.FORMAT.sha256 (and
.md5 with --checksum), NAME.manifest.json and NAME.spdx.json. The tree after
each phase where a later element starts is cached, so changing a late element
rebuilds only from there; an unchanged build reuses the finished files.`,
		Example: `  strata build -o out/minimal vm debian-minimal
  strata build -f images/mariadb-10.11.yaml -o out/mariadb
  DIB_RELEASE=trixie strata build -t qcow2,tar -o out/trixie vm debian-minimal
  disk-image-create -a amd64 -o out/x -t qcow2 --checksum vm debian-minimal devuser`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if showVersion {
				fmt.Fprintf(cmd.OutOrStdout(), "strata %s (disk-image-create compatible)\n", version)
				return nil
			}
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
			// Sizes: the flag, else DIB's variable (GB, as DIB reads it).
			if imageSize == "" {
				imageSize = os.Getenv("DIB_IMAGE_SIZE")
			}
			if imageSize != "" {
				n, err := recipe.ParseSize(imageSize)
				if err != nil {
					return fmt.Errorf("--image-size: %w", err)
				}
				cfg.ImageSize = n
			}
			if extraSize == "" {
				extraSize = os.Getenv("DIB_IMAGE_EXTRA_SIZE")
			}
			if extraSize != "" {
				n, err := recipe.ParseSize(extraSize)
				if err != nil {
					return fmt.Errorf("--image-extra-size: %w", err)
				}
				cfg.ExtraSize = n
			}
			if !cmd.Flags().Changed("mkfs-journal-size") && os.Getenv("DIB_JOURNAL_SIZE") != "" {
				if _, err := fmt.Sscanf(os.Getenv("DIB_JOURNAL_SIZE"), "%d", &journalSize); err != nil {
					return fmt.Errorf("DIB_JOURNAL_SIZE=%q: want a number of MB", os.Getenv("DIB_JOURNAL_SIZE"))
				}
			}
			if mkfsOptions != "" {
				opts, err := shellSplit(mkfsOptions)
				if err != nil {
					return fmt.Errorf("--mkfs-options: %w", err)
				}
				cfg.MkfsOptions = opts
			}
			if ramdiskElem != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "strata: --ramdisk-element applies to ramdisk-image-create only; disk-image-create ignores it, and so does strata")
			}
			cfg.Arch, cfg.Trace, cfg.Uncompressed = arch, trace, uncomp
			cfg.CacheDir, cfg.Offline, cfg.NoCache = cacheDir, offline, noCache
			cacheMaxSize, err := parseCacheMax(cacheMax)
			if err != nil {
				return err
			}
			cfg.CacheMaxSize = cacheMaxSize
			cfg.Compression = compression
			cfg.QemuImgOptions = splitList(qemuImgOpts)
			cfg.ClearEnv = clearEnv
			cfg.Checksum = checksum || os.Getenv("DIB_CHECKSUM") == "1"
			cfg.InstallType, cfg.RootLabel = installType, rootLabel
			cfg.JournalSizeMB, cfg.MaxOnlineResize = journalSize, maxResize
			cfg.NoTmpfs, cfg.MinTmpfs = noTmpfs, minTmpfs
			cfg.LogFile, cfg.DockerTarget = logFile, dockerTarget
			// DIB: a log file without DIB_QUIET means the log file only;
			// DIB_QUIET=0 asks for both.
			cfg.Quiet = os.Getenv("DIB_QUIET") == "1" || (logFile != "" && os.Getenv("DIB_QUIET") == "")
			cfg.Args = dibArgs()
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
	f.StringVarP(&output, "output", "o", "image", "output path without extension (the recipe's name by default); hooks see it as IMAGE_NAME")
	f.StringVarP(&formats, "type", "t", "qcow2", "comma-separated formats: qcow2, raw, vhd, vmdk, vhdx, tar, tgz, squashfs, docker")
	f.StringVarP(&arch, "arch", "a", "amd64", "architecture (amd64)")
	f.CountVarP(&trace, "trace", "x", "trace hooks (DIB_DEBUG_TRACE; -x -x for more)")
	f.BoolVarP(&uncomp, "uncompressed", "u", false, "do not compress qcow2 output")
	f.BoolVarP(&skipBase, "skip-base", "n", false, "do not add the base element")
	f.BoolVarP(&clearEnv, "clear-env", "c", false, "give hooks none of the caller's environment (DIB's -c)")
	f.StringSliceVarP(&packages, "packages", "p", nil, "extra packages to install after install.d (comma-separated, repeatable)")
	f.StringVar(&imageSize, "image-size", "", "disk size (3GiB, 2048M; a bare number is GB, as in DIB; $DIB_IMAGE_SIZE); automatic by default")
	f.StringVar(&extraSize, "image-extra-size", "", "add this much to the automatic disk size (a bare number is GB; $DIB_IMAGE_EXTRA_SIZE)")
	f.StringVar(&cacheDir, "image-cache", defaultCache(), "cache for downloads, trees and finished images ($DIB_IMAGE_CACHE)")
	f.BoolVar(&offline, "offline", false, "use only cached trees and packages; download nothing (DIB_OFFLINE=1)")
	f.BoolVar(&noCache, "no-cache", false, "ignore cached trees and outputs (downloaded packages are still reused)")
	f.StringVar(&cacheMax, "cache-max-size", defaultCacheMax, "after the build, remove the least recently used cached trees and images until the rest fit in this (30GiB, 500M; 0: no bound; downloaded packages are not counted)")
	f.StringVar(&qemuImgOpts, "qemu-img-options", "", "extra qemu-img -o options, comma-separated (e.g. cluster_size=2M)")
	f.StringVar(&compression, "compression", "zstd", "qcow2 compression: zstd (fast; needs qemu >= 5.1 to read) or zlib (readable everywhere)")
	f.BoolVar(&checksum, "checksum", false, "also write NAME.FORMAT.md5 (the .sha256 is always written; DIB_CHECKSUM=1)")
	f.StringVar(&installType, "install-type", "", "DIB_DEFAULT_INSTALLTYPE for install-types (default source)")
	f.StringVar(&rootLabel, "root-label", "", "root filesystem label (default cloudimg-rootfs)")
	f.StringVar(&mkfsOptions, "mkfs-options", "", "extra mkfs.ext4 options for the root filesystem, as one string")
	f.IntVar(&journalSize, "mkfs-journal-size", 0, "root filesystem journal size in MB ($DIB_JOURNAL_SIZE)")
	f.Int64Var(&maxResize, "max-online-resize", 0, "filesystem blocks the root filesystem can grow to online (mkfs -E resize=N)")
	f.StringVar(&minTmpfs, "min-tmpfs", "", "sets DIB_MIN_TMPFS for hooks; strata never builds in a tmpfs")
	f.BoolVar(&noTmpfs, "no-tmpfs", false, "sets DIB_NO_TMPFS=1 for hooks; strata never builds in a tmpfs")
	f.StringVar(&logFile, "logfile", "", "also write the output to this file (and, unless DIB_QUIET=0, not to the terminal)")
	f.StringVar(&ramdiskElem, "ramdisk-element", "", "ramdisk-image-create only: ignored, as disk-image-create ignores it")
	f.StringVar(&dockerTarget, "docker-target", "", "repository:tag for -t docker (default the output name)")
	f.BoolVar(&showVersion, "version", false, "print the version and exit")
	return cmd
}

// dibArgs is the command line as disk-image-create would have seen it,
// for DIB_ARGS.
func dibArgs() []string {
	if filepath.Base(os.Args[0]) == "disk-image-create" {
		return os.Args[1:]
	}
	for i, a := range os.Args {
		if a == "build" {
			return os.Args[i+1:]
		}
	}
	return nil
}

// shellSplit splits a string into words as a shell would (quotes and
// backslashes; no expansions), for --mkfs-options.
func shellSplit(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord, quote := false, rune(0)
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else if r == '\\' && quote == '"' && i+1 < len(rs) {
				i++
				cur.WriteRune(rs[i])
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == '\\' && i+1 < len(rs):
			i++
			cur.WriteRune(rs[i])
			inWord = true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote in %q", quote, s)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
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

// ElementsPath is ELEMENTS_PATH followed by strata's own elements (the
// elements/ directory beside the binary's bin/ in a source checkout, or
// STRATA_ELEMENTS_DIR, or /usr/share/strata/elements), then, when
// python3-diskimage-builder is installed, DIB's own element tree, which
// disk-image-create always searches last. (DIB's tree named in
// ELEMENTS_PATH is searched last too: see element.SearchOrder.)
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
	out = append(out, builtin)
	if in, ok := dib.Find(); ok {
		out = append(out, in.Elements)
	}
	return out, nil
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

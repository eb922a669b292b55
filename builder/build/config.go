// Package build turns a list of elements into finished images: it plans
// the build (elements, environment, packages, cache keys), runs every
// phase's hooks through executors, reuses cached trees and outputs, and
// writes the image files, their checksums, a manifest and an SBOM.
//
// Apply runs the same engine against a machine that is already running
// (the Packer provisioner's target): the same plan, the same merged hooks
// directory and the same hook runner, through whatever executor the caller
// hands it, with the hooks directory uploaded by the caller. Run's chroot
// and host phases go through that hook runner too; there is one place
// where a planned hook becomes a command.
//
// Every action that leaves something behind is a step whose cleanup the
// runner calls on success, failure and interruption alike; output files
// appear only complete.
//
// It must not know how a disk is laid out (builder/disk does) or how a
// command reaches a chroot (builder/executor does).
package build

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"strata/agent/wire"
	"strata/builder/manifest"
	"strata/builder/recipe"
)

// Config is a validated build request, from the command line or a recipe.
type Config struct {
	// Elements are the requested elements, without the default base.
	Elements []string
	// SkipBase leaves out the default base element (-n).
	SkipBase bool
	// ElementsPath is the element search path, earlier entries winning.
	ElementsPath []string
	// Output is the path of the image without extension (-o).
	Output string
	// Formats are the outputs to write: qcow2, raw, tar (-t).
	Formats []string
	// Arch is the Debian architecture (-a).
	Arch string
	// Trace sets DIB_DEBUG_TRACE so hooks trace themselves (-x, given
	// twice for 2).
	Trace int
	// Uncompressed writes qcow2 without compression (-u).
	Uncompressed bool
	// Compression is the qcow2 compression type: zstd (default) or zlib.
	Compression string
	// QemuImgOptions are extra -o options for qemu-img convert.
	QemuImgOptions []string
	// Packages are installed after install.d, as DIB's -p does.
	Packages []string
	// ImageSize is the disk size in bytes, 0 for automatic.
	ImageSize int64
	// CacheDir holds downloads, cached trees and outputs (--image-cache).
	CacheDir string
	// Offline uses only what is cached: no root filesystem download, apt
	// installs from cached packages only (--offline).
	Offline bool
	// NoCache ignores cached trees and outputs (packages are still reused).
	NoCache bool
	// CacheMaxSize bounds the cached trees and outputs: after each build
	// the least recently used go until the rest fit (0: no bound).
	CacheMaxSize int64
	// Env is set for every hook (a recipe's env and files); DIB_* variables
	// from the caller's environment override it.
	Env map[string]string
	// Recipe is the recipe file the request came from, if any.
	Recipe string
	// Datastore is what the recipe says the image provides.
	Datastore *manifest.Datastore
	// HostEnv is the caller's environment (os.Environ()); hooks get all
	// of it, as DIB's hooks do.
	HostEnv []string
	// ClearEnv gives hooks none of the caller's environment (DIB's -c).
	ClearEnv bool
	// WorkDir is where host hooks run (DIB runs them in the caller's
	// working directory); default the current directory.
	WorkDir string
	// Args is the command line, for DIB_ARGS.
	Args []string
	// InstallType is DIB_DEFAULT_INSTALLTYPE (--install-type); "" leaves
	// the caller's value or DIB's default, source.
	InstallType string
	// Checksum also writes NAME.FORMAT.md5 (DIB's --checksum; the .sha256
	// is always written).
	Checksum bool
	// NoTmpfs and MinTmpfs are DIB's --no-tmpfs and --min-tmpfs: strata
	// never builds in a tmpfs, so they only set DIB_NO_TMPFS and
	// DIB_MIN_TMPFS for hooks that read them.
	NoTmpfs  bool
	MinTmpfs string
	// RootLabel is the root filesystem's label (--root-label); a DIB
	// block-device configuration may set it too. Default cloudimg-rootfs.
	RootLabel string
	// MkfsOptions are extra mkfs.ext4 options (--mkfs-options), split like
	// a shell would; JournalSizeMB is --mkfs-journal-size;
	// MaxOnlineResize is --max-online-resize (mkfs -E resize=N, blocks).
	MkfsOptions     []string
	JournalSizeMB   int
	MaxOnlineResize int64
	// ExtraSize is added to the automatic disk size (--image-extra-size).
	ExtraSize int64
	// LogFile also receives the build's output (--logfile); Quiet keeps
	// it off Out (DIB_QUIET, implied by --logfile).
	LogFile string
	Quiet   bool
	// DockerTarget is the repository:tag the docker format imports the
	// tree as (--docker-target; default the output name).
	DockerTarget string
	// Out receives progress and hook output.
	Out io.Writer
	// Version is the builder's version, for the manifest.
	Version string
}

// RecipeConfig is the build a recipe describes: its elements, variables,
// formats, packages, size and datastore, with the recipe's name as the
// output. The caller fills the rest (output directory, cache, search path)
// and may override any of it. Both `strata build -f` and the Packer builder
// start from here.
func RecipeConfig(r *recipe.Recipe) (Config, error) {
	cfg := Config{
		Recipe: r.Path, Elements: append([]string{}, r.Elements...), SkipBase: r.SkipBase,
		Env: r.Vars(), Formats: append([]string{}, r.Formats...), Packages: append([]string{}, r.Packages...),
		Output: r.Name,
	}
	if d := r.Datastore; d != nil {
		cfg.Datastore = &manifest.Datastore{Name: d.Name, Version: d.Version, Manager: d.Manager, Port: d.Port}
		if err := checkConfigTemplate(d.ConfigTemplate); err != nil {
			return Config{}, fmt.Errorf("%s: datastore.config_template: %w", r.Path, err)
		}
	}
	if r.Size != "" {
		n, err := recipe.ParseSize(r.Size)
		if err != nil {
			return Config{}, fmt.Errorf("%s: size: %w", r.Path, err)
		}
		cfg.ImageSize = n
	}
	return cfg, nil
}

// checkConfigTemplate renders the recipe's default configuration template
// for a few flavors, as the agent will in the image, so that a broken one
// fails the build rather than every instance's prepare. A missing file is
// left to the element-inputs check, which names the variable too.
func checkConfigTemplate(path string) error {
	if path == "" {
		return nil
	}
	text, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, mem := range []int{0, 512, 4096} {
		if _, err := wire.RenderConfigTemplate(text, wire.ConfigTemplateData{MemoryMB: mem}); err != nil {
			return fmt.Errorf("%s for %d MiB: %w", path, mem, err)
		}
	}
	return nil
}

// Formats strata can write: disk images (qemu-img), a tar of the tree, or
// its gzip (tgz), a squashfs of the tree, and a docker image imported
// from it. vhd is qemu-img's "vpc" format.
var knownFormats = []string{"qcow2", "raw", "tar", "tgz", "squashfs", "vhd", "vmdk", "vhdx", "docker"}

// refusedFormats are disk-image-create formats strata does not write, and
// why.
var refusedFormats = map[string]string{
	"aci": "the App Container Image format (appc) was retired; build -t tar or -t docker instead",
}

// DefaultBase is the element every build gets unless SkipBase is set.
const DefaultBase = "base"

// Validate checks the request and fills defaults.
func (c *Config) Validate() error {
	if len(c.Elements) == 0 {
		return fmt.Errorf("no elements given: name at least a distribution element such as debian-minimal")
	}
	if c.Output == "" {
		c.Output = "image"
	}
	for _, ext := range append(knownFormats, "") {
		if ext != "" && strings.HasSuffix(c.Output, "."+ext) && len(c.Formats) <= 1 {
			c.Output = strings.TrimSuffix(c.Output, "."+ext)
		}
	}
	abs, err := filepath.Abs(c.Output)
	if err != nil {
		return err
	}
	c.Output = abs
	if len(c.Formats) == 0 {
		c.Formats = []string{"qcow2"}
	}
	seen := map[string]bool{}
	for _, f := range c.Formats {
		if why, ok := refusedFormats[f]; ok {
			return fmt.Errorf("image format %q is not supported: %s", f, why)
		}
		if !slices.Contains(knownFormats, f) {
			return fmt.Errorf("unknown image format %q (known: %s)", f, strings.Join(knownFormats, ", "))
		}
		if seen[f] {
			return fmt.Errorf("image format %q given twice", f)
		}
		seen[f] = true
	}
	if c.Arch == "" {
		c.Arch = "amd64"
	}
	if c.Arch != "amd64" {
		return fmt.Errorf("architecture %q is not supported yet (only amd64: the disk layout and GRUB targets are x86)", c.Arch)
	}
	switch c.Compression {
	case "":
		c.Compression = "zstd"
	case "zstd", "zlib":
	default:
		return fmt.Errorf("unknown qcow2 compression %q (zstd or zlib)", c.Compression)
	}
	if c.ImageSize < 0 {
		return fmt.Errorf("image size %d is negative", c.ImageSize)
	}
	if c.CacheDir == "" {
		home, _ := os.UserHomeDir()
		c.CacheDir = filepath.Join(home, ".cache", "strata")
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.HostEnv == nil {
		c.HostEnv = os.Environ()
	}
	if c.WorkDir == "" {
		if c.WorkDir, err = os.Getwd(); err != nil {
			return err
		}
	}
	if c.RootLabel != "" && len(c.RootLabel) > 16 {
		return fmt.Errorf("root label %q is longer than ext4's 16 bytes", c.RootLabel)
	}
	if c.ExtraSize < 0 || c.JournalSizeMB < 0 || c.MaxOnlineResize < 0 {
		return fmt.Errorf("--image-extra-size, --mkfs-journal-size and --max-online-resize cannot be negative")
	}
	if err := c.checkFormatTools(); err != nil {
		return err
	}
	for k := range c.Env {
		if !validEnvName(k) {
			return fmt.Errorf("environment variable name %q is not valid", k)
		}
	}
	if len(c.ElementsPath) == 0 {
		return fmt.Errorf("no element search path")
	}
	return nil
}

func validEnvName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func (c *Config) planRequest() planRequest {
	return planRequest{elements: c.Elements, skipBase: c.SkipBase, elementsPath: c.ElementsPath, packages: c.Packages}
}

// ElementSet expands the requested elements (and the default base) the way
// Run will, without running anything, and returns the names of the
// elements the build would use. A missing element, two providers of one
// name, no operating-system element... is reported here, naming the
// elements involved.
func (c *Config) ElementSet() ([]string, error) {
	if len(c.ElementsPath) == 0 {
		return nil, fmt.Errorf("no element search path")
	}
	set, err := c.planRequest().expand(slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	return set.Names(), nil
}

// treeFormats are made from the finished tree, not from a disk image.
var treeFormats = map[string]bool{"tar": true, "tgz": true, "squashfs": true, "docker": true}

// diskFormats are the formats made from a partitioned (or bare) disk image.
func (c *Config) diskFormats() []string {
	var out []string
	for _, f := range c.Formats {
		if !treeFormats[f] {
			out = append(out, f)
		}
	}
	return out
}

// checkFormatTools refuses, before anything runs, a format whose tool the
// host lacks.
func (c *Config) checkFormatTools() error {
	for _, f := range c.Formats {
		switch f {
		case "squashfs":
			if _, err := exec.LookPath("mksquashfs"); err != nil {
				return fmt.Errorf("image format squashfs needs mksquashfs (Debian package squashfs-tools; ci/deps.sh build installs it)")
			}
		case "docker":
			if _, err := exec.LookPath("docker"); err != nil {
				return fmt.Errorf("image format docker imports the tree with `docker import`, and there is no docker command here")
			}
			if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
				return fmt.Errorf("image format docker imports the tree with `docker import`, but the docker daemon does not answer (`docker info`: %s)", strings.TrimSpace(string(out)))
			}
		}
	}
	return nil
}

func (c *Config) rootLabel() string {
	if c.RootLabel != "" {
		return c.RootLabel
	}
	return "cloudimg-rootfs"
}

// OutputPath is the file the build writes for a format (DIB names a
// squashfs NAME.squash).
func (c *Config) OutputPath(format string) string { return c.Output + "." + outputExt(format) }

func outputExt(format string) string {
	if format == "squashfs" {
		return "squash"
	}
	return format
}

// ManifestPath and SBOMPath are written beside the images.
func (c *Config) ManifestPath() string { return c.Output + ".manifest.json" }
func (c *Config) SBOMPath() string     { return c.Output + ".spdx.json" }

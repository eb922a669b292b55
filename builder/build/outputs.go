package build

import (
	"compress/gzip"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"strata/builder/disk"
	"strata/builder/element"
	"strata/builder/manifest"
)

// outputKey identifies finished outputs: the final tree plus everything
// that shapes the files made from it.
func (b *builder) outputKey() string {
	h := sha256.New()
	fmt.Fprintf(h, "outputs-v3\n%s\nformats=%s\ncompression=%s\nuncompressed=%v\nsize=%d\nqemu-img=%s\nbootable=%v\nepoch=%d\n",
		b.plan.finalKey(), strings.Join(sortedCopy(b.cfg.Formats), ","), b.cfg.Compression, b.cfg.Uncompressed,
		b.imageSize(), strings.Join(b.cfg.QemuImgOptions, ","), b.plan.bootable, b.epoch)
	fmt.Fprintf(h, "label=%s\nmkfs=%q\njournal=%d\nresize=%d\nextra=%d\nchecksum=%v\n",
		b.fsLabel(), b.cfg.MkfsOptions, b.cfg.JournalSizeMB, b.cfg.MaxOnlineResize, b.cfg.ExtraSize, b.cfg.Checksum)
	return hex.EncodeToString(h.Sum(nil))
}

// reuseOutputs short-cuts a build whose finished outputs are cached: the
// same elements, inputs and options give the same files.
func (b *builder) reuseOutputs(ctx context.Context) error {
	if b.cfg.NoCache || slices.Contains(b.cfg.Formats, "docker") {
		return nil // a docker image lives in the daemon, not in the cache
	}
	// The epoch is part of the output key; a cached build stored the one
	// its base tree was made with, found through the root.d snapshot.
	saved := int64(0)
	if meta, ok := b.cache.Snapshot(b.plan.phaseKey(element.RootPhase)); ok {
		saved = meta.SourceDateEpoch
	}
	b.epoch = b.defaultEpoch(saved)
	dir, ok := b.cache.OutputDir(b.outputKey())
	if !ok {
		return nil
	}
	m, err := manifest.Read(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil // a damaged entry is rebuilt, not trusted
	}
	for _, o := range m.Outputs {
		if fi, err := os.Stat(filepath.Join(dir, cachedFile(o.Format))); err != nil || fi.Size() != o.Size {
			return nil
		}
	}
	b.rep.printf("strata: nothing changed since a cached build (%s): reusing its outputs\n", b.outputKey()[:12])
	now := time.Now()
	_ = os.Chtimes(dir, now, now)
	b.reused = true
	b.man = m
	return nil
}

// writeOutputs makes every requested format from the finished tree into
// the build's out/ directory, with checksums, manifest and SBOM.
func (b *builder) writeOutputs(ctx context.Context) error {
	if b.reused {
		return nil
	}
	if err := clampTimes(b.dirs.root, b.epoch); err != nil {
		return fmt.Errorf("clamping file times: %w", err)
	}
	name := filepath.Base(b.cfg.Output)
	var outs []manifest.Output
	df := b.cfg.diskFormats()
	if len(df) > 0 && b.plan.set.Has("no-final-image") {
		// DIB's no-final-image element: the tree formats (tar...) only.
		b.rep.printf("strata: element no-final-image: not writing %s (tree formats and the manifest only, as disk-image-create)\n", strings.Join(df, ", "))
		df = nil
	}
	if len(df) > 0 {
		raw := filepath.Join(b.dirs.build, "disk.raw")
		grubDir := "/usr/lib/grub"
		if _, err := os.Stat(filepath.Join(b.dirs.root, "usr/lib/grub/i386-pc")); err == nil {
			grubDir = filepath.Join(b.dirs.root, "usr/lib/grub")
		}
		t0 := time.Now()
		layout, err := disk.Assemble(ctx, disk.Options{
			Tree: b.dirs.root, Output: raw, Size: b.imageSize(), Bootable: b.plan.bootable,
			IDs: b.ids(), FSLabel: b.fsLabel(), GrubDir: grubDir,
			SourceDateEpoch: time.Unix(b.epoch, 0), Logger: b.log, ExtraSize: b.cfg.ExtraSize,
			Mkfs: disk.MkfsOptions{Extra: b.cfg.MkfsOptions, JournalMB: b.cfg.JournalSizeMB, ResizeBlocks: b.cfg.MaxOnlineResize},
		})
		if err != nil {
			return fmt.Errorf("assembling the disk: %w", err)
		}
		b.rep.printf("strata: disk assembled (%d MiB virtual) in %.1fs\n", layout.Size>>20, time.Since(t0).Seconds())
		for _, f := range df {
			dst := filepath.Join(b.dirs.out, cachedFile(f))
			t0 := time.Now()
			// raw is converted last: the others read it first.
			if f == "raw" && f == df[len(df)-1] {
				if err := os.Rename(raw, dst); err != nil {
					return err
				}
			} else if err := disk.Convert(ctx, raw, dst, qemuFormat(f), disk.ConvertOptions{
				Uncompressed: b.cfg.Uncompressed || f != "qcow2", Compression: compressionFor(f, b.cfg), Extra: b.cfg.QemuImgOptions,
			}); err != nil {
				return fmt.Errorf("writing %s: %w", f, err)
			}
			b.rep.printf("strata: wrote %s in %.1fs\n", f, time.Since(t0).Seconds())
			outs = append(outs, manifest.Output{File: name + "." + outputExt(f), Format: f, VirtualSize: layout.Size})
		}
		os.Remove(raw)
	}
	for _, f := range b.cfg.Formats {
		if !treeFormats[f] {
			continue
		}
		t0 := time.Now()
		o, err := b.writeTreeFormat(ctx, f, name)
		if err != nil {
			return fmt.Errorf("writing %s: %w", f, err)
		}
		b.rep.printf("strata: wrote %s in %.1fs\n", f, time.Since(t0).Seconds())
		outs = append(outs, o)
	}
	if err := b.collectExtras(); err != nil {
		return err
	}
	for i := range outs {
		if outs[i].Format == "docker" {
			continue
		}
		sum, size, err := sha256File(filepath.Join(b.dirs.out, cachedFile(outs[i].Format)))
		if err != nil {
			return err
		}
		outs[i].SHA256, outs[i].Size = sum, size
	}
	m, err := b.manifest(outs)
	if err != nil {
		return err
	}
	b.man = m
	return m.Write(filepath.Join(b.dirs.out, "manifest.json"))
}

// qemuFormat is qemu-img's name for a format: DIB's vhd is qemu's vpc.
func qemuFormat(f string) string {
	if f == "vhd" {
		return "vpc"
	}
	return f
}

func compressionFor(f string, cfg *Config) string {
	if f != "qcow2" || cfg.Uncompressed {
		return ""
	}
	return cfg.Compression
}

// writeTreeFormat writes a format made from the finished tree.
func (b *builder) writeTreeFormat(ctx context.Context, f, name string) (manifest.Output, error) {
	epoch := time.Unix(b.epoch, 0)
	dst := filepath.Join(b.dirs.out, cachedFile(f))
	out := manifest.Output{File: name + "." + outputExt(f), Format: f}
	switch f {
	case "tar":
		return out, disk.WriteTar(ctx, b.dirs.root, dst, epoch)
	case "tgz":
		tmp := filepath.Join(b.dirs.build, "tree.tar")
		defer os.Remove(tmp)
		if err := disk.WriteTar(ctx, b.dirs.root, tmp, epoch); err != nil {
			return out, err
		}
		return out, gzipFile(tmp, dst)
	case "squashfs":
		// As DIB's: xz, no /proc and /sys contents; times fixed to the
		// build's epoch so identical trees give identical files.
		args := []string{b.dirs.root, dst, "-comp", "xz", "-noappend", "-no-progress", "-quiet",
			"-wildcards", "-e", "proc/*", "-e", "sys/*", "-no-recovery",
			"-mkfs-time", strconv.FormatInt(b.epoch, 10), "-all-time", strconv.FormatInt(b.epoch, 10)}
		if o, err := exec.CommandContext(ctx, "mksquashfs", args...).CombinedOutput(); err != nil {
			return out, fmt.Errorf("mksquashfs: %v: %s", err, strings.TrimSpace(string(o)))
		}
		return out, nil
	case "docker":
		target := b.cfg.DockerTarget
		if target == "" {
			target = name
		}
		tmp := filepath.Join(b.dirs.build, "tree.tar")
		defer os.Remove(tmp)
		if err := disk.WriteTar(ctx, b.dirs.root, tmp, epoch); err != nil {
			return out, err
		}
		if o, err := exec.CommandContext(ctx, "docker", "import", tmp, target).CombinedOutput(); err != nil {
			return out, fmt.Errorf("docker import %s: %v: %s", target, err, strings.TrimSpace(string(o)))
		}
		out.File = "docker:" + target
		return out, nil
	}
	return out, fmt.Errorf("no writer for %s", f)
}

func gzipFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	zw, err := gzip.NewWriterLevel(out, gzip.BestCompression)
	if err != nil {
		out.Close()
		return err
	}
	if _, err := io.Copy(zw, in); err != nil {
		out.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// imageSize is the disk size asked for: -o's --image-size, else the
// block-device configuration's.
func (b *builder) imageSize() int64 {
	if b.cfg.ImageSize > 0 || b.layout == nil {
		return b.cfg.ImageSize
	}
	return b.layout.Size
}

// fsLabel is the root filesystem's label: the block-device
// configuration's, else --root-label, else DIB's default.
func (b *builder) fsLabel() string {
	if b.layout != nil && b.layout.RootLabel != "" {
		return b.layout.RootLabel
	}
	return b.cfg.rootLabel()
}

// outputSiblings lists what is beside the output path under its name
// (NAME.*), to find what hooks add there.
func (b *builder) outputSiblings() map[string]bool {
	out := map[string]bool{}
	prefix := filepath.Base(b.cfg.Output) + "."
	entries, _ := os.ReadDir(filepath.Dir(b.cfg.Output))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out[e.Name()] = true
		}
	}
	return out
}

// collectExtras copies what host hooks wrote beside the image as
// IMAGE_NAME.* (DIB's manifests element saves NAME.d/, baremetal
// NAME.vmlinuz and NAME.initrd) into the outputs, so a reused build puts
// them back too.
func (b *builder) collectExtras() error {
	own := map[string]bool{}
	name := filepath.Base(b.cfg.Output)
	for _, f := range b.cfg.Formats {
		for _, suffix := range []string{"", ".sha256", ".md5"} {
			own[name+"."+outputExt(f)+suffix] = true
		}
	}
	own[name+".manifest.json"], own[name+".spdx.json"] = true, true
	for n := range b.outputSiblings() {
		if b.before[n] || own[n] {
			continue
		}
		b.extras = append(b.extras, n)
	}
	sort.Strings(b.extras)
	if len(b.extras) == 0 {
		return nil
	}
	dir := filepath.Join(b.dirs.out, "extra")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, n := range b.extras {
		if out, err := exec.Command("cp", "-a", filepath.Join(filepath.Dir(b.cfg.Output), n), filepath.Join(dir, n)).CombinedOutput(); err != nil {
			return fmt.Errorf("keeping %s, which a hook wrote beside the image: %v: %s", n, err, strings.TrimSpace(string(out)))
		}
	}
	b.rep.printf("strata: hooks wrote beside the image: %s\n", strings.Join(b.extras, ", "))
	return nil
}

// removeExtrasOnFailure removes what hooks wrote beside the image when the
// build fails: a failed build leaves no half set of files.
func (b *builder) removeExtrasOnFailure(ctx context.Context) error {
	if len(b.files) > 0 || b.before == nil {
		return nil
	}
	for n := range b.outputSiblings() {
		if !b.before[n] {
			os.RemoveAll(filepath.Join(filepath.Dir(b.cfg.Output), n))
		}
	}
	return nil
}

func sha256File(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

func (b *builder) manifest(outs []manifest.Output) (*manifest.Manifest, error) {
	pkgs, err := manifest.DpkgPackages(b.dirs.root)
	if err != nil {
		return nil, fmt.Errorf("reading the image's package list: %w", err)
	}
	m := &manifest.Manifest{
		FormatVersion: manifest.Version, Image: filepath.Base(b.cfg.Output), Builder: b.cfg.Version,
		Created: time.Now().UTC(), SourceDateEpoch: b.epoch, Arch: b.cfg.Arch,
		Packages: pkgs, Outputs: outs, Hooks: b.hooks,
	}
	for _, e := range b.plan.set.Elements {
		m.Elements = append(m.Elements, manifest.Element{
			Name: e.Name, Path: e.Dir, Digest: b.plan.elementDigest[e.Name],
			FirstPhase: string(e.FirstPhase()), Provides: e.Provides,
		})
	}
	in := manifest.Inputs{
		Recipe: b.cfg.Recipe, Requested: b.plan.set.Requested, Env: map[string]string{},
		Files: map[string]manifest.File{}, PhaseKeys: map[string]string{},
		Mirror: b.plan.evaluated["DIB_DISTRIBUTION_MIRROR"],
	}
	if b.cfg.Recipe != "" {
		if d, err := fileDigest(b.cfg.Recipe); err == nil {
			in.RecipeDigest = d
		}
	}
	for k, v := range b.plan.env {
		if !volatileEnv[k] && !strings.HasPrefix(k, "STRATA_HOST_") {
			in.Env[k] = v
		}
	}
	for v, f := range b.plan.inputs {
		in.Files[v] = manifest.File{Path: f.Path, SHA256: f.SHA256, Size: f.Size}
	}
	for _, pp := range b.plan.phases {
		in.PhaseKeys[string(pp.phase)] = b.plan.phaseKey(pp.phase)
	}
	in.PhaseKeys["final"] = b.outputKey()
	m.Inputs = in
	if b.restored >= 0 {
		m.CachedFrom = b.plan.hooks()[b.restored].Path()
	}
	m.Datastore = b.cfg.Datastore
	if f, ok := b.plan.inputs["DIB_STRATA_AGENT_BINARY"]; ok {
		m.Agent = &manifest.Agent{SHA256: f.SHA256, Path: "/usr/sbin/strata-agent", Version: agentVersion(f.Path)}
	}
	return m, nil
}

// agentVersion asks the agent binary for its version.
func agentVersion(path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func (b *builder) dockerTarget() string {
	if b.cfg.DockerTarget != "" {
		return b.cfg.DockerTarget
	}
	return filepath.Base(b.cfg.Output)
}

func md5File(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := md5.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// cachedFile is an output's name in the build's out/ directory and in the
// cache: neutral, because the same outputs may be placed under another
// name by a later, identical build.
func cachedFile(format string) string { return "disk." + format }

// placeOutputs puts the finished files next to each other at the
// requested path: every file is written under a temporary name and renamed,
// so a reader never sees a partial image; checksum files, manifest and SBOM
// are written for the requested name (a reused build may have been made
// under another). The files then go into the cache for the next identical
// build.
func (b *builder) placeOutputs(ctx context.Context) error {
	src := b.dirs.out
	if b.reused {
		src, _ = b.cache.OutputDir(b.outputKey())
	}
	name := filepath.Base(b.cfg.Output)
	dir := filepath.Dir(b.cfg.Output)
	b.man.Image = name
	b.man.Reused = b.reused
	for i := range b.man.Outputs {
		b.man.Outputs[i].File = name + "." + outputExt(b.man.Outputs[i].Format)
	}
	place := func(dstName string, write func(tmp string) error) error {
		dst := filepath.Join(dir, dstName)
		tmp := filepath.Join(dir, "."+dstName+".partial")
		if err := write(tmp); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("placing %s: %w", dst, err)
		}
		if err := os.Rename(tmp, dst); err != nil {
			os.Remove(tmp)
			return err
		}
		b.placed = append(b.placed, dst)
		return nil
	}
	for i := range b.man.Outputs {
		if b.man.Outputs[i].Format == "docker" {
			b.man.Outputs[i].File = "docker:" + b.dockerTarget()
		}
	}
	var files []manifest.Output
	for _, o := range b.man.Outputs {
		if o.Format != "docker" {
			files = append(files, o)
		}
	}
	for _, o := range files {
		err := place(o.File, func(tmp string) error { return disk.CopySparse(ctx, filepath.Join(src, cachedFile(o.Format)), tmp) })
		if err != nil {
			return err
		}
	}
	for _, o := range files {
		line := fmt.Sprintf("%s  %s\n", o.SHA256, o.File)
		if err := place(o.File+".sha256", func(tmp string) error { return os.WriteFile(tmp, []byte(line), 0o644) }); err != nil {
			return err
		}
		if !b.cfg.Checksum {
			continue
		}
		// DIB's --checksum writes an MD5 beside the SHA-256.
		sum, err := md5File(filepath.Join(src, cachedFile(o.Format)))
		if err != nil {
			return err
		}
		md5line := fmt.Sprintf("%s  %s\n", sum, o.File)
		if err := place(o.File+".md5", func(tmp string) error { return os.WriteFile(tmp, []byte(md5line), 0o644) }); err != nil {
			return err
		}
	}
	if b.reused {
		// Files hooks wrote beside the image last time come back too.
		extras, _ := os.ReadDir(filepath.Join(src, "extra"))
		for _, e := range extras {
			dst := filepath.Join(dir, e.Name())
			os.RemoveAll(dst)
			if out, err := exec.CommandContext(ctx, "cp", "-a", filepath.Join(src, "extra", e.Name()), dst).CombinedOutput(); err != nil {
				return fmt.Errorf("placing %s: %v: %s", dst, err, strings.TrimSpace(string(out)))
			}
			b.placed = append(b.placed, dst)
		}
	}
	if err := place(name+".spdx.json", func(tmp string) error { return b.man.WriteSPDX(tmp, b.plan.distro) }); err != nil {
		return err
	}
	b.man.Seconds = time.Since(b.start).Seconds()
	// The manifest goes last: its presence says the set is complete.
	if err := place(name+".manifest.json", b.man.Write); err != nil {
		return err
	}
	b.files = b.placed
	if !b.reused && !b.cfg.NoCache {
		if err := b.cache.SaveOutputs(b.outputKey(), b.dirs.out); err != nil {
			b.log.Warn("could not cache the finished outputs", "err", err)
		}
	}
	return nil
}

// unplaceOnFailure removes outputs already placed when a later part of the
// build failed, so that no half set of files is left.
func (b *builder) unplaceOnFailure(ctx context.Context) error {
	if len(b.files) > 0 {
		return nil // placing finished: the build succeeded
	}
	for _, p := range b.placed {
		os.Remove(p)
	}
	return nil
}

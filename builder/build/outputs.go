package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
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
	fmt.Fprintf(h, "outputs-v2\n%s\nformats=%s\ncompression=%s\nuncompressed=%v\nsize=%d\nqemu-img=%s\nbootable=%v\nepoch=%d\n",
		b.plan.finalKey(), strings.Join(sortedCopy(b.cfg.Formats), ","), b.cfg.Compression, b.cfg.Uncompressed,
		b.cfg.ImageSize, strings.Join(b.cfg.QemuImgOptions, ","), b.plan.bootable, b.epoch)
	return hex.EncodeToString(h.Sum(nil))
}

// reuseOutputs short-cuts a build whose finished outputs are cached: the
// same elements, inputs and options give the same files.
func (b *builder) reuseOutputs(ctx context.Context) error {
	if b.cfg.NoCache {
		return nil
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
	if df := b.cfg.diskFormats(); len(df) > 0 {
		raw := filepath.Join(b.dirs.build, "disk.raw")
		grubDir := "/usr/lib/grub"
		if _, err := os.Stat(filepath.Join(b.dirs.root, "usr/lib/grub/i386-pc")); err == nil {
			grubDir = filepath.Join(b.dirs.root, "usr/lib/grub")
		}
		t0 := time.Now()
		layout, err := disk.Assemble(ctx, disk.Options{
			Tree: b.dirs.root, Output: raw, Size: b.cfg.ImageSize, Bootable: b.plan.bootable,
			IDs: b.ids(), FSLabel: "cloudimg-rootfs", GrubDir: grubDir,
			SourceDateEpoch: time.Unix(b.epoch, 0), Logger: b.log,
		})
		if err != nil {
			return fmt.Errorf("assembling the disk: %w", err)
		}
		b.rep.printf("strata: disk assembled (%d MiB virtual) in %.1fs\n", layout.Size>>20, time.Since(t0).Seconds())
		for _, f := range df {
			dst := filepath.Join(b.dirs.out, cachedFile(f))
			t0 := time.Now()
			if f == "raw" {
				if err := os.Rename(raw, dst); err != nil {
					return err
				}
			} else if err := disk.Convert(ctx, raw, dst, f, disk.ConvertOptions{
				Uncompressed: b.cfg.Uncompressed, Compression: b.cfg.Compression, Extra: b.cfg.QemuImgOptions,
			}); err != nil {
				return fmt.Errorf("writing %s: %w", f, err)
			}
			b.rep.printf("strata: wrote %s in %.1fs\n", f, time.Since(t0).Seconds())
			outs = append(outs, manifest.Output{File: name + "." + f, Format: f, VirtualSize: layout.Size})
		}
		os.Remove(raw)
	}
	for _, f := range b.cfg.Formats {
		if f != "tar" {
			continue
		}
		dst := filepath.Join(b.dirs.out, cachedFile("tar"))
		if err := disk.WriteTar(ctx, b.dirs.root, dst, time.Unix(b.epoch, 0)); err != nil {
			return fmt.Errorf("writing tar: %w", err)
		}
		outs = append(outs, manifest.Output{File: name + ".tar", Format: "tar"})
	}
	for i := range outs {
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
		b.man.Outputs[i].File = name + "." + b.man.Outputs[i].Format
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
	for _, o := range b.man.Outputs {
		err := place(o.File, func(tmp string) error { return copySparse(ctx, filepath.Join(src, cachedFile(o.Format)), tmp) })
		if err != nil {
			return err
		}
	}
	for _, o := range b.man.Outputs {
		line := fmt.Sprintf("%s  %s\n", o.SHA256, o.File)
		if err := place(o.File+".sha256", func(tmp string) error { return os.WriteFile(tmp, []byte(line), 0o644) }); err != nil {
			return err
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

func copySparse(ctx context.Context, src, dst string) error {
	out, err := exec.CommandContext(ctx, "cp", "--sparse=always", "--reflink=auto", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

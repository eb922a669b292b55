package disk

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// mke2fsConf replaces the host's /etc/mke2fs.conf (MKE2FS_CONFIG), so the
// root filesystem does not depend on the build host: Debian 12's ext4
// settings. 64bit, extents, flex_bg and metadata_csum are read by GRUB >=
// 2.02 and every kernel Debian ships.
const mke2fsConf = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
	default = {
	}
`

// ext4Disabled are switched off explicitly as well, whatever a future
// default says: orphan_file (kernels before 5.15 mount it read-only; trixie's
// mke2fs enables it) and metadata_csum_seed (GRUB 2.06 refuses it).
const ext4Disabled = "^orphan_file,^metadata_csum_seed"

// mkfsExt4 creates the root filesystem at ext in the image file and copies
// tree into it.
func mkfsExt4(ctx context.Context, image, tree string, ext Extent, label string, ids IDs, epoch time.Time, tmp string, mo MkfsOptions) error {
	conf := filepath.Join(tmp, "mke2fs.conf")
	if err := os.WriteFile(conf, []byte(mke2fsConf), 0o644); err != nil {
		return fmt.Errorf("root filesystem: %w", err)
	}
	blocks := ext.Size / ext4BlockSize
	extended := []string{
		"offset=" + strconv.FormatInt(ext.Offset, 10),
		// Discarding a regular file punches holes: keep mke2fs inside
		// its own range, and the file is fresh (zero) anyway.
		"nodiscard",
		// The file was created empty, so skip zeroing inode tables and
		// journal and mark the tables zeroed (no lazy init at boot).
		"assume_storage_prezeroed=1",
		"hash_seed=" + ids.RootHashSeed.String(),
		"root_owner=0:0",
	}
	if mo.ResizeBlocks > 0 {
		extended = append(extended, "resize="+strconv.FormatInt(mo.ResizeBlocks, 10))
	}
	for _, o := range mo.Extra {
		if o == "-d" || strings.HasPrefix(o, "/") {
			return fmt.Errorf("root filesystem: mkfs option %q: options may not name a device or a source directory", o)
		}
	}
	args := []string{
		"-q", "-F",
		"-t", "ext4",
		"-T", "default", // not "small" for sub-512 MiB sizes
		"-b", strconv.Itoa(ext4BlockSize),
		"-I", "256",
		"-O", ext4Disabled,
		"-L", label,
		"-U", ids.RootFS.String(),
		"-E", strings.Join(extended, ","),
	}
	if mo.JournalMB > 0 {
		args = append(args, "-J", "size="+strconv.Itoa(mo.JournalMB))
	}
	args = append(args, mo.Extra...)
	args = append(args, "-d", tree, image, strconv.FormatInt(blocks, 10))
	if _, err := run(ctx, append(ext4Env(epoch), "MKE2FS_CONFIG="+conf), "mkfs.ext4", args...); err != nil {
		return fmt.Errorf("root filesystem: %w", err)
	}
	return nil
}

// ext4Env makes e2fsprogs use the epoch as "now" (1.47.0 reads
// E2FSPROGS_FAKE_TIME; 1.47.1 and later SOURCE_DATE_EPOCH, and clamp
// copied timestamps to it).
func ext4Env(epoch time.Time) []string {
	if epoch.IsZero() {
		return toolEnv()
	}
	s := strconv.FormatInt(epoch.Unix(), 10)
	return toolEnv("E2FSPROGS_FAKE_TIME="+s, "SOURCE_DATE_EPOCH="+s)
}

// clampExt4Times sets every inode's atime and ctime to the epoch and clamps
// mtimes later than it, with one debugfs session. mke2fs 1.47.0 copies
// atime and ctime from the tree, and ctime cannot be set on the host.
func clampExt4Times(ctx context.Context, image string, ext Extent, entries []treeEntry, epoch time.Time, tmp string) error {
	e := epoch.Unix()
	cmdFile := filepath.Join(tmp, "debugfs-times.cmd")
	f, err := os.Create(cmdFile)
	if err != nil {
		return fmt.Errorf("clamp timestamps: %w", err)
	}
	w := bufio.NewWriter(f)
	for _, en := range entries {
		if strings.ContainsAny(en.rel, "\n\r") {
			f.Close()
			return fmt.Errorf("clamp timestamps: path %q contains a line break, which debugfs cannot be given", en.rel)
		}
		q := `"` + strings.ReplaceAll(en.rel, `"`, `""`) + `"`
		fmt.Fprintf(w, "sif %s atime @%d\nsif %s ctime @%d\n", q, e, q, e)
		if en.mtime > e {
			fmt.Fprintf(w, "sif %s mtime @%d\n", q, e)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("clamp timestamps: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("clamp timestamps: %w", err)
	}
	dev := fmt.Sprintf("%s?offset=%d", image, ext.Offset)
	// debugfs exits 0 when a command fails; its errors go to stderr, so
	// run it by hand and treat anything there but the banner as failure.
	out, err := runStderr(ctx, ext4Env(epoch), "debugfs", "-w", "-f", cmdFile, dev)
	if err != nil {
		return fmt.Errorf("clamp timestamps: %w", err)
	}
	var bad []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "debugfs ") {
			continue
		}
		bad = append(bad, line)
	}
	if len(bad) > 0 {
		if len(bad) > 5 {
			bad = append(bad[:5], fmt.Sprintf("... (%d more)", len(bad)-5))
		}
		return fmt.Errorf("clamp timestamps: debugfs: %s", strings.Join(bad, "; "))
	}
	return nil
}

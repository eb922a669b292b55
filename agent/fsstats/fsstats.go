// Package fsstats reads the usage of the filesystem holding a path, for
// heartbeats and the filesystem_stats operation. It only reads; it must
// not decide what "full" means (the controller does).
package fsstats

import (
	"fmt"
	"syscall"

	"strata/agent/wire"
)

// Stat returns the usage of the filesystem that holds path.
func Stat(path string) (wire.FilesystemStats, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return wire.FilesystemStats{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(st.Bsize)
	return wire.FilesystemStats{
		Path:        path,
		TotalBytes:  st.Blocks * bs,
		UsedBytes:   (st.Blocks - st.Bfree) * bs,
		FreeBytes:   st.Bavail * bs,
		TotalInodes: st.Files,
		FreeInodes:  st.Ffree,
		BlockSize:   bs,
	}, nil
}

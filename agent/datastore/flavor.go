package datastore

import (
	"bytes"
	"context"
	"os"

	"strata/agent/wire"
)

// FlavorApplier is a Manager that re-derives its memory-sized settings from
// a new flavor's RAM (a flavor resize): ApplyFlavor writes the base
// configuration for memoryMB — the same rendering prepare does — without
// restarting the server, and says whether the file changed. The
// dispatcher answers not_supported, naming the datastore, for a manager
// without it.
type FlavorApplier interface {
	ApplyFlavor(ctx context.Context, args wire.FlavorArgs) (wire.FlavorResult, error)
}

// SameFileContent reports whether path holds exactly data (false when it
// cannot be read).
func SameFileContent(path string, data []byte) bool {
	old, err := os.ReadFile(path)
	return err == nil && bytes.Equal(old, data)
}

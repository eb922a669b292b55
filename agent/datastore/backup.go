package datastore

import (
	"context"
	"io"

	"strata/agent/wire"
)

// Backuper is a Manager that can back its datastore up. The dispatcher
// type-asserts it and answers not_supported, naming the datastore, for a
// manager without it.
type Backuper interface {
	// Backup writes the datastore's native backup stream to w while the
	// datastore keeps serving: a full backup, or with args.Parent an
	// incremental from the parent's position. It must not stage the
	// backup on the guest's disks, and must stop (killing its tool) when
	// a write to w fails. An incremental the datastore cannot take is a
	// failed_precondition (or not_supported) error that says why.
	Backup(ctx context.Context, args wire.BackupArgs, w io.Writer) (BackupInfo, error)
}

// BackupInfo is what a backup reports besides its stream.
type BackupInfo struct {
	Position      wire.BackupPosition
	ServerVersion string
}

// Restorer is a Manager that can make a fresh guest's datastore from a
// chain of backups instead of preparing an empty one. Like Prepare it
// runs at most once (Lifecycle.Restore), and a failed restore leaves the
// datastore stopped and the guest failed: a half-restored datastore never
// serves.
type Restorer interface {
	Restore(ctx context.Context, args wire.RestoreArgs, chain ChainReader) (wire.RestoreResult, error)
}

// ChainReader opens the native stream of link i of a restore's chain.
// Links must be opened in order, each once. The stream's Read returns an
// error rather than EOF when the data is cut short or does not match the
// backup's digest; Close reports the same for what was left unread, so a
// restorer must check Close's error before it trusts the link.
type ChainReader func(ctx context.Context, i int) (io.ReadCloser, error)

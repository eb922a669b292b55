package wire

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
)

// Backups and restores move their data over channels of their own, beside
// the operation channel, on the same SSH connection:
//
//   - Channel "stream@strata-v1" is opened by the agent while it runs a
//     backup or restore operation; its extra data is a JSON StreamOpen
//     naming the operation and the stream's index (0 for a backup; the
//     position in the chain for a restore). The controller accepts it only
//     for an operation it sent to this agent and is waiting on, each index
//     at most once; anything else is rejected (ssh.Prohibited) and the
//     operation fails.
//   - The data is raw bytes: the datastore's native backup stream,
//     compressed with zstd in the guest. A backup's stream flows agent →
//     controller and ends with the agent's EOF (CloseWrite); a restore's
//     flows controller → agent and ends with the controller's EOF.
//   - EOF alone never proves a stream complete (a cut connection looks the
//     same). A backup's Result carries the StreamDigest (bytes, SHA-256) of
//     what the agent sent; the controller keeps the backup only when it
//     received exactly that. A restore's arguments carry the StreamDigest
//     of every stream; the agent fails the restore (and never starts the
//     datastore on the data) unless each stream matches.
//   - Either side closing the channel early aborts the operation: the
//     controller closes it to cancel a backup (deleted while running) or
//     when the object store fails; the agent when the datastore's tool
//     fails. The operation then ends with an error and its result says
//     why.
//
// The agent never learns where or how the controller stores the data: no
// object-store URL, credential or encryption key crosses the wire.

// CompressionZstd is the only compression a stream uses today.
const CompressionZstd = "zstd"

// MaxChainLength bounds a restore's chain (a full backup and its
// incrementals).
const MaxChainLength = 64

// StreamOpen is the extra data of a stream channel open.
type StreamOpen struct {
	OpID  string `json:"op_id"`
	Index int    `json:"index"`
}

// Validate checks the fields the controller relies on.
func (s StreamOpen) Validate() error {
	if !ValidOpID(s.OpID) {
		return fmt.Errorf("stream open: op_id %q is not a valid operation id", truncate(s.OpID, 140))
	}
	if s.Index < 0 || s.Index >= MaxChainLength {
		return fmt.Errorf("stream open: index %d is outside 0..%d", s.Index, MaxChainLength-1)
	}
	return nil
}

// StreamDigest identifies a stream's bytes as they crossed the wire
// (compressed).
type StreamDigest struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

var sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Validate checks the digest's form.
func (d StreamDigest) Validate() error {
	if d.Bytes < 0 {
		return fmt.Errorf("stream digest: bytes %d is negative", d.Bytes)
	}
	if !sha256Pattern.MatchString(d.SHA256) {
		return fmt.Errorf("stream digest: sha256 %q is not 64 lowercase hex digits", truncate(d.SHA256, 70))
	}
	return nil
}

// Equal reports whether two digests name the same bytes.
func (d StreamDigest) Equal(o StreamDigest) bool {
	return d.Bytes == o.Bytes && d.SHA256 == o.SHA256
}

// SHA256Hex renders a digest sum for StreamDigest.
func SHA256Hex(sum []byte) string { return hex.EncodeToString(sum) }

// BackupPosition says what a backup covers, in the datastore's own terms.
// The controller stores it and hands a parent's position back for an
// incremental and for restore; it never interprets it.
type BackupPosition struct {
	// StartLSN and EndLSN bound the backup: InnoDB LSNs for MariaDB
	// (from_lsn, to_lsn), WAL locations for PostgreSQL ("0/3000028").
	StartLSN string `json:"start_lsn,omitempty"`
	EndLSN   string `json:"end_lsn,omitempty"`
	// Timeline is PostgreSQL's WAL timeline.
	Timeline int `json:"timeline,omitempty"`
	// SystemID is the PostgreSQL cluster's system identifier: WAL
	// applies only to the cluster it came from.
	SystemID string `json:"system_id,omitempty"`
	// GTID is MariaDB's GTID position the backup is consistent with
	// ("0-1-42"; empty without a binary log): a replica seeded from the
	// backup starts replicating after it.
	GTID string `json:"gtid,omitempty"`
	// WALSegmentBytes is the PostgreSQL cluster's WAL segment size.
	WALSegmentBytes int64 `json:"wal_segment_bytes,omitempty"`
}

// BackupArgs ask for one backup. Parent is set for an incremental: the
// position the parent backup reported, from which the increment starts.
type BackupArgs struct {
	BackupID string          `json:"backup_id"`
	Parent   *BackupPosition `json:"parent,omitempty"`
}

var backupIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidBackupID reports whether id is a well-formed backup id.
func ValidBackupID(id string) bool { return backupIDPattern.MatchString(id) }

// Validate checks the arguments' form.
func (a BackupArgs) Validate() error {
	if !ValidBackupID(a.BackupID) {
		return fmt.Errorf("backup_id %q: want 1-128 characters of A-Z a-z 0-9 . _ -", truncate(a.BackupID, 140))
	}
	return nil
}

// BackupResult reports a finished backup.
type BackupResult struct {
	// Stream is what the agent sent on the stream channel.
	Stream StreamDigest `json:"stream"`
	// RawBytes is the native stream's size before compression.
	RawBytes    int64          `json:"raw_bytes"`
	Compression string         `json:"compression"`
	Position    BackupPosition `json:"position"`
	// ServerVersion is the datastore server's own version string.
	ServerVersion string `json:"server_version,omitempty"`
}

// RestoreBackup is one link of a restore's chain.
type RestoreBackup struct {
	BackupID    string         `json:"backup_id"`
	Incremental bool           `json:"incremental"`
	Position    BackupPosition `json:"position"`
	// Stream is the digest the stream must match (from the backup's
	// result).
	Stream      StreamDigest `json:"stream"`
	Compression string       `json:"compression"`
}

// RestoreArgs restore a fresh guest from Chain (the full backup first,
// then its incrementals oldest first): stream i of the operation carries
// Chain[i]. The rest is what prepare would take; databases and users come
// from the backup.
type RestoreArgs struct {
	MemoryMB      int                `json:"memory_mb,omitempty"`
	Configuration *ConfigurationArgs `json:"configuration,omitempty"`
	Chain         []RestoreBackup    `json:"chain"`
	// AuthPlugin is PrepareArgs.AuthPlugin: the plugin accounts created
	// later get.
	AuthPlugin string `json:"auth_plugin,omitempty"`
	// Standby (PostgreSQL) restores a replica's seed: the server starts
	// as a read-only standby of no source yet, so its WAL stays the
	// primary's and start_replication can attach it. Without it the
	// restored server ends recovery and writes WAL of its own, and no
	// primary can be followed from there. Other datastores ignore it.
	Standby bool `json:"standby,omitempty"`
}

// Validate checks the chain's shape: a full backup first, incrementals
// after it, each with a well-formed digest and a known compression.
func (a RestoreArgs) Validate() error {
	if len(a.Chain) == 0 {
		return fmt.Errorf("chain: at least the full backup is required")
	}
	if len(a.Chain) > MaxChainLength {
		return fmt.Errorf("chain: %d backups, at most %d", len(a.Chain), MaxChainLength)
	}
	for i, b := range a.Chain {
		if !ValidBackupID(b.BackupID) {
			return fmt.Errorf("chain[%d]: backup_id %q is not a valid backup id", i, truncate(b.BackupID, 140))
		}
		if (i == 0) == b.Incremental {
			if i == 0 {
				return fmt.Errorf("chain[0]: backup %s is incremental; a chain starts with a full backup", b.BackupID)
			}
			return fmt.Errorf("chain[%d]: backup %s is a full backup; only the first may be", i, b.BackupID)
		}
		if err := b.Stream.Validate(); err != nil {
			return fmt.Errorf("chain[%d] (%s): %w", i, b.BackupID, err)
		}
		if b.Compression != CompressionZstd {
			return fmt.Errorf("chain[%d] (%s): compression %q is not supported (want %s)", i, b.BackupID, truncate(b.Compression, 30), CompressionZstd)
		}
	}
	return nil
}

// RestoreResult reports a finished restore.
type RestoreResult struct {
	// Formatted: restore made a new filesystem on the data device.
	Formatted bool `json:"formatted"`
	// Backups is how many links of the chain were applied; RawBytes is the
	// native data they held.
	Backups  int   `json:"backups"`
	RawBytes int64 `json:"raw_bytes"`
	// TLSFingerprint is PrepareResult.TLSFingerprint.
	TLSFingerprint string `json:"tls_fingerprint,omitempty"`
}

// MarshalArgs encodes an operation's arguments (a helper for the
// controller's callers).
func MarshalArgs(v any) (json.RawMessage, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode arguments: %w", err)
	}
	return data, nil
}

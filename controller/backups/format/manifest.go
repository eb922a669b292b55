package format

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"strata/controller/objectstore"
)

// Version is the manifest version this package writes and reads.
const Version = 1

// Cipher is the one stream cipher there is: AES-256-GCM chunks in the
// STREAM construction (nonce = 88-bit chunk counter ‖ last-chunk byte).
const Cipher = "aes-256-gcm-stream"

// Manifest describes one stored backup. The Writer fills the fields from
// Cipher on; the caller fills the others and keeps the manifest (in its
// database, and with PutManifest beside the segments).
type Manifest struct {
	Version int `json:"version"`

	// Set by the caller; carried, not interpreted here.
	BackupID string `json:"backup_id"`
	// ParentID is the backup an incremental applies on top of; empty for
	// a full backup.
	ParentID string `json:"parent_id,omitempty"`
	// ChainPosition is 0 for a full backup, n for the n-th incremental.
	ChainPosition    int    `json:"chain_position"`
	Datastore        string `json:"datastore,omitempty"`
	DatastoreVersion string `json:"datastore_version,omitempty"`
	// Compression of the plaintext stream (e.g. "zstd").
	Compression string `json:"compression,omitempty"`
	// Positions the datastore reported: LSNs, GTIDs, WAL positions, under
	// names the datastore's backup code chooses (e.g. "from_lsn",
	// "to_lsn", "gtid", "start_wal", "end_wal").
	Positions map[string]string `json:"positions,omitempty"`
	CreatedAt time.Time         `json:"created_at"`

	// Set by the Writer.
	Cipher string `json:"cipher"`
	// ChunkSize is the plaintext bytes per sealed chunk.
	ChunkSize int `json:"chunk_size"`
	// SegmentSize is the stored bytes of every segment but the last.
	SegmentSize int64 `json:"segment_size"`
	// KEKID names the key-encryption key that wrapped WrappedKey.
	KEKID      string `json:"kek_id"`
	WrappedKey []byte `json:"wrapped_key"`
	// PlainBytes went into the Writer; StoredBytes are in the segments.
	PlainBytes  int64     `json:"plain_bytes"`
	StoredBytes int64     `json:"stored_bytes"`
	Segments    []Segment `json:"segments"`
}

// Segment is one stored object of a backup.
type Segment struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// SHA256 of the stored (encrypted) bytes, in hex.
	SHA256 string `json:"sha256"`
}

// Check says what is wrong with a manifest's own fields, if anything:
// a manifest is checked before anything is read with it.
func (m *Manifest) Check() error {
	switch {
	case m.Version != Version:
		return fmt.Errorf("manifest version %d: this controller reads version %d", m.Version, Version)
	case m.Cipher != Cipher:
		return fmt.Errorf("manifest: cipher %q: want %q", m.Cipher, Cipher)
	case m.ChunkSize < 1 || m.ChunkSize > maxChunkSize:
		return fmt.Errorf("manifest: chunk size %d out of range 1..%d", m.ChunkSize, maxChunkSize)
	case len(m.Segments) == 0:
		return fmt.Errorf("manifest: no segments")
	case len(m.WrappedKey) == 0:
		return fmt.Errorf("manifest: no wrapped data key")
	}
	var total int64
	for i, s := range m.Segments {
		if !objectstore.ValidName(s.Name) {
			return fmt.Errorf("manifest: segment %d: invalid name %q", i+1, s.Name)
		}
		if d, err := hex.DecodeString(s.SHA256); err != nil || len(d) != 32 {
			return fmt.Errorf("manifest: segment %d (%s): SHA-256 %q is not 64 hex digits", i+1, s.Name, s.SHA256)
		}
		if s.Size < overhead || (i < len(m.Segments)-1 && s.Size != m.SegmentSize) {
			return fmt.Errorf("manifest: segment %d (%s): size %d does not fit segment size %d", i+1, s.Name, s.Size, m.SegmentSize)
		}
		total += s.Size
	}
	if total != m.StoredBytes {
		return fmt.Errorf("manifest: segments add up to %d bytes, stored bytes say %d", total, m.StoredBytes)
	}
	return nil
}

// ManifestName is where PutManifest stores a backup's manifest.
func ManifestName(prefix string) string { return prefix + "/manifest.json" }

// PutManifest stores m beside its segments, so a store can be read back
// without the controller's database (the data key stays wrapped).
func PutManifest(ctx context.Context, store objectstore.Store, prefix string, m *Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if _, err := store.Put(ctx, ManifestName(prefix), bytes.NewReader(data)); err != nil {
		return fmt.Errorf("store manifest: %w", err)
	}
	return nil
}

// GetManifest reads and checks the manifest PutManifest stored.
func GetManifest(ctx context.Context, store objectstore.Store, prefix string) (*Manifest, error) {
	rc, err := store.Get(ctx, ManifestName(prefix))
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", ManifestName(prefix), err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", ManifestName(prefix), err)
	}
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestName(prefix), err)
	}
	return &m, nil
}

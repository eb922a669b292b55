// Package backups is the controller's side of backups and restores: the
// backup records (backups.go), the requests that create and delete them
// and the durable tasks that carry them out (manager.go, tasks.go), the
// restore of a chain into a new instance (restore.go), and the garbage
// collector that removes the objects of failed and deleted backups.
//
// The data path is guest → the agent's SSH connection → controller →
// object store: the agent streams its datastore's native backup,
// compressed, over a data channel of the operation (agent/wire), and the
// controller encrypts, segments and uploads it (backups/format) into an
// objectstore.Store. The guest never holds a store credential, URL or data
// key. What the API looks like is controller/api's business; this package
// decides and records, and never talks to a guest except through
// operations and their data channels on the agent endpoint.
package backups

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"strata/agent/wire"
	"strata/controller/backups/format"
	"strata/controller/store"
)

// Backup statuses (Trove's).
const (
	StatusNew          = "NEW"
	StatusBuilding     = "BUILDING"
	StatusCompleted    = "COMPLETED"
	StatusFailed       = "FAILED"
	StatusDeleteFailed = "DELETE_FAILED"
	// statusDeleted marks a deleted backup whose objects are gone (its
	// row is hidden; never shown).
	statusDeleted = "DELETED"
)

// Backup is one backup as the controller records it.
type Backup struct {
	ID          string
	ProjectID   string
	InstanceID  string
	Name        string
	Description string
	// ParentID is the backup an incremental applies on; empty for a full
	// backup. ChainPosition is 0 for a full backup, n for the n-th
	// incremental on it.
	ParentID           string
	ChainPosition      int
	DatastoreVersionID string
	Status             string
	// FailReason says why a backup is FAILED or DELETE_FAILED.
	FailReason string
	// Store names the object store driver; Location is the backup's
	// object prefix in it.
	Store    string
	Location string
	// StoredBytes are in the store (compressed, encrypted); RawBytes is
	// the datastore's native backup before compression.
	StoredBytes int64
	RawBytes    int64
	// Result is what the agent reported (positions, stream digest);
	// Manifest describes the stored objects. Both are set once COMPLETED.
	Result    *wire.BackupResult
	Manifest  *format.Manifest
	CreatedAt time.Time
	UpdatedAt time.Time
	DeletedAt time.Time
}

// Running reports whether the backup has not ended yet.
func (b Backup) Running() bool { return b.Status == StatusNew || b.Status == StatusBuilding }

// Incremental reports whether the backup applies on a parent.
func (b Backup) Incremental() bool { return b.ParentID != "" }

// ErrNotFound: unknown, deleted, or another project's backup.
var ErrNotFound = errors.New("backup not found")

const columns = `id, project_id, instance_id, name, description, parent_id, chain_position, datastore_version_id, status,
	fail_reason, store, location, stored_bytes, raw_bytes, result, manifest, created_at, updated_at, deleted_at`

func scan(s store.Scanner) (Backup, error) {
	var b Backup
	var desc, parent, reason, result, manifest sql.NullString
	var created, updated int64
	var deleted sql.NullInt64
	err := s.Scan(&b.ID, &b.ProjectID, &b.InstanceID, &b.Name, &desc, &parent, &b.ChainPosition, &b.DatastoreVersionID,
		&b.Status, &reason, &b.Store, &b.Location, &b.StoredBytes, &b.RawBytes, &result, &manifest, &created, &updated, &deleted)
	if err != nil {
		return b, err
	}
	b.Description, b.ParentID, b.FailReason = desc.String, parent.String, reason.String
	b.CreatedAt, b.UpdatedAt, b.DeletedAt = store.FromMillis(created), store.FromMillis(updated), store.NullMillis(deleted)
	if result.Valid && result.String != "" {
		var r wire.BackupResult
		if err := json.Unmarshal([]byte(result.String), &r); err != nil {
			return b, fmt.Errorf("backup %s: stored result: %w", b.ID, err)
		}
		b.Result = &r
	}
	if manifest.Valid && manifest.String != "" {
		var m format.Manifest
		if err := json.Unmarshal([]byte(manifest.String), &m); err != nil {
			return b, fmt.Errorf("backup %s: stored manifest: %w", b.ID, err)
		}
		b.Manifest = &m
	}
	return b, nil
}

func insert(ctx context.Context, q store.Querier, b Backup) error {
	_, err := q.Exec(ctx, `INSERT INTO backups (`+columns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		b.ID, b.ProjectID, b.InstanceID, b.Name, nullString(b.Description), nullString(b.ParentID), b.ChainPosition,
		b.DatastoreVersionID, b.Status, nullString(b.FailReason), b.Store, b.Location, b.StoredBytes, b.RawBytes,
		nil, nil, store.Millis(b.CreatedAt), store.Millis(b.CreatedAt), nil)
	if err != nil {
		return fmt.Errorf("record backup %s: %w", b.ID, err)
	}
	return nil
}

// Get returns a live (not deleted) backup of project; an empty project
// finds any project's (the admin's view).
func Get(ctx context.Context, q store.Querier, project, id string) (Backup, error) {
	query := `SELECT ` + columns + ` FROM backups WHERE id = ? AND deleted_at IS NULL`
	args := []any{id}
	if project != "" {
		query += ` AND project_id = ?`
		args = append(args, project)
	}
	b, err := scan(q.QueryRow(ctx, query, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return b, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return b, err
}

// getAny returns a backup even if it is deleted (the tasks' view).
func getAny(ctx context.Context, q store.Querier, id string) (Backup, error) {
	b, err := scan(q.QueryRow(ctx, `SELECT `+columns+` FROM backups WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return b, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return b, err
}

// ListOptions filter a listing. Empty fields do not filter; an empty
// Project lists every project's backups (the admin's all_projects).
type ListOptions struct {
	Project            string
	InstanceID         string
	DatastoreVersionID []string
}

// List returns live backups, newest first.
func List(ctx context.Context, q store.Querier, o ListOptions) ([]Backup, error) {
	query := `SELECT ` + columns + ` FROM backups WHERE deleted_at IS NULL`
	var args []any
	if o.Project != "" {
		query += ` AND project_id = ?`
		args = append(args, o.Project)
	}
	if o.InstanceID != "" {
		query += ` AND instance_id = ?`
		args = append(args, o.InstanceID)
	}
	if o.DatastoreVersionID != nil {
		if len(o.DatastoreVersionID) == 0 {
			return nil, nil
		}
		query += ` AND datastore_version_id IN (?` + repeat(", ?", len(o.DatastoreVersionID)-1) + `)`
		for _, v := range o.DatastoreVersionID {
			args = append(args, v)
		}
	}
	query += ` ORDER BY created_at DESC, id`
	return store.All(ctx, q, scan, query, args...)
}

// children returns the live backups whose parent is id.
func children(ctx context.Context, q store.Querier, id string) ([]Backup, error) {
	return store.All(ctx, q, scan, `SELECT `+columns+` FROM backups WHERE parent_id = ? AND deleted_at IS NULL ORDER BY created_at`, id)
}

// liveIDs are the backups whose objects must stay: every row not deleted
// and not FAILED (a failed backup's objects are garbage).
func liveIDs(ctx context.Context, q store.Querier) (map[string]bool, error) {
	ids, err := store.All(ctx, q, store.ScanString, `SELECT id FROM backups WHERE deleted_at IS NULL AND status <> ?`, StatusFailed)
	if err != nil {
		return nil, err
	}
	live := map[string]bool{}
	for _, id := range ids {
		live[id] = true
	}
	return live, nil
}

func repeat(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func truncReason(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "..."
	}
	return s
}

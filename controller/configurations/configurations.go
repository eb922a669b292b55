// Package configurations keeps configuration groups — named sets of
// datastore parameter values, per project and datastore version — and
// validates values against the version's rules (wire.ParameterRule, loaded
// from validation-rules/ by the registry). A value the rules refuse is a
// *ValidationError naming the parameter; the API answers it with 422.
//
// It stores and validates. Pushing values to instances is lifecycle's
// configure task.
package configurations

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"strata/agent/wire"
	"strata/controller/store"
)

// ErrNotFound is returned for an unknown or other project's group.
var ErrNotFound = errors.New("configuration group not found")

// ErrInvalid wraps bad names and descriptions.
var ErrInvalid = errors.New("invalid configuration group")

// ValidationError says which parameter a value was refused for and why.
type ValidationError struct {
	Parameter string
	Reason    string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("configuration parameter %q: %s", e.Parameter, e.Reason)
}

// Validate checks every value against its rule. Parameters are checked in
// name order; the first problem is returned. No rules at all means the
// version takes no configuration.
func Validate(rules []wire.ParameterRule, values map[string]json.RawMessage) error {
	byName := make(map[string]wire.ParameterRule, len(rules))
	for _, r := range rules {
		byName[r.Name] = r
	}
	names := make([]string, 0, len(values))
	for n := range values {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r, ok := byName[n]
		if !ok {
			if len(rules) == 0 {
				return &ValidationError{Parameter: trunc(n), Reason: "this datastore version has no validation rules loaded, so it takes no configuration parameters"}
			}
			return &ValidationError{Parameter: trunc(n), Reason: "not a configurable parameter of this datastore version"}
		}
		if _, err := r.Check(values[n]); err != nil {
			return &ValidationError{Parameter: n, Reason: err.Error()}
		}
	}
	return nil
}

// RestartRequired reports whether any of the values needs a restart to
// take effect.
func RestartRequired(rules []wire.ParameterRule, values map[string]json.RawMessage) bool {
	for _, r := range rules {
		if _, ok := values[r.Name]; ok && r.RestartRequired {
			return true
		}
	}
	return false
}

// Group is a configuration group.
type Group struct {
	ID                 string
	ProjectID          string
	Name               string
	Description        string
	DatastoreVersionID string
	Values             map[string]json.RawMessage
	CreatedAt          time.Time
	UpdatedAt          time.Time
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._ -]{0,63}$`)

// CheckName validates a group's name and description.
func CheckName(name, description string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%w: name %q: use 1-64 characters of A-Z a-z 0-9 . _ - and spaces", ErrInvalid, trunc(name))
	}
	if len(description) > 1024 {
		return fmt.Errorf("%w: description longer than 1024 characters", ErrInvalid)
	}
	return nil
}

func encodeValues(values map[string]json.RawMessage) (string, error) {
	compact := make(map[string]json.RawMessage, len(values))
	for k, v := range values {
		var b bytes.Buffer
		if err := json.Compact(&b, v); err != nil {
			return "", err
		}
		compact[k] = b.Bytes()
	}
	data, err := json.Marshal(compact)
	return string(data), err
}

// Insert stores a new group (validated by the caller).
func Insert(ctx context.Context, q store.Querier, g Group) error {
	vals, err := encodeValues(g.Values)
	if err != nil {
		return err
	}
	_, err = q.Exec(ctx, `INSERT INTO configurations (id, project_id, name, description, datastore_version_id, values_json, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, g.ID, g.ProjectID, g.Name, g.Description, g.DatastoreVersionID, vals,
		store.Millis(g.CreatedAt), store.Millis(g.CreatedAt))
	return err
}

// Save writes a group's name, description and values.
func Save(ctx context.Context, q store.Querier, g Group, now time.Time) error {
	vals, err := encodeValues(g.Values)
	if err != nil {
		return err
	}
	res, err := q.Exec(ctx, `UPDATE configurations SET name = ?, description = ?, values_json = ?, updated_at = ? WHERE id = ? AND project_id = ?`,
		g.Name, g.Description, vals, store.Millis(now), g.ID, g.ProjectID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("configuration %q: %w", g.ID, ErrNotFound)
	}
	return nil
}

// Delete removes a group.
func Delete(ctx context.Context, q store.Querier, project, id string) error {
	res, err := q.Exec(ctx, `DELETE FROM configurations WHERE id = ? AND project_id = ?`, id, project)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("configuration %q: %w", trunc(id), ErrNotFound)
	}
	return nil
}

const columns = `id, project_id, name, description, datastore_version_id, values_json, created_at, updated_at`

func scan(s store.Scanner) (Group, error) {
	var g Group
	var vals string
	var created, updated int64
	if err := s.Scan(&g.ID, &g.ProjectID, &g.Name, &g.Description, &g.DatastoreVersionID, &vals, &created, &updated); err != nil {
		return g, err
	}
	if err := json.Unmarshal([]byte(vals), &g.Values); err != nil {
		return g, fmt.Errorf("configuration %s: stored values: %w", g.ID, err)
	}
	g.CreatedAt, g.UpdatedAt = store.FromMillis(created), store.FromMillis(updated)
	return g, nil
}

// Get returns a group of project (empty project: any).
func Get(ctx context.Context, q store.Querier, project, id string) (Group, error) {
	g, err := scan(q.QueryRow(ctx, `SELECT `+columns+` FROM configurations WHERE id = ? AND (? = '' OR project_id = ?)`, id, project, project))
	if errors.Is(err, sql.ErrNoRows) {
		return g, fmt.Errorf("configuration %q: %w", trunc(id), ErrNotFound)
	}
	return g, err
}

// List returns a project's groups, oldest first.
func List(ctx context.Context, q store.Querier, project string) ([]Group, error) {
	return store.All(ctx, q, scan, `SELECT `+columns+` FROM configurations WHERE project_id = ? ORDER BY created_at, id`, project)
}

// InstanceCount counts the live instances a group is attached to.
func InstanceCount(ctx context.Context, q store.Querier, id string) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT COUNT(*) FROM instances WHERE configuration_id = ? AND deleted_at IS NULL`, id).Scan(&n)
	return n, err
}

func trunc(s string) string {
	if len(s) > 70 {
		return s[:70] + "..."
	}
	return s
}

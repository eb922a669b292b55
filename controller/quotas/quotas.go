// Package quotas keeps per-project limits on instances, volume gigabytes
// and backups (Trove's quotas) and checks them atomically: Check runs in
// the caller's transaction, derives the project's usage from the rows
// themselves and refuses when the request would pass a limit, so two
// concurrent creates cannot both take the last slot.
//
// It stores limits and counts rows; it does not create, resize or back up
// anything, and it keeps no usage counter (a counter can drift from the
// rows; a count cannot).
package quotas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"strata/controller/store"
)

// Resource is a quota's name, as Trove spells it.
type Resource string

const (
	// Instances counts the project's instances that are not deleted.
	Instances Resource = "instances"
	// Volumes counts gigabytes: the volume sizes of those instances, plus
	// the growth of resizes still in progress.
	Volumes Resource = "volumes"
	// Backups counts the project's backups that are not deleted.
	Backups Resource = "backups"
)

// Resources are every resource, in Trove's order of display.
var Resources = []Resource{Instances, Volumes, Backups}

// Known reports whether name is a resource.
func Known(name string) bool { return slices.Contains(Resources, Resource(name)) }

// Unlimited is the limit that never refuses (Trove's -1).
const Unlimited = -1

// Limits maps resources to amounts (limits, usage or a request's deltas).
type Limits map[Resource]int64

// TroveDefaults are Trove's default limits: max_instances_per_tenant,
// max_volumes_per_tenant (GB) and max_backups_per_tenant.
var TroveDefaults = Limits{Instances: 10, Volumes: 40, Backups: 50}

// ErrExceeded is what Check's refusal wraps (the API answers 413).
var ErrExceeded = errors.New("quota exceeded")

// ExceededError names the resources a request would pass.
type ExceededError struct{ Resources []Resource }

// Error is Trove's message: "Quota exceeded for resources: ['instances']."
func (e *ExceededError) Error() string {
	names := make([]string, len(e.Resources))
	for i, r := range e.Resources {
		names[i] = "'" + string(r) + "'"
	}
	return "Quota exceeded for resources: [" + strings.Join(names, ", ") + "]."
}

func (e *ExceededError) Unwrap() error { return ErrExceeded }

// Quotas reads, sets and checks limits. Defaults are the limits of a
// project the operator set nothing for (missing resources: TroveDefaults).
type Quotas struct {
	DB       *store.DB
	Defaults Limits
}

func (q *Quotas) defaultOf(r Resource) int64 {
	if v, ok := q.Defaults[r]; ok {
		return v
	}
	return TroveDefaults[r]
}

// Limits returns the project's limits: what was set for it, else the
// defaults.
func (q *Quotas) Limits(ctx context.Context, db store.Querier, project string) (Limits, error) {
	out := Limits{}
	for _, r := range Resources {
		out[r] = q.defaultOf(r)
	}
	rows, err := db.Query(ctx, `SELECT resource, hard_limit FROM quotas WHERE project_id = ?`, project)
	if err != nil {
		return nil, fmt.Errorf("quotas of project %s: %w", project, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var limit int64
		if err := rows.Scan(&name, &limit); err != nil {
			return nil, err
		}
		if Known(name) {
			out[Resource(name)] = limit
		}
	}
	return out, rows.Err()
}

// Set stores limits for the project (only the resources given) and
// returns all of its limits afterwards. A limit is Unlimited or more.
func (q *Quotas) Set(ctx context.Context, project string, set Limits) (Limits, error) {
	for r, v := range set {
		if !Known(string(r)) {
			return nil, fmt.Errorf("unknown quota resource %q (known: instances, volumes, backups)", r)
		}
		if v < Unlimited {
			return nil, fmt.Errorf("quota %s: %d is below -1 (unlimited)", r, v)
		}
	}
	var out Limits
	now := store.Millis(time.Now())
	err := q.DB.InTx(ctx, func(tx *store.Tx) error {
		for _, r := range Resources {
			v, ok := set[r]
			if !ok {
				continue
			}
			if _, err := tx.Exec(ctx, `INSERT INTO quotas (project_id, resource, hard_limit, updated_at) VALUES (?, ?, ?, ?)
				ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = excluded.hard_limit, updated_at = excluded.updated_at`,
				project, string(r), v, now); err != nil {
				return fmt.Errorf("set quota %s of project %s: %w", r, project, err)
			}
		}
		var err error
		out, err = q.Limits(ctx, tx, project)
		return err
	})
	return out, err
}

// resizeKind is lifecycle.KindResize: a queued resize task holds the
// volume size it grows to (its payload's size_gb) until it is done, when
// the instance's volume_size_gb takes it. lifecycle's tests check the two
// names agree (TestResizeQuotaCountsQueuedResizes).
const resizeKind = "resize_volume"

// Usage derives the project's usage from its rows.
func Usage(ctx context.Context, db store.Querier, project string) (Limits, error) {
	var n, gb int64
	if err := db.QueryRow(ctx, `SELECT COUNT(*), COALESCE(SUM(volume_size_gb), 0) FROM instances
		WHERE project_id = ? AND deleted_at IS NULL`, project).Scan(&n, &gb); err != nil {
		return nil, fmt.Errorf("usage of project %s: %w", project, err)
	}
	var backups int64
	if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM backups WHERE project_id = ? AND deleted_at IS NULL`, project).Scan(&backups); err != nil {
		return nil, fmt.Errorf("usage of project %s: %w", project, err)
	}
	growth, err := resizeGrowth(ctx, db, project)
	if err != nil {
		return nil, err
	}
	return Limits{Instances: n, Volumes: gb + growth, Backups: backups}, nil
}

// resizeGrowth is how many gigabytes the project's queued resizes add.
func resizeGrowth(ctx context.Context, db store.Querier, project string) (int64, error) {
	rows, err := db.Query(ctx, `SELECT t.payload, i.volume_size_gb FROM tasks t JOIN instances i ON i.id = t.instance_id
		WHERE t.kind = ? AND t.state = 'queued' AND i.project_id = ? AND i.deleted_at IS NULL`, resizeKind, project)
	if err != nil {
		return 0, fmt.Errorf("usage of project %s: resizes: %w", project, err)
	}
	defer rows.Close()
	var growth int64
	for rows.Next() {
		var payload string
		var current int64
		if err := rows.Scan(&payload, &current); err != nil {
			return 0, err
		}
		var p struct {
			SizeGB int64 `json:"size_gb"`
		}
		if err := json.Unmarshal([]byte(payload), &p); err != nil {
			return 0, fmt.Errorf("usage of project %s: a resize task's payload: %w", project, err)
		}
		if p.SizeGB > current {
			growth += p.SizeGB - current
		}
	}
	return growth, rows.Err()
}

// Check refuses, with an *ExceededError, a request that would add delta
// to the project's usage past a limit. It must run in the transaction
// that then writes the rows it counts: on SQLite every write transaction
// holds the database's write lock from its start (store opens them
// IMMEDIATE), on PostgreSQL Check takes a transaction-scoped advisory
// lock per project; either way a concurrent Check of the same project
// waits until this transaction ends and then counts its rows.
func (q *Quotas) Check(ctx context.Context, tx *store.Tx, project string, delta Limits) error {
	if tx.Dialect() == store.Postgres {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext(?))`, "strata-quota:"+project); err != nil {
			return fmt.Errorf("quota lock of project %s: %w", project, err)
		}
	}
	limits, err := q.Limits(ctx, tx, project)
	if err != nil {
		return err
	}
	used, err := Usage(ctx, tx, project)
	if err != nil {
		return err
	}
	var over []Resource
	for _, r := range Resources {
		d := delta[r]
		if d <= 0 || limits[r] == Unlimited {
			continue
		}
		if used[r]+d > limits[r] {
			over = append(over, r)
		}
	}
	if len(over) > 0 {
		slices.Sort(over)
		return &ExceededError{Resources: over}
	}
	return nil
}

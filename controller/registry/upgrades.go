package registry

import (
	"context"
	"fmt"
	"strings"

	"strata/controller/store"
)

// AddUpgradePath declares that instances of datastore's version from may
// be upgraded to its version to (each by id or name). Both must be
// versions of the one datastore, run by the same manager, and different.
// A PostgreSQL major upgrade is refused: it needs pg_upgrade with both
// majors' binaries, which no strata image carries, and a backup (a
// physical copy) restores onto its own major only; the way across is a
// logical dump loaded into an instance of the new version.
// Declaring a path again is not an error.
func (r *Registry) AddUpgradePath(ctx context.Context, datastore, from, to string) (Version, Version, error) {
	f, err := r.FindVersion(ctx, datastore, from)
	if err != nil {
		return f, Version{}, err
	}
	t, err := findVersion(ctx, r.DB, f.DatastoreID, to)
	if err != nil {
		return f, t, err
	}
	if err := upgradable(f, t); err != nil {
		return f, t, err
	}
	_, err = r.DB.Exec(ctx, `INSERT INTO datastore_version_upgrades (from_version_id, to_version_id, created_at) VALUES (?, ?, ?)
		ON CONFLICT (from_version_id, to_version_id) DO NOTHING`, f.ID, t.ID, store.Millis(r.now()))
	return f, t, err
}

// upgradable says why an instance of f cannot be moved to t, if it cannot.
func upgradable(f, t Version) error {
	switch {
	case f.ID == t.ID:
		return invalid("%s %s cannot be upgraded to itself", f.DatastoreName, f.Name)
	case f.Manager != t.Manager:
		return invalid("%s %s runs the %s manager and %s the %s manager: an upgrade keeps the manager", f.DatastoreName, f.Name, f.Manager, t.Name, t.Manager)
	case f.Manager == "postgresql" && majorOf(f.Name) != majorOf(t.Name):
		return invalid("PostgreSQL %s to %s is a major upgrade, which needs pg_upgrade with both versions' binaries and is not supported (nor can a backup move it: a strata backup is a physical copy that restores onto the same major only): dump the databases with pg_dump and load them with pg_restore into a new instance of %s %s", f.Name, t.Name, t.DatastoreName, t.Name)
	}
	return nil
}

// majorOf is a version name's first dotted part ("15" of "15.4").
func majorOf(name string) string {
	major, _, _ := strings.Cut(name, ".")
	return major
}

// DeleteUpgradePath removes a declared path; one not declared is
// ErrNotFound.
func (r *Registry) DeleteUpgradePath(ctx context.Context, datastore, from, to string) error {
	f, err := r.FindVersion(ctx, datastore, from)
	if err != nil {
		return err
	}
	t, err := findVersion(ctx, r.DB, f.DatastoreID, to)
	if err != nil {
		return err
	}
	res, err := r.DB.Exec(ctx, `DELETE FROM datastore_version_upgrades WHERE from_version_id = ? AND to_version_id = ?`, f.ID, t.ID)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return fmt.Errorf("%s %s has no upgrade path to %s: %w", f.DatastoreName, f.Name, t.Name, ErrNotFound)
	}
	return nil
}

// UpgradeTargets are the versions an instance of versionID may be
// upgraded to, by name.
func (r *Registry) UpgradeTargets(ctx context.Context, versionID string) ([]Version, error) {
	return store.All(ctx, r.DB, scanVersion, `SELECT `+versionColumns+` FROM datastore_versions v JOIN datastores d ON d.id = v.datastore_id
		JOIN datastore_version_upgrades u ON u.to_version_id = v.id
		WHERE u.from_version_id = ? ORDER BY v.name`, versionID)
}

// UpgradeTarget finds version target (id or name) of the datastore of
// versionID, and fails with ErrInvalid naming the allowed targets unless
// a path from versionID to it is declared.
func (r *Registry) UpgradeTarget(ctx context.Context, versionID, target string) (Version, error) {
	from, err := r.Version(ctx, versionID)
	if err != nil {
		return from, err
	}
	allowed, err := r.UpgradeTargets(ctx, versionID)
	if err != nil {
		return from, err
	}
	var names []string
	for _, v := range allowed {
		if v.ID == target || v.Name == target {
			if err := upgradable(from, v); err != nil {
				return v, err
			}
			return v, nil
		}
		names = append(names, v.Name)
	}
	if len(names) == 0 {
		return from, invalid("%s %s has no upgrade path declared: it cannot be upgraded", from.DatastoreName, from.Name)
	}
	return from, invalid("%s %s can be upgraded only to %s, not to %q", from.DatastoreName, from.Name, strings.Join(names, ", "), trunc(target))
}

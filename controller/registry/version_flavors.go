package registry

import (
	"context"
	"fmt"

	"strata/controller/store"
)

// AddVersionFlavors adds flavors (ids or names) to a version's flavor
// list (Trove's datastore_version_flavor_add): from then on the version's
// instances are created only with a listed flavor. Every flavor is
// looked up first; one that does not exist changes nothing. Adding a
// listed flavor again is not an error.
func (r *Registry) AddVersionFlavors(ctx context.Context, datastore, version string, flavors []string) (Version, error) {
	v, err := r.FindVersion(ctx, datastore, version)
	if err != nil {
		return v, err
	}
	if len(flavors) == 0 {
		return v, invalid("name at least one flavor to add to %s %s", v.DatastoreName, v.Name)
	}
	var ids []string
	for _, ref := range flavors {
		f, err := r.Flavor(ctx, ref)
		if err != nil {
			return v, err
		}
		ids = append(ids, f.ID)
	}
	now := store.Millis(r.now())
	return v, r.DB.InTx(ctx, func(tx *store.Tx) error {
		for _, id := range ids {
			if _, err := tx.Exec(ctx, `INSERT INTO datastore_version_flavors (version_id, flavor_id, created_at) VALUES (?, ?, ?)
				ON CONFLICT (version_id, flavor_id) DO NOTHING`, v.ID, id, now); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteVersionFlavor removes a flavor from a version's list (Trove's
// datastore_version_flavor_delete); a flavor that is not listed is
// ErrNotFound. Removing the last one lets the version take every flavor
// again.
func (r *Registry) DeleteVersionFlavor(ctx context.Context, datastore, version, flavor string) error {
	v, err := r.FindVersion(ctx, datastore, version)
	if err != nil {
		return err
	}
	f, err := r.Flavor(ctx, flavor)
	if err != nil {
		return err
	}
	res, err := r.DB.Exec(ctx, `DELETE FROM datastore_version_flavors WHERE version_id = ? AND flavor_id = ?`, v.ID, f.ID)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return fmt.Errorf("flavor %s is not in the flavor list of %s %s: %w", f.Name, v.DatastoreName, v.Name, ErrNotFound)
	}
	return nil
}

// VersionFlavors is a version's flavor list, by RAM then name; empty: the
// version has none and takes every flavor.
func (r *Registry) VersionFlavors(ctx context.Context, versionID string) ([]Flavor, error) {
	return store.All(ctx, r.DB, scanFlavor, `SELECT f.id, f.name, f.ram_mb, f.vcpus, f.disk_gb, f.created_at
		FROM flavors f JOIN datastore_version_flavors vf ON vf.flavor_id = f.id
		WHERE vf.version_id = ? ORDER BY f.ram_mb, f.name`, versionID)
}

// AllowedFlavors are the flavors a version's instances may have: its
// list, or every flavor when it has none.
func (r *Registry) AllowedFlavors(ctx context.Context, versionID string) ([]Flavor, error) {
	list, err := r.VersionFlavors(ctx, versionID)
	if err != nil || len(list) > 0 {
		return list, err
	}
	return r.Flavors(ctx)
}

// FlavorAllowed reports whether a version's instances may have flavor f.
func (r *Registry) FlavorAllowed(ctx context.Context, versionID string, f Flavor) (bool, error) {
	var listed, match int
	err := r.DB.QueryRow(ctx, `SELECT COUNT(*), COALESCE(SUM(CASE WHEN flavor_id = ? THEN 1 ELSE 0 END), 0)
		FROM datastore_version_flavors WHERE version_id = ?`, f.ID, versionID).Scan(&listed, &match)
	if err != nil {
		return false, err
	}
	return listed == 0 || match > 0, nil
}

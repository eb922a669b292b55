package registry_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"strata/controller/registry"
	"strata/controller/store"
	"strata/controller/store/storetest"
)

// Upgrade paths: declared between two versions of one datastore run by
// one manager; a PostgreSQL major upgrade is refused naming the way
// across (a logical dump loaded into the new version); the target of an
// upgrade must be a declared one, and a refusal names the allowed ones.
func TestUpgradePathsAreDeclaredPerVersionAndChecked(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		r := &registry.Registry{DB: db}
		version := func(ds, name, manager string) registry.Version {
			t.Helper()
			if _, err := r.UpdateDatastore(ctx, ds, ""); err != nil {
				t.Fatal(err)
			}
			v, err := r.UpdateVersion(ctx, registry.VersionSpec{Datastore: ds, Name: name, Manager: manager, ImageID: "img-" + name,
				Active: true, Port: 3306, BootTimeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		old, newer := version("mariadb", "10.11", "mariadb"), version("mariadb", "11.8", "mariadb")
		version("mariadb", "11.4", "mariadb")
		version("mariadb", "11.8-mysql", "mysql")
		version("postgresql", "15", "postgresql")
		version("postgresql", "17", "postgresql")
		version("postgresql", "15.4", "postgresql")

		if _, err := r.UpgradeTarget(ctx, old.ID, "11.8"); !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), "no upgrade path declared") {
			t.Fatalf("a target without any path: %v", err)
		}
		for _, tc := range []struct{ ds, from, to, want string }{
			{"mariadb", "10.11", "10.11", "cannot be upgraded to itself"},
			{"mariadb", "10.11", "11.8-mysql", "an upgrade keeps the manager"},
			{"postgresql", "15", "17", "major upgrade"},
			{"mariadb", "10.11", "15", `datastore version "15"`},
		} {
			if _, _, err := r.AddUpgradePath(ctx, tc.ds, tc.from, tc.to); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("AddUpgradePath(%s %s → %s) = %v, want %q", tc.ds, tc.from, tc.to, err, tc.want)
			}
		}
		if _, _, err := r.AddUpgradePath(ctx, "postgresql", "15", "17"); err == nil || !strings.Contains(err.Error(), "pg_dump and load them with pg_restore into a new instance of postgresql 17") {
			t.Errorf("a PostgreSQL major upgrade's refusal does not say how across: %v", err)
		}
		if _, _, err := r.AddUpgradePath(ctx, "postgresql", "15", "15.4"); err != nil {
			t.Errorf("a PostgreSQL minor upgrade path: %v", err)
		}
		for range 2 { // declaring again is no error
			if _, _, err := r.AddUpgradePath(ctx, "mariadb", "10.11", "11.8"); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := r.UpgradeTarget(ctx, old.ID, "11.8"); err != nil || got.ID != newer.ID {
			t.Fatalf("UpgradeTarget(11.8) = %+v, %v", got, err)
		}
		if got, err := r.UpgradeTarget(ctx, old.ID, newer.ID); err != nil || got.ID != newer.ID {
			t.Fatalf("UpgradeTarget by id = %+v, %v", got, err)
		}
		if _, err := r.UpgradeTarget(ctx, old.ID, "11.4"); !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), "only to 11.8") {
			t.Fatalf("an undeclared target: %v", err)
		}
		if ts, err := r.UpgradeTargets(ctx, newer.ID); err != nil || len(ts) != 0 {
			t.Fatalf("paths are one way: 11.8's targets %v, %v", ts, err)
		}
		if err := r.DeleteUpgradePath(ctx, "mariadb", "10.11", "11.8"); err != nil {
			t.Fatal(err)
		}
		if err := r.DeleteUpgradePath(ctx, "mariadb", "10.11", "11.8"); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("deleting a path twice: %v", err)
		}
		if ts, err := r.UpgradeTargets(ctx, old.ID); err != nil || len(ts) != 0 {
			t.Fatalf("targets after the delete: %v, %v", ts, err)
		}
	})
}

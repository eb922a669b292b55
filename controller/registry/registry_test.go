package registry_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"strata/controller/registry"
	"strata/controller/store"
	"strata/controller/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

const rulesFile = "../testdata/validation-rules/mariadb-10.11.json"

func spec() registry.VersionSpec {
	return registry.VersionSpec{Datastore: "mariadb", Name: "10.11", Manager: "mariadb", ImageID: "img-1",
		Packages: []string{"mariadb-server", "mariadb-client"}, Active: true, Port: 3306, BootTimeout: 15 * time.Minute}
}

func TestDatastoreVersionLifecycleAsTroveManage(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		r := &registry.Registry{DB: db}
		if _, err := r.UpdateVersion(ctx, spec()); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("version of a missing datastore: %v", err)
		}
		ds, err := r.UpdateDatastore(ctx, "mariadb", "")
		if err != nil || ds.Name != "mariadb" || ds.DefaultVersionID != "" {
			t.Fatalf("UpdateDatastore = %+v, %v", ds, err)
		}
		again, err := r.UpdateDatastore(ctx, "mariadb", "")
		if err != nil || again.ID != ds.ID {
			t.Fatalf("second update made another datastore: %+v, %v", again, err)
		}
		v, err := r.UpdateVersion(ctx, spec())
		if err != nil {
			t.Fatal(err)
		}
		if v.DatastoreName != "mariadb" || v.Port != 3306 || v.BootTimeout != 15*time.Minute || !v.Active || len(v.Packages) != 2 {
			t.Fatalf("version = %+v", v)
		}
		if ds, _ = r.Datastore(ctx, "mariadb"); ds.DefaultVersionID != v.ID {
			t.Fatalf("the first version did not become the default: %+v", ds)
		}
		// Update in place: same id, new image, inactive.
		s := spec()
		s.ImageID, s.Active = "img-2", false
		v2, err := r.UpdateVersion(ctx, s)
		if err != nil || v2.ID != v.ID || v2.ImageID != "img-2" || v2.Active {
			t.Fatalf("update = %+v, %v", v2, err)
		}
		s.Name = "11.4"
		v3, _ := r.UpdateVersion(ctx, s)
		if _, err := r.UpdateDatastore(ctx, "mariadb", "11.4"); err != nil {
			t.Fatal(err)
		}
		if got, _ := r.FindVersion(ctx, "mariadb", ""); got.ID != v3.ID {
			t.Fatalf("default version = %s, want %s", got.Name, v3.Name)
		}
		if got, _ := r.FindVersion(ctx, ds.ID, v.ID); got.Name != "10.11" {
			t.Fatalf("find by ids = %+v", got)
		}
		if _, err := r.UpdateDatastore(ctx, "mariadb", "9.9"); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("default set to a missing version: %v", err)
		}
		if vs, _ := r.Versions(ctx, ds.ID); len(vs) != 2 {
			t.Fatalf("versions = %v", vs)
		}
		if vs, _ := r.VersionsUsingImage(ctx, "img-2"); len(vs) != 2 {
			t.Fatalf("versions using img-2 = %d", len(vs))
		}
	})
}

func TestBadRegistryInputIsRejectedNamingTheField(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		r := &registry.Registry{DB: db}
		if _, err := r.UpdateDatastore(ctx, "Bad Name;", ""); !errors.Is(err, registry.ErrInvalid) {
			t.Fatalf("bad datastore name: %v", err)
		}
		r.UpdateDatastore(ctx, "mariadb", "")
		for name, mutate := range map[string]func(*registry.VersionSpec){
			"port":         func(s *registry.VersionSpec) { s.Port = 70000 },
			"manager":      func(s *registry.VersionSpec) { s.Manager = "Maria DB" },
			"boot timeout": func(s *registry.VersionSpec) { s.BootTimeout = time.Second },
			"package":      func(s *registry.VersionSpec) { s.Packages = []string{"rm -rf /"} },
			"image":        func(s *registry.VersionSpec) { s.ImageID = "" },
		} {
			s := spec()
			mutate(&s)
			_, err := r.UpdateVersion(ctx, s)
			if !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), name) {
				t.Errorf("%s: %v", name, err)
			}
		}
		if n := storetest.Count(t, db, "datastore_versions"); n != 0 {
			t.Fatalf("%d versions stored from bad input", n)
		}
	})
}

func TestRulesAreLoadedFromTroveFormatAndReplaced(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		r := &registry.Registry{DB: db}
		r.UpdateDatastore(ctx, "mariadb", "")
		r.UpdateVersion(ctx, spec())
		data, err := os.ReadFile(rulesFile)
		if err != nil {
			t.Fatal(err)
		}
		v, err := r.LoadRules(ctx, "mariadb", "10.11", data, rulesFile)
		if err != nil {
			t.Fatal(err)
		}
		rule, ok := v.Rule("max_connections")
		if !ok || rule.Type != "integer" || rule.Max.String() != "100000" || v.RulesSource != rulesFile {
			t.Fatalf("rule = %+v (%v), source %q", rule, ok, v.RulesSource)
		}
		if rule, _ := v.Rule("innodb_buffer_pool_size"); rule.ApplyMethod() != "restart" {
			t.Fatalf("apply method = %s", rule.ApplyMethod())
		}
		if _, err := r.LoadRules(ctx, "mariadb", "10.11", []byte(`{"configuration-parameters":[{"name":"x","type":"colour"}]}`), "bad.json"); !errors.Is(err, registry.ErrInvalid) {
			t.Fatalf("bad rules: %v", err)
		}
		v, _ = r.FindVersion(ctx, "mariadb", "10.11")
		if len(v.Rules) != 7 {
			t.Fatalf("bad rules replaced the good ones: %d rules", len(v.Rules))
		}
		if _, err := r.LoadRules(ctx, "mariadb", "12", data, rulesFile); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("rules for a missing version: %v", err)
		}
		if _, err := r.LoadRules(ctx, "mariadb", "10.11", []byte(`{"configuration-parameters":[{"name":"max_connections","type":"integer"}]}`), "small.json"); err != nil {
			t.Fatal(err)
		}
		v, _ = r.FindVersion(ctx, "mariadb", "10.11")
		if len(v.Rules) != 1 {
			t.Fatalf("reloading did not replace: %d rules", len(v.Rules))
		}
	})
}

func TestFlavors(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		r := &registry.Registry{DB: db}
		if err := r.EnsureDefaultFlavors(ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.EnsureDefaultFlavors(ctx); err != nil {
			t.Fatal(err)
		}
		fs, _ := r.Flavors(ctx)
		if len(fs) != len(registry.DefaultFlavors) {
			t.Fatalf("%d flavors after two EnsureDefaultFlavors", len(fs))
		}
		f, err := r.Flavor(ctx, "strata.small")
		if err != nil || f.RAMMB != 1024 {
			t.Fatalf("flavor = %+v, %v", f, err)
		}
		if g, _ := r.Flavor(ctx, f.ID); g.Name != "strata.small" {
			t.Fatal("lookup by id failed")
		}
		if _, err := r.CreateFlavor(ctx, registry.Flavor{Name: "huge", RAMMB: 10, VCPUs: 1}); !errors.Is(err, registry.ErrInvalid) {
			t.Fatalf("10 MB flavor: %v", err)
		}
		if _, err := r.Flavor(ctx, "nope"); !errors.Is(err, registry.ErrNotFound) {
			t.Fatal(err)
		}
	})
}

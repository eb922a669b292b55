package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"strata/agent/wire"
	"strata/controller/registry"
	"strata/controller/store"
	"strata/controller/store/storetest"
)

// TestSetAndDeleteRuleOneByOne: the management API's parameter routes
// edit a version's rules one at a time, validated as a file entry is.
func TestSetAndDeleteRuleOneByOne(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		r := &registry.Registry{DB: db}
		if _, err := r.UpdateDatastore(ctx, "mariadb", ""); err != nil {
			t.Fatal(err)
		}
		v, err := r.UpdateVersion(ctx, spec())
		if err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(rulesFile)
		if v, err = r.LoadRules(ctx, "mariadb", "10.11", data, rulesFile); err != nil {
			t.Fatal(err)
		}
		n := len(v.Rules)
		lo, hi := json.Number("10"), json.Number("9223372036854775807")
		v, err = r.SetRule(ctx, v.ID, wire.ParameterRule{Name: "max_connections", Type: "integer", Min: &lo, Max: &hi})
		if err != nil {
			t.Fatal(err)
		}
		if rule, _ := v.Rule("max_connections"); rule.Min.String() != "10" || rule.Max.String() != "9223372036854775807" || len(v.Rules) != n ||
			v.RulesSource != registry.RulesSourceAPI {
			t.Fatalf("replaced rule: %+v (%d rules, source %q)", rule, len(v.Rules), v.RulesSource)
		}
		if v, err = r.SetRule(ctx, v.ID, wire.ParameterRule{Name: "sql_mode", Type: "string"}); err != nil || len(v.Rules) != n+1 {
			t.Fatalf("added rule: %d rules, %v", len(v.Rules), err)
		}
		bad := json.Number("5")
		if _, err := r.SetRule(ctx, v.ID, wire.ParameterRule{Name: "x", Type: "boolean", Min: &bad}); !errors.Is(err, registry.ErrInvalid) {
			t.Fatalf("invalid rule: %v", err)
		}
		if v, err = r.DeleteRule(ctx, v.ID, "sql_mode"); err != nil || len(v.Rules) != n {
			t.Fatalf("delete: %d rules, %v", len(v.Rules), err)
		}
		if _, err := r.DeleteRule(ctx, v.ID, "sql_mode"); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("delete again: %v", err)
		}
		if _, err := r.SetRule(ctx, "no-such-version", wire.ParameterRule{Name: "a", Type: "string"}); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("unknown version: %v", err)
		}
	})
}

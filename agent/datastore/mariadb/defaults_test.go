package mariadb_test

import (
	"encoding/json"
	"testing"
	"time"

	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// The image's default configuration template (the recipe's
// config_template, which the strata-agent element installs) is what the
// server runs with: rendered for the flavor into the defaults layer over
// the agent's base file, reported by get_configuration, overridden by a
// group, restored when the group lets go of a value, and re-rendered by
// apply_flavor for the new memory.
func TestRecipeTemplateIsTheDefaultsLayer(t *testing.T) {
	tmpl, render := servertest.RecipeTemplate(t, recipeFile(t))
	inst := mariadbtest.NewT(t)
	if err := inst.UseConfigTemplate(tmpl); err != nil {
		t.Fatal(err)
	}
	servertest.MustPrepare(t, inst.Manager, wire.PrepareArgs{MemoryMB: 1024}, 2*time.Minute)
	m, ctx := inst.Manager, ctxT(t)

	// Each value of the template for 1024 MiB is the server's, and
	// get_configuration reports it.
	checkServer := func(want map[string]json.RawMessage, except string) {
		t.Helper()
		conf, err := m.Configuration(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for name, raw := range want {
			if name == except {
				continue
			}
			w := string(raw)
			switch w {
			case "true":
				w = "1"
			case "false":
				w = "0"
			}
			var s string
			if json.Unmarshal(raw, &s) == nil {
				w = s
			}
			if got := globalVar(t, inst, name); got != w {
				t.Errorf("server %s = %s, the template gives %s", name, got, raw)
			}
			reported := string(conf.Values[name])
			if reported != string(raw) && !(string(raw) == "false" && reported == `"OFF"`) && !(string(raw) == "true" && reported == `"ON"`) {
				t.Errorf("get_configuration %s = %s, the template gives %s", name, reported, raw)
			}
		}
	}
	at1024 := render(1024)
	if string(at1024["max_connections"]) == "128" {
		t.Fatal("the template's max_connections for 1024 MiB equals the agent's built-in one: the test could not tell them apart")
	}
	checkServer(at1024, "")
	servertest.CheckOneValuePerParameter(t, inst.Config.ConfigFile, at1024)

	// A group overrides a template value; dropping it puts the template's
	// value back live, not the base file's.
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values("max_connections", `250`)}); err != nil {
		t.Fatal(err)
	}
	if got := globalVar(t, inst, "max_connections"); got != "250" {
		t.Fatalf("max_connections with the group = %s", got)
	}
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules}); err != nil {
		t.Fatal(err)
	}
	if got := globalVar(t, inst, "max_connections"); got != string(at1024["max_connections"]) {
		t.Fatalf("max_connections after the group let go = %s, want the template's %s", got, at1024["max_connections"])
	}

	// apply_flavor re-renders the layer; after the restart the server has
	// the template for 2048 MiB, with the group's value over it.
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values("max_connections", `123`)}); err != nil {
		t.Fatal(err)
	}
	if res, err := m.ApplyFlavor(ctx, wire.FlavorArgs{MemoryMB: 2048}); err != nil || !res.Changed {
		t.Fatalf("ApplyFlavor(2048) = %+v, %v", res, err)
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	at2048 := render(2048)
	if string(at2048["innodb_buffer_pool_size"]) == string(at1024["innodb_buffer_pool_size"]) {
		t.Fatal("the template gives the same buffer pool for 1024 and 2048 MiB")
	}
	checkServer(at2048, "max_connections")
	servertest.CheckOneValuePerParameter(t, inst.Config.ConfigFile, at2048)
	if got := globalVar(t, inst, "max_connections"); got != "123" {
		t.Fatalf("max_connections after the resize = %s, want the group's 123", got)
	}
}

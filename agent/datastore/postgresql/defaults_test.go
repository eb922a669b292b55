package postgresql_test

import (
	"encoding/json"
	"testing"
	"time"

	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// The image's default configuration template (the recipe's
// config_template, which the strata-agent element installs) is what the
// server runs with: rendered for the flavor into the defaults layer
// (included after postgresql.conf), reported by get_configuration,
// overridden by a group, back when the group lets go of a value, and
// re-rendered by apply_flavor for the new memory.
func TestRecipeTemplateIsTheDefaultsLayer(t *testing.T) {
	tmpl, render := servertest.RecipeTemplate(t, recipeFile(t))
	inst := postgresqltest.NewT(t)
	if err := inst.UseConfigTemplate(tmpl); err != nil {
		t.Fatal(err)
	}
	servertest.MustPrepare(t, inst.Manager, wire.PrepareArgs{MemoryMB: 1024}, 2*time.Minute)
	m, ctx := inst.Manager, ctxT(t)

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
			w := map[string]string{"true": "on", "false": "off"}[string(raw)]
			if w == "" {
				w = string(raw)
			}
			if got := setting(t, inst, name); got != w {
				t.Errorf("server %s = %s, the template gives %s", name, got, raw)
			}
			reported := string(conf.Values[name])
			if b := map[string]string{"true": `"on"`, "false": `"off"`}[string(raw)]; b != "" {
				raw = json.RawMessage(b)
			}
			if reported != string(raw) {
				t.Errorf("get_configuration %s = %s, the template gives %s", name, reported, raw)
			}
		}
	}
	at1024 := render(1024)
	checkServer(at1024, "")
	servertest.CheckOneValuePerParameter(t, inst.Config.ConfigFile, at1024)
	if setting(t, inst, "random_page_cost") == "4" {
		t.Fatal("random_page_cost is the server's default: the test could not tell the layer from no layer")
	}

	// A group overrides a template value; dropping it gives the
	// template's value back at once (reload), not the server's default.
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values("random_page_cost", `1.5`)}); err != nil {
		t.Fatal(err)
	}
	if got := setting(t, inst, "random_page_cost"); got != "1.5" {
		t.Fatalf("random_page_cost with the group = %s", got)
	}
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules}); err != nil {
		t.Fatal(err)
	}
	if got := setting(t, inst, "random_page_cost"); got != string(at1024["random_page_cost"]) {
		t.Fatalf("random_page_cost after the group let go = %s, want the template's %s", got, at1024["random_page_cost"])
	}

	// apply_flavor re-renders the layer; after the restart the server has
	// the template for 4096 MiB, with the group's value over it.
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values("random_page_cost", `2.5`)}); err != nil {
		t.Fatal(err)
	}
	if res, err := m.ApplyFlavor(ctx, wire.FlavorArgs{MemoryMB: 4096}); err != nil || !res.Changed {
		t.Fatalf("ApplyFlavor(4096) = %+v, %v", res, err)
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	at4096 := render(4096)
	if string(at4096["effective_cache_size"]) == string(at1024["effective_cache_size"]) {
		t.Fatal("the template gives the same effective_cache_size for 1024 and 4096 MiB")
	}
	checkServer(at4096, "random_page_cost")
	servertest.CheckOneValuePerParameter(t, inst.Config.ConfigFile, at4096)
	if got := setting(t, inst, "random_page_cost"); got != "2.5" {
		t.Fatalf("random_page_cost after the resize = %s, want the group's 2.5", got)
	}
}

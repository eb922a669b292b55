package redis_test

import (
	"encoding/json"
	"testing"
	"time"

	"strata/agent/datastore/redis/redistest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// The image's default configuration template (the recipe's
// config_template, which the strata-agent element installs) is what the
// server runs with: rendered for the flavor into the defaults layer
// (included after redis.conf, before the group), reported by
// get_configuration, overridden by a group, back when the group lets go
// of a value, and re-rendered by apply_flavor for the new memory. A
// group's save replaces the layer's (save lines in files add up).
func TestRecipeTemplateIsTheDefaultsLayer(t *testing.T) {
	tmpl, render := servertest.RecipeTemplate(t, recipeFile(t))
	inst := redistest.NewT(t)
	if err := inst.UseConfigTemplate(tmpl); err != nil {
		t.Fatal(err)
	}
	servertest.MustPrepare(t, inst.Manager, wire.PrepareArgs{MemoryMB: 256}, 2*time.Minute)
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
			w := map[string]string{"true": "yes", "false": "no"}[string(raw)]
			if w == "" {
				w = string(raw)
			}
			var s string
			if json.Unmarshal(raw, &s) == nil {
				w = s
			}
			if got := configValue(t, inst, name); got != w {
				t.Errorf("server %s = %s, the template gives %s", name, got, raw)
			}
			if b := map[string]string{"true": `"yes"`, "false": `"no"`}[string(raw)]; b != "" {
				raw = json.RawMessage(b)
			}
			if reported := string(conf.Values[name]); reported != string(raw) {
				t.Errorf("get_configuration %s = %s, the template gives %s", name, reported, raw)
			}
		}
	}
	at256 := render(256)
	if string(at256["appendonly"]) != "true" {
		t.Fatalf("the template's appendonly = %s; the test needs it to differ from the base file's no", at256["appendonly"])
	}
	checkServer(at256, "")
	servertest.CheckOneValuePerParameter(t, inst.Config.ConfigFile, at256)

	// A group overrides a template value; dropping it puts the template's
	// value back live, not the base file's.
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values("appendonly", `false`)}); err != nil {
		t.Fatal(err)
	}
	if got := configValue(t, inst, "appendonly"); got != "no" {
		t.Fatalf("appendonly with the group = %s", got)
	}
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules}); err != nil {
		t.Fatal(err)
	}
	if got := configValue(t, inst, "appendonly"); got != "yes" {
		t.Fatalf("appendonly after the group let go = %s, want the template's yes", got)
	}

	// apply_flavor re-renders the layer; after the restart the server has
	// the template for 1024 MiB, and the group's save alone (not added to
	// the layer's).
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values("save", `"900 1"`)}); err != nil {
		t.Fatal(err)
	}
	if res, err := m.ApplyFlavor(ctx, wire.FlavorArgs{MemoryMB: 1024}); err != nil || !res.Changed {
		t.Fatalf("ApplyFlavor(1024) = %+v, %v", res, err)
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	at1024 := render(1024)
	if string(at1024["maxmemory"]) == string(at256["maxmemory"]) {
		t.Fatal("the template gives the same maxmemory for 256 and 1024 MiB")
	}
	checkServer(at1024, "save")
	servertest.CheckOneValuePerParameter(t, inst.Config.ConfigFile, at1024)
	if got := configValue(t, inst, "save"); got != "900 1" {
		t.Fatalf("save after the restart = %q, want the group's 900 1 alone", got)
	}
}

package redis_test

import (
	"testing"

	"strata/agent/datastore/redis/redistest"
	"strata/agent/wire"
)

// The agent reports what its files give the server: redis.conf as
// rendered for the flavor's memory and the group over it, typed (numbers
// as numbers), matching what the running server has.
func TestConfigurationReportsRenderedDefaultsAndTheGroupOverThem(t *testing.T) {
	inst, _ := redistest.PreparedT(t, wire.PrepareArgs{MemoryMB: 512})
	m, ctx := inst.Manager, ctxT(t)
	conf, err := m.Configuration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Rendered for 512 MiB: half of it for data.
	for name, v := range map[string]string{"maxmemory": "268435456", "maxmemory-policy": `"noeviction"`, "appendonly": `"no"`, "databases": "16"} {
		if got := string(conf.Values[name]); got != v {
			t.Errorf("%s = %s, want %s (all: %v)", name, got, v, conf.Values)
		}
	}
	if server := configValue(t, inst, "maxmemory"); server != string(conf.Values["maxmemory"]) {
		t.Errorf("maxmemory reported %s, the server has %s", conf.Values["maxmemory"], server)
	}
	if _, ok := conf.Values["include"]; ok {
		t.Error("the include directive is reported as a setting")
	}

	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values(
		"maxmemory", `104857600`, "appendonly", `true`, "save", `"900 1 300 10"`)}); err != nil {
		t.Fatal(err)
	}
	conf, err = m.Configuration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"maxmemory": "104857600", "appendonly": `"yes"`, "save": `"900 1 300 10"`, "databases": "16"} {
		if got := string(conf.Values[name]); got != v {
			t.Errorf("after the group %s = %s, want %s", name, got, v)
		}
	}
	if server := configValue(t, inst, "maxmemory"); server != "104857600" {
		t.Errorf("the server's maxmemory = %s", server)
	}
}

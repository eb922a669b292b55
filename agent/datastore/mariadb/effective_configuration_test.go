package mariadb_test

import (
	"encoding/json"
	"testing"

	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/wire"
)

// The agent reports what its files give the server: the base
// configuration rendered for the flavor's memory and the group over it,
// typed (numbers as numbers), equal to what the running server has.
func TestConfigurationReportsRenderedDefaultsAndTheGroupOverThem(t *testing.T) {
	inst, _ := mariadbtest.PreparedT(t, wire.PrepareArgs{MemoryMB: 1024})
	m, ctx := inst.Manager, ctxT(t)
	conf, err := m.Configuration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Rendered for 1024 MiB: half for InnoDB, 1024/8 connections.
	want := map[string]string{
		"innodb_buffer_pool_size": "536870912",
		"max_connections":         "128",
		"character_set_server":    `"utf8mb4"`,
		"datadir":                 mustJSON(t, inst.Config.DataDir),
	}
	for name, v := range want {
		if got := string(conf.Values[name]); got != v {
			t.Errorf("%s = %s, want %s (all: %v)", name, got, v, conf.Values)
		}
	}
	for _, name := range []string{"innodb_buffer_pool_size", "max_connections"} {
		if server := globalVar(t, inst, name); server != string(conf.Values[name]) {
			t.Errorf("%s reported %s, the server has %s", name, conf.Values[name], server)
		}
	}

	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values(
		"max_connections", `250`, "sql_mode", `"STRICT_ALL_TABLES"`)}); err != nil {
		t.Fatal(err)
	}
	conf, err = m.Configuration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(conf.Values["max_connections"]); got != "250" || got != globalVar(t, inst, "max_connections") {
		t.Errorf("max_connections after the group = %s, server %s", got, globalVar(t, inst, "max_connections"))
	}
	if got := string(conf.Values["sql_mode"]); got != `"STRICT_ALL_TABLES"` {
		t.Errorf("sql_mode = %s", got)
	}
	if got := string(conf.Values["innodb_buffer_pool_size"]); got != "536870912" {
		t.Errorf("a default the group does not set changed: %s", got)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

package postgresql_test

import (
	"strconv"
	"testing"

	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/wire"
)

// The agent reports what its files give the server: postgresql.conf as
// rendered for the flavor's memory and the group over it, typed (numbers
// as numbers), matching what the running server has.
func TestConfigurationReportsRenderedDefaultsAndTheGroupOverThem(t *testing.T) {
	inst, _ := postgresqltest.PreparedT(t, wire.PrepareArgs{MemoryMB: 2048})
	m, ctx := inst.Manager, ctxT(t)
	conf, err := m.Configuration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Rendered for 2048 MiB: a quarter for shared buffers (the server
	// counts 8 kB pages: 65536), 100 connections.
	for name, v := range map[string]string{
		"max_connections": "100", "shared_buffers": `"512MB"`, "wal_level": "\"replica\"", "port": strconv.Itoa(inst.Config.Port),
	} {
		if got := string(conf.Values[name]); got != v {
			t.Errorf("%s = %s, want %s (all: %v)", name, got, v, conf.Values)
		}
	}
	if got := setting(t, inst, "shared_buffers"); got != "65536" {
		t.Errorf("the server's shared_buffers = %s pages, the file says 512MB", got)
	}
	if _, ok := conf.Values["include_if_exists"]; ok {
		t.Error("an include directive is reported as a setting")
	}

	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values(
		"work_mem", `8192`, "random_page_cost", `1.5`, "log_statement", `"ddl"`)}); err != nil {
		t.Fatal(err)
	}
	conf, err = m.Configuration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"work_mem": "8192", "random_page_cost": "1.5", "log_statement": `"ddl"`, "max_connections": "100"} {
		if got := string(conf.Values[name]); got != v {
			t.Errorf("after the group %s = %s, want %s", name, got, v)
		}
	}
	if got := setting(t, inst, "work_mem"); got != "8192" {
		t.Errorf("the server's work_mem = %s", got)
	}
}

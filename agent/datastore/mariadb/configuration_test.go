package mariadb_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"strata/agent/datastore/mariadb"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// rules as a validation-rules file would give them.
var testRules = []wire.ParameterRule{
	{Name: "max_connections", Type: "integer", Min: num("1"), Max: num("100000")},
	{Name: "long_query_time", Type: "float", Min: num("0"), Max: num("3600")},
	{Name: "slow_query_log", Type: "boolean"},
	{Name: "sql_mode", Type: "string"},
	{Name: "back_log", Type: "integer", Min: num("1"), Max: num("65535"), RestartRequired: true},
	{Name: "character_set_server", Type: "string", AllowedValues: []string{"utf8mb4", "latin1"}},
	{Name: "max_binlog_cache_size", Type: "integer", Min: num("4096"), Max: num("18446744073709551615")},
	{Name: "no_such_variable", Type: "integer"},
}

func globalVar(t *testing.T, inst *mariadbtest.Instance, name string) string {
	t.Helper()
	v := servertest.QueryStrings(t, admin(t, inst), "SELECT @@GLOBAL."+name)
	return v[0]
}

func TestConfigurationAppliesDynamicValuesLiveAndOthersOnRestart(t *testing.T) {
	inst, _ := mariadbtest.PreparedT(t, wire.PrepareArgs{})
	m, ctx := inst.Manager, ctxT(t)
	backLog := globalVar(t, inst, "back_log")
	initial := map[string]string{}
	for _, name := range []string{"max_connections", "long_query_time", "slow_query_log", "sql_mode", "max_binlog_cache_size"} {
		initial[name] = globalVar(t, inst, name)
	}

	res, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values(
		"max_connections", `250`,
		"long_query_time", `0.25`,
		"slow_query_log", `true`,
		"sql_mode", `"STRICT_ALL_TABLES,NO_ZERO_DATE"`,
		"back_log", `77`,
		"max_binlog_cache_size", `18446744073709547520`,
	)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.AppliedLive, []string{"long_query_time", "max_binlog_cache_size", "max_connections", "slow_query_log", "sql_mode"}) ||
		!slices.Equal(res.PendingRestart, []string{"back_log"}) || !res.RestartRequired {
		t.Fatalf("result = %+v", res)
	}
	for name, want := range map[string]string{"max_connections": "250", "long_query_time": "0.25", "slow_query_log": "1",
		"sql_mode": "STRICT_ALL_TABLES,NO_ZERO_DATE", "max_binlog_cache_size": "18446744073709547520", "back_log": backLog} {
		if got := globalVar(t, inst, name); got != want {
			t.Errorf("@@%s = %s, want %s", name, got, want)
		}
	}
	servertest.CheckRestartRequired(t, ctx, m, func() (servertest.Manager, error) { return mariadb.New(inst.Config) })
	if got := globalVar(t, inst, "back_log"); got != "77" {
		t.Fatalf("back_log after restart = %s", got)
	}
	if got := globalVar(t, inst, "max_connections"); got != "250" {
		t.Fatalf("max_connections not persisted: %s", got)
	}
	if st := m.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("status after restart = %+v", st)
	}

	// Dropping values from the group: a dynamic one goes back live to what
	// the server runs with without it (the server's default here: the base
	// configuration does not set these); a restart-only one needs a
	// restart.
	res, err = m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values("max_connections", `250`)})
	if err != nil {
		t.Fatal(err)
	}
	if !res.RestartRequired || !slices.Equal(res.PendingRestart, []string{"back_log"}) ||
		!slices.Equal(res.AppliedLive, []string{"max_connections", "long_query_time", "max_binlog_cache_size", "slow_query_log", "sql_mode"}) {
		t.Fatalf("result after removal = %+v", res)
	}
	for _, name := range []string{"long_query_time", "slow_query_log", "sql_mode", "max_binlog_cache_size"} {
		if got := globalVar(t, inst, name); got != initial[name] {
			t.Errorf("@@%s = %s after it left the group, want %s (the server's own)", name, got, initial[name])
		}
	}
	data, _ := os.ReadFile(inst.Config.OverridesFile)
	if strings.Contains(string(data), "back_log") || !strings.Contains(string(data), "max_connections = 250") {
		t.Fatalf("override file:\n%s", data)
	}

	// Detaching (an empty set): max_connections goes back to the base
	// configuration's value, which prepare rendered, live.
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values()}); err != nil {
		t.Fatal(err)
	}
	if got := globalVar(t, inst, "max_connections"); got != initial["max_connections"] {
		t.Fatalf("@@max_connections = %s after detaching, want the base configuration's %s", got, initial["max_connections"])
	}

	// Without the rule of a dropped value (an older controller sent only
	// the values' rules), it waits for a restart, as before.
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values("long_query_time", `1.5`)}); err != nil {
		t.Fatal(err)
	}
	res, err = m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules[:1], Values: values()})
	if err != nil || !slices.Equal(res.PendingRestart, []string{"long_query_time"}) || globalVar(t, inst, "long_query_time") != "1.5" {
		t.Fatalf("a value dropped without its rule: %+v, %v; @@long_query_time = %s", res, err, globalVar(t, inst, "long_query_time"))
	}
}

func TestBadConfigurationIsRejectedAndChangesNothing(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values("max_connections", `180`)}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, inst)
	cases := []struct {
		name string
		args wire.ConfigurationArgs
		want string
	}{
		{"no rule", wire.ConfigurationArgs{Rules: testRules, Values: values("innodb_flush_method", `"O_DIRECT"`)}, "unknown parameter"},
		{"no rules at all", wire.ConfigurationArgs{Values: values("max_connections", `10`)}, "unknown parameter"},
		{"server has no such variable", wire.ConfigurationArgs{Rules: testRules, Values: values("no_such_variable", `1`)}, "no such variable"},
		{"below min", wire.ConfigurationArgs{Rules: testRules, Values: values("max_connections", `0`)}, "below the minimum 1"},
		{"above max", wire.ConfigurationArgs{Rules: testRules, Values: values("max_connections", `100001`)}, "above the maximum"},
		{"above uint64 max", wire.ConfigurationArgs{Rules: testRules, Values: values("max_binlog_cache_size", `18446744073709551616`)}, "above the maximum"},
		{"string for integer", wire.ConfigurationArgs{Rules: testRules, Values: values("max_connections", `"100"`)}, "want an integer"},
		{"float for integer", wire.ConfigurationArgs{Rules: testRules, Values: values("max_connections", `1.5`)}, "want an integer"},
		{"bool for integer", wire.ConfigurationArgs{Rules: testRules, Values: values("max_connections", `true`)}, "want an integer"},
		{"garbage boolean", wire.ConfigurationArgs{Rules: testRules, Values: values("slow_query_log", `"yes please"`)}, "want true or false"},
		{"not allowed", wire.ConfigurationArgs{Rules: testRules, Values: values("character_set_server", `"ascii"`)}, "not one of"},
		{"newline in string", wire.ConfigurationArgs{Rules: testRules, Values: values("sql_mode", `"ANSI\ninit_file=/tmp/x"`)}, "want 1-1024 characters"},
		{"quote in string", wire.ConfigurationArgs{Rules: testRules, Values: values("sql_mode", `"ANSI'; SET GLOBAL max_connections=1; --"`)}, "want 1-1024"},
		{"comment in string", wire.ConfigurationArgs{Rules: testRules, Values: values("sql_mode", `"ANSI # x"`)}, "want 1-1024"},
		{"NUL in string", wire.ConfigurationArgs{Rules: testRules, Values: values("sql_mode", `"AN\u0000SI"`)}, "want 1-1024"},
		{"quote in name", wire.ConfigurationArgs{Rules: append(testRules, wire.ParameterRule{Name: "x'y", Type: "integer"}), Values: values("x'y", `1`)}, "not a valid parameter name"},
		{"unknown type", wire.ConfigurationArgs{Rules: []wire.ParameterRule{{Name: "max_connections", Type: "list"}}, Values: values("max_connections", `1`)}, "unknown type"},
		// The server refuses the second value: the first, already set
		// live, is put back.
		{"server refuses", wire.ConfigurationArgs{Rules: testRules, Values: values("max_connections", `99`, "sql_mode", `"NOT_A_MODE"`)}, "MariaDB refused"},
		// A mix of good and bad changes nothing.
		{"good and bad", wire.ConfigurationArgs{Rules: testRules, Values: values("long_query_time", `2`, "max_connections", `-5`)}, "max_connections"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.ApplyConfiguration(ctx, tc.args)
			wantCode(t, err, wire.CodeInvalidArgument, tc.want)
			assertUnchanged(t, inst, before)
		})
	}
}

package postgresql_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"strata/agent/datastore/postgresql"
	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// rules as a validation-rules file would give them.
var testRules = []wire.ParameterRule{
	{Name: "work_mem", Type: "integer", Min: num("64"), Max: num("2147483647"), Apply: "live"},
	{Name: "random_page_cost", Type: "float", Min: num("0"), Max: num("1000")},
	{Name: "autovacuum", Type: "boolean", Apply: "reload"},
	{Name: "log_min_duration_statement", Type: "integer", Min: num("-1"), Max: num("2147483647"), Apply: "reload"},
	{Name: "log_statement", Type: "string", AllowedValues: []string{"none", "ddl", "mod", "all"}, Apply: "reload"},
	{Name: "search_path", Type: "string"},
	{Name: "timezone", Type: "string"},
	{Name: "log_timezone", Type: "string", Apply: "reload"},
	{Name: "max_connections", Type: "integer", Min: num("1"), Max: num("262143"), RestartRequired: true},
	{Name: "shared_buffers", Type: "integer", Min: num("16"), Max: num("1073741823"), RestartRequired: true},
	{Name: "server_version_num", Type: "integer"},
	{Name: "no_such_parameter", Type: "integer"},
	{Name: "deadlock_timeout", Type: "string"},
	// Wider than the server allows, to prove the server's bounds apply.
	{Name: "max_wal_size", Type: "integer", Min: num("0"), Max: num("99999999999")},
}

func setting(t *testing.T, inst *postgresqltest.Instance, name string) string {
	t.Helper()
	return servertest.QueryStrings(t, admin(t, inst, "postgres"), "SELECT setting FROM pg_settings WHERE name = $1", name)[0]
}

func TestConfigurationAppliesReloadableValuesAtOnceAndOthersOnRestart(t *testing.T) {
	inst, _ := postgresqltest.PreparedT(t, wire.PrepareArgs{})
	m, ctx := inst.Manager, ctxT(t)
	maxConn := setting(t, inst, "max_connections")

	res, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values(
		"work_mem", `8192`,
		"random_page_cost", `1.5`,
		"autovacuum", `false`,
		"log_statement", `"DDL"`,
		"search_path", `"app, public"`,
		"timezone", `"Europe/Paris"`,
		"max_connections", `77`,
	)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.AppliedLive, []string{"autovacuum", "log_statement", "random_page_cost", "search_path", "timezone", "work_mem"}) ||
		!slices.Equal(res.PendingRestart, []string{"max_connections"}) || !res.RestartRequired {
		t.Fatalf("result = %+v", res)
	}
	// New sessions see the reloaded values at once.
	for name, want := range map[string]string{"work_mem": "8192", "random_page_cost": "1.5", "autovacuum": "off", "log_statement": "ddl",
		"search_path": "app, public", "TimeZone": "Europe/Paris", "max_connections": maxConn} {
		if got := setting(t, inst, name); got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
	servertest.CheckRestartRequired(t, ctx, m, func() (servertest.Manager, error) { return postgresql.New(inst.Config) })
	if got := setting(t, inst, "max_connections"); got != "77" {
		t.Fatalf("max_connections after restart = %s", got)
	}
	if got := setting(t, inst, "work_mem"); got != "8192" {
		t.Fatalf("work_mem not persisted: %s", got)
	}
	if st := m.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("status after restart = %+v", st)
	}

	// Dropping values from the group: reloadable ones fall back to their
	// defaults at once, a postmaster one waits for a restart.
	res, err = m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values("work_mem", `8192`)})
	if err != nil {
		t.Fatal(err)
	}
	if !res.RestartRequired || !slices.Equal(res.PendingRestart, []string{"max_connections"}) || !slices.Equal(res.AppliedLive, []string{"work_mem"}) {
		t.Fatalf("result after removal = %+v", res)
	}
	if got := setting(t, inst, "autovacuum"); got != "on" {
		t.Fatalf("autovacuum after removal = %s, want the default on", got)
	}
	data, _ := os.ReadFile(inst.Config.OverridesFile)
	if strings.Contains(string(data), "autovacuum") || !strings.Contains(string(data), "work_mem = 8192") {
		t.Fatalf("override file:\n%s", data)
	}
}

func TestBadConfigurationIsRejectedAndChangesNothing(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values("work_mem", `4096`)}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, inst)
	cases := []struct {
		name string
		args wire.ConfigurationArgs
		want string
	}{
		{"no rule", wire.ConfigurationArgs{Rules: testRules, Values: values("effective_io_concurrency", `2`)}, "unknown parameter"},
		{"no rules at all", wire.ConfigurationArgs{Values: values("work_mem", `100`)}, "unknown parameter"},
		{"server has no such parameter", wire.ConfigurationArgs{Rules: testRules, Values: values("no_such_parameter", `1`)}, "no such parameter"},
		{"internal parameter", wire.ConfigurationArgs{Rules: testRules, Values: values("server_version_num", `1`)}, "does not let it be set"},
		{"managed parameter", wire.ConfigurationArgs{Rules: append(testRules, wire.ParameterRule{Name: "data_directory", Type: "string"}),
			Values: values("data_directory", `"/tmp"`)}, "managed by the agent"},
		{"below rule min", wire.ConfigurationArgs{Rules: testRules, Values: values("work_mem", `63`)}, "below the minimum 64"},
		{"above rule max", wire.ConfigurationArgs{Rules: testRules, Values: values("work_mem", `2147483648`)}, "above the maximum"},
		{"above server max", wire.ConfigurationArgs{Rules: testRules, Values: values("max_wal_size", `2147483648`)}, "above PostgreSQL's maximum 2147483647 (unit MB)"},
		{"below server min", wire.ConfigurationArgs{Rules: testRules, Values: values("max_wal_size", `1`)}, "below PostgreSQL's minimum 2"},
		{"string for integer", wire.ConfigurationArgs{Rules: testRules, Values: values("work_mem", `"64MB"`)}, "want an integer"},
		{"deadlock_timeout string rule", wire.ConfigurationArgs{Rules: testRules, Values: values("deadlock_timeout", `"1s"`)}, "the rule says string but PostgreSQL's parameter is integer"},
		{"garbage boolean", wire.ConfigurationArgs{Rules: testRules, Values: values("autovacuum", `"maybe"`)}, "want true or false"},
		{"not allowed by rule", wire.ConfigurationArgs{Rules: testRules, Values: values("log_statement", `"everything"`)}, "not one of"},
		{"enum the server refuses", wire.ConfigurationArgs{Rules: append(testRules[:0:0], wire.ParameterRule{Name: "log_statement", Type: "string"}),
			Values: values("log_statement", `"everything"`)}, "not one of PostgreSQL's values"},
		{"string the server refuses", wire.ConfigurationArgs{Rules: testRules, Values: values("timezone", `"Mars/Olympus_Mons"`)}, "PostgreSQL refused"},
		// A reload-time (sighup) string cannot be tried in a session: the
		// server refuses it on reload, and the old file comes back.
		{"string the server refuses on reload", wire.ConfigurationArgs{Rules: testRules, Values: values("log_timezone", `"Mars/Olympus_Mons"`)}, "did not take"},
		{"quote in string", wire.ConfigurationArgs{Rules: testRules, Values: values("search_path", `"public'; DROP TABLE x; --"`)}, "want 1-1024"},
		{"newline in string", wire.ConfigurationArgs{Rules: testRules, Values: values("search_path", `"public\ninclude '/etc/shadow'"`)}, "want 1-1024"},
		{"NUL in string", wire.ConfigurationArgs{Rules: testRules, Values: values("search_path", `"pub\u0000lic"`)}, "want 1-1024"},
		{"quote in name", wire.ConfigurationArgs{Rules: append(testRules, wire.ParameterRule{Name: "x'y", Type: "integer"}), Values: values("x'y", `1`)}, "not a valid parameter name"},
		{"dotted custom name", wire.ConfigurationArgs{Rules: append(testRules, wire.ParameterRule{Name: "plpgsql.x", Type: "integer"}), Values: values("plpgsql.x", `1`)}, "not a valid parameter name"},
		// A mix of good and bad changes nothing.
		{"good and bad", wire.ConfigurationArgs{Rules: testRules, Values: values("random_page_cost", `2`, "work_mem", `-5`)}, "work_mem"},
		{"good and server-refused", wire.ConfigurationArgs{Rules: testRules, Values: values("random_page_cost", `2`, "timezone", `"Nowhere/Else"`)}, "timezone"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.ApplyConfiguration(ctx, tc.args)
			wantCode(t, err, wire.CodeInvalidArgument, tc.want)
			assertUnchanged(t, inst, before)
		})
	}
}

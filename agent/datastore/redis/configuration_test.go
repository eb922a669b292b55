package redis_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"strata/agent/datastore/redis"
	"strata/agent/datastore/redis/redistest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// rules as a validation-rules file would give them.
var testRules = []wire.ParameterRule{
	{Name: "maxmemory", Type: "integer", Min: num("0"), Max: num("1099511627776")},
	{Name: "maxmemory-policy", Type: "string", AllowedValues: []string{"noeviction", "allkeys-lru", "volatile-lru"}},
	{Name: "timeout", Type: "integer", Min: num("0"), Max: num("100000")},
	{Name: "appendonly", Type: "boolean"},
	{Name: "save", Type: "string", AllowEmpty: true},
	{Name: "hz", Type: "integer", Min: num("1"), Max: num("500")},
	{Name: "databases", Type: "integer", Min: num("1"), Max: num("1000"), RestartRequired: true, Apply: "restart"},
	{Name: "no-such-parameter", Type: "integer"},
	{Name: "loglevel", Type: "integer"},
	{Name: "notify-keyspace-events", Type: "string"},
}

func TestConfigurationAppliesLiveValuesAndOthersOnRestart(t *testing.T) {
	inst, _ := redistest.PreparedT(t, wire.PrepareArgs{})
	m, ctx := inst.Manager, ctxT(t)
	res, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values(
		"maxmemory", `104857600`,
		"maxmemory-policy", `"allkeys-lru"`,
		"timeout", `300`,
		"appendonly", `true`,
		"save", `"900 1 300 10"`,
		"databases", `8`,
	)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.AppliedLive, []string{"appendonly", "maxmemory", "maxmemory-policy", "save", "timeout"}) ||
		!slices.Equal(res.PendingRestart, []string{"databases"}) || !res.RestartRequired {
		t.Fatalf("result = %+v", res)
	}
	for name, want := range map[string]string{"maxmemory": "104857600", "maxmemory-policy": "allkeys-lru", "timeout": "300",
		"appendonly": "yes", "save": "900 1 300 10", "databases": "16"} {
		if got := configValue(t, inst, name); got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
	servertest.CheckRestartRequired(t, ctx, m, func() (servertest.Manager, error) { return redis.New(inst.Config) })
	for name, want := range map[string]string{"databases": "8", "save": "900 1 300 10", "appendonly": "yes", "maxmemory-policy": "allkeys-lru"} {
		if got := configValue(t, inst, name); got != want {
			t.Errorf("after restart %s = %s, want %s", name, got, want)
		}
	}
	if st := m.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("status after restart = %+v", st)
	}
	// Dropping values from the group: a dynamic one the base redis.conf
	// sets goes back to that live; a restart-only one, or one the base
	// does not set (Redis cannot tell its default: save), needs a restart.
	res, err = m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values("timeout", `300`)})
	if err != nil {
		t.Fatal(err)
	}
	if !res.RestartRequired || !slices.Equal(res.PendingRestart, []string{"databases", "save"}) ||
		!slices.Equal(res.AppliedLive, []string{"timeout", "appendonly", "maxmemory", "maxmemory-policy"}) {
		t.Fatalf("result after removal = %+v", res)
	}
	for name, want := range map[string]string{"maxmemory-policy": "noeviction", "appendonly": "no", "timeout": "300"} {
		if got := configValue(t, inst, name); got != want {
			t.Errorf("%s = %s after it left the group, want %s (the base redis.conf's)", name, got, want)
		}
	}
	data, _ := os.ReadFile(inst.Config.OverridesFile)
	if strings.Contains(string(data), "databases") || !strings.Contains(string(data), "timeout 300") {
		t.Fatalf("override file:\n%s", data)
	}
}

// TestEmptySaveTurnsSnapshotsOffAndSurvivesARestart: save "" is the one
// empty value a rule admits (allow_empty); it is set live, written to the
// overrides file quoted, and read back by the server after a restart.
func TestEmptySaveTurnsSnapshotsOffAndSurvivesARestart(t *testing.T) {
	inst, _ := redistest.PreparedT(t, wire.PrepareArgs{})
	m, ctx := inst.Manager, ctxT(t)
	if got := configValue(t, inst, "save"); got == "" {
		t.Fatal("snapshots are off before the configuration: the test proves nothing")
	}
	res, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values("save", `""`)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.AppliedLive, []string{"save"}) || res.RestartRequired {
		t.Fatalf("result = %+v", res)
	}
	if got := configValue(t, inst, "save"); got != "" {
		t.Fatalf("save = %q after applying \"\"", got)
	}
	data, _ := os.ReadFile(inst.Config.OverridesFile)
	if !strings.Contains(string(data), "\nsave \"\"\n") {
		t.Fatalf("override file:\n%s", data)
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := configValue(t, inst, "save"); got != "" {
		t.Fatalf("save = %q after a restart", got)
	}
	// Without allow_empty the rule refuses it, and nothing changes.
	strict := slices.Clone(testRules)
	for i := range strict {
		strict[i].AllowEmpty = false
	}
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: strict, Values: values("save", `""`, "timeout", `7`)}); wire.ErrorCodeOf(err) != wire.CodeInvalidArgument {
		t.Fatalf("empty save without allow_empty: %v", err)
	}
	if got := configValue(t, inst, "timeout"); got == "7" {
		t.Fatal("a refused group changed timeout")
	}
}

func TestBadConfigurationIsRejectedAndChangesNothing(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: testRules, Values: values("timeout", `10`)}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, inst)
	cases := []struct {
		name string
		args wire.ConfigurationArgs
		want string
	}{
		{"no rule", wire.ConfigurationArgs{Rules: testRules, Values: values("tcp-keepalive", `60`)}, "unknown parameter"},
		{"no rules at all", wire.ConfigurationArgs{Values: values("timeout", `1`)}, "unknown parameter"},
		{"server has no such parameter", wire.ConfigurationArgs{Rules: testRules, Values: values("no-such-parameter", `1`)}, "no such parameter"},
		{"managed", wire.ConfigurationArgs{Rules: append(testRules, wire.ParameterRule{Name: "requirepass", Type: "string"}), Values: values("requirepass", `"x"`)}, "managed by the agent"},
		{"managed dir", wire.ConfigurationArgs{Rules: append(testRules, wire.ParameterRule{Name: "dir", Type: "string"}), Values: values("dir", `"/etc"`)}, "managed by the agent"},
		{"glob name", wire.ConfigurationArgs{Rules: append(testRules, wire.ParameterRule{Name: "max*", Type: "integer"}), Values: values("max*", `1`)}, "not a valid parameter name"},
		{"below min", wire.ConfigurationArgs{Rules: testRules, Values: values("hz", `0`)}, "below the minimum 1"},
		{"above max", wire.ConfigurationArgs{Rules: testRules, Values: values("hz", `501`)}, "above the maximum 500"},
		{"string for integer", wire.ConfigurationArgs{Rules: testRules, Values: values("maxmemory", `"100mb"`)}, "want an integer"},
		{"garbage boolean", wire.ConfigurationArgs{Rules: testRules, Values: values("appendonly", `"maybe"`)}, "want true or false"},
		{"not allowed", wire.ConfigurationArgs{Rules: testRules, Values: values("maxmemory-policy", `"random"`)}, "not one of"},
		{"rule type differs from server", wire.ConfigurationArgs{Rules: testRules, Values: values("loglevel", `1`)}, "the rule says integer"},
		{"server refuses", wire.ConfigurationArgs{Rules: testRules, Values: values("save", `"often"`)}, "Redis refused"},
		{"server refuses one of several", wire.ConfigurationArgs{Rules: testRules, Values: values("timeout", `99`, "notify-keyspace-events", `"Z"`)}, "Redis refused"},
		{"newline in string", wire.ConfigurationArgs{Rules: testRules, Values: values("save", `"900 1\ninclude /etc/shadow"`)}, "want 1-1024"},
		{"quote in string", wire.ConfigurationArgs{Rules: testRules, Values: values("save", `"900 1\" dir \"/tmp"`)}, "want 1-1024"},
		{"good and bad", wire.ConfigurationArgs{Rules: testRules, Values: values("timeout", `5`, "hz", `-1`)}, "hz"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.ApplyConfiguration(ctx, tc.args)
			wantCode(t, err, wire.CodeInvalidArgument, tc.want)
			assertUnchanged(t, inst, before)
		})
	}
}

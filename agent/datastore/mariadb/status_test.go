package mariadb_test

import (
	"strings"
	"testing"

	"strata/agent/datastore/mariadb"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

func TestStatusFollowsTheServer(t *testing.T) {
	inst := mariadbtest.NewT(t)
	m, ctx := inst.Manager, ctxT(t)
	servertest.CheckLifecycle(t, ctx, m, func() error {
		_, err := m.ListDatabases(ctx)
		return err
	})
	servertest.CheckBlockedThenCrashed(t, ctx, m, inst.Config.PidFile, inst.Process)
}

func TestLogsListAndTail(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	// Turn the slow query log on for everything, run a query, turn it off.
	rules := []wire.ParameterRule{{Name: "slow_query_log", Type: "boolean"}, {Name: "long_query_time", Type: "float", Min: num("0")}}
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: rules, Values: values("slow_query_log", `true`, "long_query_time", `0`)}); err != nil {
		t.Fatal(err)
	}
	logs, err := m.Logs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(logs) != 2 || logs[0].Name != mariadb.LogError || logs[1].Name != mariadb.LogSlowQuery || !logs[1].Enabled || logs[0].SizeBytes == 0 {
		t.Fatalf("logs = %+v", logs)
	}
	admin(t, inst).Exec("SELECT 'strata-slow-marker', SLEEP(0)")
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: rules, Values: values("slow_query_log", `false`)}); err != nil {
		t.Fatal(err)
	}

	tail, err := m.TailLog(ctx, mariadb.LogSlowQuery, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(tail.Lines, "\n"), "strata-slow-marker") {
		t.Fatalf("slow log tail lacks the query:\n%s", strings.Join(tail.Lines, "\n"))
	}
	tail, err = m.TailLog(ctx, mariadb.LogError, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(tail.Lines) != 3 {
		t.Fatalf("error log tail = %q", tail.Lines)
	}
	servertest.CheckTailRefusals(t, ctx, m, mariadb.LogError)
}

package postgresql_test

import (
	"strings"
	"testing"
	"time"

	"strata/agent/datastore/postgresql"
	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

func TestStatusFollowsTheServer(t *testing.T) {
	inst := postgresqltest.NewT(t)
	m, ctx := inst.Manager, ctxT(t)
	servertest.CheckLifecycle(t, ctx, m, func() error {
		_, err := m.ListDatabases(ctx)
		return err
	})
	// A server restarted behind the agent's back: pooled sessions are
	// gone, the next operation still works.
	if _, err := m.ListDatabases(ctx); err != nil {
		t.Fatal(err)
	}
	inst.Process.Restart(ctx)
	for range 50 {
		if _, err := connect(t, inst, "postgres", "", "postgres"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := m.ListDatabases(ctx); err != nil {
		t.Fatalf("after an outside restart: %v", err)
	}

	// A frozen postmaster answers no new connection, but a pooled session
	// might: a new manager asks.
	m.Close()
	m2, _ := postgresql.New(inst.Config)
	defer m2.Close()
	servertest.CheckBlockedThenCrashed(t, ctx, m2, inst.Config.PidFile, inst.Process)
}

func TestLogsListAndTail(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	rules := []wire.ParameterRule{{Name: "log_min_duration_statement", Type: "integer", Min: num("-1")}}
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: rules, Values: values("log_min_duration_statement", `0`)}); err != nil {
		t.Fatal(err)
	}
	admin(t, inst, "postgres").Exec("SELECT 'strata-slow-marker'")
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: rules, Values: values()}); err != nil {
		t.Fatal(err)
	}
	logs, err := m.Logs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(logs) != 1 || logs[0].Name != postgresql.LogGeneral || logs[0].Enabled || !logs[0].Switchable || logs[0].SizeBytes == 0 || logs[0].Path != inst.Config.LogFile {
		t.Fatalf("logs = %+v", logs)
	}
	tail, err := m.TailLog(ctx, postgresql.LogGeneral, 200)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(tail.Lines, "\n"), "strata-slow-marker") {
		t.Fatalf("log tail lacks the statement:\n%s", strings.Join(tail.Lines, "\n"))
	}
	tail, err = m.TailLog(ctx, postgresql.LogGeneral, 3)
	if err != nil || len(tail.Lines) != 3 {
		t.Fatalf("tail = %q, %v", tail.Lines, err)
	}
	servertest.CheckTailRefusals(t, ctx, m, postgresql.LogGeneral)
}

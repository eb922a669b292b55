package mariadb_test

import (
	"strings"
	"testing"

	"strata/agent/datastore/mariadb"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/wire"
)

// A query slower than the threshold lands in the slow query log once the
// log is enabled, not after it is disabled; the switch survives a
// restart; a configuration group that sets slow_query_log wins and the
// switch says so.
func TestSlowQueryLogEnableDisableSurvivesRestart(t *testing.T) {
	inst, _ := mariadbtest.PreparedT(t, wire.PrepareArgs{})
	m, ctx := inst.Manager, ctxT(t)
	slowLog := func() string {
		tail, err := m.TailLog(ctx, mariadb.LogSlowQuery, 1000)
		if err != nil && wire.ErrorCodeOf(err) != wire.CodeNotFound {
			t.Fatal(err)
		}
		return strings.Join(tail.Lines, "\n")
	}
	slowQuery := func(marker string) {
		t.Helper()
		// A fresh connection: long_query_time is copied into a session
		// when it starts.
		c, err := admin(t, inst).Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.ExecContext(ctx, "SELECT '"+marker+"', SLEEP(1.2)"); err != nil {
			t.Fatal(err)
		}
		// The server logs a statement after answering it, before it
		// reads the session's next one: once this is answered, the slow
		// query is in the log if it is going to be.
		if _, err := c.ExecContext(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}

	info, err := m.SetLog(ctx, mariadb.LogSlowQuery, true)
	if err != nil || !info.Enabled || !info.Switchable {
		t.Fatalf("enable: %+v, %v", info, err)
	}
	slowQuery("strata-slow-while-on")
	if !strings.Contains(slowLog(), "strata-slow-while-on") {
		t.Fatalf("the slow query log lacks the slow query run while it was enabled:\n%s", slowLog())
	}

	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if v := globalVar(t, inst, "slow_query_log"); v != "1" {
		t.Fatalf("after a restart slow_query_log = %s, want 1 (enabled before the restart)", v)
	}
	if v := globalVar(t, inst, "long_query_time"); v != "1" && v != "1.000000" {
		t.Fatalf("after a restart long_query_time = %s, want 1", v)
	}

	info, err = m.SetLog(ctx, mariadb.LogSlowQuery, false)
	if err != nil || info.Enabled {
		t.Fatalf("disable: %+v, %v", info, err)
	}
	slowQuery("strata-slow-while-off")
	if strings.Contains(slowLog(), "strata-slow-while-off") {
		t.Fatalf("a slow query run while the log was disabled was logged:\n%s", slowLog())
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if v := globalVar(t, inst, "slow_query_log"); v != "0" {
		t.Fatalf("after a restart slow_query_log = %s, want 0 (disabled before the restart)", v)
	}

	// The group owns slow_query_log once it sets it.
	rules := []wire.ParameterRule{{Name: "slow_query_log", Type: "boolean"}}
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: rules, Values: values("slow_query_log", `true`)}); err != nil {
		t.Fatal(err)
	}
	_, err = m.SetLog(ctx, mariadb.LogSlowQuery, false)
	wantCode(t, err, wire.CodeFailedPrecondition, "configuration group")
	if v := globalVar(t, inst, "slow_query_log"); v != "1" {
		t.Fatalf("a refused disable changed slow_query_log to %s", v)
	}

	_, err = m.SetLog(ctx, mariadb.LogError, false)
	wantCode(t, err, wire.CodeFailedPrecondition, "always on")
	_, err = m.SetLog(ctx, "../slow", true)
	wantCode(t, err, wire.CodeNotFound, "no log named")
	if p, err := m.LogPath(mariadb.LogSlowQuery); err != nil || p != inst.Config.SlowQueryLog {
		t.Fatalf("LogPath = %q, %v", p, err)
	}
}

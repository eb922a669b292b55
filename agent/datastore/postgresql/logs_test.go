package postgresql_test

import (
	"strings"
	"testing"

	"strata/agent/datastore/postgresql"
	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// A statement slower than the threshold lands in the general log once the
// log is enabled, not after it is disabled; the switch survives a
// restart; a configuration group that sets log_min_duration_statement
// wins and the switch says so.
func TestGeneralLogEnableDisableSurvivesRestart(t *testing.T) {
	inst, _ := postgresqltest.PreparedT(t, wire.PrepareArgs{})
	m, ctx := inst.Manager, ctxT(t)
	logText := func() string {
		tail, err := m.TailLog(ctx, postgresql.LogGeneral, wire.MaxTailLines)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(tail.Lines, "\n")
	}
	setting := func() string {
		return servertest.QueryStrings(t, admin(t, inst, "postgres"), "SHOW log_min_duration_statement")[0]
	}
	slow := func(marker string) {
		t.Helper()
		c, err := admin(t, inst, "postgres").Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.ExecContext(ctx, "SELECT '"+marker+"', pg_sleep(1.2)"); err != nil {
			t.Fatal(err)
		}
		// The next statement's answer comes after the slow one's log line.
		if _, err := c.ExecContext(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}

	info, err := m.SetLog(ctx, postgresql.LogGeneral, true)
	if err != nil || !info.Enabled || !info.Switchable {
		t.Fatalf("enable: %+v, %v", info, err)
	}
	slow("strata-slow-while-on")
	if !strings.Contains(logText(), "strata-slow-while-on") {
		t.Fatalf("the log lacks the slow statement run while it was enabled:\n%s", logText())
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if v := setting(); v != "1s" {
		t.Fatalf("after a restart log_min_duration_statement = %s, want 1s (enabled before the restart)", v)
	}

	info, err = m.SetLog(ctx, postgresql.LogGeneral, false)
	if err != nil || info.Enabled {
		t.Fatalf("disable: %+v, %v", info, err)
	}
	slow("strata-slow-while-off")
	if strings.Contains(logText(), "strata-slow-while-off") {
		t.Fatalf("a slow statement run while the log was disabled was logged:\n%s", logText())
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if v := setting(); v != "-1" {
		t.Fatalf("after a restart log_min_duration_statement = %s, want -1 (disabled before the restart)", v)
	}

	rules := []wire.ParameterRule{{Name: "log_min_duration_statement", Type: "integer", Min: num("-1")}}
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: rules, Values: values("log_min_duration_statement", `250`)}); err != nil {
		t.Fatal(err)
	}
	_, err = m.SetLog(ctx, postgresql.LogGeneral, false)
	wantCode(t, err, wire.CodeFailedPrecondition, "configuration group")
	if v := setting(); v != "250ms" {
		t.Fatalf("a refused disable changed log_min_duration_statement to %s", v)
	}
	_, err = m.SetLog(ctx, "error", true)
	wantCode(t, err, wire.CodeNotFound, "no log named")
	if p, err := m.LogPath(postgresql.LogGeneral); err != nil || p != inst.Config.LogFile {
		t.Fatalf("LogPath = %q, %v", p, err)
	}
}

package postgresql_test

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"strata/agent/datastore"
	"strata/agent/datastore/postgresql"
	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/wire"
)

func TestStatusFollowsTheServer(t *testing.T) {
	inst := postgresqltest.NewT(t)
	m, ctx := inst.Manager, ctxT(t)
	if st := m.Status(ctx); st.Status != wire.StatusNew {
		t.Fatalf("before prepare: %+v", st)
	}
	_, err := m.ListDatabases(ctx)
	wantCode(t, err, wire.CodeFailedPrecondition, "not prepared")
	wantCode(t, m.Restart(ctx), wire.CodeFailedPrecondition, "not prepared")
	wantCode(t, m.Stop(ctx), wire.CodeFailedPrecondition, "not prepared")

	if _, err := m.Prepare(ctx, wire.PrepareArgs{}); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("after prepare: %+v", st)
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(ctx); st.Status != wire.StatusShutdown || st.Detail != "stopped by request" {
		t.Fatalf("after stop: %+v", st)
	}
	_, err = m.ListDatabases(ctx)
	wantCode(t, err, wire.CodeUnavailable, "does not answer")
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("after restart: %+v", st)
	}
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

	// Frozen postmaster: up but not answering new connections.
	pid, err := datastore.ReadPidFile(inst.Config.PidFile)
	if err != nil {
		t.Fatal(err)
	}
	m.Close() // no pooled session may answer for a frozen server
	m2, _ := postgresql.New(inst.Config)
	defer m2.Close()
	syscall.Kill(pid, syscall.SIGSTOP)
	waitState(t, pid, 'T')
	st := m2.Status(ctx)
	syscall.Kill(pid, syscall.SIGCONT)
	if st.Status != wire.StatusBlocked {
		t.Fatalf("stopped process: %+v", st)
	}

	// Killed: the pid file stays behind.
	inst.Process.Kill()
	if st := m2.Status(ctx); st.Status != wire.StatusCrashed {
		t.Fatalf("after SIGKILL: %+v", st)
	}
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
	if len(logs) != 1 || logs[0].Name != postgresql.LogGeneral || !logs[0].Enabled || logs[0].SizeBytes == 0 || logs[0].Path != inst.Config.LogFile {
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
	_, err = m.TailLog(ctx, "../../etc/shadow", 10)
	wantCode(t, err, wire.CodeNotFound, "no log named")
	_, err = m.TailLog(ctx, postgresql.LogGeneral, 0)
	wantCode(t, err, wire.CodeInvalidArgument, "lines")
	_, err = m.TailLog(ctx, postgresql.LogGeneral, wire.MaxTailLines+1)
	wantCode(t, err, wire.CodeInvalidArgument, "lines")
}

func waitState(t *testing.T, pid int, state byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if i := strings.LastIndexByte(string(data), ')'); i > 0 && i+2 < len(data) && data[i+2] == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d never reached state %c", pid, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

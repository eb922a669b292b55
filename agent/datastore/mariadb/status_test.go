package mariadb_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"strata/agent/datastore/mariadb"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/wire"
)

func TestStatusFollowsTheServer(t *testing.T) {
	inst := mariadbtest.NewT(t)
	m, ctx := inst.Manager, ctxT(t)
	if st := m.Status(ctx); st.Status != wire.StatusNew {
		t.Fatalf("before prepare: %+v", st)
	}
	_, err := m.ListDatabases(ctx)
	wantCode(t, err, wire.CodeFailedPrecondition, "not prepared")
	wantCode(t, m.Restart(ctx), wire.CodeFailedPrecondition, "not prepared")

	if _, err := m.Prepare(ctx, wire.PrepareArgs{}); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("after prepare: %+v", st)
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(ctx); st.Status != wire.StatusShutdown {
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

	// Frozen process: up but not answering.
	pid := readPid(t, inst.Config.PidFile)
	syscall.Kill(pid, syscall.SIGSTOP)
	waitState(t, pid, 'T') // the stop lands asynchronously
	st := m.Status(ctx)
	syscall.Kill(pid, syscall.SIGCONT)
	if st.Status != wire.StatusBlocked {
		t.Fatalf("stopped process: %+v", st)
	}

	// Killed: the pid file stays behind.
	inst.Process.Kill()
	if st := m.Status(ctx); st.Status != wire.StatusCrashed {
		t.Fatalf("after SIGKILL: %+v", st)
	}
}

func readPid(t *testing.T, path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(data))), &pid); err != nil {
		t.Fatal(err)
	}
	return pid
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
	_, err = m.TailLog(ctx, "../../etc/shadow", 10)
	wantCode(t, err, wire.CodeNotFound, "no log named")
	_, err = m.TailLog(ctx, mariadb.LogError, 0)
	wantCode(t, err, wire.CodeInvalidArgument, "lines")
	_, err = m.TailLog(ctx, mariadb.LogError, wire.MaxTailLines+1)
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

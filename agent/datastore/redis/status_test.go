package redis_test

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"strata/agent/datastore"
	"strata/agent/datastore/redis"
	"strata/agent/datastore/redis/redistest"
	"strata/agent/wire"
)

func TestStatusFollowsTheServer(t *testing.T) {
	inst := redistest.NewT(t)
	m, ctx := inst.Manager, ctxT(t)
	if st := m.Status(ctx); st.Status != wire.StatusNew {
		t.Fatalf("before prepare: %+v", st)
	}
	_, err := m.ListUsers(ctx)
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
	if st := m.Status(ctx); st.Status != wire.StatusShutdown || st.Detail != "stopped by request" {
		t.Fatalf("after stop: %+v", st)
	}
	_, err = m.ListUsers(ctx)
	wantCode(t, err, wire.CodeUnavailable, "does not answer")
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("after restart: %+v", st)
	}
	// A server restarted behind the agent's back: the next command
	// reconnects by itself.
	inst.Process.Restart(ctx)
	time.Sleep(300 * time.Millisecond)
	if _, err := m.ListUsers(ctx); err != nil {
		t.Fatalf("after an outside restart: %v", err)
	}

	pid, err := datastore.ReadPidFile(inst.Config.PidFile)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(pid, syscall.SIGSTOP)
	waitState(t, pid, 'T')
	st := m.Status(ctx)
	syscall.Kill(pid, syscall.SIGCONT)
	if st.Status != wire.StatusBlocked {
		t.Fatalf("stopped process: %+v", st)
	}
	inst.Process.Kill()
	if st := m.Status(ctx); st.Status != wire.StatusCrashed {
		t.Fatalf("after SIGKILL: %+v", st)
	}
}

func TestLogsListAndTail(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	logs, err := m.Logs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(logs) != 1 || logs[0].Name != redis.LogServer || !logs[0].Enabled || logs[0].SizeBytes == 0 || logs[0].Path != inst.Config.LogFile {
		t.Fatalf("logs = %+v", logs)
	}
	tail, err := m.TailLog(ctx, redis.LogServer, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(tail.Lines, "\n"), "ready to accept connections") {
		t.Fatalf("log tail lacks the start-up:\n%s", strings.Join(tail.Lines, "\n"))
	}
	_, err = m.TailLog(ctx, "../../etc/shadow", 10)
	wantCode(t, err, wire.CodeNotFound, "no log named")
	_, err = m.TailLog(ctx, redis.LogServer, 0)
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

// If someone with root changes the agent's password, the server still runs
// but does not answer the agent: blocked, and the detail says why.
func TestStatusSaysWhyTheAgentIsLockedOut(t *testing.T) {
	inst, res := redistest.PreparedT(t, wire.PrepareArgs{EnableRoot: true})
	ctx := ctxT(t)
	root, err := dial(t, inst, "", res.Root.Password)
	if err != nil {
		t.Fatal(err)
	}
	do(t, root, "ACL", "SETUSER", redis.AdminUser, "resetpass", ">someone-else")
	do(t, root, "CLIENT", "KILL", "USER", redis.AdminUser)
	st := inst.Manager.Status(ctx)
	if st.Status != wire.StatusBlocked || !strings.Contains(st.Detail, "WRONGPASS") {
		t.Fatalf("status = %+v", st)
	}
}

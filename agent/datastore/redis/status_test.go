package redis_test

import (
	"strings"
	"testing"
	"time"

	"strata/agent/datastore/redis"
	"strata/agent/datastore/redis/redistest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

func TestStatusFollowsTheServer(t *testing.T) {
	inst := redistest.NewT(t)
	m, ctx := inst.Manager, ctxT(t)
	servertest.CheckLifecycle(t, ctx, m, func() error {
		_, err := m.ListUsers(ctx)
		return err
	})
	// A server restarted behind the agent's back: the next command
	// reconnects by itself.
	inst.Process.Restart(ctx)
	time.Sleep(300 * time.Millisecond)
	if _, err := m.ListUsers(ctx); err != nil {
		t.Fatalf("after an outside restart: %v", err)
	}

	servertest.CheckBlockedThenCrashed(t, ctx, m, inst.Config.PidFile, inst.Process)
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
	// "...ready to accept connections" (7) or "Ready to accept
	// connections" (8).
	if !strings.Contains(strings.ToLower(strings.Join(tail.Lines, "\n")), "ready to accept connections") {
		t.Fatalf("log tail lacks the start-up:\n%s", strings.Join(tail.Lines, "\n"))
	}
	servertest.CheckTailRefusals(t, ctx, m, redis.LogServer)
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

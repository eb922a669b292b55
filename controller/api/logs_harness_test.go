package api_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"

	"strata/agent/wire"
)

// This file gives the rig's fake guest MariaDB's two logs as the agent
// reports them: "error" (always on: SYS) and "slow_query" (switched by
// set_log: USER), held in memory, published over the real data channel
// as the agent does (the log's bytes, then the digest and line count in
// the result). What the agent does on a real server is tested in
// agent/datastore/{mariadb,postgresql} and agent/dispatch.

type fakeLogs struct {
	slowOn bool
	// extra lines appended to the error log (a server writing on).
	extra []string
	// groupOwnsSlow makes set_log refuse the way the agent does when a
	// configuration group sets slow_query_log.
	groupOwnsSlow bool
	// damage makes publish_log send one byte less than its digest says
	// (a stream cut short that still ended cleanly).
	damage bool
}

func (g *fakeGuest) logText(name string) string {
	switch name {
	case "error":
		lines := []string{"2026-12-04 21:00:00 0 [Note] Starting MariaDB", "2026-12-04 21:00:01 0 [Note] ready for connections"}
		lines = append(lines, g.logs.extra...)
		return strings.Join(lines, "\n") + "\n"
	case "slow_query":
		if g.logs.slowOn {
			return "# Query_time: 1.2\nSELECT SLEEP(1.2);\n"
		}
	}
	return ""
}

// logOp answers list_logs and set_log; g.mu is held.
func (g *fakeGuest) logOp(op wire.Operation) wire.Result {
	list := func() []wire.LogInfo {
		return []wire.LogInfo{
			{Name: "error", Type: "datastore", Enabled: true, SizeBytes: int64(len(g.logText("error")))},
			{Name: "slow_query", Type: "datastore", Enabled: g.logs.slowOn, Switchable: true, SizeBytes: int64(len(g.logText("slow_query")))},
		}
	}
	if op.Kind == wire.KindListLogs {
		return okResult(wire.ListLogsResult{Logs: list()})
	}
	var a wire.SetLogArgs
	if err := wire.DecodeStrict(op.Args, &a); err != nil {
		return opErr(wire.CodeInvalidArgument, "bad set_log args: %v", err)
	}
	switch a.Name {
	case "error":
		return opErr(wire.CodeFailedPrecondition, "log error is always on; only slow_query can be enabled or disabled")
	case "slow_query":
	default:
		return opErr(wire.CodeNotFound, "no log named %q", a.Name)
	}
	if g.logs.groupOwnsSlow {
		return opErr(wire.CodeFailedPrecondition, "slow_query_log is set to 1 by the instance's configuration group, which wins over log enable/disable: change or detach the group")
	}
	g.logs.slowOn = a.Enable
	return okResult(list()[1])
}

func (g *fakeGuest) publishLog(op wire.Operation) wire.Result {
	var a wire.PublishLogArgs
	if err := wire.DecodeStrict(op.Args, &a); err != nil {
		return opErr(wire.CodeInvalidArgument, "bad publish_log args: %v", err)
	}
	g.mu.Lock()
	text, c, damage := g.logText(a.Name), g.client, g.logs.damage
	g.mu.Unlock()
	if a.Name != "error" && a.Name != "slow_query" {
		return opErr(wire.CodeNotFound, "no log named %q", a.Name)
	}
	st, err := c.OpenStream(context.Background(), op.ID, 0)
	if err != nil {
		return opErr(wire.CodeUnavailable, "publish log: %v", err)
	}
	defer st.Close()
	sent := text
	if damage {
		sent = text[:len(text)-1]
	}
	if _, err := st.Write([]byte(sent)); err != nil {
		return opErr(wire.CodeUnavailable, "publish log: %v", err)
	}
	if err := st.CloseWrite(); err != nil {
		return opErr(wire.CodeUnavailable, "publish log: %v", err)
	}
	sum := sha256.Sum256([]byte(text))
	return okResult(wire.PublishLogResult{Name: a.Name, Stream: wire.StreamDigest{Bytes: int64(len(text)), SHA256: fmt.Sprintf("%x", sum)},
		Lines: int64(strings.Count(text, "\n"))})
}

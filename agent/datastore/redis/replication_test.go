package redis_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/agent/datastore/redis"
	"strata/agent/datastore/redis/redistest"
	"strata/agent/datastore/servertest"
	"strata/agent/dispatch"
	"strata/agent/streams/streamstest"
	"strata/agent/wire"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// tcpInstance is an unprepared instance listening on 127.0.0.1 too.
func tcpInstance(t *testing.T) *redistest.Instance {
	t.Helper()
	inst := redistest.NewT(t)
	if err := inst.UseTCP(freePort(t)); err != nil {
		t.Fatal(err)
	}
	return inst
}

// waitUntil polls cond every 10 ms until it holds or d passes, and
// returns how long it took.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func replStatus(t *testing.T, ctx context.Context, inst *redistest.Instance) wire.ReplicationStatus {
	t.Helper()
	st, err := inst.Manager.ReplicationStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func off(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}

// seededReplica restores a fresh TCP instance from a new backup of src,
// as the controller seeds a replica.
func seededReplica(t *testing.T, ctx context.Context, src *redistest.Instance, name string) *redistest.Instance {
	t.Helper()
	mem := streamstest.NewMemory()
	d := &dispatch.Dispatcher{Manager: src.Manager, Streams: mem, Datastore: "redis"}
	res, err := streamstest.Backup(ctx, d, "b-"+name, nil)
	if err != nil {
		t.Fatal(err)
	}
	dst := tcpInstance(t)
	dd := &dispatch.Dispatcher{Manager: dst.Manager, Streams: mem, Datastore: "redis"}
	if _, err := streamstest.Restore(ctx, dd, mem, "r-"+name, wire.RestoreArgs{}, mem.Stored("b-"+name, res)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// get reads a key on an instance's admin connection ("" when absent).
func get(t *testing.T, inst *redistest.Instance, key string) string {
	t.Helper()
	return do(t, admin(t, inst), "GET", key).Str
}

// The account's password holds what would end a line or an argument in
// redis.conf; the replication file must keep it one value.
const replPassword = "q\"uo\\te #x\nreplicaof 10.9.9.9 1 é"

func TestReplicaFollowsItsPrimary(t *testing.T) {
	ctx := servertest.Context(t, 5*time.Minute)
	p := tcpInstance(t)
	servertest.MustPrepare(t, p.Manager, wire.PrepareArgs{Users: []wire.User{{Name: "app", Password: "app-pw"}}}, time.Minute)
	pc := admin(t, p)
	for i := range 1000 {
		do(t, pc, "SET", fmt.Sprintf("seed:%d", i), strings.Repeat("v", 100))
	}
	r := seededReplica(t, ctx, p, "r1")
	if got := get(t, r, "seed:999"); got == "" {
		t.Fatal("the restored replica lacks the seed's keys")
	}

	// The account: made, reset by a re-run, allowed a replica's link only.
	res, err := p.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_r1", Password: "first"})
	if err != nil {
		t.Fatal(err)
	}
	res, err = p.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_r1", Password: replPassword})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.ReplID) != 40 || res.ReplOffset == nil {
		t.Fatalf("account result %+v: want the primary's replication ID and offset", res)
	}
	if _, err := dial(t, p, "strata_repl_r1", "first"); err == nil {
		t.Fatal("the account's first password still works after the re-run")
	}
	acct, err := dial(t, p, "strata_repl_r1", replPassword)
	if err != nil {
		t.Fatalf("the replication account cannot log in: %v", err)
	}
	do(t, acct, "PING")
	for _, cmd := range [][]string{{"GET", "seed:1"}, {"SET", "x", "1"}, {"INFO"}, {"KEYS", "*"}, {"CONFIG", "GET", "*"}, {"SUBSCRIBE", "c"}} {
		if _, err := acct.Do(ctx, cmd...); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("the replication account may %s: %v", cmd[0], err)
		}
	}
	users, err := p.Manager.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if strings.HasPrefix(u.Name, wire.ReplicationAccountPrefix) {
			t.Fatalf("user list shows the replication account: %v", users)
		}
	}
	if !strings.Contains(readFileT(t, p.Config.ACLFile), "user strata_repl_r1 ") {
		t.Fatal("the account is not in the ACL file")
	}

	// The link.
	do(t, pc, "SET", "before-start", "1")
	start := time.Now()
	st, err := r.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: p.Config.Port, Account: "strata_repl_r1", Password: replPassword})
	if err != nil {
		t.Fatal(err)
	}
	startTook := time.Since(start)
	if st.Role != wire.RoleReplica || !st.ReadOnly || st.SourcePort != p.Config.Port {
		t.Fatalf("status after start: %+v", st)
	}
	do(t, pc, "SET", "after-start", "2")
	visible := waitUntil(t, 30*time.Second, "a key written after start on the replica", func() bool { return get(t, r, "after-start") == "2" })
	t.Logf("figure: start_replication returned in %s; a key written then was on the replica %s later (full synchronisation of 1000 keys included)", startTook.Round(time.Millisecond), visible.Round(time.Millisecond))
	if get(t, r, "before-start") != "1" {
		t.Fatal("a key written before start is missing on the replica")
	}
	// Steady state: one key's trip.
	do(t, pc, "SET", "steady", "3")
	trip := waitUntil(t, 10*time.Second, "a key in steady state", func() bool { return get(t, r, "steady") == "3" })
	t.Logf("figure: in steady state a key reached the replica in %s", trip.Round(time.Microsecond))

	// Writes on the replica are refused by the server, the agent's own too.
	if _, err := admin(t, r).Do(ctx, "SET", "on-replica", "x"); err == nil || !strings.Contains(err.Error(), "READONLY") {
		t.Fatalf("a write on the replica: %v, want READONLY", err)
	}
	if _, err := dial(t, r, "app", "app-pw"); err != nil {
		t.Fatalf("the seed's user cannot log in on the replica: %v", err)
	}

	// Status and lag.
	st = replStatus(t, ctx, r)
	ps := replStatus(t, ctx, p)
	if !st.IORunning || !st.SQLRunning || st.LastIOSecondsAgo == nil || st.ReplOffset == nil || st.ReplID != ps.ReplID || st.LastError != "" {
		t.Fatalf("replica status %+v (primary %+v)", st, ps)
	}
	lag := off(ps.ReplOffset) - off(st.ReplOffset)
	if lag < 0 {
		t.Fatalf("lag %d bytes: primary %d, replica %d", lag, off(ps.ReplOffset), off(st.ReplOffset))
	}
	t.Logf("figure: idle lag %d bytes (primary %d, replica %d), last I/O %d s ago", lag, off(ps.ReplOffset), off(st.ReplOffset), *st.LastIOSecondsAgo)

	// Under a write load: 5000 writes of 1 KiB, then the lag at once and
	// how long the replica takes to catch up.
	val := strings.Repeat("w", 1024)
	for i := range 5000 {
		do(t, pc, "SET", fmt.Sprintf("load:%d", i), val)
	}
	ps, st = replStatus(t, ctx, p), replStatus(t, ctx, r)
	t.Logf("figure: right after 5000 writes of 1 KiB (one client, one at a time): lag %d bytes", off(ps.ReplOffset)-off(st.ReplOffset))
	caught := waitUntil(t, 30*time.Second, "the replica catching up", func() bool { return off(replStatus(t, ctx, r).ReplOffset) >= off(ps.ReplOffset) })
	t.Logf("figure: caught up %s later", caught.Round(time.Microsecond))
	if get(t, r, "load:4999") != val {
		t.Fatal("the last write of the load is missing on the replica")
	}

	// The link survives a restart, and the password stayed one value.
	conf := readFileT(t, etcFile(r, "strata-replication.conf"))
	if strings.Count(conf, "replicaof ") != 1 || strings.Contains(conf, "10.9.9.9") || strings.Contains(conf, "\nmasterauth "+replPassword) {
		t.Fatalf("replication file:\n%s", conf)
	}
	if err := r.Manager.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	do(t, pc, "SET", "after-restart", "4")
	waitUntil(t, 30*time.Second, "a key after the replica's restart", func() bool { return get(t, r, "after-restart") == "4" })
	if st := replStatus(t, ctx, r); st.Role != wire.RoleReplica || !st.ReadOnly {
		t.Fatalf("after a restart: %+v", st)
	}

	// A primary gone: the link is down, with a reason; back, it is up.
	if err := p.Manager.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the link down", func() bool { return !replStatus(t, ctx, r).IORunning })
	down := replStatus(t, ctx, r)
	waitUntil(t, 30*time.Second, "a reason in the log", func() bool {
		down = replStatus(t, ctx, r)
		return strings.Contains(down.LastError, ": ")
	})
	if !strings.Contains(down.LastError, "down") || down.LastIOSecondsAgo != nil {
		t.Fatalf("status with the primary stopped: %+v", down)
	}
	t.Logf("figure: with the primary stopped: %q", down.LastError)
	if err := p.Manager.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	pc = admin(t, p)
	waitUntil(t, 30*time.Second, "the link up again", func() bool { return replStatus(t, ctx, r).IORunning })

	// A second start from the same source (a controller's retry) is a
	// no-op; from another source it is refused. Neither changes anything.
	before := snapshot(t, r)
	again, err := r.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: p.Config.Port, Account: "strata_repl_r1", Password: replPassword})
	if err != nil || again.Role != wire.RoleReplica || again.SourcePort != p.Config.Port {
		t.Fatalf("a second start from the same source: %+v, %v", again, err)
	}
	_, err = r.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: p.Config.Port + 1, Account: "strata_repl_r1", Password: replPassword})
	wantCode(t, err, wire.CodeFailedPrecondition, "follows 127.0.0.1:", "already")
	assertUnchanged(t, r, before)
	if readFileT(t, etcFile(r, "strata-replication.conf")) != conf {
		t.Fatal("a second start changed the replication file")
	}
	if st := replStatus(t, ctx, r); !st.IORunning {
		t.Fatalf("the link after a second start: %+v", st)
	}
	// A repoint on a standalone server is refused too.
	_, err = p.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: r.Config.Port, Account: "strata_repl_r1", Password: "x", Repoint: true})
	wantCode(t, err, wire.CodeFailedPrecondition, "follows no source")

	// Promote waits for an offset the replica never reaches: it times
	// out and changes nothing.
	far := off(ps.ReplOffset) + 1<<40
	start = time.Now()
	_, err = r.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{ReplOffset: &far, TimeoutSeconds: 1})
	wantCode(t, err, wire.CodeFailedPrecondition, "did not reach", "nothing was changed")
	if took := time.Since(start); took < time.Second || took > 5*time.Second {
		t.Fatalf("promote gave up after %s, want about 1 s", took)
	}
	assertUnchanged(t, r, before)
	if st := replStatus(t, ctx, r); st.Role != wire.RoleReplica {
		t.Fatalf("after a promote that timed out: %+v", st)
	}

	// Detach: writable, across a restart.
	if _, err := r.Manager.DetachReplica(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Manager.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if st := replStatus(t, ctx, r); st.Role != wire.RoleStandalone || st.ReadOnly {
		t.Fatalf("after detach and a restart: %+v", st)
	}
	do(t, admin(t, r), "SET", "on-detached", "x")
	if get(t, r, "after-restart") != "4" {
		t.Fatal("the detached replica lost its keys")
	}

	// Dropping the account removes the user; dropping it again is fine.
	if err := p.Manager.DropReplicationAccount(ctx, "strata_repl_r1"); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, p, "strata_repl_r1", replPassword); err == nil {
		t.Fatal("a dropped account logs in")
	}
	if strings.Contains(readFileT(t, p.Config.ACLFile), "strata_repl_r1") {
		t.Fatal("the dropped account is still in the ACL file")
	}
	if err := p.Manager.DropReplicationAccount(ctx, "strata_repl_r1"); err != nil {
		t.Fatalf("dropping a missing account: %v", err)
	}
}

func etcFile(inst *redistest.Instance, name string) string {
	return inst.Dir + "/etc/" + name
}

func readFileT(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBadReplicationArgumentsAreRefusedAndChangeNothing(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	before := snapshot(t, inst)
	for _, name := range []string{"alice", "strata_repl_", "strata_repl_a b", "strata_repl_a\r\nACL SETUSER x on nopass", "strata_repl_A", "strata_repl_" + strings.Repeat("a", 21)} {
		_, err := m.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: name, Password: "p"})
		wantCode(t, err, wire.CodeInvalidArgument, "name", "replication account")
		wantCode(t, m.DropReplicationAccount(ctx, name), wire.CodeInvalidArgument, "name", "replication account")
	}
	_, err := m.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_a", Password: "a\x00b"})
	wantCode(t, err, wire.CodeInvalidArgument, "password")
	good := wire.StartReplicationArgs{Host: "127.0.0.1", Port: 6379, Account: "strata_repl_a", Password: "p"}
	for _, c := range []struct {
		edit func(*wire.StartReplicationArgs)
		want string
	}{
		{func(a *wire.StartReplicationArgs) { a.Host = "10.0.0.1 6379\r\nFLUSHALL" }, "host"},
		{func(a *wire.StartReplicationArgs) { a.Host = "" }, "host"},
		{func(a *wire.StartReplicationArgs) { a.Port = 0 }, "port"},
		{func(a *wire.StartReplicationArgs) { a.Account = "default" }, "account: replication account"},
		{func(a *wire.StartReplicationArgs) { a.Account = "strata_repl_a\nmasteruser default" }, "account: replication account"},
		{func(a *wire.StartReplicationArgs) { a.Password = "" }, "password"},
		{func(a *wire.StartReplicationArgs) { a.Password = "a\x00b" }, "password"},
		{func(a *wire.StartReplicationArgs) { a.GTIDSlavePos = "0-1-2" }, "gtid_slave_pos"},
	} {
		a := good
		c.edit(&a)
		_, err := m.StartReplication(ctx, a)
		wantCode(t, err, wire.CodeInvalidArgument, c.want)
	}
	for _, c := range []struct {
		args wire.PromoteReplicaArgs
		want string
	}{
		{wire.PromoteReplicaArgs{GTIDPos: "0-1-2", TimeoutSeconds: 1}, "repl_offset"},
		{wire.PromoteReplicaArgs{LSN: "0/1", TimeoutSeconds: 1}, "repl_offset"},
		{wire.PromoteReplicaArgs{ReplOffset: new(int64), ReplID: "x\r\nFLUSHALL", TimeoutSeconds: 1}, "repl_id"},
		{wire.PromoteReplicaArgs{ReplOffset: new(int64), TimeoutSeconds: 0}, "timeout_seconds"},
	} {
		_, err := m.PromoteReplica(ctx, c.args)
		wantCode(t, err, wire.CodeInvalidArgument, c.want)
	}
	wantCode(t, m.CreateUsers(ctx, []wire.User{{Name: "strata_repl_x", Password: "p"}}), wire.CodeInvalidArgument, "reserved")
	assertUnchanged(t, inst, before)
	// Lifting a fence that is not there changes nothing either; a
	// standalone server's promotion at an offset it has passed is a
	// re-run and detaches nothing.
	if st, err := m.SetReadOnly(ctx, false); err != nil || st.ReadOnly {
		t.Fatalf("lift the fence on a writable server: %+v %v", st, err)
	}
	assertUnchanged(t, inst, before)
}

// A switchover on three servers: P fenced (every write refused, across a
// restart), R1 promoted at P's offset, R2 repointed to R1, P made R1's
// replica; writes on R1 reach both, and nothing P accepted is lost.
func TestSwitchoverAcrossThreeServers(t *testing.T) {
	ctx := servertest.Context(t, 5*time.Minute)
	p := tcpInstance(t)
	servertest.MustPrepare(t, p.Manager, wire.PrepareArgs{}, time.Minute)
	pc := admin(t, p)
	do(t, pc, "SET", "k0", "0")
	r1 := seededReplica(t, ctx, p, "r1")
	r2 := seededReplica(t, ctx, p, "r2")
	link := func(replica, primary *redistest.Instance, acct string, repoint bool) {
		t.Helper()
		if _, err := primary.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: acct, Password: "pw-" + acct}); err != nil {
			t.Fatal(err)
		}
		if _, err := replica.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: primary.Config.Port,
			Account: acct, Password: "pw-" + acct, Repoint: repoint}); err != nil {
			t.Fatal(err)
		}
	}
	link(r1, p, "strata_repl_r1", false)
	link(r2, p, "strata_repl_r2", false)
	for _, r := range []*redistest.Instance{r1, r2} {
		waitUntil(t, 30*time.Second, "link up", func() bool { return replStatus(t, ctx, r).IORunning })
	}
	// Writes going on until the fence.
	for i := range 500 {
		do(t, pc, "SET", fmt.Sprintf("w:%d", i), "x")
	}
	start := time.Now()
	fenced, err := p.Manager.SetReadOnly(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if !fenced.ReadOnly || fenced.ReplOffset == nil {
		t.Fatalf("fence status: %+v", fenced)
	}
	if _, err := pc.Do(ctx, "SET", "after-fence", "x"); err == nil || !strings.Contains(err.Error(), "NOREPLICAS") {
		t.Fatalf("a write after the fence: %v, want NOREPLICAS", err)
	}
	if _, err := pc.Do(ctx, "EVAL", "return redis.call('SET', 'in-script', 'x')", "0"); err == nil {
		t.Fatal("a script wrote after the fence")
	}
	promoted, err := r1.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{ReplOffset: fenced.ReplOffset, ReplID: fenced.ReplID, TimeoutSeconds: 30})
	if err != nil {
		t.Fatal(err)
	}
	if promoted.Role != wire.RoleStandalone || promoted.ReadOnly {
		t.Fatalf("promoted status: %+v", promoted)
	}
	do(t, admin(t, r1), "SET", "on-new-primary", "1")
	unavailable := time.Since(start)
	link(r2, r1, "strata_repl_r2", true)
	link(p, r1, "strata_repl_p", false)
	t.Logf("figure: writes unavailable for %s (fence, promote, first write on the new primary)", unavailable.Round(time.Millisecond))
	for _, r := range []*redistest.Instance{r2, p} {
		took := waitUntil(t, 30*time.Second, "the new primary's write on "+r.Dir, func() bool { return get(t, r, "on-new-primary") == "1" })
		t.Logf("figure: %s had the new primary's write %s after the links were made", r.Dir, took.Round(time.Millisecond))
		if get(t, r, "w:499") != "x" || get(t, r, "after-fence") != "" {
			t.Fatalf("%s: the last write before the fence is missing, or one after it is there", r.Dir)
		}
		if st := replStatus(t, ctx, r); st.Role != wire.RoleReplica || st.SourcePort != r1.Config.Port || !st.ReadOnly {
			t.Fatalf("%s follows %+v", r.Dir, st)
		}
	}
	if get(t, r1, "w:499") != "x" {
		t.Fatal("the promoted replica lacks the last write before the fence")
	}
	// The old primary's fence went with its new link: it is a replica now.
	if st := replStatus(t, ctx, p); st.ReadOnly != true || st.Role != wire.RoleReplica {
		t.Fatalf("old primary: %+v", st)
	}
	if v, _ := admin(t, p).Do(ctx, "CONFIG", "GET", "min-replicas-to-write"); v.Array[1].Str != "0" {
		t.Fatalf("old primary keeps the fence: %v", v.Array[1].Str)
	}
	// The repointed replica continued from its offset: the promoted one
	// kept P's replication ID as its second.
	if l := readFileT(t, r2.Config.LogFile); !strings.Contains(l, "Master accepted a Partial Resynchronization") {
		t.Errorf("the repointed replica made a full synchronisation; its log:\n%s", l)
	}
	t.Logf("figure: the old primary's link to the promoted one was a partial resynchronisation: %v",
		strings.Contains(readFileT(t, p.Config.LogFile), "Master accepted a Partial Resynchronization"))
	st := replStatus(t, ctx, r2)
	t.Logf("figure: the repointed replica: link up %v, offset %d, last I/O %d s ago", st.IORunning, off(st.ReplOffset), off(st.LastIOSecondsAgo))
}

// The fence holds across a restart, refuses every client's writes, and
// lifting it makes the server writable again; a promotion on a
// standalone server that has not reached the offset is refused.
func TestFenceHoldsAcrossARestart(t *testing.T) {
	ctx := servertest.Context(t, 2*time.Minute)
	inst, _ := redistest.PreparedT(t, wire.PrepareArgs{Users: []wire.User{{Name: "app", Password: "app-pw"}}})
	m := inst.Manager
	// The group's own min-replicas settings come back when the fence is
	// lifted.
	rules := []wire.ParameterRule{{Name: "min-replicas-max-lag", Type: "integer", Min: num("0"), Max: num("3600")}}
	if _, err := m.ApplyConfiguration(ctx, wire.ConfigurationArgs{Rules: rules, Values: values("min-replicas-max-lag", "7")}); err != nil {
		t.Fatal(err)
	}
	do(t, admin(t, inst), "SET", "k", "1")
	st, err := m.SetReadOnly(ctx, true)
	if err != nil || !st.ReadOnly {
		t.Fatalf("fence: %+v %v", st, err)
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	app, err := dial(t, inst, "app", "app-pw")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{{"SET", "k", "2"}, {"DEL", "k"}, {"INCR", "n"}} {
		if _, err := app.Do(ctx, c...); err == nil || !strings.Contains(err.Error(), "NOREPLICAS") {
			t.Fatalf("%s on a fenced primary after a restart: %v", c[0], err)
		}
	}
	do(t, app, "GET", "k")
	if st := replStatus(t, ctx, inst); !st.ReadOnly {
		t.Fatalf("status after a restart: %+v", st)
	}
	far := off(st.ReplOffset) + 1000
	_, err = m.PromoteReplica(ctx, wire.PromoteReplicaArgs{ReplOffset: &far, TimeoutSeconds: 1})
	wantCode(t, err, wire.CodeFailedPrecondition, "no replica")
	if st, err := m.SetReadOnly(ctx, false); err != nil || st.ReadOnly {
		t.Fatalf("lift: %+v %v", st, err)
	}
	if v := configValue(t, inst, "min-replicas-max-lag"); v != "7" || configValue(t, inst, "min-replicas-to-write") != "0" {
		t.Fatalf("after the fence was lifted: min-replicas-max-lag %s, want the group's 7", v)
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	app, err = dial(t, inst, "app", "app-pw")
	if err != nil {
		t.Fatal(err)
	}
	do(t, app, "SET", "k", "3")
}

// A server prepared before redis.conf included the replication file: a
// start is refused until its flavor is applied again, which brings the
// include and an empty replication file.
func TestAnOlderServerGetsTheReplicationFileWithItsFlavor(t *testing.T) {
	ctx := servertest.Context(t, 2*time.Minute)
	inst, _ := redistest.PreparedT(t, wire.PrepareArgs{})
	m := inst.Manager
	repl := etcFile(inst, "strata-replication.conf")
	conf := readFileT(t, inst.Config.ConfigFile)
	old := strings.Replace(conf, "include "+repl+"\n", "", 1)
	if old == conf {
		t.Fatalf("redis.conf does not include %s:\n%s", repl, conf)
	}
	if err := os.WriteFile(inst.Config.ConfigFile, []byte(old), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(repl); err != nil {
		t.Fatal(err)
	}
	_, err := m.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: 1, Account: "strata_repl_a", Password: "p"})
	wantCode(t, err, wire.CodeFailedPrecondition, "written before")
	_, err = m.SetReadOnly(ctx, true)
	wantCode(t, err, wire.CodeFailedPrecondition, "written before")
	if _, err := m.ApplyFlavor(ctx, wire.FlavorArgs{}); err != nil {
		t.Fatal(err)
	}
	if readFileT(t, repl) == "" || readFileT(t, inst.Config.ConfigFile) != conf {
		t.Fatal("apply_flavor did not bring the include and the replication file")
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := m.SetReadOnly(ctx, true); err != nil || !st.ReadOnly {
		t.Fatalf("fence after apply_flavor: %+v %v", st, err)
	}
}

// A primary killed and started again (a crash; a failover's ejected
// source coming back) continues the stream its snapshot held under a new
// replication ID: its status reports the old ID and where its history
// under it ends, and any write it takes after the restart moves its
// offset past that end — what tells the controller whether an ejected
// source holds writes its group never received.
func TestAPrimaryStartedAgainAfterACrashReportsTheStreamItsSnapshotHeld(t *testing.T) {
	ctx := servertest.Context(t, 2*time.Minute)
	p := tcpInstance(t)
	servertest.MustPrepare(t, p.Manager, wire.PrepareArgs{}, time.Minute)
	pc := admin(t, p)
	do(t, pc, "SET", "k0", "0")
	r := seededReplica(t, ctx, p, "r1")
	if _, err := p.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_r1", Password: "pw-r1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: p.Config.Port, Account: "strata_repl_r1", Password: "pw-r1"}); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		do(t, pc, "SET", fmt.Sprintf("w:%d", i), "x")
	}
	before := replStatus(t, ctx, p)
	if before.ReplID2 != "" || before.ReplID2End != nil {
		t.Fatalf("a primary that never restarted reports a previous stream: %+v", before)
	}
	do(t, pc, "SAVE")
	saved := replStatus(t, ctx, p)
	if err := p.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.Manager.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	st := replStatus(t, ctx, p)
	if st.ReplID == before.ReplID || st.ReplID2 != before.ReplID || st.ReplID2End == nil ||
		*st.ReplID2End < off(before.ReplOffset) || *st.ReplID2End > off(saved.ReplOffset) || off(st.ReplOffset) != *st.ReplID2End {
		t.Fatalf("after a crash and a restart: %+v; before it %s at %d (saved at %d)", st, before.ReplID, off(before.ReplOffset), off(saved.ReplOffset))
	}
	if got := get(t, p, "w:99"); got != "x" {
		t.Fatalf("the snapshot's data: w:99 = %q", got)
	}
	do(t, admin(t, p), "SET", "after-restart", "1")
	if after := replStatus(t, ctx, p); off(after.ReplOffset) <= *st.ReplID2End || after.ReplID2 != before.ReplID {
		t.Fatalf("a write after the restart: %+v, want the offset past %d", after, *st.ReplID2End)
	}
}

// A source that became the source by a switchover, whose last snapshot
// is from before its promotion, killed and started again (a failover's
// ejected source coming back): it reports the stream it followed as a
// replica — the group's, under the old primary's ID — up to the
// snapshot's offset, at or before the point where the group continued
// that stream under the promoted source's ID; the replica elected in
// its place reports that point as its previous ID's end (what the
// failover records); and the old source follows the elected one.
func TestASourceStartedAgainFromASnapshotFromBeforeItsPromotionReportsTheGroupsOlderStream(t *testing.T) {
	ctx := servertest.Context(t, 5*time.Minute)
	a := tcpInstance(t)
	servertest.MustPrepare(t, a.Manager, wire.PrepareArgs{}, time.Minute)
	ac := admin(t, a)
	do(t, ac, "SET", "k0", "0")
	b := seededReplica(t, ctx, a, "b")
	c := seededReplica(t, ctx, a, "c")
	link := func(replica, primary *redistest.Instance, acct string, repoint bool) {
		t.Helper()
		if _, err := primary.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: acct, Password: "pw-" + acct}); err != nil {
			t.Fatal(err)
		}
		if _, err := replica.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: primary.Config.Port,
			Account: acct, Password: "pw-" + acct, Repoint: repoint}); err != nil {
			t.Fatal(err)
		}
	}
	link(b, a, "strata_repl_b", false)
	link(c, a, "strata_repl_c", false)
	for i := range 100 {
		do(t, ac, "SET", fmt.Sprintf("w:%d", i), "x")
	}
	aSt := replStatus(t, ctx, a)
	for _, r := range []*redistest.Instance{b, c} {
		waitUntil(t, 30*time.Second, "the replicas at the primary's offset", func() bool {
			st := replStatus(t, ctx, r)
			return st.IORunning && off(st.ReplOffset) == off(aSt.ReplOffset)
		})
	}
	// B's snapshot, taken while it is a replica; then more of A's
	// stream, so that the snapshot ends before the promotion point.
	do(t, admin(t, b), "SAVE")
	saved := replStatus(t, ctx, b)
	for i := range 100 {
		do(t, ac, "SET", fmt.Sprintf("after-save:%d", i), "x")
	}

	// The switchover: A fenced, B promoted, C and A follow B.
	fenced, err := a.Manager.SetReadOnly(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	w := fenced.ReplID
	promoted, err := b.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{ReplOffset: fenced.ReplOffset, ReplID: w, TimeoutSeconds: 30})
	if err != nil {
		t.Fatal(err)
	}
	x := promoted.ReplID
	if x == w || promoted.ReplID2 != w || promoted.ReplID2End == nil || *promoted.ReplID2End != off(fenced.ReplOffset) {
		t.Fatalf("the promoted source: %+v; the fenced one was %s at %d", promoted, w, off(fenced.ReplOffset))
	}
	promotion := *promoted.ReplID2End
	link(c, b, "strata_repl_c", true)
	link(a, b, "strata_repl_a", false)
	bc := admin(t, b)
	for i := range 50 {
		do(t, bc, "SET", fmt.Sprintf("on-b:%d", i), "x")
	}
	bSt := replStatus(t, ctx, b)
	waitUntil(t, 30*time.Second, "C at B's offset", func() bool { return off(replStatus(t, ctx, c).ReplOffset) == off(bSt.ReplOffset) })

	// B dies; C is what an election reads: B's stream and, before it,
	// A's up to where B continued it.
	if err := b.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	elected := replStatus(t, ctx, c)
	t.Logf("figure: the elected replica before its promotion: repl_id %s (B's), offset %d, repl_id2 %s (A's: %v), repl_id2_end %d (B's promotion at %d)",
		elected.ReplID, off(elected.ReplOffset), elected.ReplID2, elected.ReplID2 == w, off(elected.ReplID2End), promotion)
	if elected.ReplID != x || off(elected.ReplOffset) != off(bSt.ReplOffset) || elected.ReplID2 != w ||
		elected.ReplID2End == nil || *elected.ReplID2End > promotion || *elected.ReplID2End < off(saved.ReplOffset) {
		t.Fatalf("the replica elected in B's place: %+v; want %s at %d, previously %s up to at most %d", elected, x, off(bSt.ReplOffset), w, promotion)
	}
	rPromoted, err := c.Manager.PromoteReplica(ctx, wire.PromoteReplicaArgs{ReplOffset: elected.ReplOffset, ReplID: x, TimeoutSeconds: 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("figure: the elected replica promoted: repl_id %s, offset %d, repl_id2 %s (B's: %v), repl_id2_end %d",
		rPromoted.ReplID, off(rPromoted.ReplOffset), rPromoted.ReplID2, rPromoted.ReplID2 == x, off(rPromoted.ReplID2End))

	// B started again from its snapshot, and fenced as a rejoin does.
	if err := b.Manager.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := b.Manager.SetReadOnly(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("figure: B started again from its snapshot: repl_id %s, repl_offset %d, repl_id2 %s (A's: %v), repl_id2_end %d; snapshot at %d, promotion at %d",
		st.ReplID, off(st.ReplOffset), st.ReplID2, st.ReplID2 == w, off(st.ReplID2End), off(saved.ReplOffset), promotion)
	if st.ReplID == x || st.ReplID2 != w || st.ReplID2End == nil || *st.ReplID2End != off(saved.ReplOffset) ||
		off(st.ReplOffset) != *st.ReplID2End || *st.ReplID2End > *elected.ReplID2End {
		t.Fatalf("B after a crash and a restart: %+v; want A's stream %s up to its snapshot's offset %d, at or before %d, nothing written since", st, w, off(saved.ReplOffset), *elected.ReplID2End)
	}
	if get(t, b, "w:99") != "x" || get(t, b, "after-save:0") != "" || get(t, b, "on-b:0") != "" {
		t.Fatal("B's data is not its snapshot's")
	}

	// B follows the elected replica and gets what it had taken.
	link(b, c, "strata_repl_b", false)
	took := waitUntil(t, 30*time.Second, "B following C", func() bool {
		s := replStatus(t, ctx, b)
		return s.IORunning && off(s.ReplOffset) >= off(elected.ReplOffset)
	})
	if get(t, b, "on-b:49") != "x" || get(t, b, "after-save:99") != "x" {
		t.Fatal("B following C lacks writes C had")
	}
	log := readFileT(t, b.Config.LogFile)
	t.Logf("figure: B followed C %s after its link was made (partial resynchronisation: %v, full: %v)", took.Round(time.Millisecond),
		strings.Contains(log, "Master accepted a Partial Resynchronization"), strings.Contains(log, "MASTER <-> REPLICA sync: Finished with success"))
}

// A replica rebuilt onto a new root disk (its link's file gone with the
// agent's state and configuration, its data kept) starts fenced from the
// new agent's prepare on — writable, it would take users' writes its
// primary never had until the controller's relink — and follows its
// primary again after the relink (a plain start with a new password).
// Once detached, its data is a standalone server's: rebuilt again, it is
// writable.
func TestARebuiltReplicaStartsFencedUntilItIsLinkedAgain(t *testing.T) {
	ctx := servertest.Context(t, 5*time.Minute)
	p := tcpInstance(t)
	servertest.MustPrepare(t, p.Manager, wire.PrepareArgs{Users: []wire.User{{Name: "app", Password: "app-pw"}}}, time.Minute)
	do(t, admin(t, p), "SET", "seed", "1")
	r := seededReplica(t, ctx, p, "r1")
	if _, err := p.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_r1", Password: replPassword}); err != nil {
		t.Fatal(err)
	}
	link := wire.StartReplicationArgs{Host: "127.0.0.1", Port: p.Config.Port, Account: "strata_repl_r1", Password: replPassword}
	if _, err := r.Manager.StartReplication(ctx, link); err != nil {
		t.Fatal(err)
	}
	do(t, admin(t, p), "SET", "linked", "2")
	waitUntil(t, 30*time.Second, "the replica following", func() bool { return get(t, r, "linked") == "2" })

	rebuild := func() {
		t.Helper()
		if err := r.Manager.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		r.Manager.Close()
		os.RemoveAll(filepath.Dir(r.Config.StateFile))
		os.RemoveAll(filepath.Dir(r.Config.ConfigFile))
		m2, err := redis.New(r.Config)
		if err != nil {
			t.Fatal(err)
		}
		r.Manager = m2
		if res, err := m2.Prepare(ctx, wire.PrepareArgs{}); err != nil || res.Initialized {
			t.Fatalf("the rebuilt server's prepare: %+v, %v", res, err)
		}
	}
	rebuild()
	app, err := dial(t, r, "app", "app-pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.Do(ctx, "SET", "before-relink", "x"); err == nil || !strings.Contains(err.Error(), "NOREPLICAS") {
		t.Fatalf("a user's write on the rebuilt replica before its relink: %v, want it refused (NOREPLICAS)", err)
	}
	if st := replStatus(t, ctx, r); st.Role != wire.RoleStandalone || !st.ReadOnly {
		t.Fatalf("the rebuilt replica before its relink: %+v, want a fenced standalone server", st)
	}

	// The relink: the account's password reset on the primary, then a
	// plain start.
	const pw2 = "a-new-replication-password"
	if _, err := p.Manager.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_r1", Password: pw2}); err != nil {
		t.Fatal(err)
	}
	link.Password = pw2
	if st, err := r.Manager.StartReplication(ctx, link); err != nil || st.Role != wire.RoleReplica {
		t.Fatalf("the relink: %+v, %v", st, err)
	}
	do(t, admin(t, p), "SET", "relinked", "3")
	waitUntil(t, 30*time.Second, "the relinked replica following", func() bool { return get(t, r, "relinked") == "3" })
	if _, err := admin(t, r).Do(ctx, "SET", "on-replica", "x"); err == nil || !strings.Contains(err.Error(), "READONLY") {
		t.Fatalf("a write on the relinked replica: %v, want READONLY", err)
	}

	// Detached, then rebuilt again: a standalone server's data, writable.
	if _, err := r.Manager.DetachReplica(ctx); err != nil {
		t.Fatal(err)
	}
	rebuild()
	if app, err = dial(t, r, "app", "app-pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Do(ctx, "SET", "after-detach", "y"); err != nil {
		t.Fatalf("a write on the rebuilt detached server: %v", err)
	}
}

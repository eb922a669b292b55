package api_test

import (
	"context"
	"fmt"
	"time"

	"strata/agent/wire"
	"strata/controller/compute"
)

// ReplicationRoute: the fake's guests reach each other's databases where
// clients do.
func (fc *fakeCompute) ReplicationRoute(_ context.Context, replica, source compute.Server, host string, port int) (string, int, error) {
	fc.record("route " + replica.ID + " -> " + source.ID)
	return host, port, nil
}

// fakeReplication is a fake guest's replication state: the accounts it
// holds as a source (name → password) and the link it follows as a
// replica. Callers hold the guest's mutex.
type fakeReplication struct {
	accounts map[string]string
	link     *wire.StartReplicationArgs
	starts   int
	// broken, if set, is the link's I/O error (the source unreachable).
	broken string
	// fenced: set_read_only made this source read-only; binlog is its
	// position (each fence moves it on).
	fenced bool
	binlog int
	// lagging: promote_replica times out (the replica cannot reach the
	// source's position).
	lagging    bool
	promotes   int
	promotedAt string
	// fencedAt and writableAt: when the fake took its fence and became a
	// writable source, to measure a switchover's write unavailability.
	fencedAt, writableAt time.Time
	// promoteGate, if set, holds promote_replica until it is closed.
	promoteGate chan struct{}
	// ioPos is what this replica received (gtid_io_pos), for elections.
	ioPos string
}

func (g *fakeGuest) replicationOp(op wire.Operation) wire.Result {
	decode := func(v any) bool { return len(op.Args) > 0 && wire.DecodeStrict(op.Args, v) == nil }
	r := &g.repl
	switch op.Kind {
	case wire.KindCreateReplicationAccount:
		var a wire.ReplicationAccountArgs
		if !decode(&a) || wire.CheckReplicationAccount(a.Name) != nil || a.Password == "" {
			return opErr(wire.CodeInvalidArgument, "bad replication account args")
		}
		if r.accounts == nil {
			r.accounts = map[string]string{}
		}
		r.accounts[a.Name] = a.Password
		return okResult(wire.ReplicationSourceResult{GTIDBinlogPos: "0-1-99"})
	case wire.KindDropReplicationAccount:
		var a wire.ReplicationAccountRef
		if !decode(&a) {
			return opErr(wire.CodeInvalidArgument, "bad args")
		}
		if _, ok := r.accounts[a.Name]; !ok {
			return opErr(wire.CodeNotFound, "replication account %s does not exist", a.Name)
		}
		delete(r.accounts, a.Name)
		return okResult(nil)
	case wire.KindStartReplication:
		var a wire.StartReplicationArgs
		if !decode(&a) || a.Validate() != nil {
			return opErr(wire.CodeInvalidArgument, "bad start args")
		}
		switch {
		case a.Repoint && r.link == nil:
			return opErr(wire.CodeFailedPrecondition, "repoint replication: this server follows no source")
		case a.Repoint:
			a.GTIDSlavePos = r.link.GTIDSlavePos
		case r.link != nil && (r.link.Host != a.Host || r.link.Port != a.Port):
			return opErr(wire.CodeFailedPrecondition, "follows another source")
		}
		r.link = &a
		r.starts++
	case wire.KindDetachReplica:
		r.link = nil
	case wire.KindSetReadOnly:
		var a wire.SetReadOnlyArgs
		if !decode(&a) {
			return opErr(wire.CodeInvalidArgument, "bad args")
		}
		if !a.ReadOnly && r.link != nil {
			return opErr(wire.CodeFailedPrecondition, "lift the fence: this server follows a source")
		}
		if a.ReadOnly && !r.fenced {
			r.binlog++
			r.fencedAt = time.Now()
		}
		r.fenced = a.ReadOnly
	case wire.KindPromoteReplica:
		var a wire.PromoteReplicaArgs
		if !decode(&a) || a.Validate() != nil {
			return opErr(wire.CodeInvalidArgument, "bad promote args")
		}
		r.promotes++
		r.promotedAt = a.GTIDPos
		if r.lagging {
			return opErr(wire.CodeFailedPrecondition, "promote: the replica did not apply the primary's position %s within %d s; nothing was changed", a.GTIDPos, a.TimeoutSeconds)
		}
		r.link, r.fenced = nil, false
		r.writableAt = time.Now()
	}
	return okResult(g.replicationStatus())
}

func (g *fakeGuest) replicationStatus() wire.ReplicationStatus {
	l := g.repl.link
	if l == nil {
		return wire.ReplicationStatus{Role: wire.RoleStandalone, ReadOnly: g.repl.fenced, GTIDBinlogPos: fmt.Sprintf("0-1-%d", 100+g.repl.binlog)}
	}
	zero := int64(0)
	if g.repl.broken != "" {
		return wire.ReplicationStatus{Role: wire.RoleReplica, SourceHost: l.Host, SourcePort: l.Port, SQLRunning: true,
			GTIDSlavePos: l.GTIDSlavePos, ReadOnly: true, LastError: "I/O: " + g.repl.broken}
	}
	return wire.ReplicationStatus{Role: wire.RoleReplica, SourceHost: l.Host, SourcePort: l.Port, IORunning: true, SQLRunning: true,
		SecondsBehind: &zero, GTIDSlavePos: l.GTIDSlavePos, GTIDIOPos: g.repl.ioPos, ReadOnly: true}
}

// replication returns a copy of the guest's replication state.
func (g *fakeGuest) replication() (accounts map[string]string, link *wire.StartReplicationArgs, starts int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	accounts = map[string]string{}
	for k, v := range g.repl.accounts {
		accounts[k] = v
	}
	if g.repl.link != nil {
		l := *g.repl.link
		link = &l
	}
	return accounts, link, g.repl.starts
}

// fence reports whether the guest is fenced (read-only as a source).
func (g *fakeGuest) fence() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.repl.fenced
}

// setIOPos sets what this replica reports it received.
func (g *fakeGuest) setIOPos(pos string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.repl.ioPos = pos
}

// setLagging makes promote_replica time out on this guest.
func (g *fakeGuest) setLagging(v bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.repl.lagging = v
}

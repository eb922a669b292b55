package heartbeat

import (
	"context"
	"path/filepath"
	"testing"

	"strata/agent/wire"
)

type status struct{ res wire.StatusResult }

func (s status) Status(context.Context) wire.StatusResult { return s.res }

func TestHeartbeatCarriesStatusVolumeAndLastOp(t *testing.T) {
	dir := t.TempDir()
	b := Builder{Status: status{wire.StatusResult{Status: wire.StatusRestartRequired, Detail: "waits"}}, VolumePath: dir, LastCompleted: func() string { return "op-9" }}
	hb := b.Heartbeat(context.Background())
	if hb.Status != wire.StatusRestartRequired || hb.StatusDetail != "waits" || hb.LastCompletedOp != "op-9" {
		t.Fatalf("%+v", hb)
	}
	if hb.Volume == nil || hb.Volume.Path != dir || hb.Volume.TotalBytes == 0 {
		t.Fatalf("volume %+v", hb.Volume)
	}
	// An unreadable volume is reported in the detail, not as a failure.
	b = Builder{Status: status{wire.StatusResult{Status: wire.StatusRunning}}, VolumePath: filepath.Join(dir, "gone")}
	hb = b.Heartbeat(context.Background())
	if hb.Volume != nil || hb.Status != wire.StatusRunning || hb.StatusDetail == "" {
		t.Fatalf("%+v", hb)
	}
}

// A replica's link and a source's binary log position go into the
// heartbeat; a server with neither, a failed read or a stopped database
// send none.
func TestHeartbeatCarriesReplicationState(t *testing.T) {
	zero := int64(0)
	for _, tc := range []struct {
		name   string
		status wire.DatastoreStatus
		st     wire.ReplicationStatus
		err    error
		want   bool
	}{
		{"replica", wire.StatusRunning, wire.ReplicationStatus{Role: wire.RoleReplica, IORunning: true, SecondsBehind: &zero, GTIDSlavePos: "0-1-5"}, nil, true},
		{"source", wire.StatusRunning, wire.ReplicationStatus{Role: wire.RoleStandalone, GTIDBinlogPos: "0-1-9"}, nil, true},
		{"empty binary log", wire.StatusRunning, wire.ReplicationStatus{Role: wire.RoleStandalone}, nil, false},
		{"read failed", wire.StatusRunning, wire.ReplicationStatus{Role: wire.RoleStandalone, GTIDBinlogPos: "0-1-9"}, wire.Errorf(wire.CodeUnavailable, "down"), false},
		{"stopped", wire.StatusShutdown, wire.ReplicationStatus{Role: wire.RoleReplica}, nil, false},
	} {
		b := Builder{Status: status{wire.StatusResult{Status: tc.status}},
			Replication: func(context.Context) (wire.ReplicationStatus, error) { return tc.st, tc.err }}
		hb := b.Heartbeat(context.Background())
		if got := hb.Replication != nil; got != tc.want {
			t.Errorf("%s: replication in the heartbeat %v, want %v (%+v)", tc.name, got, tc.want, hb.Replication)
		} else if got && (hb.Replication.Role != tc.st.Role || hb.Replication.GTIDBinlogPos != tc.st.GTIDBinlogPos || hb.Replication.GTIDSlavePos != tc.st.GTIDSlavePos) {
			t.Errorf("%s: %+v, want %+v", tc.name, *hb.Replication, tc.st)
		}
	}
}

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

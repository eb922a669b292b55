package instances_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/instances"
	"strata/controller/store"
	"strata/controller/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

func TestStatusDerivesFromTaskAndHeartbeatAsTroveDoes(t *testing.T) {
	now := time.Now()
	stale := time.Minute
	beat := func(s wire.DatastoreStatus, age time.Duration) *instances.Reported {
		return &instances.Reported{Status: s, ReceivedAt: now.Add(-age)}
	}
	cases := []struct {
		name          string
		d             instances.Desired
		r             *instances.Reported
		want, wantOps string
	}{
		{"building, no heartbeat yet", instances.Desired{Task: instances.TaskBuilding}, nil, "BUILD", ""},
		{"building, agent preparing", instances.Desired{Task: instances.TaskBuilding}, beat(wire.StatusBuilding, 0), "BUILD", "BUILDING"},
		{"build failed", instances.Desired{Task: instances.TaskNone, Errored: true}, beat(wire.StatusFailed, 0), "ERROR", "FAILED"},
		{"errored wins over running", instances.Desired{Task: instances.TaskNone, Errored: true}, beat(wire.StatusRunning, 0), "ERROR", "HEALTHY"},
		{"running", instances.Desired{Task: instances.TaskNone}, beat(wire.StatusRunning, time.Second), "ACTIVE", "HEALTHY"},
		{"restarting", instances.Desired{Task: instances.TaskRebooting}, beat(wire.StatusRunning, 0), "REBOOT", "HEALTHY"},
		{"resizing", instances.Desired{Task: instances.TaskResizing}, beat(wire.StatusRunning, 0), "RESIZE", "HEALTHY"},
		{"deleting", instances.Desired{Task: instances.TaskDeleting}, beat(wire.StatusRunning, 0), "SHUTDOWN", "HEALTHY"},
		{"config waits for restart (controller knows)", instances.Desired{Task: instances.TaskNone, RestartRequired: true}, beat(wire.StatusRunning, 0), "RESTART_REQUIRED", "HEALTHY"},
		{"config waits for restart (agent says)", instances.Desired{Task: instances.TaskNone}, beat(wire.StatusRestartRequired, 0), "RESTART_REQUIRED", "RESTART_REQUIRED"},
		{"restart required but database down", instances.Desired{Task: instances.TaskNone, RestartRequired: true}, beat(wire.StatusShutdown, 0), "SHUTDOWN", "SHUTDOWN"},
		{"crashed", instances.Desired{Task: instances.TaskNone}, beat(wire.StatusCrashed, 0), "SHUTDOWN", "CRASHED"},
		{"blocked", instances.Desired{Task: instances.TaskNone}, beat(wire.StatusBlocked, 0), "BLOCKED", "BLOCKED"},
		{"agent silent too long", instances.Desired{Task: instances.TaskNone}, beat(wire.StatusRunning, 2*stale), "ERROR", "UNKNOWN"},
		{"never reported, no task (after reset-status)", instances.Desired{Task: instances.TaskNone}, nil, "ERROR", ""},
		{"prepared, heartbeat still says building", instances.Desired{Task: instances.TaskNone}, beat(wire.StatusBuilding, 0), "BUILD", "BUILDING"},
		{"agent status unknown", instances.Desired{Task: instances.TaskNone}, beat(wire.StatusUnknown, 0), "ERROR", "UNKNOWN"},
	}
	for _, c := range cases {
		got, ops := instances.Status(c.d, c.r, now, stale)
		if got != c.want || ops != c.wantOps {
			t.Errorf("%s: status %s/%s, want %s/%s", c.name, got, ops, c.want, c.wantOps)
		}
	}
}

func TestDesiredAndReportedStayApartAndProjectsAreSeparate(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		now := time.Now().Truncate(time.Millisecond)
		db.Exec(ctx, `INSERT INTO datastores (id, name, created_at, updated_at) VALUES ('ds', 'mariadb', 0, 0)`)
		db.Exec(ctx, `INSERT INTO datastore_versions (id, datastore_id, name, manager, image_id, active, port, boot_timeout_s, created_at, updated_at)
			VALUES ('v', 'ds', '10.11', 'mariadb', 'img', 1, 3306, 600, 0, 0)`)
		db.Exec(ctx, `INSERT INTO flavors (id, name, ram_mb, vcpus, disk_gb, created_at) VALUES ('f', 'small', 1024, 1, 0, 0)`)
		for _, d := range []instances.Desired{
			{ID: "a1", ProjectID: "A", Name: "one", DatastoreVersionID: "v", FlavorID: "f", VolumeSizeGB: 1, Task: instances.TaskBuilding, CreatedAt: now},
			{ID: "b1", ProjectID: "B", Name: "two", DatastoreVersionID: "v", FlavorID: "f", VolumeSizeGB: 2, Task: instances.TaskBuilding, CreatedAt: now.Add(time.Millisecond)},
		} {
			if err := instances.Insert(ctx, db, d); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := instances.Get(ctx, db, "B", "a1"); !errors.Is(err, instances.ErrNotFound) {
			t.Fatalf("project B sees A's instance: %v", err)
		}
		if l, _ := instances.List(ctx, db, instances.ListOptions{Project: "A"}); len(l) != 1 || l[0].ID != "a1" {
			t.Fatalf("project A's list = %+v", l)
		}
		// The agent's heartbeat (from an enrolled agent) lands in the
		// reported table only.
		if err := agentendpoint.ReplaceKeys(ctx, db, "a1", []agentendpoint.EnrolledKey{{Fingerprint: "SHA256:a1", AuthorizedKey: "ssh-ed25519 AAAA", EnrolledAt: now}}); err != nil {
			t.Fatal(err)
		}
		st := &agentendpoint.SQLStore{DB: db}
		st.RecordHeartbeat(ctx, "a1", wire.Heartbeat{AgentVersion: "1", BootID: "b", Seq: 1, Status: wire.StatusRunning,
			Volume: &wire.FilesystemStats{TotalBytes: 100, UsedBytes: 10}}, now)
		in, err := instances.Get(ctx, db, "A", "a1")
		if err != nil || in.Reported == nil || in.Reported.Status != wire.StatusRunning || in.Reported.Volume.UsedBytes != 10 {
			t.Fatalf("instance with report = %+v, %v", in, err)
		}
		if in.Task != instances.TaskBuilding {
			t.Fatal("a heartbeat changed the desired state")
		}
		if err := instances.SetTask(ctx, db, "a1", instances.TaskNone, now); err != nil {
			t.Fatal(err)
		}
		if err := instances.SetFault(ctx, db, "a1", instances.Fault{Message: "boom", Details: "tail"}, true, now); err != nil {
			t.Fatal(err)
		}
		in, _ = instances.Get(ctx, db, "", "a1")
		if !in.Errored || in.Fault == nil || in.Fault.Message != "boom" || in.Reported.Status != wire.StatusRunning {
			t.Fatalf("after fault: %+v", in)
		}
		srv, _ := json.Marshal(map[string]any{"id": "vm"})
		if err := instances.Update(ctx, db, "a1", now, `server = ?, host = ?, port = ?`, string(srv), "127.0.0.1", 40001); err != nil {
			t.Fatal(err)
		}
		if err := instances.MarkDeleted(ctx, db, "a1", now); err != nil {
			t.Fatal(err)
		}
		if _, err := instances.Get(ctx, db, "A", "a1"); !errors.Is(err, instances.ErrNotFound) {
			t.Fatalf("deleted instance still found: %v", err)
		}
		if err := instances.SetTask(ctx, db, "a1", instances.TaskRebooting, now); !errors.Is(err, instances.ErrNotFound) {
			t.Fatalf("update of a deleted instance: %v", err)
		}
	})
}

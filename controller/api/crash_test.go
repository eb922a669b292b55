package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"strata/controller/store/storetest"
	"strata/controller/tasks"
)

// activeInstance creates an instance on r and waits until it is ACTIVE.
func activeInstance(t *testing.T, r *rig, c *client, name string) string {
	t.Helper()
	id := c.must(200, "POST", "/instances", createBody(name, map[string]any{"databases": []any{map[string]any{"name": "shop"}}}))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	return id
}

// TestAnAcceptedOperationHappensOnceOrFailsVisiblyAcrossACrash: guest calls
// answered 202 while the guest cannot take them (its agent is away), then
// the controller goes down before delivering them. After the restart the
// first is carried out once; the second, a duplicate, fails in the guest,
// and that failure is recorded on the instance, which stays ACTIVE;
// reset_status clears the fault.
func TestAnAcceptedOperationHappensOnceOrFailsVisiblyAcrossACrash(t *testing.T) {
	fc := newFakeCompute(t)
	dir, agentAddr := t.TempDir(), freeAddr(t)
	r1 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr, guestCallTimeout: 300 * time.Millisecond})
	c := r1.admin()
	id := activeInstance(t, r1, c, "accepted")
	fc.guest(id).halt() // the agent is away: nothing is delivered
	c.must(202, "POST", "/instances/"+id+"/databases", map[string]any{"databases": []any{map[string]any{"name": "late"}}})
	c.must(202, "POST", "/instances/"+id+"/databases", map[string]any{"databases": []any{map[string]any{"name": "shop"}}})
	r1.ctl.Stop()
	fc.powerOff()

	r2 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr, guestCallTimeout: 300 * time.Millisecond})
	c = r2.admin()
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	waitFor(t, "the accepted operations to run", 20*time.Second, func() bool {
		return storetest.Count(t, r2.ctl.DB, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = 'create_databases' AND done_at IS NOT NULL", id) == 2
	})
	g := fc.guest(id)
	g.mu.Lock()
	late := g.dbs["late"]
	g.mu.Unlock()
	if !late {
		t.Fatal("the accepted create of database late was lost")
	}
	var in map[string]any
	waitFor(t, "the duplicate's failure on the instance", 20*time.Second, func() bool {
		in = c.instance(id)
		f, _ := in["fault"].(map[string]any)
		return f != nil && strings.Contains(f["message"].(string), "already_exists")
	})
	if in["status"] != "ACTIVE" {
		t.Fatalf("a failed accepted operation changed the status: %v", in["status"])
	}
	c.must(202, "POST", "/instances/"+id+"/action", map[string]any{"reset_status": map[string]any{}})
	if f := c.instance(id)["fault"]; f != nil {
		t.Fatalf("reset_status left the fault: %v", f)
	}
}

// TestADeleteCancelsAQueuedRecover: an instance whose server is down and
// whose guest does not come back waits in REBOOT; a delete does not wait
// behind that recovery (up to the boot timeout) but cancels it.
func TestADeleteCancelsAQueuedRecover(t *testing.T) {
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc, bootTimeout: 10 * time.Minute})
	c := r.admin()
	id := activeInstance(t, r, c, "doomed")
	fc.mu.Lock()
	fc.silent = true
	fc.mu.Unlock()
	fc.powerOff()
	c.waitStatus(id, "REBOOT", 10*time.Second)
	start := time.Now()
	c.must(202, "DELETE", "/instances/"+id, nil)
	c.waitGone(id, 10*time.Second)
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'recover' AND state = ?", id, tasks.StateCancelled); n != 1 {
		t.Fatalf("%d cancelled recover tasks, want 1", n)
	}
	t.Logf("deleted %.1fs after the request while its recovery waited", time.Since(start).Seconds())
}

// TestAServerWithOutdatedLaunchSettingsAsksForARestart: a server found
// running with launch settings older than the driver's is neither kept
// silently nor killed: the instance shows RESTART_REQUIRED with the
// reason, and the restart action restarts the server.
func TestAServerWithOutdatedLaunchSettingsAsksForARestart(t *testing.T) {
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc})
	c := r.admin()
	id := activeInstance(t, r, c, "old-launch")
	fc.mu.Lock()
	fc.outdated[id] = "started with the port layout of an older controller"
	fc.mu.Unlock()
	in := c.waitStatus(id, "RESTART_REQUIRED", 10*time.Second)
	if !strings.Contains(in["server_restart_reason"].(string), "older controller") {
		t.Fatalf("server_restart_reason = %v", in["server_restart_reason"])
	}
	c.must(202, "POST", "/instances/"+id+"/action", map[string]any{"restart": map[string]any{}})
	in = c.waitStatus(id, "ACTIVE", 20*time.Second)
	if in["server_restart_reason"] != nil {
		t.Fatalf("reason still shown after the restart: %v", in["server_restart_reason"])
	}
	fc.mu.Lock()
	restarted := strings.Contains(strings.Join(fc.calls, ","), "RestartServer "+id)
	fc.mu.Unlock()
	if !restarted {
		t.Fatal("the restart action did not restart the server")
	}
}

// TestAVolumeLargerThanRecordedRollsForward: a crash after the disk grew
// (and the driver recorded it) but before the filesystem and the instance
// did, then reset_status: recovery rolls the resize forward, and record,
// disk, filesystem and API agree on the larger size.
func TestAVolumeLargerThanRecordedRollsForward(t *testing.T) {
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc})
	c := r.admin()
	id := activeInstance(t, r, c, "half-resized")
	ctx := context.Background()
	vol := fc.volumes[id]
	if _, err := fc.ExtendVolume(ctx, fc.server(id), vol, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ctl.DB.Exec(ctx, `UPDATE instances SET volume = ? WHERE id = ?`, `{"id":"`+id+`","size_gb":2,"guest_device":"/dev/disk/by-id/virtio-strata-data"}`, id); err != nil {
		t.Fatal(err)
	}
	c.waitStatus(id, "RESIZE", 10*time.Second)
	in := c.waitStatus(id, "ACTIVE", 20*time.Second)
	if in["volume"].(map[string]any)["size"] != 2.0 {
		t.Fatalf("API volume size %v after the roll-forward", in["volume"])
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM instances WHERE id = ? AND volume_size_gb = 2", id); n != 1 {
		t.Fatal("the record still says 1 GB")
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = 'resize_filesystem' AND done_at IS NOT NULL", id); n != 1 {
		t.Fatal("the filesystem was not grown")
	}
}

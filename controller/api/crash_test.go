package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"strata/agent/wire"
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
	t.Parallel()
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

// TestRecoveryConvergesAfterWhatACrashLeaves runs, on one controller, each
// on an ACTIVE instance of its own, what a crash can leave behind:
//
//   - a server down whose guest does not come back: the instance waits in
//     REBOOT, and a delete cancels that recovery instead of waiting behind
//     it (up to the boot timeout);
//   - a server found running with launch settings older than the
//     driver's: neither kept silently nor killed — RESTART_REQUIRED with
//     the reason shown, and the restart action restarts the server;
//   - a volume grown on disk and in the driver's record but not in the
//     instance (a resize cut short, then reset): recovery rolls it forward
//     until record, disk, filesystem and API agree;
//   - an operation cut short on every run (a guest that keeps crashing in
//     it): run again up to the bound, then the task fails with a clear
//     reason, and the instance, whose database answers, stays ACTIVE with
//     the fault recorded instead of going to ERROR;
//   - a configuration the guest did not apply (a configure task lost to a
//     reset): recovery applies the attached one again.
func TestRecoveryConvergesAfterWhatACrashLeaves(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc, bootTimeout: 10 * time.Minute})
	c := r.admin()
	ids := map[string]string{}
	for _, n := range []string{"doomed", "old-launch", "half-resized", "crashy", "drifted"} {
		ids[n] = c.must(200, "POST", "/instances", createBody(n, nil))["instance"].(map[string]any)["id"].(string)
	}
	for _, id := range ids {
		c.waitStatus(id, "ACTIVE", 30*time.Second)
	}
	ctx := context.Background()

	t.Run("a delete cancels a queued recover", func(t *testing.T) {
		id := ids["doomed"]
		fc.mu.Lock()
		fc.silentIDs[id] = true
		fc.mu.Unlock()
		fc.powerOffOne(id)
		c.waitStatus(id, "REBOOT", 10*time.Second)
		c.must(202, "DELETE", "/instances/"+id, nil)
		c.waitGone(id, 10*time.Second)
		if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'recover' AND state = ?", id, tasks.StateCancelled); n != 1 {
			t.Fatalf("%d cancelled recover tasks, want 1", n)
		}
	})

	t.Run("outdated launch settings ask for a restart that restarts the server", func(t *testing.T) {
		id := ids["old-launch"]
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
	})

	t.Run("a volume larger than recorded rolls forward", func(t *testing.T) {
		id := ids["half-resized"]
		fc.mu.Lock()
		vol := fc.volumes[id]
		fc.mu.Unlock()
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
	})

	t.Run("an operation cut short on every run leaves a healthy instance ACTIVE", func(t *testing.T) {
		id := ids["crashy"]
		g := fc.guest(id)
		g.mu.Lock()
		g.interrupt[wire.KindRestart] = true
		g.mu.Unlock()
		c.must(202, "POST", "/instances/"+id+"/action", map[string]any{"restart": map[string]any{}})
		var in map[string]any
		waitFor(t, "the restart to fail", 20*time.Second, func() bool {
			in = c.instance(id)
			return in["fault"] != nil && in["status"] != "REBOOT"
		})
		msg := in["fault"].(map[string]any)["message"].(string)
		if in["status"] != "ACTIVE" || !strings.Contains(msg, "cut short and not run again") || !strings.Contains(msg, fmt.Sprintf("%d runs", wire.MaxAttempts)) {
			t.Fatalf("status %v, fault %q", in["status"], msg)
		}
	})

	t.Run("a configuration the guest did not apply is applied again", func(t *testing.T) {
		id := ids["drifted"]
		before := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'configure' AND state = 'done'", id)
		if _, err := r.ctl.DB.Exec(ctx, `UPDATE instances SET configuration_applied = 'something-else' WHERE id = ?`, id); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the configuration applied again", 20*time.Second, func() bool {
			return storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'configure' AND state = 'done'", id) == before+1 &&
				storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM instances WHERE id = ? AND configuration_applied <> 'something-else'", id) == 1
		})
		if st := c.instance(id)["status"]; st != "ACTIVE" {
			t.Fatalf("status %v", st)
		}
	})
}

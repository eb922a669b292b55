package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"strata/agent/wire"
	"strata/controller/backups"
	"strata/controller/compute"
	"strata/controller/configurations"
	"strata/controller/lifecycle"
	"strata/controller/registry"
	"strata/controller/store/storetest"
	"strata/controller/tasks"
)

// TestEveryStepOfCreateAndTheMovesCanRunTwice: the task engine runs every
// step of every task a second time, from where it was, before it saves
// the step's result — what a controller killed between a step's work and
// its record leaves behind, at each step. An instance is created, rebuilt
// onto a new image, resized to another flavor, backed up (full and
// incremental) and restored from the chain, upgraded to another version
// and deleted: each ends as it would have once (no fault, one enrolled
// key, its database kept, the restore's data the chain's, the store empty
// after the chain is deleted, nothing left at the end).
func TestEveryStepOfCreateAndTheMovesCanRunTwice(t *testing.T) {
	t.Parallel()
	r, c, fc := replayRig(t, rigOptions{bootTimeout: 20 * time.Second})
	ctx := context.Background()
	id := activeInstance(t, r, c, "twice")
	settled := func(move string) map[string]any {
		t.Helper()
		in := c.instance(id)
		if in["fault"] != nil {
			t.Fatalf("fault after the %s: %v", move, in["fault"])
		}
		if keys := agentKeys(t, r, id); len(keys) != 1 {
			t.Fatalf("enrolled agent keys after the %s: %v", move, keys)
		}
		if dbs := c.must(200, "GET", "/instances/"+id+"/databases", nil)["databases"].([]any); len(dbs) != 1 || dbs[0].(map[string]any)["name"] != "shop" {
			t.Fatalf("databases after the %s: %v", move, dbs)
		}
		return in
	}
	settled("create")

	img := registerImage(t, r, "mariadb-10.11-agent-2", map[string]string{"strata_manager": "mariadb", "strata_datastore_version": "10.11"})
	c.must(202, "POST", "/mgmt/instances/"+id+"/action", map[string]any{"rebuild": map[string]any{"image_id": img.ID}})
	waitFor(t, "the rebuild", 60*time.Second, func() bool {
		in := c.instance(id)
		return in["status"] == "ACTIVE" && in["agent_version"] == "fake-"+img.ID && !fc.setAside(id)
	})
	settled("rebuild")

	var medium string
	for _, f := range c.must(200, "GET", "/flavors", nil)["flavors"].([]any) {
		if f := f.(map[string]any); f["name"] == "strata.medium" {
			medium = f["str_id"].(string)
		}
	}
	c.must(202, "POST", "/instances/"+id+"/action", map[string]any{"resize": map[string]any{"flavorRef": medium}})
	waitFor(t, "the flavor resize", 60*time.Second, func() bool {
		in := c.instance(id)
		return in["status"] == "ACTIVE" && fmt.Sprint(in["flavor"].(map[string]any)["id"]) == medium
	})
	settled("resize")
	g := fc.guest(id)
	g.mu.Lock()
	mem := g.memoryMB
	g.mu.Unlock()
	if mem != 2048 {
		t.Fatalf("after the resize the guest's configuration is for %d MB, want strata.medium's 2048", mem)
	}

	// Backups: a full one, an incremental after more data, a restore of
	// the chain into a new instance, then the chain deleted.
	full := c.waitBackup(c.createBackup(map[string]any{"name": "full", "instance": id})["id"].(string), backups.StatusCompleted, 30*time.Second)
	c.waitStatus(id, "ACTIVE", 10*time.Second)
	c.must(202, "POST", "/instances/"+id+"/databases", map[string]any{"databases": []any{map[string]any{"name": "later"}}})
	inc := c.waitBackup(c.createBackup(map[string]any{"name": "inc", "instance": id, "incremental": 1})["id"].(string), backups.StatusCompleted, 30*time.Second)
	if inc["parent_id"] != full["id"] {
		t.Fatalf("the incremental's parent is %v, want %v", inc["parent_id"], full["id"])
	}
	c.waitStatus(id, "ACTIVE", 10*time.Second)
	restored := c.must(200, "POST", "/instances", createBody("restored", map[string]any{"restorePoint": map[string]any{"backupRef": inc["id"]}}))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(restored, "ACTIVE", 30*time.Second)
	if got := c.guestDBs(r, restored); !slices.Equal(got, []string{"later", "shop"}) {
		t.Fatalf("restored from the incremental: %v", got)
	}
	c.must(202, "DELETE", "/backups/"+full["id"].(string), nil)
	c.waitBackupGone(inc["id"].(string), 10*time.Second)
	waitFor(t, "the backup store to empty", 10*time.Second, func() bool { return len(r.storeObjects()) == 0 })
	c.must(202, "DELETE", "/instances/"+restored, nil)
	c.waitGone(restored, 60*time.Second)
	c.must(202, "DELETE", "/instances/"+id+"/databases/later", nil)
	waitFor(t, "the database dropped", 10*time.Second, func() bool { return slices.Equal(c.guestDBs(r, id), []string{"shop"}) })

	reg := &registry.Registry{DB: r.ctl.DB}
	up := registerImage(t, r, "mariadb-11.8", map[string]string{"strata_manager": "mariadb", "strata_datastore_version": "11.8"})
	if _, err := reg.UpdateVersion(ctx, registry.VersionSpec{Datastore: "mariadb", Name: "11.8", Manager: "mariadb", ImageID: up.ID, Active: true, Port: 3306, BootTimeout: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.AddUpgradePath(ctx, "mariadb", "10.11", "11.8"); err != nil {
		t.Fatal(err)
	}
	c.must(202, "PATCH", "/instances/"+id, map[string]any{"instance": map[string]any{"datastore_version": "11.8"}})
	waitFor(t, "the upgrade", 60*time.Second, func() bool {
		in := c.instance(id)
		return in["status"] == "ACTIVE" && in["datastore"].(map[string]any)["version"] == "11.8" && !fc.setAside(id)
	})
	settled("upgrade")

	c.must(202, "DELETE", "/instances/"+id, nil)
	c.waitGone(id, 60*time.Second)
	fc.mu.Lock()
	_, server := fc.servers[id]
	_, volume := fc.volumes[id]
	fc.mu.Unlock()
	if server || volume {
		t.Fatalf("after the delete: server left %v, volume left %v", server, volume)
	}
	// Each move's steps were run twice (the upgrade is the rebuild with
	// its upgrade steps).
	ranTwice(t, r, "create:", "rebuild:", "resize_flavor:", "rebuild:upgrade", "delete:", "backup:stream", "create:restore", "backup_delete:")
}

// TestEveryStepOfReplicationCanRunTwice: the same for a replication
// group — two replicas seeded from one backup, a switchover to one of
// them, a detach — every step run twice ends as once: each replica
// follows the source with its own account there, the old source follows
// the new one fenced, and the detached replica follows nobody.
func TestEveryStepOfReplicationCanRunTwice(t *testing.T) {
	t.Parallel()
	r, c, fc := replayRig(t, rigOptions{guestCallTimeout: 2 * time.Second})
	src := newActive(c, "primary", "shop")
	ids := replicaIDs(t, c, src, 2)
	a, b := ids[0], ids[1]
	follows := func(id, source string) { t.Helper(); followsWithItsAccount(t, fc, id, source) }
	follows(a, src)
	follows(b, src)
	if accounts, _, _ := fc.guest(src).replication(); len(accounts) != 2 {
		t.Fatalf("the source holds accounts %v, want one for each replica", keys(accounts))
	}

	if code, doc := promote(c, a); code != 202 {
		t.Fatalf("promote: HTTP %d %v", code, doc)
	}
	waitFor(t, "the switchover", 60*time.Second, func() bool {
		in := c.instance(a)
		list, _ := in["replicas"].([]any)
		return in["status"] == "ACTIVE" && len(list) == 2 && c.instance(src)["status"] == "ACTIVE" && c.instance(b)["status"] == "ACTIVE"
	})
	follows(src, a)
	follows(b, a)
	if !fc.guest(src).fence() || fc.guest(a).fence() {
		t.Fatalf("after the switchover: old source fenced %v, new source fenced %v", fc.guest(src).fence(), fc.guest(a).fence())
	}
	if _, link, _ := fc.guest(a).replication(); link != nil {
		t.Fatalf("the new source still follows %+v", link)
	}

	c.must(202, "PUT", "/instances/"+b, map[string]any{"instance": map[string]any{"replica_of": nil}})
	waitFor(t, "the detach", 30*time.Second, func() bool {
		in := c.instance(b)
		return in["status"] == "ACTIVE" && in["replica_of"] == nil
	})
	if _, link, _ := fc.guest(b).replication(); link != nil {
		t.Fatalf("the detached replica still follows %+v", link)
	}
	for _, id := range []string{src, a, b} {
		if f := c.instance(id)["fault"]; f != nil {
			t.Fatalf("fault on %s: %v", id, f)
		}
	}
	ranTwice(t, r, "create:", "backup:stream", "promote:")
}

// TestEveryStepOfAFailoverAndARejoinCanRunTwice: the same for a
// failover (eject_replica_source) and the old source's rejoin. The
// source of a group of three goes silent and is ejected: the replica
// that received the most is promoted (once), the other follows it with
// its own account, the old source's server is fenced and its agent's
// fence waits queued. Then the old source rejoins: unfenced, started,
// read-only, following the new source with its own account from its own
// position — one writable primary, no fault, one key each. Then a
// replica is rebuilt onto a new image and follows its source again.
func TestEveryStepOfAFailoverAndARejoinCanRunTwice(t *testing.T) {
	t.Parallel()
	fc, r, c, src, a, b := failoverGroup(t, rigOptions{}, "0-1-101", "0-1-90")
	r.ctl.Engine.ReplaySteps.Store(true)
	fc.guest(src).halt()
	silence(t, r, src)
	if code, doc := eject(c, src); code != 202 {
		t.Fatalf("eject: HTTP %d %v", code, doc)
	}
	waitFor(t, "the failover", 60*time.Second, func() bool {
		of, _ := c.instance(b)["replica_of"].(map[string]any)
		f, _ := c.instance(src)["fault"].(map[string]any)
		return c.instance(a)["status"] == "ACTIVE" && c.instance(a)["replica_of"] == nil && of != nil && of["id"] == a &&
			c.instance(b)["status"] == "ACTIVE" && f != nil && c.instance(src)["status"] != "EJECT"
	})
	onePrimary(t, fc, a, b)
	followsWithItsAccount(t, fc, b, a)
	if f := c.instance(src)["fault"].(map[string]any); !strings.Contains(f["message"].(string), "ejected from its replication group: "+a) {
		t.Fatalf("the ejected source's fault: %v", f["message"])
	}
	wantFenced(t, fc, src)
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = 'set_read_only' AND done_at IS NULL", src); n != 1 {
		t.Fatalf("%d fences queued for the ejected source, want 1", n)
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM ejections WHERE instance_id = ? AND elected_id = ?", src, a); n != 1 {
		t.Fatalf("%d ejections of the old source by %s recorded, want 1", n, a)
	}

	if code, doc := rejoin(c, src); code != 202 {
		t.Fatalf("rejoin: HTTP %d %v", code, doc)
	}
	waitFor(t, "the rejoin", 60*time.Second, func() bool {
		in := c.instance(src)
		of, _ := in["replica_of"].(map[string]any)
		return in["status"] != "REJOIN" && (in["fault"] != nil || in["status"] == "ACTIVE" && of != nil && of["id"] == a)
	})
	// The instance is ACTIVE once the step's transaction committed; the
	// step's run again comes after.
	if st := taskEnded(t, r, src, lifecycle.KindRejoin); st != tasks.StateDone {
		t.Fatalf("the rejoin task ended %s, want done", st)
	}
	for _, id := range []string{src, a, b} {
		if f := c.instance(id)["fault"]; f != nil {
			t.Fatalf("fault on %s after the rejoin: %v", id, f)
		}
		if keys := agentKeys(t, r, id); len(keys) != 1 {
			t.Fatalf("enrolled agent keys of %s: %v", id, keys)
		}
	}
	onePrimary(t, fc, a, src, b)
	followsWithItsAccount(t, fc, src, a)
	followsWithItsAccount(t, fc, b, a)
	if _, link, _ := fc.guest(src).replication(); link.GTIDSlavePos != "0-1-101" {
		t.Fatalf("the rejoined source follows from %q, want its own position 0-1-101", link.GTIDSlavePos)
	}
	if accounts, _, _ := fc.guest(a).replication(); len(accounts) != 2 {
		t.Fatalf("the new source holds accounts %v, want one for each replica", keys(accounts))
	}
	if st, err := fc.ServerState(context.Background(), fc.server(src)); err != nil || st != compute.StateRunning {
		t.Fatalf("the rejoined source's server: %s, %v; want running", st, err)
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM ejections WHERE instance_id = ?", src); n != 0 {
		t.Fatalf("the ejection is still recorded after the rejoin (%d)", n)
	}
	var listed []string
	for _, x := range asList(c.instance(a)["replicas"]) {
		listed = append(listed, x.(map[string]any)["id"].(string))
	}
	if len(listed) != 2 || !slices.Contains(listed, src) || !slices.Contains(listed, b) {
		t.Fatalf("the group's source lists %v, want %s and %s", listed, src, b)
	}

	// A replica rebuilt onto a new image follows its source again, with
	// its account's new password.
	img := registerImage(t, r, "mariadb-10.11-agent-2", map[string]string{"strata_manager": "mariadb", "strata_datastore_version": "10.11"})
	c.must(202, "POST", "/mgmt/instances/"+b+"/action", map[string]any{"rebuild": map[string]any{"image_id": img.ID}})
	waitFor(t, "the rebuilt replica", 60*time.Second, func() bool {
		in := c.instance(b)
		return in["status"] == "ACTIVE" && in["agent_version"] == "fake-"+img.ID && !fc.setAside(b)
	})
	if f := c.instance(b)["fault"]; f != nil {
		t.Fatalf("fault on the rebuilt replica: %v", f)
	}
	if keys := agentKeys(t, r, b); len(keys) != 1 {
		t.Fatalf("enrolled agent keys of the rebuilt replica: %v", keys)
	}
	followsWithItsAccount(t, fc, b, a)
	onePrimary(t, fc, a, src, b)
	ranTwice(t, r, "promote:elect ", "promote:elected ", "promote:promoted ", "promote:accounts ", "promote:repoint ", "promote:linked ",
		"rejoin:boot ", "rejoin:fenced ", "rejoin:account ", "rejoin:linked ", "rebuild:relink ", "rebuild:relinked ", "rebuild:relink-wait ")
}

// TestEveryStepOfAnAutomaticFailoverCanRunTwice: the same for the
// controller's own failover, once the silent source's grace period is
// over: the most current replica promoted once, the other following it,
// the old source fenced, and the setting moved to the new source (only).
func TestEveryStepOfAnAutomaticFailoverCanRunTwice(t *testing.T) {
	t.Parallel()
	fc, r, c, src, a, b := failoverGroup(t, rigOptions{heartbeatSeconds: 1}, "0-1-60", "0-1-70")
	r.ctl.Engine.ReplaySteps.Store(true)
	const grace = 8
	c.must(202, "PATCH", "/instances/"+src, map[string]any{"instance": map[string]any{"auto_failover": map[string]any{"grace_seconds": grace}}})
	fc.guest(src).halt()
	waitFor(t, "the automatic failover", 60*time.Second, func() bool {
		of, _ := c.instance(a)["replica_of"].(map[string]any)
		f, _ := c.instance(src)["fault"].(map[string]any)
		return c.instance(b)["status"] == "ACTIVE" && c.instance(b)["replica_of"] == nil && of != nil && of["id"] == b &&
			c.instance(a)["status"] == "ACTIVE" && f != nil && c.instance(src)["status"] != "EJECT"
	})
	onePrimary(t, fc, b, a)
	followsWithItsAccount(t, fc, a, b)
	for _, id := range []string{a, b} {
		if f := c.instance(id)["fault"]; f != nil {
			t.Fatalf("fault on %s after the failover: %v", id, f)
		}
	}
	sv := c.instance(src)
	if f := sv["fault"].(map[string]any); !strings.Contains(f["message"].(string), "failed over automatically: ejected from its replication group: "+b) {
		t.Fatalf("the old source's fault: %v", f["message"])
	}
	wantFenced(t, fc, src)
	if af, _ := c.instance(b)["auto_failover"].(map[string]any); af == nil || af["grace_seconds"] != float64(grace) || sv["auto_failover"] != nil {
		t.Fatalf("auto_failover after the failover: new source %v, old %v; want it moved to the new source", c.instance(b)["auto_failover"], sv["auto_failover"])
	}
	ranTwice(t, r, "promote:elect ", "promote:elected ", "promote:promoted ", "promote:accounts ", "promote:repoint ", "promote:linked ")
}

// TestEveryStepOfTheInstanceChangesCanRunTwice: the same for an
// instance's smaller changes — access (private, then public with CIDRs),
// a configuration group attached, changed (a live value, then a
// restart-only one) and detached, a restart, a reboot of its server, a
// volume resize and the recovery of its server after it died: each ends
// with the values in force, no fault and one enrolled key, the guest
// restarted once for the restart, its volume grown once, its server
// running again with its data.
func TestEveryStepOfTheInstanceChangesCanRunTwice(t *testing.T) {
	t.Parallel()
	r, c, fc := replayRig(t, rigOptions{})
	id := activeInstance(t, r, c, "changes")
	g := fc.guest(id)
	settled := func(change string) map[string]any {
		t.Helper()
		in := c.instance(id)
		if in["fault"] != nil {
			t.Fatalf("fault after the %s: %v", change, in["fault"])
		}
		if keys := agentKeys(t, r, id); len(keys) != 1 {
			t.Fatalf("enrolled agent keys after the %s: %v", change, keys)
		}
		return in
	}

	c.must(202, "PUT", "/instances/"+id, map[string]any{"instance": map[string]any{"access": map[string]any{"is_public": false}}})
	if a := settled("access change")["access"].(map[string]any); a["is_public"] != false {
		t.Fatalf("after going private: access %v", a)
	}
	if _, ok := fc.publication(id); ok {
		t.Fatal("a private instance is still published")
	}
	c.must(202, "PUT", "/instances/"+id, map[string]any{"instance": map[string]any{"access": map[string]any{"is_public": true, "allowed_cidrs": []any{"10.0.0.0/8"}}}})
	in := settled("second access change")
	if a := in["access"].(map[string]any); a["is_public"] != true || fmt.Sprint(a["allowed_cidrs"]) != "[10.0.0.0/8]" {
		t.Fatalf("after going public: access %v", a)
	}
	if _, ok := addressesOf(in)["public"]; !ok {
		t.Fatalf("a public instance lists no public address: %v", in["addresses"])
	}
	if p, ok := fc.publication(id); !ok || fmt.Sprint(p.AllowedCIDRs) != "[10.0.0.0/8]" {
		t.Fatalf("published as %+v, %v", p, ok)
	}

	cfg := c.must(200, "POST", "/configurations", groupBody("tuned", map[string]any{"max_connections": 555}))["configuration"].(map[string]any)["id"].(string)
	if doc := c.must(202, "PUT", "/instances/"+id, attach(id, cfg)); doc != nil {
		t.Fatalf("attach: %v", doc)
	}
	if got := g.applied("max_connections"); got != "555" {
		t.Fatalf("after attach: max_connections=%q, want 555", got)
	}
	settled("attach")
	if doc := c.must(200, "PATCH", "/configurations/"+cfg, patchValues(map[string]any{"max_connections": 666})); doc != nil {
		t.Fatalf("PATCH: %v", doc)
	}
	if got := g.applied("max_connections"); got != "666" {
		t.Fatalf("after PATCH: max_connections=%q, want 666", got)
	}
	c.must(200, "PATCH", "/configurations/"+cfg, patchValues(map[string]any{"performance_schema": true}))
	if st := settled("restart-only value")["status"]; st != "RESTART_REQUIRED" {
		t.Fatalf("after a restart-only value: status %v, want RESTART_REQUIRED", st)
	}

	g.mu.Lock()
	restarts := g.restarts
	g.mu.Unlock()
	c.must(202, "POST", "/instances/"+id+"/action", map[string]any{"restart": map[string]any{}})
	c.waitStatus(id, "ACTIVE", 30*time.Second)
	settled("restart")
	g.mu.Lock()
	restarted := g.restarts - restarts
	g.mu.Unlock()
	if restarted != 1 {
		t.Fatalf("the guest's database was restarted %d times for one restart", restarted)
	}

	c.must(202, "POST", "/mgmt/instances/"+id+"/action", map[string]any{"reboot": map[string]any{}})
	waitFor(t, "the reboot", 60*time.Second, func() bool {
		n := 0
		for _, call := range fc.callsSnapshot() {
			if call == "RestartServer "+id {
				n++
			}
		}
		return n > 0 && c.instance(id)["status"] == "ACTIVE"
	})
	settled("reboot")

	c.must(202, "PUT", "/instances/"+id, attach(id, nil))
	if got := g.applied("max_connections"); got != "" {
		t.Fatalf("after detach: max_connections=%q, want no override", got)
	}
	settled("detach")

	c.must(202, "POST", "/instances/"+id+"/action", map[string]any{"resize": map[string]any{"volume": map[string]any{"size": 2}}})
	waitFor(t, "the volume resize", 30*time.Second, func() bool {
		in := c.instance(id)
		return in["status"] == "ACTIVE" && in["volume"].(map[string]any)["size"] == 2.0
	})
	settled("volume resize")
	fc.mu.Lock()
	vol := fc.volumes[id]
	fc.mu.Unlock()
	g = fc.guest(id)
	g.mu.Lock()
	guestGB := g.volumeGB
	g.mu.Unlock()
	if vol.SizeGB != 2 || guestGB != 2 {
		t.Fatalf("after the resize: volume %d GB, the guest sees %d GB; want 2", vol.SizeGB, guestGB)
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = 'resize_filesystem'", id); n != 1 {
		t.Fatalf("%d filesystem grows queued for one resize, want 1", n)
	}

	// Its server dies: the recovery starts it again.
	fc.powerOffOne(id)
	c.waitStatus(id, "REBOOT", 20*time.Second)
	c.waitStatus(id, "ACTIVE", 60*time.Second)
	settled("recovery")
	if st, err := fc.ServerState(context.Background(), fc.server(id)); err != nil || st != compute.StateRunning {
		t.Fatalf("the recovered server: %s, %v; want running", st, err)
	}
	if dbs := c.guestDBs(r, id); !slices.Equal(dbs, []string{"shop"}) {
		t.Fatalf("databases after the recovery: %v", dbs)
	}
	ranTwice(t, r, "access:publish ", "configure:submit ", "configure:wait ", "restart:submit ", "restart:wait ",
		"resize_volume:extend ", "resize_volume:grow ", "resize_volume:wait ", "recover:start ", "recover:wait ")
}

// taskEnded waits until instance id's last task of kind is no longer
// queued and returns its state.
func taskEnded(t *testing.T, r *rig, id, kind string) string {
	t.Helper()
	var state string
	waitFor(t, "the "+kind+" task of "+id+" to end", 60*time.Second, func() bool {
		err := r.ctl.DB.QueryRow(context.Background(), "SELECT state FROM tasks WHERE instance_id = ? AND kind = ? ORDER BY seq DESC LIMIT 1", id, kind).Scan(&state)
		if err != nil {
			t.Fatal(err)
		}
		return state != tasks.StateQueued
	})
	return state
}

// followsWithItsAccount checks that replica id follows source with its
// own account there, whose password the source holds.
func followsWithItsAccount(t *testing.T, fc *fakeCompute, id, source string) {
	t.Helper()
	accounts, _, _ := fc.guest(source).replication()
	_, link, _ := fc.guest(id).replication()
	if link == nil || link.Account != acctOf(id) || accounts[link.Account] != link.Password || len(link.Password) < 32 {
		t.Fatalf("%s follows %+v; want its own account on %s (which holds %v)", id, link, source, keys(accounts))
	}
}

// onePrimary checks that primary is writable, follows nobody and was
// promoted once, and that the others follow a source, read-only.
func onePrimary(t *testing.T, fc *fakeCompute, primary string, others ...string) {
	t.Helper()
	g := fc.guest(primary)
	g.mu.Lock()
	promotes, link, fenced := g.repl.promotes, g.repl.link, g.repl.fenced
	g.mu.Unlock()
	if promotes != 1 || link != nil || fenced {
		t.Fatalf("the new source %s: promoted %d times, follows %+v, read-only %v; want promoted once, writable, following nobody", primary, promotes, link, fenced)
	}
	for _, id := range others {
		o := fc.guest(id)
		o.mu.Lock()
		st := o.replicationStatus()
		o.mu.Unlock()
		if st.Role != wire.RoleReplica || !st.ReadOnly {
			t.Fatalf("%s is %s, read-only %v; want a read-only replica", id, st.Role, st.ReadOnly)
		}
	}
}

// replayRig is a rig whose task engine runs every step twice
// (ReplaySteps), with its admin client and fake compute.
func replayRig(t *testing.T, o rigOptions) (*rig, *client, *fakeCompute) {
	t.Helper()
	r := newRig(t, o)
	r.ctl.Engine.ReplaySteps.Store(true)
	return r, r.admin(), r.compute
}

// ranTwice checks that a step of each kind:step prefix was run twice
// (a prefix ending in a space names one step exactly).
func ranTwice(t *testing.T, r *rig, prefixes ...string) {
	t.Helper()
	replayed := strings.Join(r.ctl.Engine.ReplayedSteps(), " ")
	for _, step := range prefixes {
		if !strings.Contains(" "+replayed+" ", " "+step) {
			t.Errorf("no step %s… was run twice; run twice: %s", step, replayed)
		}
	}
	t.Logf("steps run twice: %s", replayed)
}

// TestAConfigureRunAgainAfterItsGroupChangedAppliesTheGroup: a configure
// step run again after its group was changed in between — what a
// controller killed right after its step's work leaves behind when a
// request changes the group before it comes back — queues no operation
// under the same id with other content (refused, the task failing after
// its retries). Each run of a configure's submit step is run again with
// the group changed just before: the instance ends with no fault and the
// group's last values applied (a later configure, or the reconcile, takes
// what changed after the operation was queued).
// Then a rebuild's prepare step, the same way.
func TestAConfigureRunAgainAfterItsGroupChangedAppliesTheGroup(t *testing.T) {
	t.Parallel()
	r, c, fc := replayRig(t, rigOptions{bootTimeout: 20 * time.Second})
	id := activeInstance(t, r, c, "changed")
	cfg := c.must(200, "POST", "/configurations", groupBody("moving", map[string]any{"max_connections": 555}))["configuration"].(map[string]any)["id"].(string)
	var last atomic.Value
	last.Store("555")
	// changer is a BeforeReplay hook that, before the first two runs
	// again of kind's step, sets the group's max_connections to base+1,
	// base+2; it counts them.
	changer := func(kind, step string, base int) (*atomic.Int32, func(tasks.Task)) {
		var n atomic.Int32
		return &n, func(tk tasks.Task) {
			if tk.Kind != kind || tk.Step != step || n.Load() >= 2 {
				return
			}
			ctx := context.Background()
			g, err := configurations.Get(ctx, r.ctl.DB, "", cfg)
			if err != nil {
				t.Error(err)
				return
			}
			v := fmt.Sprint(base + int(n.Add(1)))
			g.Values["max_connections"] = json.RawMessage(v)
			if err := configurations.Save(ctx, r.ctl.DB, g, time.Now()); err != nil {
				t.Error(err)
			}
			last.Store(v)
		}
	}
	changes, hook := changer(lifecycle.KindConfigure, "submit", 700)
	r.ctl.Engine.BeforeReplay.Store(&hook)
	c.do("PUT", "/instances/"+id, attach(id, cfg))
	g := fc.guest(id)
	waitFor(t, "the group's last values applied, the instance ACTIVE", 90*time.Second, func() bool {
		in := c.instance(id)
		return changes.Load() >= 1 && g.applied("max_connections") == last.Load().(string) && in["status"] == "ACTIVE"
	})
	if in := c.instance(id); in["fault"] != nil {
		t.Fatalf("fault after the configure: %v", in["fault"])
	}
	t.Logf("the group changed %d times before a submit step ran again; %s applied", changes.Load(), last.Load())

	// The same for a rebuild's prepare, whose arguments carry the group's
	// values to the new guest.
	rebuildChanges, hook2 := changer(lifecycle.KindRebuild, "prepare", 800)
	r.ctl.Engine.BeforeReplay.Store(&hook2)
	img := registerImage(t, r, "mariadb-10.11-agent-3", map[string]string{"strata_manager": "mariadb", "strata_datastore_version": "10.11"})
	c.must(202, "POST", "/mgmt/instances/"+id+"/action", map[string]any{"rebuild": map[string]any{"image_id": img.ID}})
	waitFor(t, "the rebuilt guest with the group's last values, ACTIVE", 90*time.Second, func() bool {
		in := c.instance(id)
		return rebuildChanges.Load() >= 1 && in["agent_version"] == "fake-"+img.ID && fc.guest(id).applied("max_connections") == last.Load().(string) && in["status"] == "ACTIVE"
	})
	if in := c.instance(id); in["fault"] != nil {
		t.Fatalf("fault after the rebuild: %v", in["fault"])
	}
	t.Logf("the group changed %d times before the rebuild's prepare ran again; %s applied", rebuildChanges.Load(), last.Load())
	ranTwice(t, r, "configure:submit", "rebuild:prepare")
}

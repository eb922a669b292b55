package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"strata/controller/registry"
)

// TestAnUpgradeMovesAnInstanceAlongADeclaredPathOrRollsBack: Trove's
// `instance upgrade` (PATCH datastore_version). Refused, before anything
// is touched, without a declared upgrade path (the allowed targets named),
// with a configuration group attached, or with other changes in the
// request. An upgrade whose upgrade step fails in the new guest is rolled
// back: the old guest, key, version and data. One that works rebuilds
// onto the target version's image keeping a copy of the data volume,
// runs the upgrade step on the adopted data and leaves the instance
// ACTIVE on the new version with its databases. An upgrade to the
// instance's own version moves it onto that version's current image.
func TestAnUpgradeMovesAnInstanceAlongADeclaredPathOrRollsBack(t *testing.T) {
	t.Parallel()
	// The boot timeout bounds the way back too (the old guest
	// reconnecting after a rollback): room for a busy -race run.
	r := newRig(t, rigOptions{bootTimeout: 15 * time.Second})
	admin := r.admin()
	fc := r.compute
	ctx := context.Background()
	id := admin.must(200, "POST", "/instances", createBody("upgraded", map[string]any{
		"databases": []any{map[string]any{"name": "shop"}},
	}))["instance"].(map[string]any)["id"].(string)
	admin.waitStatus(id, "ACTIVE", 20*time.Second)
	keysBefore := agentKeys(t, r, id)
	version := func() string { return admin.instance(id)["datastore"].(map[string]any)["version"].(string) }

	reg := &registry.Registry{DB: r.ctl.DB}
	img := registerImage(t, r, "mariadb-11.8", map[string]string{"strata_manager": "mariadb", "strata_datastore_version": "11.8"})
	for _, v := range []registry.VersionSpec{
		{Datastore: "mariadb", Name: "11.8", Manager: "mariadb", ImageID: img.ID, Active: true, Port: 3306, BootTimeout: 8 * time.Second},
		{Datastore: "mariadb", Name: "11.4", Manager: "mariadb", ImageID: img.ID, Active: true, Port: 3306, BootTimeout: 8 * time.Second},
	} {
		if _, err := reg.UpdateVersion(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	upgrade := func(v string) map[string]any {
		return map[string]any{"instance": map[string]any{"datastore_version": v}}
	}
	if st, doc := admin.do("PATCH", "/instances/"+id, upgrade("11.8")); st != 400 || !strings.Contains(errorMessage(doc), "has no upgrade path declared") {
		t.Fatalf("an upgrade without a declared path = %d %v", st, doc)
	}
	if _, _, err := reg.AddUpgradePath(ctx, "mariadb", "10.11", "11.8"); err != nil {
		t.Fatal(err)
	}
	cfg := admin.must(200, "POST", "/configurations", groupBody("tuned", map[string]any{"max_connections": 120}))["configuration"].(map[string]any)["id"].(string)
	admin.must(202, "PUT", "/instances/"+id, attach(id, cfg))
	for _, tc := range []struct {
		body   any
		status int
		text   string
	}{
		{upgrade("11.4"), 400, "can be upgraded only to 11.8"},
		{upgrade(""), 400, "expected the id or name"},
		{map[string]any{"instance": map[string]any{"datastore_version": 11.8}}, 400, "expected the id or name"},
		{map[string]any{"instance": map[string]any{"datastore_version": "11.8", "name": "x"}}, 400, "requested alone"},
		{upgrade("11.8"), 422, "configuration group " + cfg + " (of mariadb 10.11) is attached"},
	} {
		if st, doc := admin.do("PATCH", "/instances/"+id, tc.body); st != tc.status || !strings.Contains(errorMessage(doc), tc.text) {
			t.Errorf("PATCH %v = %d %v, want %d with %q", tc.body, st, doc, tc.status, tc.text)
		}
	}
	if n := rebuildCalls(fc, id); n != 0 || version() != "10.11" {
		t.Fatalf("a refused upgrade touched the instance: %d rebuilds, version %s", n, version())
	}
	// Its own version keeps its group: a move onto the version's image.
	admin.must(202, "PATCH", "/instances/"+id, upgrade("10.11"))
	waitFor(t, "the move onto 10.11's image", 30*time.Second, func() bool {
		in := admin.instance(id)
		return in["status"] == "ACTIVE" && rebuildCalls(fc, id) == 1 && fc.guest(id).applied("max_connections") == "120"
	})
	keysBefore = agentKeys(t, r, id)
	admin.must(202, "PUT", "/instances/"+id, attach(id, nil))
	waitFor(t, "the group detached", 20*time.Second, func() bool { return admin.instance(id)["configuration"] == nil })

	// The upgrade step fails in the new guest: everything is put back.
	fc.rebuildKnobs(id, func(rb *fakeRebuild) { rb.failUpgrade = "mariadb-upgrade: Phase 2/8: disk full" })
	admin.must(202, "PATCH", "/instances/"+id, upgrade("11.8"))
	var in map[string]any
	waitFor(t, "the rollback of the upgrade", 45*time.Second, func() bool {
		in = admin.instance(id)
		f, _ := in["fault"].(map[string]any)
		return in["status"] == "ACTIVE" && f != nil
	})
	if msg := in["fault"].(map[string]any)["message"].(string); !strings.Contains(msg, "upgrade to datastore version mariadb 11.8 failed and was rolled back") || !strings.Contains(msg, "disk full") {
		t.Fatalf("fault after the failed upgrade: %q", msg)
	}
	if version() != "10.11" || !slicesEqual(agentKeys(t, r, id), keysBefore) || fc.setAside(id) {
		t.Fatalf("after the rollback: version %s, keys %v (want %v), disks set aside %v", version(), agentKeys(t, r, id), keysBefore, fc.setAside(id))
	}
	if c := lastRebuildCall(fc, id); !strings.HasSuffix(c, " "+img.ID+" keep-volume") {
		t.Fatalf("the upgrade's rebuild was %q: not onto 11.8's image keeping a copy of the data volume", c)
	}

	// The upgrade step works.
	fc.rebuildKnobs(id, func(rb *fakeRebuild) { rb.failUpgrade = "" })
	admin.must(202, "PATCH", "/instances/"+id, upgrade("11.8"))
	if st := admin.instance(id)["status"]; st != "UPGRADE" {
		t.Errorf("status while upgrading = %v, want UPGRADE", st)
	}
	waitFor(t, "the upgraded guest", 30*time.Second, func() bool {
		in = admin.instance(id)
		return in["status"] == "ACTIVE" && in["agent_version"] == "fake-"+img.ID
	})
	if version() != "11.8" || fc.setAside(id) {
		t.Fatalf("after the upgrade: version %s, disks set aside %v", version(), fc.setAside(id))
	}
	if g := fc.guest(id); g.dataVersion != "11.8" {
		t.Fatalf("the new guest's data is at %q: the upgrade step did not run", g.dataVersion)
	}
	if dbs := admin.must(200, "GET", "/instances/"+id+"/databases", nil)["databases"].([]any); len(dbs) != 1 {
		t.Fatalf("databases after the upgrade: %v", dbs)
	}
	if k := agentKeys(t, r, id); len(k) != 1 || k[0] == keysBefore[0] {
		t.Fatalf("agent keys after the upgrade: %v", k)
	}
	// Its own version again (as Trove's test does): a move onto the
	// version's current image, no path needed.
	img2 := registerImage(t, r, "mariadb-11.8-agent-2", map[string]string{"strata_manager": "mariadb", "strata_datastore_version": "11.8"})
	if _, err := reg.UpdateVersion(ctx, registry.VersionSpec{Datastore: "mariadb", Name: "11.8", Manager: "mariadb", ImageID: img2.ID, Active: true, Port: 3306, BootTimeout: 8 * time.Second}); err != nil {
		t.Fatal(err)
	}
	admin.must(202, "PATCH", "/instances/"+id, upgrade("11.8"))
	waitFor(t, "the guest on 11.8's new image", 30*time.Second, func() bool {
		in = admin.instance(id)
		return in["status"] == "ACTIVE" && in["agent_version"] == "fake-"+img2.ID
	})
	if c := lastRebuildCall(fc, id); version() != "11.8" || !strings.Contains(c, img2.ID) {
		t.Fatalf("after upgrading to its own version: version %s, last rebuild %q", version(), c)
	}
}

// lastRebuildCall is the last RebuildServer call recorded for id.
func lastRebuildCall(fc *fakeCompute, id string) string {
	calls := fc.callsSnapshot()
	for i := len(calls) - 1; i >= 0; i-- {
		if strings.HasPrefix(calls[i], "RebuildServer "+id) {
			return calls[i]
		}
	}
	return ""
}

// TestAnUpgradeCutByAControllerRestartResumesAndRollsBack: the controller
// stops while the upgrade's new guest boots (the instance switched to the
// target version, the old disk and data copy aside); the next controller
// resumes the task, the new guest's upgrade step fails, and the rollback
// puts the instance back on its old version, guest and data.
func TestAnUpgradeCutByAControllerRestartResumesAndRollsBack(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	dir, agentAddr := t.TempDir(), freeAddr(t)
	r1 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	c := r1.admin()
	ctx := context.Background()
	id := activeInstance(t, r1, c, "resumed")
	reg := &registry.Registry{DB: r1.ctl.DB}
	img := registerImage(t, r1, "mariadb-11.8", map[string]string{"strata_manager": "mariadb", "strata_datastore_version": "11.8"})
	if _, err := reg.UpdateVersion(ctx, registry.VersionSpec{Datastore: "mariadb", Name: "11.8", Manager: "mariadb", ImageID: img.ID, Active: true, Port: 3306, BootTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.AddUpgradePath(ctx, "mariadb", "10.11", "11.8"); err != nil {
		t.Fatal(err)
	}
	version := func() string { return c.instance(id)["datastore"].(map[string]any)["version"].(string) }
	fc.rebuildKnobs(id, func(rb *fakeRebuild) {
		rb.silent, rb.failUpgrade = true, "mariadb-upgrade: Phase 4/8: Table 'mysql.proc' is marked as crashed"
	})
	c.must(202, "PATCH", "/instances/"+id, map[string]any{"instance": map[string]any{"datastore_version": "11.8"}})
	waitFor(t, "the new server", 10*time.Second, func() bool { return rebuildCalls(fc, id) == 1 && fc.setAside(id) })
	c.waitStatus(id, "UPGRADE", 5*time.Second)
	if v := version(); v != "11.8" {
		t.Fatalf("version while the new guest boots = %s, want the target 11.8", v)
	}
	r1.ctl.Stop()

	fc.rebuildKnobs(id, func(rb *fakeRebuild) { rb.silent = false })
	fc.powerOffOne(id)
	r2 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	c = r2.admin()
	var in map[string]any
	waitFor(t, "the resumed upgrade's rollback", 30*time.Second, func() bool {
		in = c.instance(id)
		f, _ := in["fault"].(map[string]any)
		return in["status"] == "ACTIVE" && f != nil
	})
	if msg := in["fault"].(map[string]any)["message"].(string); !strings.Contains(msg, "rolled back to the old version") || !strings.Contains(msg, "marked as crashed") {
		t.Fatalf("fault after the resumed upgrade's rollback: %q", msg)
	}
	if v := version(); v != "10.11" || fc.setAside(id) || in["agent_version"] == "fake-"+img.ID {
		t.Fatalf("after the rollback: version %s, disks aside %v, agent %v", v, fc.setAside(id), in["agent_version"])
	}
	if dbs := c.must(200, "GET", "/instances/"+id+"/databases", nil)["databases"].([]any); len(dbs) != 1 {
		t.Fatalf("databases after the rollback: %v", dbs)
	}
}

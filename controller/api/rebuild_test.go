package api_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/compute"
	"strata/controller/imagestore"
	"strata/controller/imagestore/local"
	"strata/controller/store/storetest"
)

// fakeRebuild is what a rebuild of the fake's server set aside, and the
// knobs for the next one.
type fakeRebuild struct {
	// old is the guest whose root disk is set aside (nil: nothing is).
	old      *fakeGuest
	oldBoot  wire.Bootstrap
	oldImage compute.ImageRef
	// silent: the new guest never boots; fail: its prepare fails so;
	// failUpgrade: its upgrade step fails so.
	silent      bool
	fail        string
	failUpgrade string
}

var _ compute.VolumeKeeper = (*fakeCompute)(nil)

// KeepsVolume: the fake keeps the data's copy (rb.oldData) on KeepVolume.
func (fc *fakeCompute) KeepsVolume() bool { return true }

// rebuildKnobs returns the instance's rebuild record, made if need be.
func (fc *fakeCompute) rebuildKnobs(id string, set func(*fakeRebuild)) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	rb := fc.rebuilds[id]
	if rb == nil {
		rb = &fakeRebuild{}
		fc.rebuilds[id] = rb
	}
	set(rb)
}

// RebuildServer halts the guest and boots a new one — a new agent, with
// its own key, not enrolled and not prepared — on the same data (the
// volume's databases, users, root and passwords).
func (fc *fakeCompute) RebuildServer(ctx context.Context, s compute.Server, spec compute.ServerSpec) (compute.Server, error) {
	call := "RebuildServer " + s.ID + " " + spec.Image.ID
	if spec.KeepVolume {
		call += " keep-volume"
	}
	fc.record(call)
	boot, err := wire.ParseBootstrap(spec.ConfigDrive["strata/bootstrap.json"], "config drive")
	if err != nil {
		return compute.Server{}, fmt.Errorf("%w: %v", compute.ErrInvalid, err)
	}
	fc.mu.Lock()
	srv, cur := fc.servers[s.ID], fc.guests[s.ID]
	if srv == nil || cur == nil {
		fc.mu.Unlock()
		return compute.Server{}, fmt.Errorf("no server %s", s.ID)
	}
	rb := fc.rebuilds[s.ID]
	if rb == nil {
		rb = &fakeRebuild{}
		fc.rebuilds[s.ID] = rb
	}
	if rb.old == nil {
		rb.old, rb.oldBoot, rb.oldImage = cur, srv.boot, srv.spec.Image
	}
	ng := newFakeGuest(fc.t, fc.volumes[s.ID].SizeGB)
	ng.streams, ng.agentVersion, ng.failPrepare, ng.failUpgrade = fc.streams, "fake-"+spec.Image.ID, rb.fail, rb.failUpgrade
	ng.journal, ng.protocol = &fc.journal, fc.protocol
	data := rb.old
	data.mu.Lock()
	for k, v := range data.dbs {
		ng.dbs[k] = v
	}
	for k, u := range data.users {
		u := *u
		ng.users[k] = &u
	}
	for k, v := range data.passwords {
		ng.passwords[k] = v
	}
	ng.root, ng.rootPassword, ng.dataVersion = data.root, data.rootPassword, data.dataVersion
	// Replication state that lives in the data: a source's accounts; a
	// MariaDB replica's link (master.info, its GTID position), not its
	// settings file; a PostgreSQL standby's standby.signal, not its link
	// (primary_conninfo is on the root disk); nothing of a Redis link.
	for k, v := range data.repl.accounts {
		if ng.repl.accounts == nil {
			ng.repl.accounts = map[string]string{}
		}
		ng.repl.accounts[k] = v
	}
	switch data.manager() {
	case "mariadb":
		if l := data.repl.link; l != nil {
			c := *l
			ng.repl.link = &c
		}
	case "postgresql":
		ng.repl.standby = data.repl.standby || data.repl.link != nil
	}
	data.mu.Unlock()
	fc.guests[s.ID] = ng
	srv.boot, srv.spec.Image, srv.running = boot, spec.Image, false
	silent := rb.silent
	fc.mu.Unlock()
	cur.halt()
	if silent {
		fc.mu.Lock()
		srv.running = true
		fc.mu.Unlock()
		return fc.server(s.ID), nil
	}
	return fc.server(s.ID), fc.StartServer(ctx, s)
}

// RevertServer halts the new guest and boots the old one again.
func (fc *fakeCompute) RevertServer(ctx context.Context, s compute.Server, _ map[string][]byte) error {
	fc.record("RevertServer " + s.ID)
	fc.mu.Lock()
	srv, rb := fc.servers[s.ID], fc.rebuilds[s.ID]
	if srv == nil || rb == nil || rb.old == nil {
		fc.mu.Unlock()
		return fc.StartServer(ctx, s)
	}
	cur := fc.guests[s.ID]
	fc.guests[s.ID] = rb.old
	srv.boot, srv.spec.Image, srv.running = rb.oldBoot, rb.oldImage, false
	rb.old = nil
	fc.mu.Unlock()
	if cur != nil {
		cur.halt()
	}
	return fc.StartServer(ctx, s)
}

func (fc *fakeCompute) DropOldServer(ctx context.Context, s compute.Server) error {
	fc.record("DropOldServer " + s.ID)
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if rb := fc.rebuilds[s.ID]; rb != nil {
		rb.old = nil
	}
	return nil
}

// setAside says whether a rebuild of id keeps an old guest.
func (fc *fakeCompute) setAside(id string) bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	rb := fc.rebuilds[id]
	return rb != nil && rb.old != nil
}

// registerImage stores another tiny qcow2 with properties.
func registerImage(t *testing.T, r *rig, name string, props map[string]string) imagestore.Image {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, "16M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	imgs := &local.Store{DB: r.ctl.DB, Dir: filepath.Join(r.stateDir, "images")}
	img, err := imgs.Register(context.Background(), f, imagestore.RegisterOptions{Name: name, DiskFormat: "qcow2", Properties: props})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func agentKeys(t *testing.T, r *rig, id string) []string {
	t.Helper()
	keys, err := agentendpoint.Keys(context.Background(), r.ctl.DB, id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		out = append(out, k.Fingerprint)
	}
	return out
}

func rebuildCalls(fc *fakeCompute, id string) int {
	n := 0
	for _, c := range fc.callsSnapshot() {
		if strings.HasPrefix(c, "RebuildServer "+id) {
			n++
		}
	}
	return n
}

// TestMgmtRebuildMovesAnInstanceToANewImageKeepingItsData: the admin's
// rebuild (Trove's {"rebuild": {"image_id": ...}}) refuses, before
// anything is touched, an image that is unknown, of another datastore or
// version, or corrupt; one onto a good image replaces the guest — a new
// agent, enrolled with a new token, whose old key is revoked — which
// adopts the data volume: databases, users and root survive, the
// attached configuration is applied again, and the old root disk is
// dropped. A new guest whose prepare fails is rolled back: the old guest
// and its key come back, ACTIVE on the old image with the reason in the
// fault; so is one that never reports within the boot timeout.
func TestMgmtRebuildMovesAnInstanceToANewImageKeepingItsData(t *testing.T) {
	t.Parallel()
	// The boot timeout bounds the way back too (the old guest
	// reconnecting after a rollback): 8 s was too short once under -race.
	r := newRig(t, rigOptions{bootTimeout: 15 * time.Second})
	admin := r.admin()
	fc := r.compute
	id := admin.must(200, "POST", "/instances", createBody("rebuilt", map[string]any{
		"databases": []any{map[string]any{"name": "shop"}},
		"users":     []any{map[string]any{"name": "app", "password": "app-password-1", "databases": []any{map[string]any{"name": "shop"}}}},
	}))["instance"].(map[string]any)["id"].(string)
	admin.waitStatus(id, "ACTIVE", 20*time.Second)
	admin.must(200, "POST", "/instances/"+id+"/root", nil)
	cfg := admin.must(200, "POST", "/configurations", groupBody("tuned", map[string]any{"max_connections": 120}))["configuration"].(map[string]any)["id"].(string)
	admin.must(202, "PUT", "/instances/"+id, attach(id, cfg))
	waitFor(t, "the group applied", 20*time.Second, func() bool { return fc.guest(id).applied("max_connections") == "120" })
	admin.waitStatus(id, "ACTIVE", 20*time.Second)
	keysBefore := agentKeys(t, r, id)
	if len(keysBefore) != 1 {
		t.Fatalf("agent keys before the rebuild: %v", keysBefore)
	}
	path := "/mgmt/instances/" + id + "/action"

	// Refused before anything is touched.
	other := registerImage(t, r, "postgresql-16", map[string]string{"strata_manager": "postgresql", "strata_datastore_version": "16"})
	otherVersion := registerImage(t, r, "mariadb-11", map[string]string{"strata_manager": "mariadb", "strata_datastore_version": "11.8"})
	unknown := registerImage(t, r, "no-properties", nil)
	corrupt := registerImage(t, r, "corrupt", map[string]string{"strata_manager": "mariadb", "strata_datastore_version": "10.11"})
	if err := os.WriteFile(corrupt.Location, []byte("not the bytes that were registered"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		body   any
		status int
		text   string
	}{
		{map[string]any{"rebuild": map[string]any{}}, 400, "image_id is required"},
		{map[string]any{"rebuild": map[string]any{"image_id": "x", "flavor": 1}}, 400, "unknown field"},
		{map[string]any{"rebuild": map[string]any{"image_id": "9f0c8f5e-0000-4000-8000-000000000000"}}, 404, "not found"},
		{map[string]any{"rebuild": map[string]any{"image_id": other.ID}}, 400, "built for the postgresql manager"},
		{map[string]any{"rebuild": map[string]any{"image_id": otherVersion.ID}}, 400, "a rebuild keeps the version"},
		{map[string]any{"rebuild": map[string]any{"image_id": unknown.ID}}, 400, "is not known to be of mariadb 10.11"},
		{map[string]any{"rebuild": map[string]any{"image_id": corrupt.ID}}, 422, "checksum"},
	} {
		st, doc := admin.do("POST", path, tc.body)
		if st != tc.status || !strings.Contains(errorMessage(doc), tc.text) {
			t.Errorf("rebuild %v = %d %v, want %d with %q", tc.body, st, doc, tc.status, tc.text)
		}
	}
	if n := rebuildCalls(fc, id); n != 0 || admin.instance(id)["status"] != "ACTIVE" || !slicesEqual(agentKeys(t, r, id), keysBefore) {
		t.Fatalf("a refused rebuild touched the instance: %d rebuilds, status %v", n, admin.instance(id)["status"])
	}

	// A good image: a new guest on the same data.
	fpBefore := admin.instance(id)["tls_fingerprint"]
	newImg := registerImage(t, r, "mariadb-10.11-agent-2", map[string]string{"strata_manager": "mariadb", "strata_datastore_version": "10.11"})
	admin.must(202, "POST", path, map[string]any{"rebuild": map[string]any{"image_id": newImg.ID}})
	if st, _ := admin.do("POST", path, map[string]any{"rebuild": map[string]any{"image_id": newImg.ID}}); st != 422 {
		t.Errorf("a second rebuild while one runs = %d, want 422", st)
	}
	waitFor(t, "the rebuilt guest", 20*time.Second, func() bool {
		in := admin.instance(id)
		return in["status"] == "ACTIVE" && in["agent_version"] == "fake-"+newImg.ID
	})
	if n := rebuildCalls(fc, id); n != 1 {
		t.Fatalf("RebuildServer called %d times", n)
	}
	// The view shows what the rebuilt guest's prepare reported (a real
	// one reports the certificate kept on the data volume).
	g := r.compute.guest(id)
	g.mu.Lock()
	fp := g.tlsFingerprint
	g.mu.Unlock()
	if got := admin.instance(id)["tls_fingerprint"]; fp == "" || got != fp || got == fpBefore {
		t.Fatalf("tls_fingerprint after the rebuild = %v (before %v), the rebuilt (fake) guest reported %q", got, fpBefore, fp)
	}
	if fc.setAside(id) {
		t.Fatal("the old root disk was kept after the new guest prepared")
	}
	keysAfter := agentKeys(t, r, id)
	if len(keysAfter) != 1 || keysAfter[0] == keysBefore[0] {
		t.Fatalf("agent keys after the rebuild: %v (before %v): the old key must be revoked, the new one enrolled", keysAfter, keysBefore)
	}
	dbs := admin.must(200, "GET", "/instances/"+id+"/databases", nil)["databases"].([]any)
	users := admin.must(200, "GET", "/instances/"+id+"/users", nil)["users"].([]any)
	root := admin.must(200, "GET", "/instances/"+id+"/root", nil)
	if len(dbs) != 1 || dbs[0].(map[string]any)["name"] != "shop" || len(users) != 1 || users[0].(map[string]any)["name"] != "app" || root["rootEnabled"] != true {
		t.Fatalf("after the rebuild: databases %v, users %v, root %v", dbs, users, root)
	}
	if got := fc.guest(id).applied("max_connections"); got != "120" {
		t.Fatalf("the configuration group was not applied again on the new image: max_connections %q", got)
	}
	if in := admin.instance(id); in["fault"] != nil {
		t.Fatalf("a rebuild that worked left a fault: %v", in["fault"])
	}

	// A new image whose database fails: rolled back to the old guest.
	fc.rebuildKnobs(id, func(rb *fakeRebuild) { rb.fail = "mariadbd: unknown variable" })
	admin.must(202, "POST", path, map[string]any{"rebuild": map[string]any{"image_id": r.imageID}})
	var in map[string]any
	waitFor(t, "the rollback", 45*time.Second, func() bool {
		in = admin.instance(id)
		f, _ := in["fault"].(map[string]any)
		return in["status"] == "ACTIVE" && f != nil
	})
	if msg := in["fault"].(map[string]any)["message"].(string); !strings.Contains(msg, "rolled back") || !strings.Contains(msg, "mariadbd: unknown variable") {
		t.Fatalf("fault after the rollback: %q", msg)
	}
	waitFor(t, "the old agent's report", 10*time.Second, func() bool { return admin.instance(id)["agent_version"] == "fake-"+newImg.ID })
	if k := agentKeys(t, r, id); !slicesEqual(k, keysAfter) {
		t.Fatalf("agent keys after the rollback: %v, want the old guest's %v", k, keysAfter)
	}
	if fc.setAside(id) {
		t.Fatal("the rollback left a disk set aside")
	}
	if dbs := admin.must(200, "GET", "/instances/"+id+"/databases", nil)["databases"].([]any); len(dbs) != 1 {
		t.Fatalf("databases after the rollback: %v", dbs)
	}

	// A new guest that never reports: rolled back after the boot timeout.
	fc.rebuildKnobs(id, func(rb *fakeRebuild) { rb.fail, rb.silent = "", true })
	admin.must(202, "POST", path, map[string]any{"rebuild": map[string]any{"image_id": r.imageID}})
	waitFor(t, "the rebuild to start", 10*time.Second, func() bool { return rebuildCalls(fc, id) == 3 })
	// An operator's reset-task-status cannot cancel it: the old disk and
	// key are set aside, and only the rebuild's own rollback puts them back.
	if st, doc := admin.do("POST", path, map[string]any{"reset-task-status": map[string]any{}}); st != 422 || !strings.Contains(errorMessage(doc), "puts them back itself") {
		t.Fatalf("reset-task-status during a rebuild = %d %v, want 422", st, doc)
	}
	waitFor(t, "the rollback of a silent guest", 60*time.Second, func() bool {
		in = admin.instance(id)
		f, _ := in["fault"].(map[string]any)
		return in["status"] == "ACTIVE" && f != nil && strings.Contains(f["message"].(string), "never reported")
	})
	if in["agent_version"] != "fake-"+newImg.ID || !slicesEqual(agentKeys(t, r, id), keysAfter) {
		t.Fatalf("after the silent guest's rollback: agent %v, keys %v", in["agent_version"], agentKeys(t, r, id))
	}
}

// TestARebuildResumesAfterAControllerRestart: `strata instance rebuild`
// queues a rebuild; the controller stops while
// the new guest boots (its key revoked, the old disk aside); the next
// controller finds the rebuild task where it was and finishes it when
// the new guest reports.
func TestARebuildResumesAfterAControllerRestart(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	dir, agentAddr := t.TempDir(), freeAddr(t)
	r1 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	c := r1.admin()
	id := activeInstance(t, r1, c, "resumed")
	newImg := registerImage(t, r1, "mariadb-10.11-agent-2", map[string]string{"strata_manager": "mariadb", "strata_datastore_version": "10.11"})
	fc.rebuildKnobs(id, func(rb *fakeRebuild) { rb.silent = true })
	// Queued by the CLI on the controller host, run by the controller.
	if out, err := strataCLI(t, r1, "instance", "rebuild", id); err == nil || !strings.Contains(err.Error(), "image") {
		t.Fatalf("instance rebuild without --image: %v\n%s", err, out)
	}
	if out, err := strataCLI(t, r1, "instance", "rebuild", id, "--image", newImg.ID); err != nil || !strings.Contains(out, "queued") {
		t.Fatalf("instance rebuild: %v\n%s", err, out)
	}
	waitFor(t, "the new server", 10*time.Second, func() bool { return rebuildCalls(fc, id) == 1 && fc.setAside(id) })
	c.waitStatus(id, "REBUILD", 5*time.Second)
	r1.ctl.Stop()

	// The new guest boots while no controller runs.
	fc.rebuildKnobs(id, func(rb *fakeRebuild) { rb.silent = false })
	fc.powerOffOne(id)
	r2 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	c = r2.admin()
	waitFor(t, "the rebuild to finish", 30*time.Second, func() bool {
		in := c.instance(id)
		return in["status"] == "ACTIVE" && in["agent_version"] == "fake-"+newImg.ID
	})
	if fc.setAside(id) {
		t.Fatal("the old disk was kept after the resumed rebuild finished")
	}
	if dbs := c.must(200, "GET", "/instances/"+id+"/databases", nil)["databases"].([]any); len(dbs) != 1 || dbs[0].(map[string]any)["name"] != "shop" {
		t.Fatalf("databases after the resumed rebuild: %v", dbs)
	}
	if f := c.instance(id)["fault"]; f != nil {
		t.Fatalf("fault after the resumed rebuild: %v", f)
	}
}

func slicesEqual(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}

// TestRebuildNeedsADriverThatCanRebuildServers: the API refuses the
// rebuild at once (422); the CLI's queued rebuild ends without touching
// the instance — same key, no driver call — which keeps its status and
// shows why as its fault.
func TestRebuildNeedsADriverThatCanRebuildServers(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{driver: func(fc *fakeCompute) compute.Driver { return plainDriver{fc} }})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("plain", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	keys := agentKeys(t, r, id)
	if code, doc := c.do("POST", "/mgmt/instances/"+id+"/action", map[string]any{"rebuild": map[string]any{"image_id": r.imageID}}); code != 422 || !strings.Contains(errorMessage(doc), "cannot rebuild") {
		t.Fatalf("rebuild through the API: HTTP %d %v", code, doc)
	}
	if out, err := strataCLI(t, r, "instance", "rebuild", id, "--image", r.imageID); err != nil {
		t.Fatalf("instance rebuild: %v\n%s", err, out)
	}
	waitFor(t, "the refused rebuild to show", 10*time.Second, func() bool {
		in := c.instance(id)
		f, _ := in["fault"].(map[string]any)
		return in["status"] == "ACTIVE" && f != nil && strings.Contains(f["message"].(string), "cannot rebuild")
	})
	if n := rebuildCalls(r.compute, id); n != 0 || !slicesEqual(agentKeys(t, r, id), keys) {
		t.Fatalf("a refused rebuild touched the instance: %d driver calls, keys %v (were %v)", n, agentKeys(t, r, id), keys)
	}
}

// A rebuilt replica follows its source again: the link's settings were
// on the old root disk and its password was never kept, so the rebuild
// resets its account on the source with a new password and starts the
// link again — a repoint to the same source for MariaDB (its link and
// GTID position are in its data), a plain start for a PostgreSQL standby
// (standby.signal is in its data). When the source refuses, the rebuild
// still finishes on the new image, with a fault saying the link was not
// restored.
func TestARebuiltReplicaFollowsItsSourceAgain(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc, guestCallTimeout: 10 * time.Second})
	registerVersion(t, r, "postgresql", "15", 5432)
	c := r.admin()
	for _, tc := range []struct {
		manager, version string
		repoint          bool
	}{{"mariadb", "10.11", true}, {"postgresql", "15", false}} {
		var src string
		if tc.manager == "mariadb" {
			src = c.must(200, "POST", "/instances", createBody("m", nil))["instance"].(map[string]any)["id"].(string)
			c.waitStatus(src, "ACTIVE", 30*time.Second)
		} else {
			src = newActiveOf(c, tc.manager, tc.version, "p")
		}
		rep := replicaIDs(t, c, src, 1)[0]
		img := registerImage(t, r, tc.manager+"-agent-2", map[string]string{"strata_manager": tc.manager, "strata_datastore_version": tc.version})
		rebuild := func() {
			t.Helper()
			c.must(202, "POST", "/mgmt/instances/"+rep+"/action", map[string]any{"rebuild": map[string]any{"image_id": img.ID}})
			waitFor(t, tc.manager+": the rebuilt replica", 40*time.Second, func() bool {
				in := c.instance(rep)
				return in["status"] == "ACTIVE" && in["agent_version"] == "fake-"+img.ID && storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'rebuild' AND state = 'queued'", rep) == 0
			})
		}
		before := len(fc.journal.events(""))
		rebuild()
		events := fc.journal.events("account "+src, "start "+rep)
		events = events[len(events)-2:]
		want := []string{"account " + src + " " + acctOf(rep), fmt.Sprintf("start %s %s repoint=%v", rep, acctOf(rep), tc.repoint)}
		if !slicesEqual(events, want) || len(fc.journal.events("")) <= before {
			t.Fatalf("%s: the relink's events %v, want %v", tc.manager, events, want)
		}
		accounts, _, _ := fc.guest(src).replication()
		_, link, _ := fc.guest(rep).replication()
		if link == nil || accounts[link.Account] != link.Password || len(link.Password) < 32 {
			t.Fatalf("%s: the rebuilt replica follows %+v; the source holds %v", tc.manager, link, keys(accounts))
		}
		in := c.instance(rep)
		rs, _ := in["replication"].(map[string]any)
		if in["fault"] != nil || rs == nil || rs["state"] != "RUNNING" {
			t.Fatalf("%s: the rebuilt replica: fault %v, replication %v", tc.manager, in["fault"], in["replication"])
		}

		// The source refuses the account: the rebuild finishes, the
		// fault says the link was not restored.
		fc.guest(src).setFailAccount("the server is read-only")
		rebuild()
		f, _ := c.instance(rep)["fault"].(map[string]any)
		if f == nil || !strings.Contains(fmt.Sprint(f["message"]), "replication link was not restored") || !strings.Contains(fmt.Sprint(f["message"]), "the server is read-only") {
			t.Fatalf("%s: the fault after a relink the source refused: %v", tc.manager, f)
		}
		fc.guest(src).setFailAccount("")
	}
}

package api_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"strata/controller/backups"
	"strata/controller/identity"
)

// newActive creates an instance with databases dbs and waits for ACTIVE.
func newActive(c *client, name string, dbs ...string) string {
	c.t.Helper()
	var list []map[string]any
	for _, d := range dbs {
		list = append(list, map[string]any{"name": d})
	}
	extra := map[string]any{}
	if len(list) > 0 {
		extra["databases"] = list
	}
	id := c.must(200, "POST", "/instances", createBody(name, extra))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 30*time.Second)
	return id
}

func (c *client) backup(id string) map[string]any {
	c.t.Helper()
	return c.must(200, "GET", "/backups/"+id, nil)["backup"].(map[string]any)
}

// waitBackup polls a backup until its status is want (failing on a
// terminal status that is not).
func (c *client) waitBackup(id, want string, within time.Duration) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var last map[string]any
	for time.Now().Before(deadline) {
		last = c.backup(id)
		st := last["status"].(string)
		if st == want {
			return last
		}
		if st == backups.StatusCompleted || st == backups.StatusFailed || st == backups.StatusDeleteFailed {
			c.t.Fatalf("backup %s ended %s, want %s: %v", id, st, want, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("backup %s did not reach %s within %s; last: %v", id, want, within, last)
	return nil
}

func (c *client) waitBackupGone(id string, within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if code, _ := c.do("GET", "/backups/"+id, nil); code == 404 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("backup %s still there after %s", id, within)
}

func (c *client) createBackup(body map[string]any) map[string]any {
	c.t.Helper()
	return c.must(202, "POST", "/backups", map[string]any{"backup": body})["backup"].(map[string]any)
}

// storeObjects lists what the backup store holds.
func (r *rig) storeObjects() []string {
	r.t.Helper()
	objs, err := r.ctl.Backups.Store.List(context.Background(), backups.Root+"/")
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.Name)
	}
	return out
}

func (c *client) guestDBs(r *rig, instanceID string) []string {
	c.t.Helper()
	var out []string
	for _, d := range c.must(200, "GET", "/instances/"+instanceID+"/databases", nil)["databases"].([]any) {
		out = append(out, d.(map[string]any)["name"].(string))
	}
	sort.Strings(out)
	return out
}

func TestBackupsThroughTheTroveAPI(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	src := newActive(c, "src", "shop")

	full := c.createBackup(map[string]any{"name": "full", "instance": src, "description": "first"})
	if (full["status"] != backups.StatusNew && full["status"] != backups.StatusBuilding) || full["instance_id"] != src || full["parent_id"] != nil ||
		full["datastore"].(map[string]any)["type"] != "mariadb" {
		t.Fatalf("created backup: %v", full)
	}
	// The instance shows BACKUP and refuses a second backup meanwhile.
	if st := c.instance(src)["status"]; st != "BACKUP" && c.backup(full["id"].(string))["status"] != backups.StatusCompleted {
		t.Fatalf("instance status while backing up: %v", st)
	}
	if code, doc := c.do("POST", "/backups", map[string]any{"backup": map[string]any{"name": "again", "instance": src}}); code != 409 && code != 422 {
		t.Fatalf("second concurrent backup: HTTP %d %v", code, doc)
	}
	full = c.waitBackup(full["id"].(string), backups.StatusCompleted, 30*time.Second)
	c.waitStatus(src, "ACTIVE", 10*time.Second)
	if full["size"].(float64) <= 0 || full["size_bytes"].(float64) < 3<<20 {
		t.Fatalf("completed backup: %v", full)
	}
	fullID := full["id"].(string)

	// More data, then an incremental on the latest backup.
	c.must(202, "POST", "/instances/"+src+"/databases", map[string]any{"databases": []any{map[string]any{"name": "later"}}})
	inc := c.createBackup(map[string]any{"name": "inc", "instance": src, "incremental": 1})
	if inc["parent_id"] != fullID {
		t.Fatalf("incremental's parent %v, want %s", inc["parent_id"], fullID)
	}
	incID := inc["id"].(string)
	c.waitBackup(incID, backups.StatusCompleted, 30*time.Second)

	// Listing: newest first, paged, filtered.
	list := c.must(200, "GET", "/backups", nil)["backups"].([]any)
	if len(list) != 2 || list[0].(map[string]any)["id"] != incID {
		t.Fatalf("list: %v", list)
	}
	page := c.must(200, "GET", "/backups?limit=1", nil)
	if len(page["backups"].([]any)) != 1 || page["links"] == nil {
		t.Fatalf("page: %v", page)
	}
	if n := len(c.must(200, "GET", "/backups?datastore=mariadb&instance_id="+src, nil)["backups"].([]any)); n != 2 {
		t.Fatalf("filtered list: %d", n)
	}
	if n := len(c.must(200, "GET", "/backups?instance_id=nope", nil)["backups"].([]any)); n != 0 {
		t.Fatalf("filter by unknown instance: %d", n)
	}
	if n := len(c.must(200, "GET", "/instances/"+src+"/backups", nil)["backups"].([]any)); n != 2 {
		t.Fatalf("instance backups: %d", n)
	}

	// Restore each into a new instance: the data is what each held.
	restore := func(name, backupID string) string {
		body := createBody(name, map[string]any{"restorePoint": map[string]any{"backupRef": backupID}})
		id := c.must(200, "POST", "/instances", body)["instance"].(map[string]any)["id"].(string)
		c.waitStatus(id, "ACTIVE", 30*time.Second)
		return id
	}
	if got := c.guestDBs(r, restore("from-full", fullID)); !slices.Equal(got, []string{"shop"}) {
		t.Fatalf("restored from the full backup: %v", got)
	}
	if got := c.guestDBs(r, restore("from-inc", incID)); !slices.Equal(got, []string{"later", "shop"}) {
		t.Fatalf("restored from the incremental: %v", got)
	}

	// Deleting the parent deletes its children, and the store empties.
	c.must(202, "DELETE", "/backups/"+fullID, nil)
	c.waitBackupGone(fullID, 5*time.Second)
	c.waitBackupGone(incID, 5*time.Second)
	waitFor(t, "the store to empty", 10*time.Second, func() bool { return len(r.storeObjects()) == 0 })
	c.must(404, "DELETE", "/backups/"+fullID, nil)
}

func TestBackupRequestsAreCheckedAndScoped(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	admin := r.admin()
	src := newActive(admin, "src", "shop")
	b := admin.createBackup(map[string]any{"name": "b", "instance": src})
	id := b["id"].(string)
	admin.waitBackup(id, backups.StatusCompleted, 30*time.Second)

	for _, bad := range []struct {
		body map[string]any
		code int
		want string
	}{
		{map[string]any{"instance": src}, 400, "name is required"},
		{map[string]any{"name": "x"}, 400, "instance is required"},
		{map[string]any{"name": "x", "instance": "nope"}, 404, "instance"},
		{map[string]any{"name": "x", "instance": src, "parent_id": "nope"}, 404, "parent backup"},
		{map[string]any{"name": "x", "instance": src, "incremental": 7}, 400, "incremental"},
		{map[string]any{"name": "x", "instance": src, "swift_container": "c"}, 400, "swift_container"},
		{map[string]any{"name": "x", "instance": src, "surprise": 1}, 400, "unknown field"},
		{map[string]any{"name": "x\x00y", "instance": src}, 400, "control characters"},
	} {
		code, doc := admin.do("POST", "/backups", map[string]any{"backup": bad.body})
		if code != bad.code || !strings.Contains(errorMessage(doc), bad.want) {
			t.Errorf("%v: HTTP %d %q, want %d with %q", bad.body, code, errorMessage(doc), bad.code, bad.want)
		}
	}
	// Restore refusals, each saying which check failed.
	for _, bad := range []struct {
		extra map[string]any
		code  int
		want  string
	}{
		{map[string]any{"restorePoint": map[string]any{"backupRef": "nope"}}, 404, "backup"},
		{map[string]any{"restorePoint": map[string]any{"ref": id}}, 400, "backupRef"},
		{map[string]any{"restorePoint": map[string]any{"backupRef": id}, "databases": []any{map[string]any{"name": "d"}}}, 400, "come from the backup"},
	} {
		code, doc := admin.do("POST", "/instances", createBody("r", bad.extra))
		if code != bad.code || !strings.Contains(errorMessage(doc), bad.want) {
			t.Errorf("%v: HTTP %d %q, want %d with %q", bad.extra, code, errorMessage(doc), bad.code, bad.want)
		}
	}

	// Another project's user sees none of it; the admin role reaches it.
	other := r.otherProjectClient()
	other.must(404, "GET", "/backups/"+id, nil)
	other.must(404, "DELETE", "/backups/"+id, nil)
	if n := len(other.must(200, "GET", "/backups", nil)["backups"].([]any)); n != 0 {
		t.Fatalf("another project lists %d backups", n)
	}
	other.must(403, "GET", "/backups?all_projects=true", nil)
	code, doc := other.do("POST", "/instances", createBody("steal", map[string]any{"restorePoint": map[string]any{"backupRef": id}}))
	if code != 404 {
		t.Fatalf("restore of another project's backup: HTTP %d %v", code, doc)
	}
	if n := len(admin.must(200, "GET", "/backups?all_projects=true", nil)["backups"].([]any)); n != 1 {
		t.Fatalf("admin all_projects lists %d", n)
	}
	_ = fmt.Sprint
}

// otherProjectClient logs in a user of a fresh project without the admin
// role.
func (r *rig) otherProjectClient() *client {
	r.t.Helper()
	ctx := context.Background()
	ids := &identity.Store{DB: r.ctl.DB, BcryptCost: 4}
	if _, err := ids.CreateProject(ctx, "other"); err != nil {
		r.t.Fatal(err)
	}
	if _, err := ids.CreateUser(ctx, "other-user", "other-password", "other", false); err != nil {
		r.t.Fatal(err)
	}
	return r.login("other-user", "other-password")
}

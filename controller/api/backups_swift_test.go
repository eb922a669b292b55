package api_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"strata/ci/swift/swifttest"
	"strata/controller/backups"
	objswift "strata/controller/objectstore/swift"
)

// TestBackupsGoToARealSwiftAndRestoreFromIt runs a backup chain through
// the API into Debian's Swift 2.30 (started privately by the test), with
// objects larger than the driver's small-object size, restores it into a
// new instance and deletes it, leaving the container empty.
func TestBackupsGoToARealSwiftAndRestoreFromIt(t *testing.T) {
	t.Parallel()
	srv, err := swifttest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	ctx := context.Background()
	client, err := objswift.TempAuth(ctx, srv.AuthURL, srv.User, srv.Key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := objswift.New(ctx, client, objswift.Options{Container: "api-backups", SegmentSize: 1 << 20, SmallSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	fc := newFakeCompute(t)
	fc.streams.Pad = 6 << 20
	r := newRig(t, rigOptions{compute: fc, backupStore: st, backups: func(m *backups.Manager) {
		m.WriterOptions = nil // the container format's own segment size
	}})
	c := r.admin()
	src := newActive(c, "src", "shop")
	full := c.createBackup(map[string]any{"name": "full", "instance": src})["id"].(string)
	c.waitBackup(full, backups.StatusCompleted, time.Minute)
	c.must(202, "POST", "/instances/"+src+"/databases", map[string]any{"databases": []any{map[string]any{"name": "later"}}})
	inc := c.createBackup(map[string]any{"name": "inc", "instance": src, "parent_id": full})["id"].(string)
	b := c.waitBackup(inc, backups.StatusCompleted, time.Minute)
	if b["storage_driver"] != "test" || len(r.objectsOf(inc)) == 0 {
		t.Fatalf("incremental: %v, objects %v", b, r.objectsOf(inc))
	}
	id := c.must(200, "POST", "/instances", createBody("restored", map[string]any{"restorePoint": map[string]any{"backupRef": inc}}))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", time.Minute)
	if got := c.guestDBs(r, id); !slices.Equal(got, []string{"later", "shop"}) {
		t.Fatalf("restored from Swift: %v", got)
	}
	c.must(202, "DELETE", "/backups/"+full, nil)
	c.waitBackupGone(inc, 10*time.Second)
	waitFor(t, "the container to empty", 30*time.Second, func() bool { return len(r.storeObjects()) == 0 })
}

//go:build openstack

package nova_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/instanceactions"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"strata/controller/compute"
	"strata/controller/compute/nova"
)

// TestRealRebuildServerKeepsTheOldRootDiskUntilDropped: on the real Nova,
// a rebuild stops the server, keeps its root disk as a Glance snapshot
// (strata-<id>-rollback), and has Nova rebuild it onto the new image with
// the new bootstrap on its config drive, the data volume still attached;
// asked again it takes no second snapshot. A revert rebuilds it onto the
// snapshot with the old guest's bootstrap and deletes the snapshot; a
// rebuild whose guest is healthy drops the snapshot. Nothing is left.
func TestRealRebuildServerKeepsTheOldRootDiskUntilDropped(t *testing.T) {
	r := newRealCloud(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	r.flavor(ctx, "strata-paths-rebuild", 1)
	d := r.driver(nova.Config{})
	oldImg := r.image(ctx, "strata-paths-rebuild-old", "64M", 0)
	newImg := r.image(ctx, "strata-paths-rebuild-new", "64M", 0)
	const id = "0a1b2c3d-0000-4000-8000-000rebuild01"
	// Registered before the server, so it runs after the server's
	// cleanup: DeleteServer takes a snapshot left by a failure with it.
	t.Cleanup(func() {
		if snaps := r.rollbackImages(context.Background(), id); len(snaps) > 0 {
			t.Errorf("snapshots of the old root disk left after the server was deleted: %v", snaps)
		}
	})
	srv, vol := r.server(ctx, d, id, oldImg.ID)
	// Each call is tried up to three times, as the task engine retries a
	// step that failed: the tier's Nova, on SQLite, now and then puts a
	// server in ERROR on "database is locked"; a call again must finish
	// the job (Nova rebuilds a server in ERROR).
	retried := func(what string, call func() error) error {
		var err error
		for i := range 3 {
			if err = call(); err == nil || errors.Is(err, compute.ErrInvalid) {
				return err
			}
			t.Logf("%s, attempt %d: %v", what, i+1, err)
		}
		return err
	}
	spec := serverSpec(id, newImg.ID, vol)
	spec.ConfigDrive = map[string][]byte{"strata/bootstrap.json": []byte(`{"guest":"new"}`)}

	check := func(when, image, bootstrap string) *servers.Server {
		t.Helper()
		cur, err := servers.Get(ctx, r.cc, srv.ID).Extract()
		if err != nil {
			t.Fatal(err)
		}
		attached := false
		for _, v := range cur.AttachedVolumes {
			attached = attached || v.ID == vol.ID
		}
		if cur.Status != "ACTIVE" || cur.Image["id"] != image || !attached {
			r.logs("nova-api", "nova-compute")
			t.Fatalf("%s: server %s, image %v, volumes %v; want ACTIVE on image %s with volume %s", when, cur.Status, cur.Image["id"], cur.AttachedVolumes, image, vol.ID)
		}
		if got := r.configDriveFiles(cur.ID); !strings.Contains(got, bootstrap) {
			t.Fatalf("%s: the config drive's files hold %q; want %s", when, got, bootstrap)
		}
		return cur
	}

	t0 := time.Now()
	if err := retried("RebuildServer", func() error { _, err := d.RebuildServer(ctx, srv, spec); return err }); err != nil {
		r.logs("nova-api", "nova-compute", "glance-api")
		t.Fatalf("RebuildServer: %v", err)
	}
	t.Logf("FIGURE RebuildServer (stop, snapshot, rebuild, start) on the real Nova: %.1f s", time.Since(t0).Seconds())
	check("after the rebuild", newImg.ID, `{"guest":"new"}`)
	snaps := r.rollbackImages(ctx, id)
	if len(snaps) != 1 || snaps[0].Status != images.ImageStatusActive {
		t.Fatalf("after the rebuild the snapshots of the old root disk are %+v; want one, active", snaps)
	}
	first := snaps[0].ID

	t1 := time.Now()
	if err := retried("RebuildServer", func() error { _, err := d.RebuildServer(ctx, srv, spec); return err }); err != nil {
		t.Fatalf("RebuildServer again: %v", err)
	}
	t.Logf("RebuildServer again (the new disk made again, no snapshot): %.1f s", time.Since(t1).Seconds())
	check("after the repeated rebuild", newImg.ID, `{"guest":"new"}`)
	if snaps := r.rollbackImages(ctx, id); len(snaps) != 1 || snaps[0].ID != first {
		t.Fatalf("after a repeated rebuild the snapshots are %+v; want only %s, the first (the old root disk)", snaps, first)
	}

	t2 := time.Now()
	if err := retried("RevertServer", func() error {
		return d.RevertServer(ctx, srv, map[string][]byte{"strata/bootstrap.json": []byte(`{"guest":"old"}`)})
	}); err != nil {
		r.logs("nova-api", "nova-compute")
		t.Fatalf("RevertServer: %v", err)
	}
	t.Logf("FIGURE RevertServer (rebuild onto the snapshot, start) on the real Nova: %.1f s", time.Since(t2).Seconds())
	check("after the revert", first, `{"guest":"old"}`)
	if snaps := r.rollbackImages(ctx, id); len(snaps) != 0 {
		t.Fatalf("after the revert the snapshot is still there: %+v", snaps)
	}
	if err := retried("RevertServer", func() error { return d.RevertServer(ctx, srv, nil) }); err != nil {
		t.Fatalf("RevertServer again (nothing kept): %v", err)
	}

	if err := retried("RebuildServer", func() error { _, err := d.RebuildServer(ctx, srv, spec); return err }); err != nil {
		t.Fatalf("RebuildServer after the revert: %v", err)
	}
	if err := d.DropOldServer(ctx, srv); err != nil {
		t.Fatalf("DropOldServer: %v", err)
	}
	check("after the rebuild kept", newImg.ID, `{"guest":"new"}`)
	if snaps := r.rollbackImages(ctx, id); len(snaps) != 0 {
		t.Fatalf("after DropOldServer the snapshot is still there: %+v", snaps)
	}
	if err := d.DropOldServer(ctx, srv); err != nil {
		t.Fatalf("DropOldServer with nothing kept: %v", err)
	}

	// A revert cut short after Nova rebuilt the server onto the snapshot
	// (a controller killed before the snapshot was deleted): the next
	// revert asks Nova for no second rebuild, only deletes the snapshot.
	if err := retried("RebuildServer", func() error { _, err := d.RebuildServer(ctx, srv, spec); return err }); err != nil {
		t.Fatalf("RebuildServer for the cut revert: %v", err)
	}
	snaps = r.rollbackImages(ctx, id)
	if len(snaps) != 1 {
		t.Fatalf("snapshots after the rebuild: %+v", snaps)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		err := servers.Rebuild(ctx, r.cc, srv.ID, servers.RebuildOpts{ImageRef: snaps[0].ID}).Err
		if err == nil {
			break
		}
		if !gophercloud.ResponseCodeIs(err, 409) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond) // a task of Nova's own still runs
	}
	for {
		cur, err := servers.Get(ctx, r.cc, srv.ID).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if cur.Image["id"] == snaps[0].ID && cur.TaskState == "" && (cur.Status == "ACTIVE" || cur.Status == "SHUTOFF") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not settle on the snapshot: %s %v", cur.Status, cur.Image["id"])
		}
		time.Sleep(250 * time.Millisecond)
	}
	rebuilds := r.actions(ctx, srv.ID, "rebuild")
	if err := retried("RevertServer", func() error {
		return d.RevertServer(ctx, srv, map[string][]byte{"strata/bootstrap.json": []byte(`{"guest":"old"}`)})
	}); err != nil {
		t.Fatalf("RevertServer after a cut revert: %v", err)
	}
	if n := r.actions(ctx, srv.ID, "rebuild"); n != rebuilds {
		t.Fatalf("the revert of a server on the snapshot already asked Nova for %d more rebuilds; want none", n-rebuilds)
	}
	if snaps := r.rollbackImages(ctx, id); len(snaps) != 0 {
		t.Fatalf("after the cut revert's end the snapshot is still there: %+v", snaps)
	}
	if cur, err := servers.Get(ctx, r.cc, srv.ID).Extract(); err != nil || cur.Status != "ACTIVE" {
		t.Fatalf("after the cut revert's end: %+v, %v", cur, err)
	}

	// A rebuild Nova refuses (an image whose min_disk the flavor's disk
	// cannot hold) is ErrInvalid with Nova's reason; the revert after it
	// puts the server back as it was.
	big := r.image(ctx, "strata-paths-rebuild-big", "64M", 5)
	spec.Image = compute.ImageRef{ID: big.ID, Location: big.ID, Format: "qcow2"}
	if _, err := d.RebuildServer(ctx, srv, spec); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Fatalf("a rebuild onto an image the flavor cannot hold: %v; want Nova's 400", err)
	} else {
		t.Logf("refused: %v", err)
		if !errors.Is(err, compute.ErrInvalid) {
			t.Errorf("the refusal does not wrap compute.ErrInvalid: %v", err)
		}
	}
	if err := retried("RevertServer", func() error {
		return d.RevertServer(ctx, srv, map[string][]byte{"strata/bootstrap.json": []byte(`{"guest":"new"}`)})
	}); err != nil {
		t.Fatalf("RevertServer after a refused rebuild: %v", err)
	}
	cur, err := servers.Get(ctx, r.cc, srv.ID).Extract()
	if err != nil || cur.Status != "ACTIVE" {
		t.Fatalf("after reverting a refused rebuild: %+v, %v", cur, err)
	}
}

// actions counts the server's Nova instance actions of a kind.
func (r *realCloud) actions(ctx context.Context, serverID, kind string) int {
	r.t.Helper()
	pages, err := instanceactions.List(r.cc, serverID, nil).AllPages(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	all, err := instanceactions.ExtractInstanceActions(pages)
	if err != nil {
		r.t.Fatal(err)
	}
	n := 0
	for _, a := range all {
		if a.Action == kind {
			n++
		}
	}
	return n
}

// rollbackImages are the Glance images named as a rebuild's snapshot of
// instance id's old root disk.
func (r *realCloud) rollbackImages(ctx context.Context, id string) []images.Image {
	r.t.Helper()
	pages, err := images.List(r.ic, images.ListOpts{Name: "strata-" + id + "-rollback"}).AllPages(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	all, err := images.ExtractImages(pages)
	if err != nil {
		r.t.Fatal(err)
	}
	return all
}

// configDriveFiles are the personality files on the server's config drive
// (the tier's instances_path), joined.
func (r *realCloud) configDriveFiles(serverID string) string {
	r.t.Helper()
	iso := filepath.Join(r.s.Dir, "compute", "nova", "instances", serverID, "disk.config")
	list, err := exec.Command("isoinfo", "-i", iso, "-R", "-f").Output()
	if err != nil {
		r.t.Fatalf("isoinfo -f %s: %v", iso, err)
	}
	var out []string
	for _, f := range strings.Fields(string(list)) {
		if !strings.HasPrefix(f, "/openstack/content/") {
			continue
		}
		data, err := exec.Command("isoinfo", "-i", iso, "-R", "-x", f).Output()
		if err != nil {
			r.t.Fatalf("isoinfo -x %s: %v", f, err)
		}
		out = append(out, string(data))
	}
	return strings.Join(out, "\n")
}

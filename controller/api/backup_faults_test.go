package api_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"strata/controller/backups"
	"strata/controller/objectstore"
	objlocal "strata/controller/objectstore/local"
	"strata/controller/server"
)

// flakyStore is a real local store whose Puts fail once failAfter bytes
// went through it in all (0: at once), as an object store that becomes
// unreachable does.
type flakyStore struct {
	objectstore.Store
	failAfter int64
	armed     atomic.Bool
	sent      atomic.Int64
}

var errUnreachable = errors.New("dial tcp 127.0.0.1:1: connection refused (object store down)")

func (f *flakyStore) Put(ctx context.Context, name string, r io.Reader) (objectstore.Object, error) {
	if !f.armed.Load() {
		return f.Store.Put(ctx, name, r)
	}
	if f.failAfter == 0 {
		return objectstore.Object{}, errUnreachable
	}
	return f.Store.Put(ctx, name, &flakyReader{r: r, f: f})
}

type flakyReader struct {
	r io.Reader
	f *flakyStore
}

func (fr *flakyReader) Read(p []byte) (int, error) {
	if fr.f.sent.Load() >= fr.f.failAfter {
		return 0, errUnreachable
	}
	n, err := fr.r.Read(p)
	fr.f.sent.Add(int64(n))
	return n, err
}

// failedWith waits for a backup to fail and checks its reason.
func (c *client) failedWith(id string, parts ...string) map[string]any {
	c.t.Helper()
	b := c.waitBackup(id, backups.StatusFailed, 30*time.Second)
	reason, _ := b["fail_reason"].(string)
	c.t.Logf("backup %s failed: %s", id, reason)
	for _, p := range parts {
		if !strings.Contains(reason, p) {
			c.t.Fatalf("backup %s failed with %q, want it to say %q", id, reason, p)
		}
	}
	return b
}

func (r *rig) objectsOf(id string) []string {
	var out []string
	for _, o := range r.storeObjects() {
		if strings.HasPrefix(o, backups.Root+"/"+id+"/") {
			out = append(out, o)
		}
	}
	return out
}

func TestABackupThatCannotFinishFailsWithItsReasonAndLeavesNothing(t *testing.T) {
	t.Parallel()
	local, err := objlocal.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	flaky := &flakyStore{Store: local}
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc, backupStore: flaky})
	c := r.admin()
	src := newActive(c, "src", "shop")
	full := c.createBackup(map[string]any{"name": "full", "instance": src})
	c.waitBackup(full["id"].(string), backups.StatusCompleted, 30*time.Second)

	check := func(name string, id string, parts ...string) {
		t.Helper()
		c.failedWith(id, parts...)
		if objs := r.objectsOf(id); len(objs) != 0 {
			t.Fatalf("%s: the failed backup left %v", name, objs)
		}
		// The source keeps serving, and takes the next backup.
		c.waitStatus(src, "ACTIVE", 10*time.Second)
	}

	// The store is unreachable when the backup starts.
	flaky.failAfter = 0
	flaky.armed.Store(true)
	check("store down at start", c.createBackup(map[string]any{"name": "s0", "instance": src})["id"].(string), "object store", "connection refused")

	// The store goes away mid-stream.
	flaky.failAfter = 1 << 20
	flaky.sent.Store(0)
	check("store down mid-stream", c.createBackup(map[string]any{"name": "s1", "instance": src})["id"].(string), "object store", "connection refused")
	flaky.armed.Store(false)

	// The agent's connection drops mid-stream (it reconnects after).
	g := fc.guest(src)
	g.mu.Lock()
	g.streams.CutAfter = 2 << 20
	g.mu.Unlock()
	check("connection cut", c.createBackup(map[string]any{"name": "cut", "instance": src})["id"].(string))
	g.mu.Lock()
	g.streams.CutAfter = 0
	g.streams.NoIncremental = true
	g.mu.Unlock()

	// The datastore cannot do incrementals (Redis): the agent's typed
	// error is the reason.
	check("no incrementals", c.createBackup(map[string]any{"name": "inc", "instance": src, "incremental": 1})["id"].(string),
		"does not support incremental")
	g.mu.Lock()
	g.streams.NoIncremental = false
	g.mu.Unlock()

	// After all that, a backup works and only the good backups' objects
	// are in the store.
	ok := c.createBackup(map[string]any{"name": "ok", "instance": src})["id"].(string)
	c.waitBackup(ok, backups.StatusCompleted, 30*time.Second)
	for _, o := range r.storeObjects() {
		if !strings.Contains(o, full["id"].(string)) && !strings.Contains(o, ok) {
			t.Fatalf("store holds %s, of no completed backup", o)
		}
	}
}

func TestDeletingARunningBackupCancelsIt(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	fc.streams.ChunkDelay = 20 * time.Millisecond // ~1 s per 3 MiB
	fc.streams.Pad = 8 << 20
	r := newRig(t, rigOptions{compute: fc})
	c := r.admin()
	src := newActive(c, "src", "shop")
	id := c.createBackup(map[string]any{"name": "slow", "instance": src})["id"].(string)
	waitFor(t, "the backup to stream", 10*time.Second, func() bool { return len(r.objectsOf(id)) > 0 })
	c.must(202, "DELETE", "/backups/"+id, nil)
	c.waitBackupGone(id, 5*time.Second)
	c.waitStatus(src, "ACTIVE", 10*time.Second)
	waitFor(t, "the store to empty", 10*time.Second, func() bool { return len(r.storeObjects()) == 0 })
	// The guest's backup operation ended (failed), it did not run on.
	opID := "backup-" + id
	waitFor(t, "the guest's backup to stop", 10*time.Second, func() bool {
		g := fc.guest(src)
		g.mu.Lock()
		defer g.mu.Unlock()
		res, done := g.results[opID]
		return done && res.Error != nil
	})
}

func TestAControllerRestartMidBackupFailsItWithAReason(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	fc.streams.ChunkDelay = 20 * time.Millisecond
	fc.streams.Pad = 8 << 20
	dir := t.TempDir()
	agentAddr := freeAddr(t)
	r1 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	c := r1.admin()
	src := newActive(c, "src", "shop")
	stopped := c.createBackup(map[string]any{"name": "stopped", "instance": src})["id"].(string)
	waitFor(t, "the backup to stream", 10*time.Second, func() bool { return len(r1.objectsOf(stopped)) > 0 })
	r1.ctl.Stop() // a clean stop cuts the stream: the backup fails, saying why
	fc.powerOff()

	// A controller killed mid-stream leaves the row BUILDING, its task
	// queued (its lease lapses) and segments in the store: make that
	// state for a second backup, as SIGKILL would leave it.
	killed := "0f0f0f0f-0000-4000-8000-00000000000a"
	ctx := context.Background()
	db, err := server.OpenState(ctx, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	var version string
	db.QueryRow(ctx, `SELECT datastore_version_id FROM instances WHERE id = ?`, src).Scan(&version)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO backups (id, project_id, instance_id, name, chain_position, datastore_version_id, status, store, location, created_at, updated_at)
			SELECT ?, project_id, id, 'killed', 0, datastore_version_id, 'BUILDING', 'local', ?, ?, ? FROM instances WHERE id = ?`,
			[]any{killed, "backups/" + killed, now, now, src}},
		{`INSERT INTO tasks (id, instance_id, kind, step, state, payload, run_after, lease_owner, lease_until, created_at, updated_at)
			VALUES (?, ?, 'backup', 'stream', 'queued', ?, ?, 'dead-controller', ?, ?, ?)`,
			[]any{"task-" + killed, src, `{"backup_ids":["` + killed + `"]}`, now, now - 1, now, now}},
		{`UPDATE instances SET task = 'BACKING_UP' WHERE id = ?`, []any{src}},
	} {
		if _, err := db.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	leftover, _ := objlocal.New(dir + "/backups")
	if _, err := leftover.Put(ctx, "backups/"+killed+"/data.00000001", strings.NewReader("half a backup")); err != nil {
		t.Fatal(err)
	}

	fc.mu.Lock()
	fc.streams.ChunkDelay = 0
	fc.mu.Unlock()
	r2 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	c = r2.admin()
	c.failedWith(stopped, "shutting down")
	c.failedWith(killed, "controller stopped while this backup was streaming")
	for _, id := range []string{stopped, killed} {
		if objs := r2.objectsOf(id); len(objs) != 0 {
			t.Fatalf("the interrupted backup %s left %v", id, objs)
		}
	}
	c.waitStatus(src, "ACTIVE", 20*time.Second)
	ok := c.createBackup(map[string]any{"name": "after", "instance": src})["id"].(string)
	c.waitBackup(ok, backups.StatusCompleted, 30*time.Second)
}

func TestARestoreIsRefusedWhenTheBackupCannotBeTrusted(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc})
	c := r.admin()
	src := newActive(c, "src", "shop")
	ctx := context.Background()
	take := func(name string) string {
		id := c.createBackup(map[string]any{"name": name, "instance": src})["id"].(string)
		c.waitBackup(id, backups.StatusCompleted, 30*time.Second)
		return id
	}
	refused := func(id string, code int, parts ...string) {
		t.Helper()
		before := len(c.must(200, "GET", "/instances", nil)["instances"].([]any))
		got, doc := c.do("POST", "/instances", createBody("restored", map[string]any{"restorePoint": map[string]any{"backupRef": id}}))
		msg := errorMessage(doc)
		if got != code {
			t.Fatalf("restore of %s: HTTP %d %q, want %d", id, got, msg, code)
		}
		for _, p := range parts {
			if !strings.Contains(msg, p) {
				t.Fatalf("restore of %s refused with %q, want it to say %q", id, msg, p)
			}
		}
		if after := len(c.must(200, "GET", "/instances", nil)["instances"].([]any)); after != before {
			t.Fatalf("a refused restore created an instance")
		}
	}
	st := r.ctl.Backups.Store

	// One byte changed in a segment.
	flipped := take("flipped")
	seg := r.objectsOf(flipped)[1]
	rc, err := st.Get(ctx, seg)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	data[len(data)/2] ^= 0x40
	if _, err := st.Put(ctx, seg, strings.NewReader(string(data))); err != nil {
		t.Fatal(err)
	}
	refused(flipped, 422, flipped, "segment")

	// A segment deleted.
	missing := take("missing")
	gone := r.objectsOf(missing)[0]
	if err := st.Delete(ctx, gone); err != nil {
		t.Fatal(err)
	}
	refused(missing, 422, missing, "segment")

	// A volume too small for the data.
	fc.guest(src).mu.Lock()
	fc.guest(src).streams.RawBytes = 3 << 30
	fc.guest(src).mu.Unlock()
	big := take("big")
	refused(big, 400, "too small", "4 GB")

	// A good backup restores.
	fc.guest(src).mu.Lock()
	fc.guest(src).streams.RawBytes = 0
	fc.guest(src).mu.Unlock()
	good := take("good")
	id := c.must(200, "POST", "/instances", createBody("restored", map[string]any{"restorePoint": map[string]any{"backupRef": good}}))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 30*time.Second)
}

func TestTheCollectorRemovesTheObjectsOfDeadBackups(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{backups: func(m *backups.Manager) { m.GCMinAge = time.Millisecond }})
	c := r.admin()
	src := newActive(c, "src", "shop")
	keep := c.createBackup(map[string]any{"name": "keep", "instance": src})["id"].(string)
	c.waitBackup(keep, backups.StatusCompleted, 30*time.Second)
	ctx := context.Background()
	st := r.ctl.Backups.Store
	// Objects of a backup the database does not know (a controller that
	// died before recording it, or a row lost with a restored database).
	for _, name := range []string{"backups/0f0f0f0f-0000-4000-8000-000000000001/data.00000001", "backups/0f0f0f0f-0000-4000-8000-000000000001/manifest.json"} {
		if _, err := st.Put(ctx, name, strings.NewReader("orphan")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Millisecond)
	got, err := r.ctl.Backups.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Removed["0f0f0f0f-0000-4000-8000-000000000001"]) != 2 {
		t.Fatalf("collected %v", got.Removed)
	}
	if len(r.objectsOf(keep)) == 0 {
		t.Fatal("the collector removed a live backup's objects")
	}
	for _, o := range r.storeObjects() {
		if !strings.Contains(o, keep) {
			t.Fatalf("store still holds %s", o)
		}
	}
}

func TestAResetStatusMidBackupNeverLeavesItBuilding(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	fc.streams.ChunkDelay = 20 * time.Millisecond
	fc.streams.Pad = 8 << 20
	r := newRig(t, rigOptions{compute: fc})
	c := r.admin()
	src := newActive(c, "src", "shop")
	id := c.createBackup(map[string]any{"name": "reset", "instance": src})["id"].(string)
	waitFor(t, "the backup to stream", 10*time.Second, func() bool { return len(r.objectsOf(id)) > 0 })
	c.must(202, "POST", "/instances/"+src+"/action", map[string]any{"reset_status": map[string]any{}})
	// The step still running finishes the backup itself either way.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := c.backup(id)["status"]
		if st == backups.StatusCompleted || st == backups.StatusFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backup still %v after a reset-status", st)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A row left BUILDING with no task (its controller gone as well) is
	// failed by the collector.
	ctx := context.Background()
	now := time.Now().Add(-2 * time.Minute).UnixMilli()
	orphan := "0f0f0f0f-0000-4000-8000-00000000000b"
	if _, err := r.ctl.DB.Exec(ctx, `INSERT INTO backups (id, project_id, instance_id, name, chain_position, datastore_version_id, status, store, location, created_at, updated_at)
		SELECT ?, project_id, id, 'orphan', 0, datastore_version_id, 'BUILDING', 'local', ?, ?, ? FROM instances WHERE id = ?`,
		orphan, "backups/"+orphan, now, now, src); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ctl.Backups.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	c.failedWith(orphan, "task was cancelled")
}

func TestARestoreWithAnotherKeyIsRefusedNamingTheKey(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	dir := t.TempDir()
	agentAddr := freeAddr(t)
	r1 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	c := r1.admin()
	src := newActive(c, "src", "shop")
	id := c.createBackup(map[string]any{"name": "b", "instance": src})["id"].(string)
	c.waitBackup(id, backups.StatusCompleted, 30*time.Second)
	r1.ctl.Stop()
	fc.powerOff()
	// The operator lost the key-encryption key and made a new one.
	if err := os.WriteFile(filepath.Join(dir, "backup.kek"), []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r2 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	c = r2.admin()
	code, doc := c.do("POST", "/instances", createBody("restored", map[string]any{"restorePoint": map[string]any{"backupRef": id}}))
	if code != 422 || !strings.Contains(errorMessage(doc), "key") {
		t.Fatalf("restore with another KEK: HTTP %d %q", code, errorMessage(doc))
	}
	t.Logf("refused: %s", errorMessage(doc))
}

// cutStore cuts every read of one object after its first: the object
// store's connection drops half-way through it.
type cutStore struct {
	objectstore.Store
	mu   sync.Mutex
	cut  string
	gets int
}

var errCut = errors.New("read tcp 127.0.0.1:8080: connection reset by peer (object store cut)")

func (s *cutStore) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	rc, err := s.Store.Get(ctx, name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || name != s.cut {
		return rc, err
	}
	if s.gets++; s.gets == 1 {
		return rc, nil // the restore's check reads it whole
	}
	return &cutReader{ReadCloser: rc, left: 128 << 10}, nil
}

type cutReader struct {
	io.ReadCloser
	left int
}

func (r *cutReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, errCut
	}
	n, err := r.ReadCloser.Read(p[:min(len(p), r.left)])
	r.left -= n
	return n, err
}

// TestARestoreCutByTheObjectStoreFailsWithThatReason: the store's
// connection drops while a segment streams to the restoring guest. The
// guest sees its stream end short and refuses it (its digest); the
// instance ends in ERROR with this side's reason — the store's error and
// the segment — not only the guest's "does not match".
func TestARestoreCutByTheObjectStoreFailsWithThatReason(t *testing.T) {
	t.Parallel()
	local, err := objlocal.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cs := &cutStore{Store: local}
	r := newRig(t, rigOptions{backupStore: cs})
	c := r.admin()
	src := newActive(c, "src", "shop")
	id := c.createBackup(map[string]any{"name": "full", "instance": src})["id"].(string)
	c.waitBackup(id, backups.StatusCompleted, 30*time.Second)
	objs := r.objectsOf(id)
	cs.mu.Lock()
	cs.cut = objs[0]
	cs.mu.Unlock()
	restored := c.must(200, "POST", "/instances", createBody("restored", map[string]any{"restorePoint": map[string]any{"backupRef": id}}))["instance"].(map[string]any)["id"].(string)
	in := c.waitStatus(restored, "ERROR", 60*time.Second)
	msg, _ := in["fault"].(map[string]any)["message"].(string)
	for _, want := range []string{"restore failed: backup " + id, "object store cut", "the guest:"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("fault %q, want it to say %q", msg, want)
		}
	}
	if g := r.compute.guest(restored); g != nil {
		g.mu.Lock()
		prepared := g.prepared
		g.mu.Unlock()
		if prepared {
			t.Fatal("the guest took the short stream as its data")
		}
	}
}

package api_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/ci/swift/swifttest"
	"strata/controller/guestlogs"
	objswift "strata/controller/objectstore/swift"
)

func (r *rig) logObjects(instanceID string) []string {
	r.t.Helper()
	objs, err := r.ctl.Backups.Store.List(context.Background(), guestlogs.Key(instanceID+"/"))
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, strings.TrimPrefix(o.Name, guestlogs.Root+"/"))
	}
	return out
}

func rowOf(rows []map[string]any, name string) map[string]any {
	for _, r := range rows {
		if r["Name"] == name || r["name"] == name {
			return r
		}
	}
	return nil
}

// TestGuestLogsThroughTheOpenstackClient drives Trove's guest log commands
// with the real client: list and show, enable and disable a USER log,
// publish into the backups' object store, `log save` and `log tail`
// reading it back through the catalog's object-store endpoint (the
// controller's read-only Swift view), publish again after the server
// wrote more, and discard.
func TestGuestLogsThroughTheOpenstackClient(t *testing.T) {
	// The real client spends seconds of CPU starting up: these tests
	// overlap, each on a controller of its own.
	t.Parallel()
	r := newRig(t, rigOptions{})
	o := newOSC(t, r)
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("logs-db", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	g := r.compute.guest(id)

	logs := o.list("database", "log", "list", id)
	errLog, slow := rowOf(logs, "error"), rowOf(logs, "slow_query")
	if len(logs) != 2 || errLog == nil || slow == nil || errLog["Type"] != "SYS" || errLog["Status"] != "Ready" ||
		slow["Type"] != "USER" || slow["Status"] != "Disabled" || errLog["Container"] != guestlogs.Container ||
		errLog["Prefix"] != id+"/error/" {
		t.Fatalf("log list = %v", logs)
	}
	if show := o.json("database", "log", "show", id, "slow_query"); show["status"] != "Disabled" || show["metafile"] != id+"/slow_query.metafile" {
		t.Fatalf("log show = %v", show)
	}
	if on := o.json("database", "log", "set", id, "slow_query", "--enable"); on["status"] != "Ready" || on["type"] != "USER" {
		t.Fatalf("log set --enable = %v", on)
	}
	if off := o.json("database", "log", "set", id, "slow_query", "--disable"); off["status"] != "Disabled" {
		t.Fatalf("log set --disable = %v", off)
	}
	out := o.run(true, "database", "log", "set", id, "error", "--disable")
	if !strings.Contains(out, "always on") {
		t.Fatalf("disabling a SYS log: %s", out)
	}

	pub := o.json("database", "log", "set", id, "error", "--publish")
	g.mu.Lock()
	text := g.logText("error")
	g.mu.Unlock()
	if pub["status"] != "Published" || pub["published"] != float64(len(text)) || pub["pending"] != 0.0 {
		t.Fatalf("log set --publish = %v (the log holds %d bytes)", pub, len(text))
	}
	if objs := r.logObjects(id); len(objs) != 2 || objs[0] != id+"/error.metafile" || !strings.HasPrefix(objs[1], id+"/error/log-") {
		t.Fatalf("store after publish = %v", objs)
	}
	file := filepath.Join(t.TempDir(), "error.log")
	o.run(false, "database", "log", "save", id, "error", "--file", file)
	saved, err := os.ReadFile(file)
	if err != nil || string(saved) != text {
		t.Fatalf("log save wrote %q (%v), the guest's log is %q", saved, err, text)
	}
	if tail := o.run(false, "database", "log", "tail", id, "error", "--lines", "1"); tail != "2026-12-04 21:00:01 0 [Note] ready for connections\n" {
		t.Fatalf("log tail --lines 1 = %q", tail)
	}

	// The server writes on: the published copy is partial until the next
	// publish, which replaces it.
	g.mu.Lock()
	g.logs.extra = append(g.logs.extra, "2026-12-04 21:05:00 0 [Warning] Aborted connection 7")
	text = g.logText("error")
	g.mu.Unlock()
	if row := rowOf(o.list("database", "log", "list", id), "error"); row["Status"] != "Partial" || row["Pending"] == 0.0 {
		t.Fatalf("log list after the server wrote more = %v", row)
	}
	o.json("database", "log", "set", id, "error", "--publish")
	if objs := r.logObjects(id); len(objs) != 2 {
		t.Fatalf("store after the second publish = %v (want one part and the metafile)", objs)
	}
	// The published part is the whole log now, not only what was new.
	if tail := o.run(false, "database", "log", "tail", id, "error", "--lines", "0"); tail != text {
		t.Fatalf("log tail --lines 0 (all) = %q, want %q", tail, text)
	}

	if d := o.json("database", "log", "set", id, "error", "--discard"); d["status"] != "Ready" || d["published"] != 0.0 {
		t.Fatalf("log set --discard = %v", d)
	}
	if objs := r.logObjects(id); len(objs) != 0 {
		t.Fatalf("store after discard = %v", objs)
	}
}

// TestGuestLogBadInput: every wrong request is a 4xx with a message, and
// changes nothing.
func TestGuestLogBadInput(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("logs-bad", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	g := r.compute.guest(id)
	path := "/instances/" + id + "/log"
	for _, tc := range []struct {
		body string
		code int
		want string
	}{
		{`{"name":"slow_query","enable":1,"disable":1}`, 400, "both given"},
		{`{"name":"no_such_log","enable":1}`, 404, "no log named no_such_log"},
		{`{"name":"../../etc/passwd","publish":1}`, 400, "not a log name"},
		{`{"enable":1}`, 400, "name"},
		{`{"name":"slow_query","enable":"yes"}`, 400, "want 1 or 0"},
		{`{"name":"slow_query","enable":1,"colour":"red"}`, 400, "unknown field"},
		{`{"name":"slow_query",`, 400, "malformed JSON"},
		{`["slow_query"]`, 400, "JSON object"},
		{`{"name":"error","disable":1}`, 422, "always on"},
	} {
		code, doc := c.raw("POST", "/v1.0/"+c.project+path, tc.body)
		if code != tc.code || !strings.Contains(errorMessage(doc), tc.want) {
			t.Errorf("POST %s: HTTP %d %q, want %d mentioning %q", tc.body, code, errorMessage(doc), tc.code, tc.want)
		}
	}
	g.mu.Lock()
	g.logs.groupOwnsSlow = true
	g.mu.Unlock()
	code, doc := c.do("POST", path, `{"name":"slow_query","enable":1}`)
	if code != 422 || !strings.Contains(errorMessage(doc), "configuration group") {
		t.Errorf("enable against the group: HTTP %d %v", code, doc)
	}
	g.mu.Lock()
	on := g.logs.slowOn
	g.mu.Unlock()
	if on {
		t.Error("a refused request switched the slow query log on")
	}
	if objs := r.logObjects(id); len(objs) != 0 {
		t.Errorf("refused requests left objects: %v", objs)
	}

	// Another project neither sees nor touches the instance's logs, nor
	// reads what was published.
	c.must(200, "POST", path, map[string]any{"name": "error", "publish": 1})
	other := r.otherProjectClient()
	if code, _ := other.do("GET", path, nil); code != 404 {
		t.Errorf("other project's log list: HTTP %d", code)
	}
	if code, _ := other.do("POST", path, map[string]any{"name": "error", "discard": 1}); code != 404 {
		t.Errorf("other project's discard: HTTP %d", code)
	}
	if code, _ := other.raw("GET", "/logstore/v1/"+other.project+"/"+guestlogs.Container+"?prefix="+id+"/error/&format=json", ""); code != 404 {
		t.Errorf("other project's listing of the published log: HTTP %d", code)
	}
	if code, _ := other.raw("GET", "/logstore/v1/"+c.project+"/"+guestlogs.Container+"?prefix="+id+"/error/", ""); code != 403 {
		t.Errorf("listing another project's account: HTTP %d", code)
	}
	if code, _ := other.raw("HEAD", "/logstore/v1/"+other.project+"/"+guestlogs.Container+"/"+id+"/error.metafile", ""); code != 404 {
		t.Errorf("other project's HEAD of the metafile: HTTP %d", code)
	}
	if objs := r.logObjects(id); len(objs) != 2 {
		t.Errorf("after the other project's attempts the store holds %v", objs)
	}
	if code, doc := c.raw("GET", "/logstore/v1/"+c.project+"/backups?prefix="+id+"/", ""); code != 404 || !strings.Contains(errorMessage(doc), "no container") {
		t.Errorf("listing another container: HTTP %d %v", code, doc)
	}
}

// TestAPublishThatArrivesDamagedFailsAndKeepsTheLastGoodOne: a stream that
// does not match the agent's digest is refused with a message, its part
// removed, and the earlier publish stays readable.
func TestAPublishThatArrivesDamagedFailsAndKeepsTheLastGoodOne(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("logs-damaged", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	g := r.compute.guest(id)
	path := "/instances/" + id + "/log"
	c.must(200, "POST", path, map[string]any{"name": "error", "publish": 1})
	before := r.logObjects(id)
	g.mu.Lock()
	g.logs.damage = true
	g.logs.extra = append(g.logs.extra, "more")
	g.mu.Unlock()
	code, doc := c.do("POST", path, map[string]any{"name": "error", "publish": 1})
	if code != 500 || !strings.Contains(errorMessage(doc), "damaged or incomplete") {
		t.Fatalf("damaged publish: HTTP %d %v", code, doc)
	}
	if after := r.logObjects(id); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Fatalf("store after a damaged publish = %v, before %v", after, before)
	}
	if v := c.must(200, "POST", path, map[string]any{"name": "error"})["log"].(map[string]any); v["status"] != "Partial" {
		t.Fatalf("log after a damaged publish = %v", v)
	}
}

// TestGuestLogsPublishToARealSwift publishes into Debian's Swift (the
// backups' store there) and reads it back with the client's `log save`.
func TestGuestLogsPublishToARealSwift(t *testing.T) {
	// The real client spends seconds of CPU starting up: these tests
	// overlap, each on a controller of its own.
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
	st, err := objswift.New(ctx, client, objswift.Options{Container: "api-logs"})
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, rigOptions{backupStore: st})
	o := newOSC(t, r)
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("logs-swift", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	g := r.compute.guest(id)
	c.must(200, "POST", "/instances/"+id+"/log", map[string]any{"name": "error", "publish": 1})
	if objs := r.logObjects(id); len(objs) != 2 {
		t.Fatalf("Swift holds %v", objs)
	}
	file := filepath.Join(t.TempDir(), "error.log")
	o.run(false, "database", "log", "save", id, "error", "--file", file)
	g.mu.Lock()
	text := g.logText("error")
	g.mu.Unlock()
	if saved, err := os.ReadFile(file); err != nil || string(saved) != text {
		t.Fatalf("log save from Swift wrote %q (%v), want %q", saved, err, text)
	}
	c.must(200, "POST", "/instances/"+id+"/log", map[string]any{"name": "error", "discard": 1})
	if objs := r.logObjects(id); len(objs) != 0 {
		t.Fatalf("Swift after discard holds %v", objs)
	}
	// Deleting the instance takes what it published with it.
	c.must(200, "POST", "/instances/"+id+"/log", map[string]any{"name": "error", "publish": 1})
	c.must(202, "DELETE", "/instances/"+id, nil)
	if objs := r.logObjects(id); len(objs) != 0 {
		t.Fatalf("Swift after the instance's delete holds %v", objs)
	}
}

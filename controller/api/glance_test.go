package api_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/builder/imagecheck"
	"strata/controller/api/glance"
	"strata/controller/identity"
	"strata/controller/imagestore"
	"strata/controller/imagestore/local"
	"strata/controller/server"
	"strata/controller/store"
)

// TestGlanceSubsetInEmbeddedMode drives the controller's Glance v2 subset
// as publishing does: the catalog lists it, create + upload + show with
// Glance's checksums, list by property and tag, the rules on deleting.
func TestGlanceSubsetInEmbeddedMode(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()

	// The catalog lists the image service at BASE/image, whose version
	// document offers v2.
	code, doc := c.raw("GET", "/v3/auth/catalog", "")
	found := ""
	for _, e := range doc["catalog"].([]any) {
		m := e.(map[string]any)
		if m["type"] == "image" {
			found = m["endpoints"].([]any)[0].(map[string]any)["url"].(string)
		}
	}
	if code != 200 || found != c.base+"/image" {
		t.Fatalf("catalog image endpoint %q (HTTP %d)", found, code)
	}
	if code, doc := c.raw("GET", "/image/", ""); code != 200 || !strings.HasPrefix(doc["versions"].([]any)[0].(map[string]any)["id"].(string), "v2.") {
		t.Fatalf("version document: HTTP %d %v", code, doc)
	}

	code, doc = c.raw("POST", "/image/v2/images", `{"name": "mariadb-10.11", "disk_format": "qcow2", "container_format": "bare",
		"tags": ["strata", "mariadb-10.11"], "strata_sha256": "abc", "hw_rng_model": "virtio", "min_disk": 2, "visibility": "public"}`)
	if code != 201 || doc["status"] != "queued" {
		t.Fatalf("create: HTTP %d %v", code, doc)
	}
	id := doc["id"].(string)
	if code, doc := c.raw("GET", "/image/v2/images?strata_sha256=abc", ""); code != 200 || len(doc["images"].([]any)) != 1 {
		t.Fatalf("a queued image is listed: HTTP %d %v", code, doc)
	}

	p := filepath.Join(t.TempDir(), "img.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, "8M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	data, _ := os.ReadFile(p)
	if code := c.upload(id, []byte("this is not a qcow2 image at all")); code != 400 {
		t.Fatalf("upload of garbage: HTTP %d, want 400", code)
	}
	if code := c.upload(id, data); code != 204 {
		t.Fatalf("upload: HTTP %d", code)
	}
	if code := c.upload(id, data); code != 409 {
		t.Fatalf("second upload: HTTP %d, want 409", code)
	}
	_, img := c.raw("GET", "/image/v2/images/"+id, "")
	m5, s512 := md5.Sum(data), sha512.Sum512(data)
	if img["status"] != "active" || img["size"] != float64(len(data)) || img["checksum"] != hex.EncodeToString(m5[:]) ||
		img["os_hash_algo"] != "sha512" || img["os_hash_value"] != hex.EncodeToString(s512[:]) || img["min_disk"] != float64(2) ||
		img["strata_sha256"] != "abc" || img["hw_rng_model"] != "virtio" || len(img["tags"].([]any)) != 2 {
		t.Fatalf("stored image: %v", img)
	}
	for query, want := range map[string]int{"?tag=strata&strata_sha256=abc": 1, "?tag=strata&tag=other": 0, "?strata_sha256=nope": 0,
		"?name=mariadb-10.11&status=active": 2 /* the rig's image too */} {
		if _, doc := c.raw("GET", "/image/v2/images"+query, ""); len(doc["images"].([]any)) != want {
			t.Errorf("list %s: %d images, want %d", query, len(doc["images"].([]any)), want)
		}
	}

	// Bad requests and rights.
	for _, bc := range []badCase{
		{"POST", "/image/v2/images", `{"name": "x", "disk_format": "vmdk"}`, 400, "disk_format"},
		{"POST", "/image/v2/images", `{"name": "x", "disk_format": "qcow2", "checksum": "1"}`, 403, "read-only"},
		{"POST", "/image/v2/images", `{"name": "x", "disk_format": "qcow2", "tags": ["a,b"]}`, 400, "tag"},
		{"GET", "/image/v2/images/6f1c2d3e-0000-4000-8000-00000000dead", "", 404, "No image found"},
		{"DELETE", "/image/v2/images/" + r.imageID, "", 409, "used by datastore version mariadb 10.11"},
	} {
		code, doc := c.raw(bc.method, bc.path, bc.body)
		if code != bc.code || !strings.Contains(doc["message"].(string), bc.msg) {
			t.Errorf("%s %s: HTTP %d %v, want %d with %q", bc.method, bc.path, code, doc, bc.code, bc.msg)
		}
	}
	ids := &identity.Store{DB: r.ctl.DB}
	ids.CreateProject(context.Background(), "shop")
	if _, err := ids.CreateUser(context.Background(), "clerk", "clerk-password", "shop", false); err != nil {
		t.Fatal(err)
	}
	u := r.login("clerk", "clerk-password")
	if code, _ := u.raw("GET", "/image/v2/images", ""); code != 200 {
		t.Errorf("a member cannot list images: HTTP %d", code)
	}
	if code, _ := u.raw("DELETE", "/image/v2/images/"+id, ""); code != 403 {
		t.Errorf("a member deleted an image: HTTP %d", code)
	}
	anon := &client{t: t, base: c.base}
	if code, _ := anon.raw("GET", "/image/v2/images", ""); code != 401 {
		t.Errorf("no token: HTTP %d", code)
	}

	if code, _ := c.raw("DELETE", "/image/v2/images/"+id, ""); code != 204 {
		t.Fatalf("delete: HTTP %d", code)
	}
	if code, _ := c.raw("GET", "/image/v2/images/"+id, ""); code != 404 {
		t.Fatalf("deleted image still shown: HTTP %d", code)
	}
}

func (c *client) upload(id string, data []byte) int {
	c.t.Helper()
	req, _ := http.NewRequest("PUT", c.base+"/image/v2/images/"+id+"/file", bytes.NewReader(data))
	req.Header.Set("X-Auth-Token", c.token)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// An image is refused when it is not a standalone image of its declared
// format — a backing file or an external data file (CVE-2024-32498 class)
// could name any file of the controller's host — before it is stored: the
// upload answers 400 saying why, and the image stays queued.
func TestGlanceSubsetRefusesHostileImages(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	dir := t.TempDir()
	qemuImg := func(args ...string) []byte {
		t.Helper()
		p := filepath.Join(dir, "img")
		os.Remove(p)
		if out, err := exec.Command("qemu-img", append(append([]string{"create", "-q"}, args...), p, "8M")...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v: %s", err, out)
		}
		data, _ := os.ReadFile(p)
		return data
	}
	good := filepath.Join(dir, "good.qcow2")
	exec.Command("qemu-img", "create", "-q", "-f", "qcow2", good, "8M").Run()
	// qemu-img creates (and truncates) the external data file it is given:
	// a file of the test's own, never a host file.
	outside := filepath.Join(t.TempDir(), "outside.data")
	for name, tc := range map[string]struct {
		format string
		data   []byte
		says   string
	}{
		"external data file": {"qcow2", qemuImg("-f", "qcow2", "-o", "data_file="+outside+",data_file_raw=on"), "external data file"},
		"backing file":       {"qcow2", qemuImg("-f", "qcow2", "-F", "qcow2", "-b", good), "backing file"},
		"qcow2 declared raw": {"raw", qemuImg("-f", "qcow2"), "declared raw"},
	} {
		t.Run(name, func(t *testing.T) {
			code, doc := c.raw("POST", "/image/v2/images", `{"name": "hostile", "disk_format": "`+tc.format+`", "container_format": "bare"}`)
			if code != 201 {
				t.Fatalf("create: HTTP %d %v", code, doc)
			}
			id := doc["id"].(string)
			code, msg := c.uploadMessage(id, tc.data)
			if code != 400 || !strings.Contains(msg, tc.says) {
				t.Fatalf("upload: HTTP %d %q, want 400 saying %q", code, msg, tc.says)
			}
			if _, img := c.raw("GET", "/image/v2/images/"+id, ""); img["status"] != "queued" {
				t.Fatalf("after the refusal the image is %v, want queued", img["status"])
			}
		})
	}
	entries, _ := os.ReadDir(filepath.Join(r.stateDir, "images"))
	if len(entries) != 1 { // the rig's own image
		t.Errorf("the image store holds %d files, want only the rig's image", len(entries))
	}
}

func (c *client) uploadMessage(id string, data []byte) (int, string) {
	c.t.Helper()
	req, _ := http.NewRequest("PUT", c.base+"/image/v2/images/"+id+"/file", bytes.NewReader(data))
	req.Header.Set("X-Auth-Token", c.token)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Message string `json:"message"`
	}
	json.NewDecoder(resp.Body).Decode(&doc)
	return resp.StatusCode, doc.Message
}

// refusingStore is the local store with Glance's Verify answer for an
// image someone uploaded to Glance directly with a hostile header (the
// real answer is tested against Debian's glance-api in
// controller/imagestore/glance).
type refusingStore struct{ *local.Store }

func (s refusingStore) Verify(ctx context.Context, id string) error {
	return fmt.Errorf("%w: glance image %s: %w: it keeps its data in an external data file", imagestore.ErrInvalid, id, imagecheck.ErrRefused)
}

// An image the store refuses before boot ends the create at once in
// ERROR saying why, instead of being retried until the boot timeout.
func TestCreateEndsInErrorAtOnceWhenTheImageIsRefusedBeforeBoot(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	r := newRig(t, rigOptions{compute: fc, bootTimeout: time.Minute, images: func(db *store.DB, dir string) imagestore.Store {
		return refusingStore{&local.Store{DB: db, Dir: dir}}
	}})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("refused", map[string]any{
		"users": []map[string]any{{"name": "app", "password": "pw-never-kept-1"}}}))["instance"].(map[string]any)["id"].(string)
	in := c.waitStatus(id, "ERROR", 15*time.Second)
	// The task ended before prepare was queued: its payload, which held
	// the users' passwords, is emptied. (The instance's ERROR is written by
	// the task's failure handler just before the task is ended: wait for
	// the end.)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var queued int
		r.ctl.DB.QueryRow(context.Background(), `SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND state = 'queued'`, id).Scan(&queued)
		if queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the failed create task was not ended")
		}
	}
	var payloads []string
	rows, err := r.ctl.DB.Query(context.Background(), `SELECT payload FROM tasks WHERE instance_id = ?`, id)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p string
		rows.Scan(&p)
		payloads = append(payloads, p)
	}
	rows.Close()
	if len(payloads) == 0 || strings.Contains(strings.Join(payloads, " "), "pw-never-kept-1") {
		t.Errorf("the failed create task's payloads: %q", payloads)
	}
	fault, _ := in["fault"].(map[string]any)
	if fault == nil || !strings.Contains(fault["message"].(string), "refusing to boot image") || !strings.Contains(fault["message"].(string), "external data file") {
		t.Fatalf("fault = %v", in["fault"])
	}
	if s, _ := fc.has(id); s {
		t.Fatal("a server was created from the refused image")
	}
}

// The images created and not uploaded yet are kept in memory: their number
// and their properties are bounded, and so is an upload's size.
func TestGlanceSubsetBoundsPendingImagesPropertiesAndUploads(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{http: server.HTTPLimits{MaxPendingImages: 3, MaxImageBytes: 1 << 20}})
	c := r.admin()
	var ids []string
	for i := range 3 {
		code, doc := c.raw("POST", "/image/v2/images", fmt.Sprintf(`{"name": "pending-%d", "disk_format": "qcow2", "note": %q}`, i, strings.Repeat("x", 255)))
		if code != 201 {
			t.Fatalf("create %d: HTTP %d %v", i, code, doc)
		}
		ids = append(ids, doc["id"].(string))
	}
	if code, doc := c.raw("POST", "/image/v2/images", `{"name": "one-too-many", "disk_format": "qcow2"}`); code != 413 || !strings.Contains(doc["message"].(string), "wait for their data") {
		t.Fatalf("a fourth pending image: HTTP %d %v, want 413", code, doc)
	}
	c.must2(204, "DELETE", "/image/v2/images/"+ids[2])
	if code, doc := c.raw("POST", "/image/v2/images", `{"name": "again", "disk_format": "qcow2"}`); code != 201 {
		t.Fatalf("after deleting one: HTTP %d %v", code, doc)
	}
	props := map[string]string{}
	for i := range glance.MaxProperties + 1 {
		props[fmt.Sprintf("p%d", i)] = "v"
	}
	many, _ := json.Marshal(props)
	for name, tc := range map[string]struct {
		body string
		code int
		says string
	}{
		"a long value":        {`{"name": "x", "disk_format": "qcow2", "note": "` + strings.Repeat("x", 256) + `"}`, 400, "at most 255"},
		"too many properties": {`{"name": "x", "disk_format": "qcow2", ` + string(many[1:]), 413, "at most 128"},
	} {
		if code, doc := c.raw("POST", "/image/v2/images", tc.body); code != tc.code || !strings.Contains(doc["message"].(string), tc.says) {
			t.Errorf("%s: HTTP %d %v, want %d saying %q", name, code, doc, tc.code, tc.says)
		}
	}

	// An image larger than the limit: 413, back to queued, nothing stored.
	big := filepath.Join(t.TempDir(), "big.qcow2")
	exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", big, "256M").Run()
	data, _ := os.ReadFile(big)
	if len(data) <= 1<<20 {
		t.Fatalf("the test image has %d bytes, want more than 1 MiB", len(data))
	}
	if code, msg := c.uploadMessage(ids[0], data); code != 413 {
		t.Fatalf("an upload over the limit: HTTP %d %q", code, msg)
	}
	// Without a Content-Length, the limit is found while reading.
	req, _ := http.NewRequest("PUT", c.base+"/image/v2/images/"+ids[1]+"/file", io.MultiReader(bytes.NewReader(data)))
	req.Header.Set("X-Auth-Token", c.token)
	req.Header.Set("Content-Type", "application/octet-stream")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Fatalf("a chunked upload over the limit: HTTP %d", resp.StatusCode)
		}
	}
	for _, id := range ids[:2] {
		if _, img := c.raw("GET", "/image/v2/images/"+id, ""); img["status"] != "queued" {
			t.Errorf("image %s is %v after a refused upload, want queued", id, img["status"])
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(r.stateDir, "images")); len(entries) != 1 {
		t.Errorf("the image store holds %d files, want only the rig's image", len(entries))
	}
}

// An upload may take longer than the server's read timeout as long as its
// data keeps coming; one that stops sending is cut at UploadIdle.
func TestGlanceUploadRunsWhileDataComesAndIsCutWhenItStops(t *testing.T) {
	t.Parallel()
	// The read timeout is what an upload outlasts; the write timeout stays
	// generous, as a login (a bcrypt) on a loaded machine under -race took
	// longer than a second and was cut (EOF).
	r := newRig(t, rigOptions{http: server.HTTPLimits{ReadTimeout: time.Second, WriteTimeout: 30 * time.Second, UploadIdle: 2 * time.Second}})
	c := r.admin()
	p := filepath.Join(t.TempDir(), "img.qcow2")
	exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, "8M").Run()
	data, _ := os.ReadFile(p)
	upload := func(id string, body io.Reader) (int, error) {
		req, _ := http.NewRequest("PUT", c.base+"/image/v2/images/"+id+"/file", body)
		req.Header.Set("X-Auth-Token", c.token)
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	_, doc := c.raw("POST", "/image/v2/images", `{"name": "slow", "disk_format": "qcow2"}`)
	slow := doc["id"].(string)
	start := time.Now()
	code, err := upload(slow, &trickle{data: data, every: 300 * time.Millisecond, chunks: 10})
	if err != nil || code != 204 {
		t.Fatalf("an upload that kept sending for %s: HTTP %d, %v", time.Since(start).Round(time.Millisecond), code, err)
	}

	_, doc = c.raw("POST", "/image/v2/images", `{"name": "stalled", "disk_format": "qcow2"}`)
	stalled := doc["id"].(string)
	addr := strings.TrimPrefix(c.base, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /image/v2/images/%s/file HTTP/1.1\r\nHost: %s\r\nX-Auth-Token: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n",
		stalled, addr, c.token, len(data))
	conn.Write(data[:4096]) // then nothing
	start = time.Now()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("a stalled upload held its connection for %s (UploadIdle is 2s): %v", time.Since(start).Round(time.Second), err)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("the stalled upload ended after %s, before the idle timeout", d)
	}
	if _, img := c.raw("GET", "/image/v2/images/"+stalled, ""); img["status"] != "queued" {
		t.Errorf("the stalled image is %v, want queued", img["status"])
	}
}

// trickle yields data in chunks, one every interval.
type trickle struct {
	data   []byte
	every  time.Duration
	chunks int
	size   int // of a chunk
	left   int // of the current chunk
	sent   int
}

func (t *trickle) Read(p []byte) (int, error) {
	if len(t.data) == 0 {
		return 0, io.EOF
	}
	if t.left == 0 {
		if t.sent > 0 {
			time.Sleep(t.every)
		}
		if t.size == 0 {
			t.size = len(t.data)/t.chunks + 1
		}
		t.sent++
		t.left = t.size
	}
	n := min(t.left, len(p), len(t.data))
	copy(p, t.data[:n])
	t.data, t.left = t.data[n:], t.left-n
	return n, nil
}

func (c *client) must2(code int, method, path string) {
	c.t.Helper()
	if got, doc := c.raw(method, path, ""); got != code {
		c.t.Fatalf("%s %s: HTTP %d %v, want %d", method, path, got, doc, code)
	}
}

package publish_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"strata/builder/publish"
)

// fakeCloud is a small in-process OpenStack for the edge cases a real one
// will not produce on demand: a Glance that rejects the upload and a
// Trove that answers 400. Its Keystone issues a token whose catalog lists
// its Glance and its strata-like management API.
type fakeCloud struct {
	srv *httptest.Server
	mu  sync.Mutex
	// calls are "METHOD path" in order.
	calls []string
	// uploadStatus and uploadBody answer PUT .../file.
	uploadStatus int
	uploadBody   string
	// troveStatus and troveBody answer POST .../mgmt/datastore-versions on
	// the /trove side.
	troveStatus int
	troveBody   string
	images      map[string]map[string]any
	// stored, if set, is how GET shows an uploaded image (a real Glance's
	// answer: status, checksums).
	stored   func(id string) map[string]any
	versions map[string][]map[string]any // by side: strata, trove
	// catalogTrove lists the Trove side, not the strata one, as the
	// catalog's database service: a cloud without a strata controller.
	catalogTrove bool
}

const fakeProject = "0123456789abcdef0123456789abcdef"

func newFakeCloud(t *testing.T) *fakeCloud {
	fc := &fakeCloud{images: map[string]map[string]any{}, versions: map[string][]map[string]any{}}
	mux := http.NewServeMux()
	fc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fc.mu.Lock()
		fc.calls = append(fc.calls, r.Method+" "+r.URL.Path)
		fc.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(fc.srv.Close)
	base := fc.srv.URL
	writeJSON := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("POST /v3/auth/tokens", func(w http.ResponseWriter, r *http.Request) {
		ep := func(url string) []map[string]string {
			return []map[string]string{{"id": "e-" + url, "interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": url}}
		}
		db := "/strata/v1.0/"
		if fc.catalogTrove {
			db = "/trove/v1.0/"
		}
		w.Header().Set("X-Subject-Token", "fake-token")
		writeJSON(w, 201, map[string]any{"token": map[string]any{
			"expires_at": "2099-01-01T00:00:00.000000Z", "methods": []string{"password"},
			"project": map[string]any{"id": fakeProject, "name": "admin", "domain": map[string]string{"id": "default", "name": "Default"}},
			"user":    map[string]any{"id": "u1", "name": "admin", "domain": map[string]string{"id": "default", "name": "Default"}},
			"catalog": []map[string]any{
				{"type": "identity", "name": "keystone", "id": "k", "endpoints": ep(base + "/v3")},
				{"type": "image", "name": "glance", "id": "g", "endpoints": ep(base + "/glance")},
				{"type": "database", "name": "trove", "id": "d", "endpoints": ep(base + db + fakeProject)},
			}}})
	})
	mux.HandleFunc("GET /glance/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"versions": []any{map[string]any{"id": "v2.9", "status": "CURRENT",
			"links": []map[string]string{{"rel": "self", "href": base + "/glance/v2/"}}}}})
	})
	mux.HandleFunc("GET /glance/v2/images", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"images": []any{}})
	})
	mux.HandleFunc("POST /glance/v2/images", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", len(fc.images)+1)
		body["id"], body["status"] = id, "queued"
		fc.mu.Lock()
		fc.images[id] = body
		fc.mu.Unlock()
		writeJSON(w, 201, body)
	})
	mux.HandleFunc("PUT /glance/v2/images/{id}/file", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if fc.uploadStatus != 0 {
			w.WriteHeader(fc.uploadStatus)
			io.WriteString(w, fc.uploadBody)
			return
		}
		w.WriteHeader(204)
	})
	mux.HandleFunc("GET /glance/v2/images/{id}", func(w http.ResponseWriter, r *http.Request) {
		fc.mu.Lock()
		img, ok := fc.images[r.PathValue("id")]
		fc.mu.Unlock()
		switch {
		case !ok:
			w.WriteHeader(404)
		case fc.stored != nil:
			writeJSON(w, 200, fc.stored(r.PathValue("id")))
		default:
			writeJSON(w, 200, img)
		}
	})
	mux.HandleFunc("DELETE /glance/v2/images/{id}", func(w http.ResponseWriter, r *http.Request) {
		fc.mu.Lock()
		delete(fc.images, r.PathValue("id"))
		fc.mu.Unlock()
		w.WriteHeader(204)
	})
	for _, side := range []string{"strata", "trove"} {
		prefix := "/" + side + "/v1.0/" + fakeProject + "/mgmt/datastore-versions"
		mux.HandleFunc("GET "+prefix, func(w http.ResponseWriter, r *http.Request) {
			if side == "strata" {
				w.Header().Set(publish.StrataHeader, "1")
			}
			fc.mu.Lock()
			vs := fc.versions[side]
			fc.mu.Unlock()
			if vs == nil {
				vs = []map[string]any{}
			}
			writeJSON(w, 200, map[string]any{"versions": vs})
		})
		mux.HandleFunc("POST "+prefix, func(w http.ResponseWriter, r *http.Request) {
			if side == "trove" && fc.troveStatus != 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(fc.troveStatus)
				io.WriteString(w, fc.troveBody)
				return
			}
			var body struct {
				Version map[string]any `json:"version"`
			}
			json.NewDecoder(r.Body).Decode(&body)
			v := body.Version
			v["id"] = fmt.Sprintf("%s-version-1", side)
			v["datastore_manager"] = v["datastore_manager"]
			fc.mu.Lock()
			fc.versions[side] = append(fc.versions[side], v)
			fc.mu.Unlock()
			w.WriteHeader(202)
		})
	}
	return fc
}

func (fc *fakeCloud) saw(call string) bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for _, c := range fc.calls {
		if strings.HasPrefix(c, call) {
			return true
		}
	}
	return false
}

func (fc *fakeCloud) env(t *testing.T) {
	clearOS(t)
	for k, v := range map[string]string{"OS_AUTH_URL": fc.srv.URL + "/v3", "OS_USERNAME": "admin", "OS_PASSWORD": "x",
		"OS_PROJECT_NAME": "admin", "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default"} {
		t.Setenv(k, v)
	}
}

// TestPublishGlanceRejectsUpload: the upload fails; the image record
// Glance made is deleted and nothing is registered.
func TestPublishGlanceRejectsUpload(t *testing.T) {
	fc := newFakeCloud(t)
	fc.uploadStatus, fc.uploadBody = 413, "<html><body><h1>413 Request Entity Too Large</h1>Denying attempt to upload image because it exceeds the quota: The size of the data 262144 will exceed the limit. 0 bytes remaining.</body></html>"
	fc.env(t)
	f := makeImage(t, t.TempDir(), "10.11", 16, "")
	res, err := publish.Publish(ctx(t), publish.Options{Recipe: f.Recipe, Image: f.Image})
	if err == nil {
		t.Fatalf("publish succeeded: %+v", res)
	}
	for _, want := range []string{"glance at " + fc.srv.URL + "/glance/", "uploading the data of image 00000000-0000-4000-8000-000000000001",
		"HTTP 413", "exceeds the quota", "the incomplete image 00000000-0000-4000-8000-000000000001 was deleted"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if !fc.saw("DELETE /glance/v2/images/00000000-0000-4000-8000-000000000001") || len(fc.images) != 0 {
		t.Errorf("the rejected image was not deleted: %v", fc.calls)
	}
	if fc.saw("POST /strata/") || fc.saw("POST /trove/") {
		t.Errorf("a version was registered for a rejected image: %v", fc.calls)
	}
}

// TestPublishToAPlainTroveCloudNeedsNoStrataController: the catalog's
// database service is a Trove; publishing uploads to Glance and registers
// the version there, and nowhere else.
func TestPublishToAPlainTroveCloudNeedsNoStrataController(t *testing.T) {
	for _, viaURL := range []bool{false, true} {
		fc := newFakeCloud(t)
		fc.catalogTrove = true
		fc.env(t)
		f := makeImage(t, t.TempDir(), "10.11", 16, "")
		d := digestsOf(t, f.Image)
		fc.stored = func(id string) map[string]any {
			return map[string]any{"id": id, "name": "mariadb-10.11", "status": "active", "checksum": d.md5,
				"os_hash_algo": "sha512", "os_hash_value": d.sha512, "size": d.size, "tags": []string{"strata"}, "strata_sha256": f.SHA256}
		}
		o := publish.Options{Recipe: f.Recipe, Image: f.Image}
		if viaURL {
			o.TroveURL = fc.srv.URL + "/trove"
		}
		var out strings.Builder
		o.Out = &out
		res, err := publish.Publish(ctx(t), o)
		if err != nil {
			t.Fatalf("trove url %v: %v\n%s", viaURL, err, out.String())
		}
		if res.VersionID != "" || res.TroveVersionID != "trove-version-1" || !res.VersionCreated {
			t.Errorf("trove url %v: result %+v", viaURL, res)
		}
		if fc.saw("GET /strata/") || fc.saw("POST /strata/") {
			t.Errorf("trove url %v: the strata side was called: %v", viaURL, fc.calls)
		}
		if !strings.Contains(out.String(), "is a Trove, not a strata controller") {
			t.Errorf("trove url %v: output does not say the catalog's database service is a Trove:\n%s", viaURL, out.String())
		}
	}
}

// TestPublishTroveRejectsVersion: Trove answers 400; the error names
// Trove and what it said, and the verified image is kept (and the strata
// version that already boots it stays).
func TestPublishTroveRejectsVersion(t *testing.T) {
	fc := newFakeCloud(t)
	fc.troveStatus, fc.troveBody = 400, `{"badRequest": {"code": 400, "message": "Image 00000000-0000-4000-8000-000000000001 cannot be found."}}`
	fc.env(t)
	f := makeImage(t, t.TempDir(), "10.11", 16, "")
	// The fake Glance computes no checksums: answer as a real one would.
	d := digestsOf(t, f.Image)
	fc.stored = func(id string) map[string]any {
		return map[string]any{"id": id, "name": "mariadb-10.11", "status": "active", "checksum": d.md5,
			"os_hash_algo": "sha512", "os_hash_value": d.sha512, "size": d.size, "tags": []string{"strata"}, "strata_sha256": f.SHA256}
	}
	res, err := publish.Publish(ctx(t), publish.Options{Recipe: f.Recipe, Image: f.Image, TroveURL: fc.srv.URL + "/trove"})
	if err == nil {
		t.Fatalf("publish succeeded: %+v", res)
	}
	for _, want := range []string{"trove at " + fc.srv.URL + "/trove/v1.0/" + fakeProject + "/", "creating datastore version mariadb 10.11",
		"HTTP 400", "Image 00000000-0000-4000-8000-000000000001 cannot be found.", "stays in Glance", "reuses it without uploading"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if res == nil || res.ImageID != "00000000-0000-4000-8000-000000000001" || res.VersionID != "strata-version-1" || res.TroveVersionID != "" {
		t.Errorf("partial result: %+v", res)
	}
	if fc.saw("DELETE /glance/") {
		t.Errorf("the verified image was deleted: %v", fc.calls)
	}
}

// TestPublishRefusesAHostileImageBeforeUploading: an image with an
// external data file (CVE-2024-32498 class) or a backing file is refused
// before any service is asked anything — whatever the Glance behind the
// catalog would accept.
func TestPublishRefusesAHostileImageBeforeUploading(t *testing.T) {
	fc := newFakeCloud(t)
	fc.env(t)
	// qemu-img creates (and truncates to the image size) an external data
	// file: point it at a file of the test's own, never at a host file
	// (data_file=/etc/passwd zeroed this machine's /etc/passwd).
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string][]string{
		"external data file": {"-o", "data_file=" + outside + ".data,data_file_raw=on"},
		"backing file":       {"-F", "raw", "-b", outside},
	} {
		t.Run(name, func(t *testing.T) {
			f := makeImage(t, t.TempDir(), "10.11", 16, "")
			os.Remove(f.Image)
			args := append(append([]string{"create", "-q", "-f", "qcow2"}, opts...), f.Image, "16M")
			if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img: %v: %s", err, out)
			}
			data, _ := os.ReadFile(f.Image)
			sum := sha256.Sum256(data)
			os.WriteFile(f.Image+".sha256", []byte(hex.EncodeToString(sum[:])+"  mariadb-10.11.qcow2\n"), 0o644)
			res, err := publish.Publish(ctx(t), publish.Options{Recipe: f.Recipe, Image: f.Image})
			if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "nothing was uploaded") {
				t.Fatalf("publish: %+v, %v; want a refusal naming the %s", res, err, name)
			}
			if fc.saw("POST /glance/") || fc.saw("PUT /glance/") {
				t.Errorf("the image went to Glance: %v", fc.calls)
			}
		})
	}
}

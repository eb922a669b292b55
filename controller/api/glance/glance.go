// Package glance serves the small part of the Glance v2 image API that
// publishing an image needs, on top of the controller's local image store,
// in the embedded mode: create an image record, upload its data, show it,
// list images by name, status, tags and properties, delete one. Images
// carry Glance's checksum (MD5) and os_hash_value (SHA-512) besides
// strata's SHA-256. With it, and the controller listed as the "image"
// service in its Keystone catalog, `strata image publish` works unchanged
// against the embedded controller and against a real OpenStack.
//
// It is not a Glance: no image import, members, locations, tasks or
// schemas; images are public and belong to no project; an image created
// but not yet uploaded (status queued) is kept in memory only, so a
// controller restart forgets it, and only MaxPending of them are kept
// (with at most MaxProperties properties of 255 characters each).
// Changing images is for the admin role.
// In OpenStack mode it is not mounted; the real Glance answers.
package glance

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"strata/controller/auth"
	"strata/controller/imagestore"
	"strata/controller/registry"
	"strata/controller/store"
)

// Handler serves /v2/images.
type Handler struct {
	Images   imagestore.Store
	Registry *registry.Registry
	Auth     auth.Authenticator
	Logger   *slog.Logger
	// PublicURL is the controller's base URL as clients reach it: the
	// version document's links are built from it, never from a request's
	// Host header.
	PublicURL string
	// UploadIdle cuts an upload that sends nothing for this long (60s):
	// an upload may take as long as its data keeps coming, beyond the
	// server's read and write timeouts.
	UploadIdle time.Duration
	// MaxImageBytes is the largest image accepted (64 GiB); MaxPending the
	// images created and not uploaded yet that are kept (32). Each queued
	// image holds at most MaxProperties properties of at most 255
	// characters each, as Glance's own limits.
	MaxImageBytes int64
	MaxPending    int

	mu     sync.Mutex
	queued map[string]queuedImage
}

// MaxProperties is how many properties and tags an image may have
// (Glance's image_property_quota default).
const MaxProperties = 128

// queuedImage is a record created by POST whose data has not arrived.
type queuedImage struct {
	id, name, diskFormat string
	minDisk              int
	tags                 []string
	properties           map[string]string
	created              time.Time
	uploading            bool
}

// Properties the handler keeps in the store's property map for Glance
// fields the store has no column for.
const (
	propTags    = "x-glance-tags"
	propMinDisk = "x-glance-min-disk"
)

// Prefix is where the image API lives below the controller's root; the
// catalog lists BASE+Prefix as the image endpoint, so its version document
// is not mixed with Trove's at the root.
const Prefix = "/image"

// Register mounts the routes on mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+Prefix, h.versions)
	mux.HandleFunc("GET "+Prefix+"/{$}", h.versions)
	mux.HandleFunc("GET "+Prefix+"/v2/images", h.authed(h.list))
	mux.HandleFunc("POST "+Prefix+"/v2/images", h.authed(h.admin(h.create)))
	mux.HandleFunc("GET "+Prefix+"/v2/images/{id}", h.authed(h.show))
	mux.HandleFunc("DELETE "+Prefix+"/v2/images/{id}", h.authed(h.admin(h.delete)))
	mux.HandleFunc("PUT "+Prefix+"/v2/images/{id}/file", h.authed(h.admin(h.upload)))
}

// versions is Glance's version document: clients (gophercloud,
// glanceclient) discover the v2 API from it.
func (h *Handler) versions(w http.ResponseWriter, r *http.Request) {
	self := strings.TrimRight(h.PublicURL, "/") + Prefix + "/v2/"
	writeJSON(w, http.StatusOK, map[string]any{"versions": []any{map[string]any{
		"id": "v2.9", "status": "CURRENT", "links": []map[string]string{{"rel": "self", "href": self}}}}})
}

type handler func(w http.ResponseWriter, r *http.Request, p auth.Principal) error

// glanceError is an error with an HTTP status, written as Glance does.
type glanceError struct {
	code int
	msg  string
}

func (e *glanceError) Error() string { return e.msg }

func fail(code int, format string, args ...any) error {
	return &glanceError{code, fmt.Sprintf(format, args...)}
}

func (h *Handler) log() *slog.Logger {
	if h.Logger == nil {
		return slog.Default()
	}
	return h.Logger
}

func (h *Handler) authed(next handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var err error
		p, aerr := h.Auth.Authenticate(r.Context(), r.Header.Get("X-Auth-Token"))
		switch {
		case errors.Is(aerr, auth.ErrUnauthorized):
			err = fail(http.StatusUnauthorized, "This server could not verify that you are authorized to access the document you requested.")
		case aerr != nil:
			h.log().Error("authenticating an image request failed", "err", aerr)
			err = fail(http.StatusServiceUnavailable, "the identity service could not check the token; try again")
		default:
			err = next(w, r, p)
		}
		if err == nil {
			return
		}
		var ge *glanceError
		if !errors.As(err, &ge) {
			h.log().Error("image API request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			ge = &glanceError{http.StatusInternalServerError, "internal error; the controller's log has the details"}
		}
		// Glance answers errors as text; a JSON body is what clients parse best.
		writeJSON(w, ge.code, map[string]any{"code": ge.code, "title": http.StatusText(ge.code), "message": ge.msg})
	}
}

func (h *Handler) admin(next handler) handler {
	return func(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
		if !p.IsAdmin() {
			return fail(http.StatusForbidden, "changing images needs the admin role")
		}
		return next(w, r, p)
	}
}

// readOnly are Glance's fields a client may not set as properties.
var readOnly = []string{"id", "status", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value", "created_at",
	"updated_at", "self", "file", "schema", "owner", "locations", "direct_url", "stores", propTags, propMinDisk}

var (
	namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$`)
	keyPattern  = regexp.MustCompile(`^[A-Za-z0-9_:.-]{1,255}$`)
)

func (h *Handler) create(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	var body map[string]json.RawMessage
	if err := json.NewDecoder(io.LimitReader(r.Body, 256<<10)).Decode(&body); err != nil {
		return fail(http.StatusBadRequest, "malformed JSON: %v", err)
	}
	q := queuedImage{properties: map[string]string{}, created: time.Now().UTC().Truncate(time.Second)}
	str := func(key string) (string, error) {
		var s string
		if raw, ok := body[key]; ok {
			if err := json.Unmarshal(raw, &s); err != nil {
				return "", fail(http.StatusBadRequest, "%s: want a string", key)
			}
		}
		return s, nil
	}
	var err error
	if q.name, err = str("name"); err != nil {
		return err
	}
	if !namePattern.MatchString(q.name) {
		return fail(http.StatusBadRequest, "name %q: use 1-128 characters of A-Z a-z 0-9 . _ - and spaces", trunc(q.name))
	}
	if q.diskFormat, err = str("disk_format"); err != nil {
		return err
	}
	if q.diskFormat != "qcow2" && q.diskFormat != "raw" {
		return fail(http.StatusBadRequest, "disk_format %q: this image service stores qcow2 and raw", trunc(q.diskFormat))
	}
	if cf, err := str("container_format"); err != nil {
		return err
	} else if cf != "" && cf != "bare" {
		return fail(http.StatusBadRequest, "container_format %q: this image service stores bare images", trunc(cf))
	}
	for key, raw := range body {
		switch key {
		case "name", "disk_format", "container_format":
			continue
		case "tags":
			if err := json.Unmarshal(raw, &q.tags); err != nil {
				return fail(http.StatusBadRequest, "tags: want a list of strings")
			}
			continue
		case "min_disk":
			if err := json.Unmarshal(raw, &q.minDisk); err != nil || q.minDisk < 0 {
				return fail(http.StatusBadRequest, "min_disk: want a non-negative integer")
			}
			continue
		case "min_ram", "visibility", "protected", "os_hidden":
			continue // accepted, not kept: images here are public and unprotected
		}
		if slices.Contains(readOnly, key) {
			return fail(http.StatusForbidden, "Attribute '%s' is read-only.", trunc(key))
		}
		if !keyPattern.MatchString(key) {
			return fail(http.StatusBadRequest, "property name %q is not valid", trunc(key))
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return fail(http.StatusBadRequest, "property %s: want a string value", key)
		}
		if len(v) > 255 {
			return fail(http.StatusBadRequest, "property %s: the value has %d characters, at most 255 are allowed", key, len(v))
		}
		q.properties[key] = v
	}
	if len(q.properties)+len(q.tags) > MaxProperties {
		return fail(http.StatusRequestEntityTooLarge, "%d properties and tags: at most %d are allowed", len(q.properties)+len(q.tags), MaxProperties)
	}
	for _, t := range q.tags {
		if t == "" || len(t) > 255 || strings.Contains(t, ",") {
			return fail(http.StatusBadRequest, "tag %q: want 1-255 characters without a comma", trunc(t))
		}
	}
	q.id = store.NewID()
	h.mu.Lock()
	if h.queued == nil {
		h.queued = map[string]queuedImage{}
	}
	if len(h.queued) >= h.maxPending() {
		n := len(h.queued)
		h.mu.Unlock()
		return fail(http.StatusRequestEntityTooLarge, "%d images wait for their data already: upload or delete one of them first", n)
	}
	h.queued[q.id] = q
	h.mu.Unlock()
	writeJSON(w, http.StatusCreated, queuedView(q))
	return nil
}

func (h *Handler) upload(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	id := r.PathValue("id")
	h.mu.Lock()
	q, ok := h.queued[id]
	if ok && q.uploading {
		h.mu.Unlock()
		return fail(http.StatusConflict, "image %s is being uploaded", trunc(id))
	}
	if ok {
		q.uploading = true
		h.queued[id] = q
	}
	h.mu.Unlock()
	if !ok {
		if _, err := h.Images.Get(r.Context(), id); err == nil {
			return fail(http.StatusConflict, "Image status transition from active to saving is not allowed")
		}
		return fail(http.StatusNotFound, "No image found with ID %s", trunc(id))
	}
	props := map[string]string{}
	for k, v := range q.properties {
		props[k] = v
	}
	if len(q.tags) > 0 {
		props[propTags] = strings.Join(q.tags, ",")
	}
	if q.minDisk > 0 {
		props[propMinDisk] = strconv.Itoa(q.minDisk)
	}
	if r.ContentLength > h.maxImageBytes() {
		h.requeue(id)
		return fail(http.StatusRequestEntityTooLarge, "the image is larger than %d bytes", h.maxImageBytes())
	}
	body := &idleReader{r: http.MaxBytesReader(w, r.Body, h.maxImageBytes()), rc: http.NewResponseController(w), idle: h.uploadIdle()}
	img, err := h.Images.Register(r.Context(), body, imagestore.RegisterOptions{ID: id, Name: q.name, DiskFormat: q.diskFormat, Properties: props})
	if err == nil {
		h.mu.Lock()
		delete(h.queued, id)
		h.mu.Unlock()
	} else {
		h.requeue(id)
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, imagestore.ErrInvalid), errors.Is(err, imagestore.ErrChecksumMismatch):
		return fail(http.StatusBadRequest, "%v", err)
	case errors.As(err, &mbe):
		return fail(http.StatusRequestEntityTooLarge, "the image is larger than %d bytes", mbe.Limit)
	case err != nil:
		return err
	}
	h.log().Info("image uploaded through the image API", "image", img.ID, "name", img.Name, "bytes", img.SizeBytes, "sha256", img.SHA256, "by", p.UserName)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// requeue puts an image whose upload failed back to queued, as Glance does.
func (h *Handler) requeue(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur, ok := h.queued[id]; ok {
		cur.uploading = false
		h.queued[id] = cur
	}
}

func (h *Handler) maxPending() int {
	if h.MaxPending > 0 {
		return h.MaxPending
	}
	return 32
}

func (h *Handler) maxImageBytes() int64 {
	if h.MaxImageBytes > 0 {
		return h.MaxImageBytes
	}
	return 64 << 30
}

func (h *Handler) uploadIdle() time.Duration {
	if h.UploadIdle > 0 {
		return h.UploadIdle
	}
	return time.Minute
}

// idleReader lets an upload run past the server's read and write timeouts
// as long as its data keeps coming: every read first moves the
// connection's deadlines idle into the future.
type idleReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
}

func (i *idleReader) Read(p []byte) (int, error) {
	t := time.Now().Add(i.idle)
	i.rc.SetReadDeadline(t)
	i.rc.SetWriteDeadline(t)
	return i.r.Read(p)
}

func (h *Handler) show(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	id := r.PathValue("id")
	h.mu.Lock()
	q, ok := h.queued[id]
	h.mu.Unlock()
	if ok {
		writeJSON(w, http.StatusOK, queuedView(q))
		return nil
	}
	img, err := h.Images.Get(r.Context(), id)
	if errors.Is(err, imagestore.ErrNotFound) || (err == nil && img.ID != id) {
		return fail(http.StatusNotFound, "No image found with ID %s", trunc(id))
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, imageView(img))
	return nil
}

func (h *Handler) delete(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	id := r.PathValue("id")
	h.mu.Lock()
	q, ok := h.queued[id]
	if ok && !q.uploading {
		delete(h.queued, id)
	}
	h.mu.Unlock()
	if ok {
		if q.uploading {
			return fail(http.StatusConflict, "image %s is being uploaded", trunc(id))
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	img, err := h.Images.Get(r.Context(), id)
	if errors.Is(err, imagestore.ErrNotFound) || (err == nil && img.ID != id) {
		return fail(http.StatusNotFound, "No image found with ID %s", trunc(id))
	}
	if err != nil {
		return err
	}
	if h.Registry != nil {
		users, err := h.Registry.VersionsUsingImage(r.Context(), img.ID)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return fail(http.StatusConflict, "image %s is used by datastore version %s %s; point it at another image first", img.ID, users[0].DatastoreName, users[0].Name)
		}
	}
	if err := h.Images.Delete(r.Context(), img.ID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// list answers GET /v2/images with Glance's filters: name, status, tag
// (repeatable: all must be present) and any property by its name.
func (h *Handler) list(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	q := r.URL.Query()
	var views []map[string]any
	h.mu.Lock()
	for _, qi := range h.queued {
		views = append(views, queuedView(qi))
	}
	h.mu.Unlock()
	imgs, err := h.Images.List(r.Context())
	if err != nil {
		return err
	}
	for _, img := range imgs {
		views = append(views, imageView(img))
	}
	out := []map[string]any{}
	for _, v := range views {
		if matches(v, q) {
			out = append(out, v)
		}
	}
	if l := q.Get("limit"); l != "" {
		if n, err := strconv.Atoi(l); err == nil && n >= 0 && n < len(out) {
			out = out[:n]
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"images": out, "first": r.URL.RequestURI(), "schema": "/v2/schemas/images"})
	return nil
}

func matches(view map[string]any, q map[string][]string) bool {
	for key, want := range q {
		switch key {
		case "limit", "marker", "sort", "sort_key", "sort_dir", "member_status", "visibility":
			continue
		case "tag":
			tags, _ := view["tags"].([]string)
			for _, t := range want {
				if !slices.Contains(tags, t) {
					return false
				}
			}
			continue
		}
		got, ok := view[key]
		if !ok || fmt.Sprint(got) != want[0] {
			return false
		}
	}
	return true
}

func base(id string) map[string]any {
	return map[string]any{"id": id, "self": "/v2/images/" + id, "file": "/v2/images/" + id + "/file", "schema": "/v2/schemas/image",
		"container_format": "bare", "visibility": "public", "protected": false, "os_hidden": false, "min_ram": 0, "owner": nil,
		"virtual_size": nil, "checksum": nil, "os_hash_algo": nil, "os_hash_value": nil}
}

func queuedView(q queuedImage) map[string]any {
	v := base(q.id)
	for k, p := range q.properties {
		v[k] = p
	}
	tags := q.tags
	if tags == nil {
		tags = []string{}
	}
	ts := q.created.Format(time.RFC3339)
	for k, x := range map[string]any{"name": q.name, "status": "queued", "disk_format": q.diskFormat, "size": nil, "tags": tags, "min_disk": q.minDisk, "created_at": ts, "updated_at": ts} {
		v[k] = x
	}
	return v
}

func imageView(img imagestore.Image) map[string]any {
	v := base(img.ID)
	tags := []string{}
	minDisk := 0
	for k, p := range img.Properties {
		switch k {
		case propTags:
			tags = strings.Split(p, ",")
		case propMinDisk:
			minDisk, _ = strconv.Atoi(p)
		default:
			v[k] = p
		}
	}
	ts := img.CreatedAt.UTC().Format(time.RFC3339)
	for k, x := range map[string]any{"name": img.Name, "status": "active", "disk_format": img.DiskFormat, "size": img.SizeBytes,
		"tags": tags, "min_disk": minDisk, "created_at": ts, "updated_at": ts} {
		v[k] = x
	}
	return v
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

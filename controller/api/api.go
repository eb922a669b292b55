// Package api serves Trove's v1.0 REST API — versions, datastores and their
// versions and parameters, flavors, instances and their actions, databases,
// users, root, configuration groups — with Trove's JSON shapes and status
// codes, so python-troveclient and `openstack database ...` drive the
// controller. One file per resource. Every project route checks that the
// caller's token belongs to the project in the URL, and every lookup is
// scoped to that project: another project's resource is simply not found —
// except an instance named by id to a token with the admin role, as Trove
// allows.
//
// Bad input is answered with a 4xx and a message saying what was wrong —
// never a 5xx — and changes nothing. The api decodes, validates the shape
// and maps errors; what requests do is lifecycle's, configurations' and
// the registry's business.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"strata/agent/wire"
	"strata/controller/api/glance"
	"strata/controller/api/keystone"
	"strata/controller/api/neutron"
	"strata/controller/auth"
	"strata/controller/backups"
	"strata/controller/configurations"
	"strata/controller/guestlogs"
	"strata/controller/imagestore"
	"strata/controller/instances"
	"strata/controller/lifecycle"
	"strata/controller/quotas"
	"strata/controller/ratelimit"
	"strata/controller/registry"
	"strata/controller/store"
)

// Server is the API.
type Server struct {
	DB        *store.DB
	Registry  *registry.Registry
	Lifecycle *lifecycle.Manager
	// Backups, if set, serves the backup routes (else they answer 501).
	Backups *backups.Manager
	// GuestLogs, if set, publishes guest logs (else publish and discard
	// answer 501).
	GuestLogs *guestlogs.Manager
	Auth      auth.Authenticator
	// Keystone, if set, is mounted at /v3 (the embedded mode).
	Keystone *keystone.Handler
	// Glance, if set, is mounted at /image (the embedded mode).
	Glance *glance.Handler
	// Neutron, if set, is mounted at /network (the embedded mode).
	Neutron *neutron.Handler
	// PublicURL is the base URL clients use (links are built from it,
	// never from a request's Host header).
	PublicURL string
	Region    string
	Logger    *slog.Logger
	// MaxBody bounds request bodies (default 1 MiB).
	MaxBody int64
	// APIRate is how many requests of one HTTP verb each user may make per
	// minute before answers are 429 with Retry-After (0: no limit).
	APIRate int

	limiter *ratelimit.Limiter
}

// Handler returns the routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	if s.Keystone != nil {
		s.Keystone.Register(mux)
	}
	if s.Glance != nil {
		s.Glance.Register(mux)
	}
	if s.Neutron != nil {
		s.Neutron.Register(mux)
	}
	if s.APIRate > 0 {
		// Bucket per user and verb, refilled evenly over the minute;
		// memory is bounded by forgetting idle users first.
		s.limiter = ratelimit.New(s.APIRate, time.Minute/time.Duration(s.APIRate), 100000)
	}
	mux.HandleFunc("GET /{$}", s.plain(s.versions))
	mux.HandleFunc("GET /v1.0", s.plain(s.version))
	mux.HandleFunc("GET /v1.0/{$}", s.plain(s.version))

	p := "/v1.0/{project}"
	// Datastores, versions, parameters, flavors.
	s.route(mux, "GET "+p+"/datastores", s.listDatastores)
	s.route(mux, "GET "+p+"/datastores/{rest...}", s.datastoreRoutes)
	s.route(mux, "GET "+p+"/flavors", s.listFlavors)
	s.route(mux, "GET "+p+"/flavors/{id}", s.showFlavor)
	// Instances.
	s.route(mux, "GET "+p+"/instances", s.listInstances)
	s.route(mux, "GET "+p+"/instances/detail", s.listInstancesDetail)
	s.route(mux, "POST "+p+"/instances", s.createInstance)
	s.route(mux, "GET "+p+"/instances/{id}", s.showInstance)
	s.route(mux, "DELETE "+p+"/instances/{id}", s.deleteInstance)
	s.route(mux, "PUT "+p+"/instances/{id}", s.updateInstance)
	s.route(mux, "PATCH "+p+"/instances/{id}", s.updateInstance)
	s.route(mux, "POST "+p+"/instances/{id}/action", s.instanceAction)
	s.route(mux, "GET "+p+"/instances/{id}/configuration", s.instanceConfiguration)
	// Databases, users, root.
	s.route(mux, "GET "+p+"/instances/{id}/databases", s.listDatabases)
	s.route(mux, "POST "+p+"/instances/{id}/databases", s.notOnReplica(s.createDatabases))
	s.route(mux, "DELETE "+p+"/instances/{id}/databases/{db}", s.notOnReplica(s.deleteDatabase))
	s.route(mux, "GET "+p+"/instances/{id}/users", s.listUsers)
	s.route(mux, "POST "+p+"/instances/{id}/users", s.notOnReplica(s.createUsers))
	s.route(mux, "PUT "+p+"/instances/{id}/users", s.notOnReplica(s.changePasswords))
	s.route(mux, "GET "+p+"/instances/{id}/users/{user}", s.showUser)
	s.route(mux, "PUT "+p+"/instances/{id}/users/{user}", s.notOnReplica(s.updateUser))
	s.route(mux, "DELETE "+p+"/instances/{id}/users/{user}", s.notOnReplica(s.deleteUser))
	s.route(mux, "GET "+p+"/instances/{id}/users/{user}/databases", s.listAccess)
	s.route(mux, "PUT "+p+"/instances/{id}/users/{user}/databases", s.notOnReplica(s.grantAccess))
	s.route(mux, "DELETE "+p+"/instances/{id}/users/{user}/databases/{db}", s.notOnReplica(s.revokeAccess))
	s.route(mux, "GET "+p+"/instances/{id}/root", s.rootStatus)
	s.route(mux, "POST "+p+"/instances/{id}/root", s.notOnReplica(s.enableRoot))
	s.route(mux, "DELETE "+p+"/instances/{id}/root", s.notOnReplica(s.disableRoot))
	// Configuration groups.
	s.route(mux, "GET "+p+"/configurations", s.listConfigurations)
	s.route(mux, "POST "+p+"/configurations", s.createConfiguration)
	s.route(mux, "GET "+p+"/configurations/{cfg}", s.showConfiguration)
	s.route(mux, "PUT "+p+"/configurations/{cfg}", s.replaceConfiguration)
	s.route(mux, "PATCH "+p+"/configurations/{cfg}", s.patchConfiguration)
	s.route(mux, "DELETE "+p+"/configurations/{cfg}", s.deleteConfiguration)
	s.route(mux, "GET "+p+"/configurations/{cfg}/instances", s.configurationInstances)
	// Limits (absolute: the project's quotas; rate: the API's).
	s.route(mux, "GET "+p+"/limits", s.listLimits)
	// Backups.
	s.backupRoutes(mux, p)
	// Guest logs, and the read-only Swift view of their published parts.
	s.logRoutes(mux, p)
	// Management: datastore versions and their parameters (admin).
	s.mgmtRoutes(mux, p)

	return s.logRequests(jsonMisses(mux))
}

// jsonMisses answers requests no route takes with Trove-style JSON: 405
// (with Allow) when the path exists for other methods, else 404.
func jsonMisses(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		var allow []string
		for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, errorf(http.StatusMethodNotAllowed, "%s is not allowed on %s (allowed: %s)", r.Method, trunc(r.URL.Path), strings.Join(allow, ", ")))
			return
		}
		writeError(w, errorf(http.StatusNotFound, "%s %s is not a route of this API", r.Method, trunc(r.URL.Path)))
	})
}

// call is one authenticated project request.
type call struct {
	r         *http.Request
	project   string
	principal auth.Principal
	base      string
}

func (c *call) ctx() context.Context { return c.r.Context() }

// instanceScope is the project instance lookups by id are limited to: the
// URL's, or none for a token with the admin role, which — as in Trove —
// shows, acts on and deletes any project's instance by id. Lists stay the
// URL project's.
func (c *call) instanceScope() string {
	if c.principal.IsAdmin() {
		return ""
	}
	return c.project
}

// link makes a Trove links list for a resource path under the project.
func (c *call) links(path string) []map[string]string {
	return []map[string]string{
		{"href": c.base + "/v1.0/" + c.project + path, "rel": "self"},
		{"href": c.base + path, "rel": "bookmark"},
	}
}

type handler func(w http.ResponseWriter, c *call) error

// base is the public URL links are built from, never the request's Host
// header.
func (s *Server) base(*http.Request) string {
	return strings.TrimRight(s.PublicURL, "/")
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

// route registers an authenticated project route.
func (s *Server) route(mux *http.ServeMux, pattern string, h handler) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		token := r.Header.Get("X-Auth-Token")
		if token == "" {
			writeError(w, errorf(http.StatusUnauthorized, "this request needs a token in X-Auth-Token"))
			return
		}
		p, err := s.Auth.Authenticate(r.Context(), token)
		if errors.Is(err, auth.ErrUnauthorized) {
			writeError(w, errorf(http.StatusUnauthorized, "the token is not valid (unknown or expired)"))
			return
		}
		if err != nil {
			s.log().Error("authenticating a request failed", "err", err)
			writeError(w, errorf(http.StatusServiceUnavailable, "the identity service could not check the token; try again"))
			return
		}
		project := r.PathValue("project")
		if project != p.ProjectID {
			writeError(w, errorf(http.StatusForbidden, "the token is scoped to another project than %s", trunc(project)))
			return
		}
		if ok, wait := s.takeRate(p, r.Method); !ok {
			secs := int((wait + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			writeJSON(w, http.StatusTooManyRequests, map[string]any{"overLimit": map[string]any{"code": http.StatusTooManyRequests,
				"message":    fmt.Sprintf("This request was rate-limited: at most %d %s requests a minute; retry after %d s.", s.APIRate, rateVerb(r.Method), secs),
				"retryAfter": strconv.Itoa(secs)}})
			return
		}
		limit := s.MaxBody
		if limit <= 0 {
			limit = 1 << 20
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		c := &call{r: r.WithContext(auth.WithPrincipal(r.Context(), p)), project: project, principal: p, base: s.base(r)}
		if err := h(w, c); err != nil {
			s.writeErr(w, r, err)
		}
	})
}

// plain wraps an unauthenticated route.
func (s *Server) plain(h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeErr(w, r, err)
		}
	}
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (Flush; an
// image upload moves its deadlines while data comes).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		defer func() {
			if p := recover(); p != nil {
				s.log().Error("API handler panicked", "method", r.Method, "path", r.URL.Path, "panic", p)
				writeError(rec, errorf(http.StatusInternalServerError, "internal error"))
			}
			level := slog.LevelDebug
			if rec.code >= 500 {
				level = slog.LevelWarn
			}
			s.log().Log(r.Context(), level, "api", "method", r.Method, "path", r.URL.Path, "status", rec.code,
				"ms", float64(time.Since(start).Microseconds())/1000)
		}()
		next.ServeHTTP(rec, r)
	})
}

// apiError is an error with an HTTP status.
type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return e.msg }

func errorf(code int, format string, args ...any) *apiError {
	return &apiError{code: code, msg: fmt.Sprintf(format, args...)}
}

// faultNames are Trove's error body keys.
var faultNames = map[int]string{
	400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound", 405: "badMethod",
	409: "conflict", 413: "overLimit", 415: "badMediaType", 422: "unprocessableEntity", 429: "overLimit",
	500: "instanceFault", 501: "notImplemented", 503: "serviceUnavailable", 504: "gatewayTimeout",
}

func writeError(w http.ResponseWriter, e *apiError) {
	name := faultNames[e.code]
	if name == "" {
		name = "computeFault"
	}
	writeJSON(w, e.code, map[string]any{name: map[string]any{"code": e.code, "message": e.msg}})
}

// writeErr maps an error to its status and message.
func (s *Server) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	var ve *configurations.ValidationError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &ve):
		ae = errorf(http.StatusUnprocessableEntity, "%s", ve.Error())
	case errors.As(err, &mbe):
		ae = errorf(http.StatusRequestEntityTooLarge, "the request body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, lifecycle.ErrNotFound), errors.Is(err, registry.ErrNotFound), errors.Is(err, instances.ErrNotFound),
		errors.Is(err, configurations.ErrNotFound), errors.Is(err, imagestore.ErrNotFound):
		ae = errorf(http.StatusNotFound, "%s", cleanMessage(err))
	case errors.Is(err, lifecycle.ErrBadRequest), errors.Is(err, registry.ErrInvalid), errors.Is(err, configurations.ErrInvalid):
		ae = errorf(http.StatusBadRequest, "%s", cleanMessage(err))
	case errors.Is(err, lifecycle.ErrUnprocessable):
		ae = errorf(http.StatusUnprocessableEntity, "%s", cleanMessage(err))
	case errors.Is(err, quotas.ErrExceeded):
		ae = errorf(http.StatusRequestEntityTooLarge, "%s", err.Error())
	case errors.Is(err, lifecycle.ErrGuestTimeout):
		ae = errorf(http.StatusGatewayTimeout, "%s", cleanMessage(err))
	case errors.Is(err, context.Canceled):
		ae = errorf(499, "request cancelled")
	default:
		s.log().Error("API request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = errorf(http.StatusInternalServerError, "internal error; the controller's log has the details")
	}
	writeError(w, ae)
}

// cleanMessage drops the sentinel prefix ("bad request: ...").
func cleanMessage(err error) string {
	msg := err.Error()
	for _, prefix := range []string{"not found: ", "bad request: ", "unprocessable: ", "invalid: "} {
		msg = strings.Replace(msg, prefix, "", 1)
	}
	return msg
}

// opError maps a failed guest operation to an HTTP error.
func opError(e *wire.OpError) *apiError {
	code := http.StatusInternalServerError
	switch e.Code {
	case wire.CodeInvalidArgument:
		code = http.StatusBadRequest
	case wire.CodeNotFound:
		code = http.StatusNotFound
	case wire.CodeAlreadyExists:
		code = http.StatusConflict
	case wire.CodeNotSupported:
		code = http.StatusNotImplemented
	case wire.CodeFailedPrecondition:
		code = http.StatusUnprocessableEntity
	case wire.CodeUnavailable, wire.CodeInterrupted:
		code = http.StatusServiceUnavailable
	}
	return errorf(code, "%s", e.Message)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if v != nil {
		json.NewEncoder(w).Encode(v)
	}
}

func accepted(w http.ResponseWriter) error {
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// decode reads the JSON request body into v: exactly one object, no
// unknown fields, every type as declared. Errors name the field.
func decode(c *call, v any) error {
	if ct := c.r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return errorf(http.StatusUnsupportedMediaType, "Content-Type %q: send application/json", trunc(ct))
	}
	body, err := io.ReadAll(c.r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errorf(http.StatusBadRequest, "could not read the request body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return errorf(http.StatusBadRequest, "the request body is empty; a JSON object is expected")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, "%s", jsonError(err))
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "malformed JSON: data after the first value")
	}
	return nil
}

func jsonError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d: %s", se.Offset, se.Error())
	case errors.As(err, &te):
		if te.Field == "" {
			return fmt.Sprintf("the body must be a JSON object, not %s", te.Value)
		}
		return fmt.Sprintf("field %q: expected %s, got %s", te.Field, typeName(te.Type.String()), te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: unexpected end of input"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	return "malformed JSON: " + err.Error()
}

func typeName(goType string) string {
	goType = strings.TrimLeft(goType, "*")
	switch {
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "an integer"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["), strings.Contains(goType, "struct"), strings.Contains(goType, "."):
		return "an object"
	}
	return goType
}

// page parses limit and marker.
func page(c *call) (limit int, marker string, err error) {
	q := c.r.URL.Query()
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return 0, "", errorf(http.StatusBadRequest, "limit %q: want an integer from 1 to 1000", trunc(l))
		}
		limit = n
	}
	return limit, q.Get("marker"), nil
}

// paginate cuts items after marker to limit and adds Trove's next link.
func paginate[T any](c *call, path string, items []T, key func(T) string, limit int, marker string) ([]T, []map[string]string) {
	if marker != "" {
		for i, it := range items {
			if key(it) == marker {
				items = items[i+1:]
				break
			}
		}
	}
	if limit == 0 || len(items) <= limit {
		return items, nil
	}
	items = items[:limit]
	next := c.base + "/v1.0/" + c.project + path + "?limit=" + strconv.Itoa(limit) + "&marker=" + url.QueryEscape(key(items[len(items)-1]))
	return items, []map[string]string{{"href": next, "rel": "next"}}
}

// writePage answers a list the guest returned: sorted by key, one page of
// it (limit, marker) as views under name, with Trove's next link.
func writePage[T any](w http.ResponseWriter, c *call, name, path string, items []T, key func(T) string, view func(T) map[string]any, limit int, marker string) {
	sort.Slice(items, func(i, j int) bool { return key(items[i]) < key(items[j]) })
	items, links := paginate(c, path, items, key, limit, marker)
	out := []map[string]any{}
	for _, it := range items {
		out = append(out, view(it))
	}
	body := map[string]any{name: out}
	if links != nil {
		body["links"] = links
	}
	writeJSON(w, http.StatusOK, body)
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// troveTime is Trove's time format.
func troveTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05")
}

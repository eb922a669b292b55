// Package keystone serves the small part of the Keystone v3 identity API
// that OpenStack clients (openstack, python-troveclient, gophercloud) need
// to talk to the controller in its embedded mode: the version document,
// password authentication returning a scoped token with a service catalog
// that lists the controller as the "database" service, token validation
// and revocation — and, for admins, the project, user and role-assignment
// calls tempest's dynamic credentials make (admin.go). Users, projects and
// role assignments live in identity.Store, the store `strata controller
// project|user create` writes.
//
// It is not a Keystone: no domains beyond "default", fixed roles (admin,
// member, reader), no groups, no other authentication methods. In
// OpenStack mode it is not mounted at all; the real Keystone answers
// instead.
package keystone

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"strata/controller/auth"
	"strata/controller/identity"
	"strata/controller/ratelimit"
)

// Handler serves /v3.
type Handler struct {
	Identity *identity.Store
	// PublicURL is the controller's base URL as clients reach it
	// ("http://127.0.0.1:8779"): the catalog's URLs are built from it,
	// never from a request's Host header, which a client could set to send
	// others (and their tokens) elsewhere.
	PublicURL string
	Region    string
	// ImageService lists the controller as the "image" service too, at
	// BASE/image (the Glance v2 subset of controller/api/glance).
	ImageService bool
	// NetworkService lists the controller as the "network" service too, at
	// BASE/network (the compute driver's networks, as Neutron lists them:
	// controller/api/neutron).
	NetworkService bool
	// ObjectService lists the controller as the "object-store" service
	// too, at BASE/logstore/v1/PROJECT: the read-only Swift view of
	// published guest logs that the database client's `log save` and
	// `log tail` read.
	ObjectService bool
	// ProjectInUse, if set, keeps a project that still owns resources of
	// the controller from being deleted.
	ProjectInUse ProjectInUseFunc
	Logger       *slog.Logger
	// PerSource and PerUser limit password logins per source address and
	// per user name (nil: LoginBurst at once, one more every
	// LoginInterval). An attempt takes one from both before the password
	// is checked; a successful one gives them back, so only failures
	// count.
	PerSource, PerUser *ratelimit.Limiter
	// Suspects limits the password checks of all attempts from addresses
	// or for users with recent failures together, one at a time (nil:
	// SuspectRate a second), so that a flood of them, even from many
	// addresses, leaves the CPU to everyone else.
	Suspects *ratelimit.Limiter

	limitsOnce sync.Once
	checkingMu sync.Mutex
	inCheck    map[string]int
	logLimited *ratelimit.Limiter
	suspects   chan struct{}
}

// SuspectRate is how many password checks a second all attempts from
// addresses or for users with recent failures may have together.
const SuspectRate = 1

// Login limits' defaults: 10 failed logins at once per user and per source
// address, then one every 6 s (10 a minute).
const (
	LoginBurst    = 10
	LoginInterval = 6 * time.Second
)

func (h *Handler) limits() {
	h.limitsOnce.Do(func() {
		if h.PerSource == nil {
			h.PerSource = ratelimit.New(LoginBurst, LoginInterval, 100_000)
		}
		if h.PerUser == nil {
			h.PerUser = ratelimit.New(LoginBurst, LoginInterval, 100_000)
		}
		// One "limited" line per user and source a minute: a flood
		// does not grow the log.
		h.logLimited = ratelimit.New(1, time.Minute, 10_000)
		if h.Suspects == nil {
			h.Suspects = ratelimit.New(SuspectRate, time.Second/SuspectRate, 1)
		}
		h.suspects = make(chan struct{}, 1)
	})
}

// admitLogin takes an attempt for the source address and the user, or
// answers 429 with Retry-After. An attempt from an address or for a user
// with recent failures (a suspect) must also get the one password check
// suspects may run at once, within SuspectRate a second; otherwise it is
// answered 429 at once, rather than queued (a queue would hold a
// connection each). release ends the check.
func (h *Handler) admitLogin(w http.ResponseWriter, source, user, userName string) (release func(), ok bool) {
	h.limits()
	release = func() {}
	suspect := !h.clean(h.PerSource, "s "+source) || !h.clean(h.PerUser, "u "+user)
	if suspect {
		select {
		case h.suspects <- struct{}{}:
			release = func() { <-h.suspects }
		default:
			h.suspectsLimited(w, source, user, userName, time.Second)
			return nil, false
		}
	}
	if !h.takeLogin(w, source, user, userName) {
		release()
		return nil, false
	}
	if suspect {
		if ok, wait := h.Suspects.Take(""); !ok {
			h.PerSource.Give(source)
			h.PerUser.Give(user)
			release()
			h.suspectsLimited(w, source, user, userName, wait)
			return nil, false
		}
	}
	h.checking(source, user, +1)
	done := release
	return func() { h.checking(source, user, -1); done() }, true
}

// checking counts the logins whose attempts are taken and whose password
// is being checked now, per source and user: they have not failed, so
// they do not make their source or user a suspect.
func (h *Handler) checking(source, user string, n int) {
	h.checkingMu.Lock()
	defer h.checkingMu.Unlock()
	if h.inCheck == nil {
		h.inCheck = map[string]int{}
	}
	for _, k := range []string{"s " + source, "u " + user} {
		if h.inCheck[k] += n; h.inCheck[k] <= 0 {
			delete(h.inCheck, k)
		}
	}
}

// clean: key (l's, under its "s "/"u " name in inCheck) has no recent
// failure — its attempts are all there, or out only for logins still
// being checked (concurrent logins of one user or address are no
// suspects).
func (h *Handler) clean(l *ratelimit.Limiter, key string) bool {
	h.checkingMu.Lock()
	n := h.inCheck[key]
	h.checkingMu.Unlock()
	left, _ := l.Remaining(key[2:])
	return left+n >= l.Burst()
}

func (h *Handler) suspectsLimited(w http.ResponseWriter, source, user, userName string, wait time.Duration) {
	if first, _ := h.logLimited.Take("suspect " + source + " " + user); first {
		h.log().Warn("logins limited: password checks after recent failures are at their rate", "user", truncLog(userName), "source", source)
	}
	h.tooMany(w, wait, "too many logins being checked after recent failures")
}

func (h *Handler) tooMany(w http.ResponseWriter, wait time.Duration, why string) {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, "Too Many Requests", fmt.Sprintf("%s; retry in %d s", why, secs))
}

func (h *Handler) takeLogin(w http.ResponseWriter, source, user, userName string) bool {
	ok, wait := h.PerSource.Take(source)
	if ok {
		if ok, wait = h.PerUser.Take(user); !ok {
			h.PerSource.Give(source)
		}
	}
	if ok {
		return true
	}
	if first, _ := h.logLimited.Take(source + " " + user); first {
		h.log().Warn("logins limited: too many failed attempts", "user", truncLog(userName), "source", source, "retry_after_s", int(math.Ceil(wait.Seconds())))
	}
	h.tooMany(w, wait, "too many failed logins for this user or from this address")
	return false
}

// sourceAddr is the client's address without its port. Behind a reverse
// proxy it is the proxy's.
func sourceAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// truncLog keeps a name a client chose short in the log.
func truncLog(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Register mounts the routes on mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v3", h.version)
	mux.HandleFunc("GET /v3/", h.versionOrNotFound)
	mux.HandleFunc("POST /v3/auth/tokens", h.issue)
	mux.HandleFunc("GET /v3/auth/tokens", h.validate)
	mux.HandleFunc("HEAD /v3/auth/tokens", h.validate)
	mux.HandleFunc("DELETE /v3/auth/tokens", h.revoke)
	mux.HandleFunc("GET /v3/auth/catalog", h.catalogOnly)
	h.registerAdmin(mux)
}

func (h *Handler) base(*http.Request) string {
	return strings.TrimRight(h.PublicURL, "/")
}

func (h *Handler) region() string {
	if h.Region == "" {
		return "RegionOne"
	}
	return h.Region
}

// VersionDocument is Keystone's description of v3.
func (h *Handler) versionDocument(r *http.Request) map[string]any {
	return map[string]any{
		"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
		"links":       []map[string]string{{"rel": "self", "href": h.base(r) + "/v3/"}},
		"media-types": []map[string]string{{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}},
	}
}

func (h *Handler) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"version": h.versionDocument(r)})
}

func (h *Handler) versionOrNotFound(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v3/" {
		h.version(w, r)
		return
	}
	writeError(w, http.StatusNotFound, "Not Found", fmt.Sprintf("%s is not part of this controller's identity API", r.URL.Path))
}

// Versions is the document GET / answers with in the embedded mode.
func (h *Handler) Versions(r *http.Request) map[string]any {
	return map[string]any{"versions": map[string]any{"values": []any{h.versionDocument(r)}}}
}

type nameOrID struct {
	ID     string    `json:"id"`
	Name   string    `json:"name"`
	Domain *nameOrID `json:"domain"`
}

type authRequest struct {
	Auth *struct {
		Identity *struct {
			Methods  []string `json:"methods"`
			Password *struct {
				User *struct {
					ID       string    `json:"id"`
					Name     string    `json:"name"`
					Password string    `json:"password"`
					Domain   *nameOrID `json:"domain"`
				} `json:"user"`
			} `json:"password"`
		} `json:"identity"`
		Scope json.RawMessage `json:"scope"`
	} `json:"auth"`
}

func (h *Handler) issue(w http.ResponseWriter, r *http.Request) {
	var req authRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		writeError(w, http.StatusBadRequest, "Bad Request", "could not read the request body")
		return
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "Bad Request", "malformed JSON: "+err.Error())
		return
	}
	a := req.Auth
	if a == nil || a.Identity == nil {
		writeError(w, http.StatusBadRequest, "Bad Request", "auth.identity is required")
		return
	}
	if len(a.Identity.Methods) != 1 || a.Identity.Methods[0] != "password" || a.Identity.Password == nil || a.Identity.Password.User == nil {
		writeError(w, http.StatusBadRequest, "Bad Request", `only the "password" method is supported: auth.identity.methods ["password"] with auth.identity.password.user`)
		return
	}
	u := a.Identity.Password.User
	c := identity.Credentials{UserID: u.ID, UserName: u.Name, Password: u.Password}
	if u.Domain != nil {
		c.UserDomain = first(u.Domain.ID, u.Domain.Name)
	}
	if c.UserID == "" && c.UserName == "" {
		writeError(w, http.StatusBadRequest, "Bad Request", "auth.identity.password.user needs an id or a name")
		return
	}
	if len(a.Scope) > 0 && string(a.Scope) != "null" {
		var scope struct {
			Project *nameOrID `json:"project"`
			Domain  *nameOrID `json:"domain"`
			System  any       `json:"system"`
		}
		if err := json.Unmarshal(a.Scope, &scope); err != nil {
			writeError(w, http.StatusBadRequest, "Bad Request", "auth.scope: "+err.Error())
			return
		}
		if scope.Project == nil {
			writeError(w, http.StatusBadRequest, "Bad Request", "only project scope is supported (auth.scope.project)")
			return
		}
		c.ProjectID, c.ProjectName = scope.Project.ID, scope.Project.Name
		if scope.Project.Domain != nil {
			c.ProjectDomain = first(scope.Project.Domain.ID, scope.Project.Domain.Name)
		}
	}
	source, user := sourceAddr(r), "name:"+strings.ToLower(c.UserName)
	if c.UserID != "" {
		user = "id:" + c.UserID
	}
	release, ok := h.admitLogin(w, source, user, c.UserID+c.UserName)
	if !ok {
		return
	}
	token, p, err := h.Identity.Issue(r.Context(), c)
	if err == nil {
		// Given back before the check ends: a concurrent login never sees
		// this one's attempt as a failure.
		h.PerSource.Give(source)
		h.PerUser.Give(user)
	}
	release()
	if errors.Is(err, auth.ErrUnauthorized) {
		h.log().Warn("login failed", "user", truncLog(c.UserID+c.UserName), "source", source)
		writeError(w, http.StatusUnauthorized, "Unauthorized", "The request you have made requires authentication.")
		return
	}
	if err != nil {
		h.log().Error("issuing a token failed", "err", err)
		writeError(w, http.StatusInternalServerError, "Internal Server Error", "the token could not be issued")
		return
	}
	w.Header().Set("X-Subject-Token", token)
	writeJSON(w, http.StatusCreated, map[string]any{"token": h.tokenBody(r, p, true)})
}

func (h *Handler) log() *slog.Logger {
	if h.Logger == nil {
		return slog.Default()
	}
	return h.Logger
}

func (h *Handler) tokenBody(r *http.Request, p auth.Principal, withCatalog bool) map[string]any {
	dom := map[string]string{"id": identity.DefaultDomainID, "name": identity.DefaultDomainName}
	var roles []map[string]string
	for _, name := range p.Roles {
		roles = append(roles, map[string]string{"id": name, "name": name})
	}
	t := map[string]any{
		"methods":    []string{"password"},
		"user":       map[string]any{"id": p.UserID, "name": p.UserName, "domain": dom, "password_expires_at": nil},
		"project":    map[string]any{"id": p.ProjectID, "name": p.ProjectName, "domain": dom},
		"roles":      roles,
		"is_domain":  false,
		"expires_at": p.ExpiresAt.UTC().Format("2006-01-02T15:04:05.000000Z"),
		"issued_at":  time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"),
		"audit_ids":  []string{},
	}
	if withCatalog {
		t["catalog"] = h.catalog(r, p)
	}
	return t
}

func (h *Handler) catalog(r *http.Request, p auth.Principal) []map[string]any {
	base := h.base(r)
	endpoints := func(url string) []map[string]string {
		var out []map[string]string
		for _, iface := range []string{"public", "internal", "admin"} {
			out = append(out, map[string]string{"id": iface + "-" + url, "interface": iface, "region": h.region(), "region_id": h.region(), "url": url})
		}
		return out
	}
	out := []map[string]any{
		{"id": "strata-database", "type": "database", "name": "trove", "endpoints": endpoints(base + "/v1.0/" + p.ProjectID)},
		{"id": "strata-identity", "type": "identity", "name": "keystone", "endpoints": endpoints(base + "/v3")},
	}
	if h.ImageService {
		out = append(out, map[string]any{"id": "strata-image", "type": "image", "name": "glance", "endpoints": endpoints(base + "/image")})
	}
	if h.NetworkService {
		out = append(out, map[string]any{"id": "strata-network", "type": "network", "name": "neutron", "endpoints": endpoints(base + "/network")})
	}
	if h.ObjectService {
		out = append(out, map[string]any{"id": "strata-object-store", "type": "object-store", "name": "swift", "endpoints": endpoints(base + "/logstore/v1/" + p.ProjectID)})
	}
	return out
}

func (h *Handler) caller(w http.ResponseWriter, r *http.Request) (auth.Principal, bool) {
	p, err := h.Identity.Authenticate(r.Context(), r.Header.Get("X-Auth-Token"))
	if err != nil {
		writeError(w, http.StatusUnauthorized, "Unauthorized", "The request you have made requires authentication.")
		return p, false
	}
	return p, true
}

// subject finds the token a validate or revoke request is about. Only its
// owner or an admin may see or revoke it (Keystone's
// identity:validate_token and identity:revoke_token policies: a service
// validates callers' tokens with an admin token of its own).
func (h *Handler) subject(w http.ResponseWriter, r *http.Request, action string) (string, auth.Principal, bool) {
	caller, ok := h.caller(w, r)
	if !ok {
		return "", auth.Principal{}, false
	}
	subject := r.Header.Get("X-Subject-Token")
	p, err := h.Identity.Authenticate(r.Context(), subject)
	if err != nil {
		writeError(w, http.StatusNotFound, "Not Found", "Could not find token.")
		return "", auth.Principal{}, false
	}
	if !caller.IsAdmin() && caller.UserID != p.UserID {
		h.log().Warn("token request refused: the token belongs to another user", "action", action, "caller", caller.UserName, "remote", r.RemoteAddr)
		writeError(w, http.StatusForbidden, "Forbidden", "You are not authorized to perform the requested action: identity:"+action+".")
		return "", auth.Principal{}, false
	}
	return subject, p, true
}

// validate answers GET and HEAD /v3/auth/tokens.
func (h *Handler) validate(w http.ResponseWriter, r *http.Request) {
	subject, p, ok := h.subject(w, r, "validate_token")
	if !ok {
		return
	}
	w.Header().Set("X-Subject-Token", subject)
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"token": h.tokenBody(r, p, r.URL.Query().Get("nocatalog") == "")})
}

func (h *Handler) revoke(w http.ResponseWriter, r *http.Request) {
	subject, _, ok := h.subject(w, r, "revoke_token")
	if !ok {
		return
	}
	if err := h.Identity.Revoke(r.Context(), subject); err != nil {
		writeError(w, http.StatusInternalServerError, "Internal Server Error", "the token could not be revoked")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) catalogOnly(w http.ResponseWriter, r *http.Request) {
	p, ok := h.caller(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"catalog": h.catalog(r, p)})
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// writeError uses Keystone's error shape.
func writeError(w http.ResponseWriter, code int, title, message string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{"code": code, "title": title, "message": message}})
}

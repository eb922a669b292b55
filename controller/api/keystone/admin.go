package keystone

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"strata/controller/auth"
	"strata/controller/identity"
)

// The identity administration subset: what tempest's dynamic credentials
// (and `openstack project|user|role ...`) call to make and remove a
// project, a user and its role on the project for each test class.
// Domains and roles are fixed (the default domain; admin, member, reader)
// and only listed. Every call needs a token with the admin role, as
// Keystone's default policy asks.

func (h *Handler) registerAdmin(mux *http.ServeMux) {
	mux.HandleFunc("GET /v3/domains", h.admin(h.listDomains))
	mux.HandleFunc("GET /v3/domains/{id}", h.admin(h.showDomain))
	mux.HandleFunc("POST /v3/domains", h.admin(h.fixedDomains))
	mux.HandleFunc("GET /v3/projects", h.admin(h.listProjects))
	mux.HandleFunc("POST /v3/projects", h.admin(h.createProject))
	mux.HandleFunc("GET /v3/projects/{id}", h.admin(h.showProject))
	mux.HandleFunc("DELETE /v3/projects/{id}", h.admin(h.deleteProject))
	mux.HandleFunc("GET /v3/users", h.admin(h.listUsers))
	mux.HandleFunc("POST /v3/users", h.admin(h.createUser))
	mux.HandleFunc("GET /v3/users/{id}", h.admin(h.showUser))
	mux.HandleFunc("PATCH /v3/users/{id}", h.admin(h.updateUser))
	mux.HandleFunc("DELETE /v3/users/{id}", h.admin(h.deleteUser))
	mux.HandleFunc("GET /v3/roles", h.admin(h.listRoles))
	mux.HandleFunc("GET /v3/roles/{id}", h.admin(h.showRole))
	mux.HandleFunc("POST /v3/roles", h.admin(h.createRole))
	mux.HandleFunc("GET /v3/projects/{project}/users/{user}/roles", h.admin(h.listAssignments))
	mux.HandleFunc("GET /v3/projects/{project}/users/{user}/roles/{role}", h.admin(h.checkAssignment)) // and HEAD
	mux.HandleFunc("PUT /v3/projects/{project}/users/{user}/roles/{role}", h.admin(h.assign))
	mux.HandleFunc("DELETE /v3/projects/{project}/users/{user}/roles/{role}", h.admin(h.unassign))
}

// keystoneError is an answer in Keystone's error shape.
type keystoneError struct {
	code           int
	title, message string
}

func (e *keystoneError) Error() string { return e.message }

func kerr(code int, format string, args ...any) *keystoneError {
	return &keystoneError{code: code, title: http.StatusText(code), message: fmt.Sprintf(format, args...)}
}

type adminHandler func(w http.ResponseWriter, r *http.Request) error

// admin wraps a route that needs the admin role and maps its errors.
func (h *Handler) admin(fn adminHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := h.caller(w, r)
		if !ok {
			return
		}
		if !p.IsAdmin() {
			writeError(w, http.StatusForbidden, "Forbidden", "You are not authorized to perform the requested action: it needs the admin role.")
			return
		}
		r = r.WithContext(auth.WithPrincipal(r.Context(), p))
		err := fn(w, r)
		var ke *keystoneError
		switch {
		case err == nil:
		case errors.As(err, &ke):
			writeError(w, ke.code, ke.title, ke.message)
		case errors.Is(err, identity.ErrNotFound):
			writeError(w, http.StatusNotFound, "Not Found", "Could not find "+strings.TrimSuffix(err.Error(), ": "+identity.ErrNotFound.Error())+".")
		case errors.Is(err, identity.ErrExists):
			writeError(w, http.StatusConflict, "Conflict", "Conflict occurred attempting to store "+strings.TrimSuffix(err.Error(), ": "+identity.ErrExists.Error())+": it exists already.")
		case errors.Is(err, identity.ErrInvalid):
			writeError(w, http.StatusBadRequest, "Bad Request", err.Error())
		default:
			h.log().Error("identity request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			writeError(w, http.StatusInternalServerError, "Internal Server Error", "the request failed; the controller's log has the details")
		}
	}
}

// decodeBody reads {"<key>": {...}} into v, refusing unknown fields.
func decodeBody(r *http.Request, key string, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		return kerr(http.StatusBadRequest, "could not read the request body")
	}
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(body, &outer); err != nil {
		return kerr(http.StatusBadRequest, "malformed JSON: %v", err)
	}
	inner, ok := outer[key]
	if !ok || len(outer) != 1 {
		return kerr(http.StatusBadRequest, "the body must be {%q: {...}}", key)
	}
	dec := json.NewDecoder(bytes.NewReader(inner))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return kerr(http.StatusBadRequest, "%s: %s", key, strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

func (h *Handler) self(r *http.Request, path string) map[string]any {
	return map[string]any{"self": h.base(r) + "/v3/" + path}
}

func (h *Handler) listLinks(r *http.Request) map[string]any {
	return map[string]any{"self": h.base(r) + r.URL.Path, "next": nil, "previous": nil}
}

// checkDomain accepts the default domain by id or name ("" too).
func checkDomain(field, d string) error {
	if d == "" || d == identity.DefaultDomainID || d == identity.DefaultDomainName {
		return nil
	}
	return kerr(http.StatusBadRequest, "%s %q: this identity service has the default domain only", field, d)
}

// Domains.

func (h *Handler) domainView(r *http.Request) map[string]any {
	return map[string]any{"id": identity.DefaultDomainID, "name": identity.DefaultDomainName, "enabled": true,
		"description": "The default domain", "tags": []string{}, "links": h.self(r, "domains/"+identity.DefaultDomainID)}
}

func (h *Handler) listDomains(w http.ResponseWriter, r *http.Request) error {
	out := []map[string]any{}
	if n := r.URL.Query().Get("name"); n == "" || n == identity.DefaultDomainName {
		out = append(out, h.domainView(r))
	}
	writeJSON(w, http.StatusOK, map[string]any{"domains": out, "links": h.listLinks(r)})
	return nil
}

func (h *Handler) showDomain(w http.ResponseWriter, r *http.Request) error {
	if id := r.PathValue("id"); id != identity.DefaultDomainID {
		return kerr(http.StatusNotFound, "Could not find domain: %s.", trunc(id))
	}
	writeJSON(w, http.StatusOK, map[string]any{"domain": h.domainView(r)})
	return nil
}

func (h *Handler) fixedDomains(w http.ResponseWriter, r *http.Request) error {
	return kerr(http.StatusForbidden, "this identity service has the default domain only; domains cannot be created")
}

// Projects.

func (h *Handler) projectView(r *http.Request, p identity.Project) map[string]any {
	return map[string]any{"id": p.ID, "name": p.Name, "domain_id": p.DomainID, "description": p.Description,
		"enabled": true, "is_domain": false, "parent_id": p.DomainID, "tags": []string{}, "links": h.self(r, "projects/"+p.ID)}
}

func (h *Handler) listProjects(w http.ResponseWriter, r *http.Request) error {
	if err := checkDomain("domain_id", r.URL.Query().Get("domain_id")); err != nil {
		return err
	}
	list, err := h.Identity.Projects(r.Context(), r.URL.Query().Get("name"))
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for _, p := range list {
		out = append(out, h.projectView(r, p))
	}
	writeJSON(w, http.StatusOK, map[string]any{"projects": out, "links": h.listLinks(r)})
	return nil
}

func (h *Handler) createProject(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name        string   `json:"name"`
		Description string   `json:"description"`
		DomainID    string   `json:"domain_id"`
		ParentID    string   `json:"parent_id"`
		Enabled     *bool    `json:"enabled"`
		IsDomain    bool     `json:"is_domain"`
		Tags        []string `json:"tags"`
		// `openstack project create` sends an empty options object.
		Options map[string]any `json:"options"`
	}
	if err := decodeBody(r, "project", &req); err != nil {
		return err
	}
	switch {
	case req.Name == "":
		return kerr(http.StatusBadRequest, "project.name is required")
	case len(req.Options) > 0:
		return kerr(http.StatusBadRequest, "project.options: no project options are supported")
	case req.Enabled != nil && !*req.Enabled:
		return kerr(http.StatusBadRequest, "project.enabled: disabled projects are not supported")
	case req.IsDomain:
		return kerr(http.StatusBadRequest, "project.is_domain: this identity service has the default domain only")
	case len(req.Tags) > 0:
		return kerr(http.StatusBadRequest, "project.tags are not supported")
	}
	if err := checkDomain("project.domain_id", req.DomainID); err != nil {
		return err
	}
	if err := checkDomain("project.parent_id", req.ParentID); err != nil {
		return err
	}
	p, err := h.Identity.CreateProjectWith(r.Context(), identity.Project{Name: req.Name, Description: req.Description})
	if err != nil {
		return err
	}
	h.log().Info("project created through the identity API", "project", p.ID, "name", p.Name, "by", callerName(r))
	writeJSON(w, http.StatusCreated, map[string]any{"project": h.projectView(r, p)})
	return nil
}

func (h *Handler) showProject(w http.ResponseWriter, r *http.Request) error {
	p, err := h.Identity.ProjectByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"project": h.projectView(r, p)})
	return nil
}

// deleteProject refuses a project that still owns resources of the
// controller (ProjectInUse): deleting it would leave them running with no
// one able to reach them.
func (h *Handler) deleteProject(w http.ResponseWriter, r *http.Request) error {
	p, err := h.Identity.ProjectByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if h.ProjectInUse != nil {
		what, err := h.ProjectInUse(r.Context(), p.ID)
		if err != nil {
			return err
		}
		if what != "" {
			return kerr(http.StatusConflict, "project %s (%s) still has %s; delete those first", p.Name, p.ID, what)
		}
	}
	if err := h.Identity.DeleteProject(r.Context(), p.ID); err != nil {
		return err
	}
	h.log().Info("project deleted through the identity API", "project", p.ID, "name", p.Name, "by", callerName(r))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Users.

func (h *Handler) userView(r *http.Request, u identity.User) map[string]any {
	v := map[string]any{"id": u.ID, "name": u.Name, "domain_id": u.DomainID, "enabled": !u.Disabled,
		"password_expires_at": nil, "options": map[string]any{}, "links": h.self(r, "users/"+u.ID)}
	if u.ProjectID != "" {
		v["default_project_id"] = u.ProjectID
	}
	return v
}

func (h *Handler) listUsers(w http.ResponseWriter, r *http.Request) error {
	if err := checkDomain("domain_id", r.URL.Query().Get("domain_id")); err != nil {
		return err
	}
	list, err := h.Identity.Users(r.Context(), r.URL.Query().Get("name"))
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for _, u := range list {
		out = append(out, h.userView(r, u))
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": out, "links": h.listLinks(r)})
	return nil
}

func (h *Handler) createUser(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name             string `json:"name"`
		Password         string `json:"password"`
		DomainID         string `json:"domain_id"`
		DefaultProjectID string `json:"default_project_id"`
		Description      string `json:"description"`
		Enabled          *bool  `json:"enabled"`
		// `openstack user create` sends an empty options object.
		Options map[string]any `json:"options"`
	}
	if err := decodeBody(r, "user", &req); err != nil {
		return err
	}
	switch {
	case req.Name == "":
		return kerr(http.StatusBadRequest, "user.name is required")
	case len(req.Options) > 0:
		return kerr(http.StatusBadRequest, "user.options: no user options are supported")
	case req.Password == "":
		return kerr(http.StatusBadRequest, "user.password is required: users of this identity service log in with a password")
	case req.Enabled != nil && !*req.Enabled:
		return kerr(http.StatusBadRequest, "user.enabled: disabled users are not supported")
	case req.Description != "":
		return kerr(http.StatusBadRequest, "user.description is not stored by this identity service")
	}
	if err := checkDomain("user.domain_id", req.DomainID); err != nil {
		return err
	}
	u, err := h.Identity.AddUser(r.Context(), req.Name, req.Password, req.DefaultProjectID)
	if errors.Is(err, identity.ErrNotFound) {
		return kerr(http.StatusBadRequest, "user.default_project_id: %v", err)
	}
	if err != nil {
		return err
	}
	h.log().Info("user created through the identity API", "user", u.ID, "name", u.Name, "by", callerName(r))
	writeJSON(w, http.StatusCreated, map[string]any{"user": h.userView(r, u)})
	return nil
}

func (h *Handler) showUser(w http.ResponseWriter, r *http.Request) error {
	u, err := h.Identity.User(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": h.userView(r, u)})
	return nil
}

func (h *Handler) deleteUser(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if p, _ := auth.FromContext(r.Context()); p.UserID == id {
		return kerr(http.StatusForbidden, "a user cannot delete itself")
	}
	if err := h.Identity.DeleteUser(r.Context(), id); err != nil {
		return err
	}
	h.log().Info("user deleted through the identity API", "user", id, "by", callerName(r))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// updateUser is Keystone's PATCH /v3/users/{id} as `openstack user set`
// sends it: --enable/--disable and --password. Disabling and a new
// password each revoke the user's tokens.
func (h *Handler) updateUser(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Enabled  *bool   `json:"enabled"`
		Password *string `json:"password"`
		Name     *string `json:"name"`
		// Sent by `openstack user set` alongside the others; the domain
		// cannot change and there is one.
		DomainID *string `json:"domain_id"`
	}
	if err := decodeBody(r, "user", &req); err != nil {
		return err
	}
	id := r.PathValue("id")
	u, err := h.Identity.User(r.Context(), id)
	if err != nil {
		return err
	}
	if req.Name != nil && *req.Name != u.Name {
		return kerr(http.StatusBadRequest, "user.name: renaming a user is not supported by this identity service")
	}
	if req.DomainID != nil {
		if err := checkDomain("user.domain_id", *req.DomainID); err != nil {
			return err
		}
	}
	if req.Enabled != nil && !*req.Enabled {
		if p, _ := auth.FromContext(r.Context()); p.UserID == id {
			return kerr(http.StatusForbidden, "a user cannot disable itself")
		}
	}
	if req.Password != nil {
		if err := h.Identity.SetPassword(r.Context(), id, *req.Password); err != nil {
			return err
		}
		h.log().Info("user's password changed through the identity API; its tokens are revoked", "user", id, "by", callerName(r))
	}
	if req.Enabled != nil && *req.Enabled == u.Disabled {
		if err := h.Identity.SetEnabled(r.Context(), id, *req.Enabled); err != nil {
			return err
		}
		h.log().Info("user enabled or disabled through the identity API", "user", id, "enabled", *req.Enabled, "by", callerName(r))
	}
	if u, err = h.Identity.User(r.Context(), id); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": h.userView(r, u)})
	return nil
}

// Roles and role assignments.

func (h *Handler) roleView(r *http.Request, name string) map[string]any {
	return map[string]any{"id": name, "name": name, "domain_id": nil, "description": nil, "options": map[string]any{},
		"links": h.self(r, "roles/"+name)}
}

func (h *Handler) listRoles(w http.ResponseWriter, r *http.Request) error {
	out := []map[string]any{}
	for _, role := range identity.Roles() {
		if n := r.URL.Query().Get("name"); n == "" || n == role {
			out = append(out, h.roleView(r, role))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"roles": out, "links": h.listLinks(r)})
	return nil
}

func (h *Handler) showRole(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	for _, role := range identity.Roles() {
		if role == id {
			writeJSON(w, http.StatusOK, map[string]any{"role": h.roleView(r, role)})
			return nil
		}
	}
	return kerr(http.StatusNotFound, "Could not find role: %s.", trunc(id))
}

func (h *Handler) createRole(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name        string  `json:"name"`
		DomainID    *string `json:"domain_id"`
		Description string  `json:"description"`
	}
	if err := decodeBody(r, "role", &req); err != nil {
		return err
	}
	for _, role := range identity.Roles() {
		if strings.EqualFold(role, req.Name) {
			return kerr(http.StatusConflict, "Conflict occurred attempting to store role - Duplicate entry found with name %s.", role)
		}
	}
	return kerr(http.StatusForbidden, "the roles of this identity service are fixed (%s); %q cannot be created",
		strings.Join(identity.Roles(), ", "), trunc(req.Name))
}

func (h *Handler) listAssignments(w http.ResponseWriter, r *http.Request) error {
	project, user := r.PathValue("project"), r.PathValue("user")
	if _, err := h.Identity.ProjectByID(r.Context(), project); err != nil {
		return err
	}
	if _, err := h.Identity.User(r.Context(), user); err != nil {
		return err
	}
	roles, err := h.Identity.AssignedRoles(r.Context(), project, user)
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for _, role := range roles {
		out = append(out, h.roleView(r, role))
	}
	writeJSON(w, http.StatusOK, map[string]any{"roles": out, "links": h.listLinks(r)})
	return nil
}

func (h *Handler) checkAssignment(w http.ResponseWriter, r *http.Request) error {
	project, user, role := r.PathValue("project"), r.PathValue("user"), r.PathValue("role")
	roles, err := h.Identity.AssignedRoles(r.Context(), project, user)
	if err != nil {
		return err
	}
	for _, x := range roles {
		if x == role {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
	}
	return kerr(http.StatusNotFound, "Could not find role assignment with role: %s, user or group: %s, project, domain, or system: %s.",
		trunc(role), trunc(user), trunc(project))
}

func (h *Handler) assign(w http.ResponseWriter, r *http.Request) error {
	project, user, role := r.PathValue("project"), r.PathValue("user"), r.PathValue("role")
	if err := h.Identity.AssignRole(r.Context(), project, user, role); err != nil {
		return err
	}
	h.log().Info("role assigned through the identity API", "project", project, "user", user, "role", role, "by", callerName(r))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) unassign(w http.ResponseWriter, r *http.Request) error {
	project, user, role := r.PathValue("project"), r.PathValue("user"), r.PathValue("role")
	if err := h.Identity.UnassignRole(r.Context(), project, user, role); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func callerName(r *http.Request) string {
	p, _ := auth.FromContext(r.Context())
	return p.UserName
}

// trunc keeps echoed input short.
func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// ProjectInUseFunc says what a project still owns ("" when nothing).
type ProjectInUseFunc func(ctx context.Context, projectID string) (string, error)

package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"strata/controller/backups"
	"strata/controller/instances"
	"strata/controller/registry"
)

// backupRoutes registers Trove's backup routes.
func (s *Server) backupRoutes(mux *http.ServeMux, p string) {
	s.route(mux, "GET "+p+"/backups", s.listBackups)
	s.route(mux, "POST "+p+"/backups", s.createBackup)
	s.route(mux, "GET "+p+"/backups/{id}", s.showBackup)
	s.route(mux, "DELETE "+p+"/backups/{id}", s.deleteBackup)
	s.route(mux, "GET "+p+"/instances/{id}/backups", s.instanceBackups)
}

// backupScope is the project a caller's backup lookups are limited to:
// the admin role reaches every project's backups.
func backupScope(c *call) string {
	if c.principal.IsAdmin() {
		return ""
	}
	return c.project
}

func (s *Server) backupView(c *call, l *lookups, b backups.Backup) map[string]any {
	v := l.version(b.DatastoreVersionID)
	out := map[string]any{
		"id": b.ID, "name": b.Name, "description": nullable(b.Description),
		"locationRef": b.Store + ":" + b.Location, "instance_id": b.InstanceID,
		"created": troveTime(b.CreatedAt), "updated": troveTime(b.UpdatedAt),
		"size": nil, "status": b.Status, "parent_id": nullable(b.ParentID), "project_id": b.ProjectID,
		"storage_driver": b.Store,
		"datastore":      map[string]any{"type": v.DatastoreName, "version": v.Name, "version_id": v.ID},
	}
	if b.Status == backups.StatusCompleted {
		// Trove's size is in GB.
		out["size"] = float64(b.StoredBytes) / (1 << 30)
		out["size_bytes"] = b.StoredBytes
		out["raw_bytes"] = b.RawBytes
	}
	if b.FailReason != "" {
		out["fail_reason"] = b.FailReason
	}
	return out
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (s *Server) requireBackups() error {
	if s.Backups == nil {
		return errorf(http.StatusNotImplemented, "this controller has no backup store configured")
	}
	return nil
}

func (s *Server) listBackups(w http.ResponseWriter, c *call) error {
	if err := s.requireBackups(); err != nil {
		return err
	}
	limit, marker, err := page(c)
	if err != nil {
		return err
	}
	q := c.r.URL.Query()
	o := backups.ListOptions{Project: c.project, InstanceID: q.Get("instance_id")}
	if all, _ := strconv.ParseBool(q.Get("all_projects")); all || q.Get("project_id") != "" {
		if !c.principal.IsAdmin() {
			return errorf(http.StatusForbidden, "listing other projects' backups needs the admin role")
		}
		o.Project = q.Get("project_id")
	}
	if ds := q.Get("datastore"); ds != "" {
		// By name or id; an unknown datastore matches nothing.
		o.DatastoreVersionID = []string{}
		if d, err := s.Registry.Datastore(c.ctx(), ds); err == nil {
			vs, err := s.Registry.Versions(c.ctx(), d.ID)
			if err != nil {
				return err
			}
			for _, v := range vs {
				o.DatastoreVersionID = append(o.DatastoreVersionID, v.ID)
			}
		} else if !errors.Is(err, registry.ErrNotFound) {
			return err
		}
	}
	list, err := backups.List(c.ctx(), s.DB, o)
	if err != nil {
		return err
	}
	s.writeBackupPage(w, c, "/backups", list, limit, marker)
	return nil
}

// writeBackupPage answers a page of backups, newest first, as Trove does.
func (s *Server) writeBackupPage(w http.ResponseWriter, c *call, path string, list []backups.Backup, limit int, marker string) {
	items, links := paginate(c, path, list, func(b backups.Backup) string { return b.ID }, limit, marker)
	l := s.lookups(c)
	out := []map[string]any{}
	for _, b := range items {
		out = append(out, s.backupView(c, l, b))
	}
	body := map[string]any{"backups": out}
	if links != nil {
		body["links"] = links
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) instanceBackups(w http.ResponseWriter, c *call) error {
	if err := s.requireBackups(); err != nil {
		return err
	}
	limit, marker, err := page(c)
	if err != nil {
		return err
	}
	in, err := instances.Get(c.ctx(), s.DB, c.project, c.r.PathValue("id"))
	if err != nil {
		return err
	}
	list, err := backups.List(c.ctx(), s.DB, backups.ListOptions{Project: c.project, InstanceID: in.ID})
	if err != nil {
		return err
	}
	s.writeBackupPage(w, c, "/instances/"+in.ID+"/backups", list, limit, marker)
	return nil
}

func (s *Server) showBackup(w http.ResponseWriter, c *call) error {
	if err := s.requireBackups(); err != nil {
		return err
	}
	b, err := backups.Get(c.ctx(), s.DB, backupScope(c), c.r.PathValue("id"))
	if err != nil {
		return backupErr(err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"backup": s.backupView(c, s.lookups(c), b)})
	return nil
}

// createBackupReq lists every field python-troveclient sends.
type createBackupReq struct {
	Backup *struct {
		Name           *string         `json:"name"`
		Instance       *string         `json:"instance"`
		Description    *string         `json:"description"`
		ParentID       *string         `json:"parent_id"`
		Incremental    *int            `json:"incremental"`
		SwiftContainer *string         `json:"swift_container"`
		RestoreFrom    json.RawMessage `json:"restore_from"`
	} `json:"backup"`
}

func (s *Server) createBackup(w http.ResponseWriter, c *call) error {
	if err := s.requireBackups(); err != nil {
		return err
	}
	var req createBackupReq
	if err := decode(c, &req); err != nil {
		return err
	}
	b := req.Backup
	switch {
	case b == nil:
		return errorf(http.StatusBadRequest, `the body must be {"backup": {...}}`)
	case b.Name == nil:
		return errorf(http.StatusBadRequest, "backup.name is required")
	case !isNull(b.RestoreFrom):
		return errorf(http.StatusBadRequest, "backup.restore_from: importing a backup from another cloud's store is not supported")
	case b.Instance == nil || *b.Instance == "":
		return errorf(http.StatusBadRequest, "backup.instance is required")
	case b.SwiftContainer != nil && *b.SwiftContainer != "":
		return errorf(http.StatusBadRequest, "backup.swift_container: the operator chooses where backups are stored")
	case b.Incremental != nil && *b.Incremental != 0 && *b.Incremental != 1:
		return errorf(http.StatusBadRequest, "backup.incremental: want 0 or 1")
	}
	r := backups.CreateRequest{ProjectID: c.project, InstanceID: *b.Instance, Name: *b.Name,
		Incremental: b.Incremental != nil && *b.Incremental == 1}
	if b.Description != nil {
		r.Description = *b.Description
	}
	if b.ParentID != nil {
		r.ParentID = *b.ParentID
	}
	bk, err := s.Backups.Create(c.ctx(), r)
	if err != nil {
		return backupErr(err)
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"backup": s.backupView(c, s.lookups(c), bk)})
	return nil
}

func (s *Server) deleteBackup(w http.ResponseWriter, c *call) error {
	if err := s.requireBackups(); err != nil {
		return err
	}
	if err := s.Backups.Delete(c.ctx(), backupScope(c), c.r.PathValue("id")); err != nil {
		return backupErr(err)
	}
	return accepted(w)
}

// backupErr maps the backups package's own errors; lifecycle's kinds pass
// through to writeErr.
func backupErr(err error) error {
	switch {
	case errors.Is(err, backups.ErrNotFound):
		return errorf(http.StatusNotFound, "%s", strings.TrimPrefix(err.Error(), "backup not found: "))
	case errors.Is(err, backups.ErrConflict):
		return errorf(http.StatusConflict, "%s", strings.TrimPrefix(err.Error(), "conflict: "))
	}
	return err
}

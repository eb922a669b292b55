package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"strata/agent/wire"
	"strata/controller/instances"
)

// This file is Trove's management view of instances (admin only): every
// project's instances with what the controller knows of them — server id,
// address, task, agent status and fault — and the management actions
// reboot (the server), stop (the database) and reset-task-status. `openstack
// database instance list --all-projects` and `openstack database instance
// reboot` use these routes.

// mgmtInstanceView is the detailed instance view plus the management
// fields.
func (s *Server) mgmtInstanceView(c *call, l *lookups, in instances.Instance) map[string]any {
	out := s.instanceView(c, l, in, true)
	out["task_status"] = string(in.Task)
	out["deleted"] = !in.DeletedAt.IsZero()
	out["deleted_at"] = nil
	if !in.DeletedAt.IsZero() {
		out["deleted_at"] = troveTime(in.DeletedAt)
	}
	out["host"] = in.Host
	out["server_id"] = nil
	if srv, ok := serverOf(in); ok {
		out["server_id"] = srv.ID
		out["server"] = map[string]any{"id": srv.ID, "addresses": srv.Addresses}
	}
	out["service_status"] = nil
	if r := in.Reported; r != nil {
		out["service_status"] = string(r.Status)
	}
	if _, ok := out["fault"]; !ok {
		out["fault"] = nil
	}
	return out
}

// boolQuery parses a query flag as Trove's clients send it (False/True).
func boolQuery(c *call, name string) (bool, error) {
	v := c.r.URL.Query().Get(name)
	switch strings.ToLower(v) {
	case "", "false", "0", "no":
		return false, nil
	case "true", "1", "yes":
		return true, nil
	}
	return false, errorf(http.StatusBadRequest, "query %s=%q: want true or false", name, trunc(v))
}

// mgmtListInstances lists every project's instances (or one project's:
// ?project_id=), live ones or, with ?deleted=true, deleted ones.
func (s *Server) mgmtListInstances(w http.ResponseWriter, c *call) error {
	limit, marker, err := page(c)
	if err != nil {
		return err
	}
	deleted, err := boolQuery(c, "deleted")
	if err != nil {
		return err
	}
	project := c.r.URL.Query().Get("project_id")
	if project != "" && !projectPattern.MatchString(project) {
		return errorf(http.StatusBadRequest, "query project_id=%q: want 1 to 64 letters, digits, '-' or '_'", trunc(project))
	}
	list, err := instances.List(c.ctx(), s.DB, instances.ListOptions{Project: project, Deleted: deleted})
	if err != nil {
		return err
	}
	list, links := paginate(c, "/mgmt/instances", list, func(in instances.Instance) string { return in.ID }, limit, marker)
	l := s.lookups(c)
	out := []map[string]any{}
	for _, in := range list {
		out = append(out, s.mgmtInstanceView(c, l, in))
	}
	body := map[string]any{"instances": out}
	if links != nil {
		body["links"] = links
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

func (s *Server) mgmtShowInstance(w http.ResponseWriter, c *call) error {
	in, err := instances.Get(c.ctx(), s.DB, "", c.r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"instance": s.mgmtInstanceView(c, s.lookups(c), in)})
	return nil
}

// mgmtActions are the management actions strata does.
const mgmtActions = "reboot, stop, reset-task-status, rebuild"

func (s *Server) mgmtInstanceAction(w http.ResponseWriter, c *call) error {
	var req map[string]json.RawMessage
	if err := decode(c, &req); err != nil {
		return err
	}
	if len(req) != 1 {
		return errorf(http.StatusBadRequest, "give exactly one action (%s), not %s", mgmtActions, strconv.Itoa(len(req)))
	}
	id := c.r.PathValue("id")
	for action, raw := range req {
		switch action {
		case "reboot", "stop", "reset-task-status":
			if err := emptyObject(raw, action); err != nil {
				return err
			}
		case "rebuild":
		default:
			return errorf(http.StatusBadRequest, "management action %q is not supported (%s)", trunc(action), mgmtActions)
		}
		switch action {
		case "reboot":
			if err := s.Lifecycle.Reboot(c.ctx(), id); err != nil {
				return err
			}
		case "stop":
			err := s.Lifecycle.Stop(c.ctx(), id)
			var oe *wire.OpError
			if errors.As(err, &oe) {
				return opError(oe)
			}
			if err != nil && !isTimeout(err) {
				return err
			}
		case "reset-task-status":
			if err := s.Lifecycle.ResetTask(c.ctx(), id); err != nil {
				return err
			}
		case "rebuild":
			// Trove's shape: {"rebuild": {"image_id": ...}}.
			var rb struct {
				ImageID *string `json:"image_id"`
			}
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&rb); err != nil {
				return errorf(http.StatusBadRequest, "rebuild: %s", jsonError(err))
			}
			if rb.ImageID == nil || *rb.ImageID == "" {
				return errorf(http.StatusBadRequest, "rebuild.image_id is required")
			}
			if err := s.Lifecycle.Rebuild(c.ctx(), id, *rb.ImageID); err != nil {
				return err
			}
		}
		s.log().Info("management action", "action", action, "instance", id, "by", c.principal.UserName)
	}
	return accepted(w)
}

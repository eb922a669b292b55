package api

import (
	"encoding/json"
	"net/http"
	"time"

	"strata/controller/configurations"
	"strata/controller/instances"
	"strata/controller/lifecycle"
	"strata/controller/registry"
	"strata/controller/store"
)

func (s *Server) configurationView(c *call, l *lookups, g configurations.Group) (map[string]any, error) {
	v := l.version(g.DatastoreVersionID)
	n, err := configurations.InstanceCount(c.ctx(), s.DB, g.ID)
	if err != nil {
		return nil, err
	}
	values := g.Values
	if values == nil {
		values = map[string]json.RawMessage{}
	}
	return map[string]any{
		"id": g.ID, "name": g.Name, "description": g.Description, "values": values,
		"created": troveTime(g.CreatedAt), "updated": troveTime(g.UpdatedAt), "instance_count": n,
		"datastore_name": v.DatastoreName, "datastore_version_id": v.ID,
		"datastore_version_name": v.Name, "datastore_version_number": v.Name,
		"links": c.links("/configurations/" + g.ID),
	}, nil
}

func (s *Server) listConfigurations(w http.ResponseWriter, c *call) error {
	limit, marker, err := page(c)
	if err != nil {
		return err
	}
	list, err := configurations.List(c.ctx(), s.DB, c.project)
	if err != nil {
		return err
	}
	list, links := paginate(c, "/configurations", list, func(g configurations.Group) string { return g.ID }, limit, marker)
	l := s.lookups(c)
	out := []map[string]any{}
	for _, g := range list {
		v, err := s.configurationView(c, l, g)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	body := map[string]any{"configurations": out}
	if links != nil {
		body["links"] = links
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

func (s *Server) showConfiguration(w http.ResponseWriter, c *call) error {
	g, err := configurations.Get(c.ctx(), s.DB, c.project, c.r.PathValue("cfg"))
	if err != nil {
		return err
	}
	view, err := s.configurationView(c, s.lookups(c), g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"configuration": view})
	return nil
}

type configurationBody struct {
	Configuration *struct {
		Name        *string                    `json:"name"`
		Description *string                    `json:"description"`
		Values      map[string]json.RawMessage `json:"values"`
		Datastore   *struct {
			Type          string `json:"type"`
			Version       string `json:"version"`
			VersionNumber string `json:"version_number"`
		} `json:"datastore"`
	} `json:"configuration"`
}

func (s *Server) createConfiguration(w http.ResponseWriter, c *call) error {
	var req configurationBody
	if err := decode(c, &req); err != nil {
		return err
	}
	b := req.Configuration
	if b == nil {
		return errorf(http.StatusBadRequest, `the body must be {"configuration": {...}}`)
	}
	if b.Name == nil {
		return errorf(http.StatusBadRequest, "configuration.name is required")
	}
	if b.Values == nil {
		return errorf(http.StatusBadRequest, "configuration.values is required (an object of parameter values)")
	}
	desc := ""
	if b.Description != nil {
		desc = *b.Description
	}
	if err := configurations.CheckName(*b.Name, desc); err != nil {
		return err
	}
	var v registry.Version
	var err error
	if b.Datastore == nil {
		all, err := s.Registry.Datastores(c.ctx())
		if err != nil {
			return err
		}
		if len(all) != 1 {
			return errorf(http.StatusBadRequest, "configuration.datastore is required: %d datastores are registered", len(all))
		}
		v, err = s.Registry.FindVersion(c.ctx(), all[0].ID, "")
		if err != nil {
			return err
		}
	} else {
		version := b.Datastore.Version
		if version == "" {
			version = b.Datastore.VersionNumber
		}
		if b.Datastore.Type == "" {
			v, err = s.resolveVersion(c, "", version)
		} else {
			v, err = s.Registry.FindVersion(c.ctx(), b.Datastore.Type, version)
		}
		if err != nil {
			return err
		}
	}
	if err := configurations.Validate(v.Rules, b.Values); err != nil {
		return err
	}
	now := time.Now()
	g := configurations.Group{ID: store.NewID(), ProjectID: c.project, Name: *b.Name, Description: desc,
		DatastoreVersionID: v.ID, Values: b.Values, CreatedAt: now, UpdatedAt: now}
	if err := configurations.Insert(c.ctx(), s.DB, g); err != nil {
		return err
	}
	g, err = configurations.Get(c.ctx(), s.DB, c.project, g.ID)
	if err != nil {
		return err
	}
	view, err := s.configurationView(c, s.lookups(c), g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"configuration": view})
	return nil
}

// replaceConfiguration (PUT) replaces the values; patchConfiguration
// (PATCH) merges them. Either is pushed to the attached instances.
// Both answer once every ACTIVE instance the group is attached to has
// applied it (read-after-write, as Trove 18 answers), or the wait ended.
func (s *Server) replaceConfiguration(w http.ResponseWriter, c *call) error {
	applies, err := s.changeConfiguration(c, false)
	if err != nil {
		return err
	}
	s.answerApplied(w, c, http.StatusAccepted, applies)
	return nil
}

func (s *Server) patchConfiguration(w http.ResponseWriter, c *call) error {
	applies, err := s.changeConfiguration(c, true)
	if err != nil {
		return err
	}
	s.answerApplied(w, c, http.StatusOK, applies)
	return nil
}

// answerApplied waits for the configuration changes to be applied and
// answers with code: without a body when every instance applied it (as
// Trove), else with the instances that did not — still applying when the
// wait ended (their tasks go on), or refused (their fault says why).
func (s *Server) answerApplied(w http.ResponseWriter, c *call, code int, applies []lifecycle.Apply) {
	results := s.Lifecycle.WaitConfigured(c.ctx(), applies)
	var pending, failed []map[string]any
	restart := []string{}
	for _, r := range results {
		item := map[string]any{"id": r.InstanceID, "name": r.Name, "reason": r.Reason}
		switch r.State {
		case lifecycle.AppliedPending:
			pending = append(pending, item)
		case lifecycle.AppliedFailed:
			failed = append(failed, item)
		case lifecycle.AppliedDone:
			if r.RestartRequired {
				restart = append(restart, r.InstanceID)
			}
		}
	}
	if len(pending) == 0 && len(failed) == 0 {
		w.WriteHeader(code)
		return
	}
	for _, r := range results {
		if r.State != lifecycle.AppliedDone {
			s.log().Warn("configuration change not applied when the request answered", "instance", r.InstanceID, "state", r.State, "reason", r.Reason)
		}
	}
	if pending == nil {
		pending = []map[string]any{}
	}
	if failed == nil {
		failed = []map[string]any{}
	}
	writeJSON(w, code, map[string]any{"configuration_apply": map[string]any{
		"pending": pending, "failed": failed, "restart_required": restart,
		"message": "the change is stored; not every instance it touches has applied it (see pending and failed)"}})
}

func (s *Server) changeConfiguration(c *call, merge bool) ([]lifecycle.Apply, error) {
	var req configurationBody
	if err := decode(c, &req); err != nil {
		return nil, err
	}
	b := req.Configuration
	if b == nil {
		return nil, errorf(http.StatusBadRequest, `the body must be {"configuration": {...}}`)
	}
	if b.Values == nil {
		return nil, errorf(http.StatusBadRequest, "configuration.values is required (an object of parameter values)")
	}
	if b.Datastore != nil {
		return nil, errorf(http.StatusBadRequest, "configuration.datastore cannot be changed")
	}
	var applies []lifecycle.Apply
	err := s.DB.InTx(c.ctx(), func(tx *store.Tx) error {
		g, err := configurations.Get(c.ctx(), tx, c.project, c.r.PathValue("cfg"))
		if err != nil {
			return err
		}
		v, err := s.Registry.Version(c.ctx(), g.DatastoreVersionID)
		if err != nil {
			return err
		}
		values := b.Values
		if merge {
			values = map[string]json.RawMessage{}
			for k, val := range g.Values {
				values[k] = val
			}
			for k, val := range b.Values {
				values[k] = val
			}
		}
		if err := configurations.Validate(v.Rules, values); err != nil {
			return err
		}
		if b.Name != nil {
			g.Name = *b.Name
		}
		if b.Description != nil {
			g.Description = *b.Description
		}
		if err := configurations.CheckName(g.Name, g.Description); err != nil {
			return err
		}
		g.Values = values
		if err := configurations.Save(c.ctx(), tx, g, time.Now()); err != nil {
			return err
		}
		applies, err = s.Lifecycle.ConfigurationChanged(c.ctx(), tx, g.ID)
		return err
	})
	return applies, err
}

func (s *Server) deleteConfiguration(w http.ResponseWriter, c *call) error {
	err := s.DB.InTx(c.ctx(), func(tx *store.Tx) error {
		id := c.r.PathValue("cfg")
		if _, err := configurations.Get(c.ctx(), tx, c.project, id); err != nil {
			return err
		}
		n, err := configurations.InstanceCount(c.ctx(), tx, id)
		if err != nil {
			return err
		}
		if n > 0 {
			return errorf(http.StatusBadRequest, "configuration %s is attached to %d instance(s); detach it first", id, n)
		}
		return configurations.Delete(c.ctx(), tx, c.project, id)
	})
	if err != nil {
		return err
	}
	return accepted(w)
}

func (s *Server) configurationInstances(w http.ResponseWriter, c *call) error {
	limit, marker, err := page(c)
	if err != nil {
		return err
	}
	g, err := configurations.Get(c.ctx(), s.DB, c.project, c.r.PathValue("cfg"))
	if err != nil {
		return err
	}
	list, err := instances.List(c.ctx(), s.DB, instances.ListOptions{Project: c.project, ConfigurationID: g.ID})
	if err != nil {
		return err
	}
	list, links := paginate(c, "/configurations/"+g.ID+"/instances", list, func(in instances.Instance) string { return in.ID }, limit, marker)
	out := []map[string]any{}
	for _, in := range list {
		out = append(out, map[string]any{"id": in.ID, "name": in.Name, "links": c.links("/instances/" + in.ID)})
	}
	body := map[string]any{"instances": out}
	if links != nil {
		body["links"] = links
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

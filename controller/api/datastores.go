package api

import (
	"errors"
	"net/http"
	"strings"

	"strata/agent/wire"
	"strata/controller/registry"
)

// datastoreRoutes dispatches the datastore subtree by hand: Trove's
// /datastores/versions/{id} and /datastores/{ds}/versions overlap as mux
// patterns.
func (s *Server) datastoreRoutes(w http.ResponseWriter, c *call) error {
	seg := strings.Split(strings.Trim(c.r.PathValue("rest"), "/"), "/")
	set := c.r.SetPathValue
	switch {
	case len(seg) == 1:
		set("ds", seg[0])
		return s.showDatastore(w, c)
	case len(seg) == 2 && seg[0] == "versions":
		set("v", seg[1])
		return s.showVersionByID(w, c)
	case len(seg) == 2 && seg[1] == "versions":
		set("ds", seg[0])
		return s.listVersions(w, c)
	case len(seg) == 3 && seg[0] == "versions" && seg[2] == "parameters":
		set("v", seg[1])
		return s.listParametersByVersion(w, c)
	case len(seg) == 4 && seg[0] == "versions" && seg[2] == "parameters":
		set("v", seg[1])
		set("name", seg[3])
		return s.showParameterByVersion(w, c)
	case len(seg) == 3 && seg[1] == "versions":
		set("ds", seg[0])
		set("v", seg[2])
		return s.showVersion(w, c)
	case len(seg) == 4 && seg[1] == "versions" && seg[3] == "parameters":
		set("ds", seg[0])
		set("v", seg[2])
		return s.listParameters(w, c)
	case len(seg) == 5 && seg[1] == "versions" && seg[3] == "parameters":
		set("ds", seg[0])
		set("v", seg[2])
		set("name", seg[4])
		return s.showParameter(w, c)
	case len(seg) == 4 && seg[1] == "versions" && seg[3] == "flavors":
		set("ds", seg[0])
		set("v", seg[2])
		return s.listFlavors(w, c)
	}
	return errorf(http.StatusNotFound, "%s %s is not a route of this API", c.r.Method, trunc(c.r.URL.Path))
}

func (s *Server) versionView(c *call, v registry.Version) map[string]any {
	return map[string]any{
		"id": v.ID, "name": v.Name, "datastore": v.DatastoreID,
		"links":      c.links("/datastores/versions/" + v.ID),
		"image":      v.ImageID,
		"image_tags": []string{},
		"packages":   strings.Join(v.Packages, ","),
		"active":     v.Active,
		"version":    v.Name,
		// No "manager": python-troveclient's resources keep their
		// manager object under that attribute name.
	}
}

func (s *Server) datastoreView(c *call, d registry.Datastore, versions []registry.Version) map[string]any {
	vs := []map[string]any{}
	for _, v := range versions {
		if !v.Active {
			continue // Trove lists active versions only
		}
		vs = append(vs, map[string]any{"id": v.ID, "name": v.Name, "links": c.links("/datastores/versions/" + v.ID),
			"active": 1, "version": v.Name})
	}
	out := map[string]any{"id": d.ID, "name": d.Name, "links": c.links("/datastores/" + d.ID), "versions": vs}
	if d.DefaultVersionID != "" {
		out["default_version"] = d.DefaultVersionID
	}
	return out
}

func (s *Server) listDatastores(w http.ResponseWriter, c *call) error {
	all, err := s.Registry.Datastores(c.ctx())
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for _, d := range all {
		vs, err := s.Registry.Versions(c.ctx(), d.ID)
		if err != nil {
			return err
		}
		out = append(out, s.datastoreView(c, d, vs))
	}
	writeJSON(w, http.StatusOK, map[string]any{"datastores": out})
	return nil
}

func (s *Server) showDatastore(w http.ResponseWriter, c *call) error {
	d, err := s.Registry.Datastore(c.ctx(), c.r.PathValue("ds"))
	if err != nil {
		return err
	}
	vs, err := s.Registry.Versions(c.ctx(), d.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"datastore": s.datastoreView(c, d, vs)})
	return nil
}

func (s *Server) listVersions(w http.ResponseWriter, c *call) error {
	d, err := s.Registry.Datastore(c.ctx(), c.r.PathValue("ds"))
	if err != nil {
		return err
	}
	vs, err := s.Registry.Versions(c.ctx(), d.ID)
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for _, v := range vs {
		if v.Active {
			out = append(out, s.versionView(c, v))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"versions": out})
	return nil
}

func (s *Server) showVersion(w http.ResponseWriter, c *call) error {
	v, err := s.Registry.FindVersion(c.ctx(), c.r.PathValue("ds"), c.r.PathValue("v"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"version": s.versionView(c, v)})
	return nil
}

func (s *Server) showVersionByID(w http.ResponseWriter, c *call) error {
	v, err := s.Registry.Version(c.ctx(), c.r.PathValue("v"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"version": s.versionView(c, v)})
	return nil
}

func parameterView(v registry.Version, r wire.ParameterRule) map[string]any {
	out := map[string]any{"name": r.Name, "type": r.Type, "restart_required": r.RestartRequired,
		"datastore_version_id": v.ID, "apply": r.ApplyMethod()}
	if r.Min != nil {
		out["min"] = r.Min
	}
	if r.Max != nil {
		out["max"] = r.Max
	}
	if len(r.AllowedValues) > 0 {
		out["allowed_values"] = r.AllowedValues
	}
	if r.AllowEmpty {
		out["allow_empty"] = true
	}
	if r.Description != "" {
		out["description"] = r.Description
	}
	return out
}

func (s *Server) writeParameters(w http.ResponseWriter, v registry.Version) error {
	out := []map[string]any{}
	for _, r := range v.Rules {
		out = append(out, parameterView(v, r))
	}
	writeJSON(w, http.StatusOK, map[string]any{"configuration-parameters": out})
	return nil
}

func (s *Server) writeParameter(w http.ResponseWriter, v registry.Version, name string) error {
	r, ok := v.Rule(name)
	if !ok {
		return errorf(http.StatusNotFound, "datastore version %s %s has no configuration parameter %q", v.DatastoreName, v.Name, trunc(name))
	}
	writeJSON(w, http.StatusOK, parameterView(v, r))
	return nil
}

func (s *Server) listParameters(w http.ResponseWriter, c *call) error {
	v, err := s.Registry.FindVersion(c.ctx(), c.r.PathValue("ds"), c.r.PathValue("v"))
	if err != nil {
		return err
	}
	return s.writeParameters(w, v)
}

func (s *Server) showParameter(w http.ResponseWriter, c *call) error {
	v, err := s.Registry.FindVersion(c.ctx(), c.r.PathValue("ds"), c.r.PathValue("v"))
	if err != nil {
		return err
	}
	return s.writeParameter(w, v, c.r.PathValue("name"))
}

func (s *Server) listParametersByVersion(w http.ResponseWriter, c *call) error {
	v, err := s.Registry.Version(c.ctx(), c.r.PathValue("v"))
	if err != nil {
		return err
	}
	return s.writeParameters(w, v)
}

func (s *Server) showParameterByVersion(w http.ResponseWriter, c *call) error {
	v, err := s.Registry.Version(c.ctx(), c.r.PathValue("v"))
	if err != nil {
		return err
	}
	return s.writeParameter(w, v, c.r.PathValue("name"))
}

// resolveVersion finds a datastore version from a request's datastore
// type and version (names or ids).
func (s *Server) resolveVersion(c *call, ds, version string) (registry.Version, error) {
	if ds == "" {
		if version == "" {
			return registry.Version{}, errorf(http.StatusBadRequest, "datastore.type and datastore.version are required")
		}
		v, err := s.Registry.Version(c.ctx(), version)
		if errors.Is(err, registry.ErrNotFound) {
			return v, errorf(http.StatusBadRequest, "datastore.type is required unless datastore.version is a version id")
		}
		return v, err
	}
	return s.Registry.FindVersion(c.ctx(), ds, version)
}

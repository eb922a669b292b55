package api

import (
	"encoding/json"
	"errors"

	"net/http"
	"slices"
	"strings"
	"time"

	"strata/agent/wire"
	"strata/controller/imagestore"
	"strata/controller/registry"
)

// This file is Trove's management API for datastore versions and their
// configuration parameters (mgmt/datastore-versions,
// mgmt/datastores/versions/{id}/parameters), admin only, with Trove's
// request shapes — so `strata image publish` registers versions here and
// in a real Trove with the same client. strata's extensions: a version
// takes "port" and "boot_timeout"; a parameter may be of any rule type
// (integer, float, string, boolean) with "allowed_values", "apply" and
// "description", and its bounds are kept as written.

// strataHeader marks management answers as the strata controller's, so a
// publisher can tell it from a Trove (builder/publish.StrataHeader).
const strataHeader = "X-Strata-Controller"

// defaultPorts are the database ports of the managers strata knows, for
// a version registered without a port (as Trove's requests have none).
var defaultPorts = map[string]int{"mariadb": 3306, "mysql": 3306, "postgresql": 5432, "redis": 6379}

const defaultBootTimeout = 900 * time.Second

func (s *Server) mgmtRoutes(mux *http.ServeMux, p string) {
	s.route(mux, "GET "+p+"/mgmt/datastore-versions", s.admin(s.mgmtListVersions))
	s.route(mux, "POST "+p+"/mgmt/datastore-versions", s.admin(s.mgmtCreateVersion))
	s.route(mux, "GET "+p+"/mgmt/datastore-versions/{id}", s.admin(s.mgmtShowVersion))
	s.route(mux, "PATCH "+p+"/mgmt/datastore-versions/{id}", s.admin(s.mgmtEditVersion))
	s.route(mux, "GET "+p+"/mgmt/datastore-versions/{id}/flavors", s.admin(s.mgmtVersionFlavors))
	s.route(mux, "POST "+p+"/mgmt/datastore-versions/{id}/flavors", s.admin(s.mgmtAddVersionFlavors))
	s.route(mux, "DELETE "+p+"/mgmt/datastore-versions/{id}/flavors/{flavor}", s.admin(s.mgmtDeleteVersionFlavor))
	s.route(mux, "GET "+p+"/mgmt/datastores/versions/{id}/parameters", s.admin(s.mgmtListParameters))
	s.route(mux, "POST "+p+"/mgmt/datastores/versions/{id}/parameters", s.admin(s.mgmtCreateParameter))
	s.route(mux, "GET "+p+"/mgmt/datastores/versions/{id}/parameters/{name}", s.admin(s.mgmtShowParameter))
	s.route(mux, "PUT "+p+"/mgmt/datastores/versions/{id}/parameters/{name}", s.admin(s.mgmtUpdateParameter))
	s.route(mux, "DELETE "+p+"/mgmt/datastores/versions/{id}/parameters/{name}", s.admin(s.mgmtDeleteParameter))
	// Quotas (limits.go): a project may read its own.
	s.route(mux, "GET "+p+"/mgmt/quotas/{id}", s.mgmtShowQuotas)
	s.route(mux, "PUT "+p+"/mgmt/quotas/{id}", s.admin(s.mgmtUpdateQuotas))
	// Instances of every project (mgmt_instances.go).
	s.route(mux, "GET "+p+"/mgmt/instances", s.admin(s.mgmtListInstances))
	s.route(mux, "GET "+p+"/mgmt/instances/{id}", s.admin(s.mgmtShowInstance))
	s.route(mux, "POST "+p+"/mgmt/instances/{id}/action", s.admin(s.mgmtInstanceAction))
}

// admin wraps a management route: admin role only, answers marked.
func (s *Server) admin(h handler) handler {
	return func(w http.ResponseWriter, c *call) error {
		w.Header().Set(strataHeader, "1")
		if !c.principal.IsAdmin() {
			return errorf(http.StatusForbidden, "the management API needs the admin role")
		}
		return h(w, c)
	}
}

func (s *Server) mgmtVersionView(v registry.Version, defaultID string) map[string]any {
	packages := v.Packages
	if packages == nil {
		packages = []string{}
	}
	return map[string]any{
		"id": v.ID, "name": v.Name, "version": v.Name, "datastore_id": v.DatastoreID, "datastore_name": v.DatastoreName,
		"datastore_manager": v.Manager, "image": v.ImageID, "image_tags": []string{}, "packages": packages,
		"active": v.Active, "default": v.ID == defaultID,
		"port": v.Port, "boot_timeout": int(v.BootTimeout / time.Second), "root_on_create": v.RootOnCreate,
		"auth_plugin": authPluginOf(v),
	}
}

func (s *Server) mgmtListVersions(w http.ResponseWriter, c *call) error {
	out := []map[string]any{}
	all, err := s.Registry.Datastores(c.ctx())
	if err != nil {
		return err
	}
	for _, d := range all {
		vs, err := s.Registry.Versions(c.ctx(), d.ID)
		if err != nil {
			return err
		}
		for _, v := range vs {
			out = append(out, s.mgmtVersionView(v, d.DefaultVersionID))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"versions": out})
	return nil
}

func (s *Server) mgmtShowVersion(w http.ResponseWriter, c *call) error {
	v, err := s.Registry.Version(c.ctx(), c.r.PathValue("id"))
	if err != nil {
		return err
	}
	d, err := s.Registry.Datastore(c.ctx(), v.DatastoreID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"version": s.mgmtVersionView(v, d.DefaultVersionID)})
	return nil
}

// versionFields are the writable fields of a version, in create and edit.
type versionFields struct {
	Name             string   `json:"name"`
	DatastoreName    string   `json:"datastore_name"`
	DatastoreManager string   `json:"datastore_manager"`
	Packages         []string `json:"packages"`
	Image            string   `json:"image"`
	ImageTags        []string `json:"image_tags"`
	Active           *bool    `json:"active"`
	Default          *bool    `json:"default"`
	Version          string   `json:"version"`
	Port             *int     `json:"port"`
	BootTimeout      *int     `json:"boot_timeout"`
	// RootOnCreate is Trove's root_on_create (a strata extension of the
	// mgmt API: Trove reads it from its configuration file).
	RootOnCreate *bool `json:"root_on_create"`
	// AuthPlugin is the MariaDB authentication plugin of the version's
	// accounts (a strata extension): mysql_native_password or ed25519;
	// "" puts back the default.
	AuthPlugin *string `json:"auth_plugin"`
}

// authPluginOf is the plugin a version's accounts get, as the view shows
// it: the agent's default spelled out for MariaDB, null for engines
// without a choice.
func authPluginOf(v registry.Version) any {
	switch {
	case v.AuthPlugin != "":
		return v.AuthPlugin
	case v.Manager == "mariadb" || v.Manager == "mysql":
		return wire.AuthPluginNative
	}
	return nil
}

// checkImage answers as Trove does when the image is not in the image
// service.
func (s *Server) checkImage(c *call, id string) error {
	if _, err := s.Lifecycle.Images.Get(c.ctx(), id); errors.Is(err, imagestore.ErrNotFound) {
		return errorf(http.StatusBadRequest, "Image %s cannot be found.", trunc(id))
	} else if err != nil {
		return err
	}
	return nil
}

func (s *Server) mgmtCreateVersion(w http.ResponseWriter, c *call) error {
	var req struct {
		Version *versionFields `json:"version"`
	}
	if err := decode(c, &req); err != nil {
		return err
	}
	f := req.Version
	switch {
	case f == nil:
		return errorf(http.StatusBadRequest, "version is required")
	case f.Name == "" || f.DatastoreName == "" || f.DatastoreManager == "" || f.Active == nil:
		return errorf(http.StatusBadRequest, "version.name, version.datastore_name, version.datastore_manager and version.active are required")
	case len(f.ImageTags) > 0:
		return errorf(http.StatusBadRequest, "image_tags: strata registers a version by image id; give version.image")
	case f.Image == "":
		return errorf(http.StatusBadRequest, "Image must be specified.")
	case f.Version != "" && f.Version != f.Name:
		return errorf(http.StatusBadRequest, "version.version %q: strata keys versions by name; leave it out or equal to name", trunc(f.Version))
	}
	if _, err := s.Registry.FindVersion(c.ctx(), f.DatastoreName, f.Name); err == nil {
		return errorf(http.StatusBadRequest, "The datastore version '%s(%s)' already exists.", trunc(f.Name), trunc(f.Name))
	} else if !errors.Is(err, registry.ErrNotFound) {
		return err
	}
	if err := s.checkImage(c, f.Image); err != nil {
		return err
	}
	spec := registry.VersionSpec{Datastore: f.DatastoreName, Name: f.Name, Manager: f.DatastoreManager, ImageID: f.Image,
		Packages: f.Packages, Active: *f.Active, Port: defaultPorts[f.DatastoreManager], BootTimeout: defaultBootTimeout}
	if f.Port != nil {
		spec.Port = *f.Port
	}
	if f.BootTimeout != nil {
		spec.BootTimeout = time.Duration(*f.BootTimeout) * time.Second
	}
	if f.RootOnCreate != nil {
		spec.RootOnCreate = *f.RootOnCreate
	}
	if f.AuthPlugin != nil {
		spec.AuthPlugin = *f.AuthPlugin
	}
	if spec.Port == 0 {
		return errorf(http.StatusBadRequest, "version.port is required for manager %q (strata knows the ports of %s)", trunc(f.DatastoreManager), knownManagers())
	}
	if _, err := s.Registry.UpdateDatastore(c.ctx(), f.DatastoreName, ""); err != nil {
		return err
	}
	v, err := s.Registry.UpdateVersion(c.ctx(), spec)
	if err != nil {
		return err
	}
	if f.Default != nil && *f.Default {
		if _, err := s.Registry.UpdateDatastore(c.ctx(), f.DatastoreName, v.ID); err != nil {
			return err
		}
	}
	s.log().Info("datastore version registered", "datastore", v.DatastoreName, "version", v.Name, "id", v.ID, "image", v.ImageID, "by", c.principal.UserName)
	return accepted(w)
}

func (s *Server) mgmtEditVersion(w http.ResponseWriter, c *call) error {
	v, err := s.Registry.Version(c.ctx(), c.r.PathValue("id"))
	if err != nil {
		return err
	}
	var f versionFields
	if err := decode(c, &f); err != nil {
		return err
	}
	switch {
	case f.Name != "" && f.Name != v.Name:
		return errorf(http.StatusBadRequest, "name: renaming a version is not supported; register a new one")
	case f.DatastoreName != "" || f.Version != "":
		return errorf(http.StatusBadRequest, "datastore_name and version cannot be edited")
	case len(f.ImageTags) > 0:
		return errorf(http.StatusBadRequest, "image_tags: strata registers a version by image id; give image")
	}
	spec := registry.VersionSpec{Datastore: v.DatastoreID, Name: v.Name, Manager: v.Manager, ImageID: v.ImageID,
		Packages: v.Packages, Active: v.Active, Port: v.Port, BootTimeout: v.BootTimeout, RootOnCreate: v.RootOnCreate,
		AuthPlugin: v.AuthPlugin}
	if f.DatastoreManager != "" {
		spec.Manager = f.DatastoreManager
	}
	if f.Image != "" && f.Image != v.ImageID {
		if err := s.checkImage(c, f.Image); err != nil {
			return err
		}
		spec.ImageID = f.Image
	}
	if f.Packages != nil {
		spec.Packages = f.Packages
	}
	if f.Active != nil {
		spec.Active = *f.Active
	}
	if f.Port != nil {
		spec.Port = *f.Port
	}
	if f.BootTimeout != nil {
		spec.BootTimeout = time.Duration(*f.BootTimeout) * time.Second
	}
	if f.RootOnCreate != nil {
		spec.RootOnCreate = *f.RootOnCreate
	}
	if f.AuthPlugin != nil {
		spec.AuthPlugin = *f.AuthPlugin
	}
	d, err := s.Registry.Datastore(c.ctx(), v.DatastoreID)
	if err != nil {
		return err
	}
	if f.Default != nil && !*f.Default && d.DefaultVersionID == v.ID {
		return errorf(http.StatusBadRequest, "version %s is the default of %s; make another version the default instead", v.Name, d.Name)
	}
	if _, err := s.Registry.UpdateVersion(c.ctx(), spec); err != nil {
		return err
	}
	if f.Default != nil && *f.Default {
		if _, err := s.Registry.UpdateDatastore(c.ctx(), d.Name, v.ID); err != nil {
			return err
		}
	}
	s.log().Info("datastore version updated", "datastore", v.DatastoreName, "version", v.Name, "id", v.ID, "image", spec.ImageID, "by", c.principal.UserName)
	return accepted(w)
}

func knownManagers() string {
	names := make([]string, 0, len(defaultPorts))
	for k := range defaultPorts {
		names = append(names, k)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// mgmtParameterView is Trove's mgmt parameter shape (type, min_size,
// max_size) plus strata's rule fields.
func mgmtParameterView(v registry.Version, r wire.ParameterRule) map[string]any {
	out := map[string]any{"name": r.Name, "datastore_version_id": v.ID, "restart_required": r.RestartRequired,
		"type": r.Type, "apply": r.ApplyMethod()}
	if r.Min != nil {
		out["min_size"] = r.Min
	}
	if r.Max != nil {
		out["max_size"] = r.Max
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

func (s *Server) mgmtListParameters(w http.ResponseWriter, c *call) error {
	v, err := s.Registry.Version(c.ctx(), c.r.PathValue("id"))
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for _, r := range v.Rules {
		out = append(out, mgmtParameterView(v, r))
	}
	writeJSON(w, http.StatusOK, map[string]any{"configuration-parameters": out})
	return nil
}

func (s *Server) mgmtShowParameter(w http.ResponseWriter, c *call) error {
	v, err := s.Registry.Version(c.ctx(), c.r.PathValue("id"))
	if err != nil {
		return err
	}
	r, ok := v.Rule(c.r.PathValue("name"))
	if !ok {
		return errorf(http.StatusNotFound, "datastore version %s %s has no configuration parameter %q", v.DatastoreName, v.Name, trunc(c.r.PathValue("name")))
	}
	writeJSON(w, http.StatusOK, mgmtParameterView(v, r))
	return nil
}

// parameterRequest is Trove's {"configuration-parameter": {...}}:
// restart_required 0/1 (or a boolean), bounds as strings or numbers.
type parameterRequest struct {
	Parameter *struct {
		Name            string          `json:"name"`
		DataType        string          `json:"data_type"`
		RestartRequired json.RawMessage `json:"restart_required"`
		MinSize         json.RawMessage `json:"min_size"`
		MaxSize         json.RawMessage `json:"max_size"`
		AllowedValues   []string        `json:"allowed_values"`
		AllowEmpty      bool            `json:"allow_empty"`
		Apply           string          `json:"apply"`
		Description     string          `json:"description"`
	} `json:"configuration-parameter"`
}

func (req parameterRequest) rule() (wire.ParameterRule, error) {
	p := req.Parameter
	if p == nil {
		return wire.ParameterRule{}, errorf(http.StatusBadRequest, "configuration-parameter is required")
	}
	if p.Name == "" || p.DataType == "" || len(p.RestartRequired) == 0 {
		return wire.ParameterRule{}, errorf(http.StatusBadRequest, "configuration-parameter: name, data_type and restart_required are required")
	}
	r := wire.ParameterRule{Name: p.Name, Type: p.DataType, AllowedValues: p.AllowedValues, AllowEmpty: p.AllowEmpty, Apply: p.Apply, Description: p.Description}
	switch strings.TrimSpace(string(p.RestartRequired)) {
	case "1", "true":
		r.RestartRequired = true
	case "0", "false":
	default:
		return r, errorf(http.StatusBadRequest, "configuration-parameter.restart_required: want 0 or 1")
	}
	for _, b := range []struct {
		key string
		raw json.RawMessage
		dst **json.Number
	}{{"min_size", p.MinSize, &r.Min}, {"max_size", p.MaxSize, &r.Max}} {
		text := strings.TrimSpace(string(b.raw))
		if text == "" || text == "null" {
			continue
		}
		if strings.HasPrefix(text, `"`) {
			if err := json.Unmarshal(b.raw, &text); err != nil {
				return r, errorf(http.StatusBadRequest, "configuration-parameter.%s: %v", b.key, err)
			}
		}
		n := json.Number(strings.TrimSpace(text))
		if _, err := n.Float64(); err != nil {
			return r, errorf(http.StatusBadRequest, "configuration-parameter.%s %q is not a number", b.key, trunc(text))
		}
		*b.dst = &n
	}
	return r, nil
}

func (s *Server) mgmtCreateParameter(w http.ResponseWriter, c *call) error {
	v, err := s.Registry.Version(c.ctx(), c.r.PathValue("id"))
	if err != nil {
		return err
	}
	var req parameterRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	r, err := req.rule()
	if err != nil {
		return err
	}
	if _, ok := v.Rule(r.Name); ok {
		return errorf(http.StatusBadRequest, "%s parameter already exists for datastore version %s.", r.Name, v.ID)
	}
	if v, err = s.Registry.SetRule(c.ctx(), v.ID, r); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, mgmtParameterView(v, r))
	return nil
}

func (s *Server) mgmtUpdateParameter(w http.ResponseWriter, c *call) error {
	v, err := s.Registry.Version(c.ctx(), c.r.PathValue("id"))
	if err != nil {
		return err
	}
	var req parameterRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	name := c.r.PathValue("name")
	if req.Parameter != nil && req.Parameter.Name == "" {
		req.Parameter.Name = name
	}
	r, err := req.rule()
	if err != nil {
		return err
	}
	if r.Name != name {
		return errorf(http.StatusBadRequest, "configuration-parameter.name %q differs from the URL's %q", trunc(r.Name), trunc(name))
	}
	if _, ok := v.Rule(name); !ok {
		return errorf(http.StatusNotFound, "datastore version %s %s has no configuration parameter %q", v.DatastoreName, v.Name, trunc(name))
	}
	if v, err = s.Registry.SetRule(c.ctx(), v.ID, r); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, mgmtParameterView(v, r))
	return nil
}

func (s *Server) mgmtDeleteParameter(w http.ResponseWriter, c *call) error {
	if _, err := s.Registry.DeleteRule(c.ctx(), c.r.PathValue("id"), c.r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

package api

import (
	"net/http"

	"strata/controller/registry"
)

func flavorView(c *call, f registry.Flavor) map[string]any {
	return map[string]any{"id": f.ID, "str_id": f.ID, "name": f.Name, "ram": f.RAMMB, "vcpus": f.VCPUs,
		"disk": f.DiskGB, "ephemeral": 0, "links": c.links("/flavors/" + f.ID)}
}

// listFlavors also answers /datastores/{ds}/versions/{v}/flavors: the
// version's flavor list (mgmt .../flavors, strata datastore version
// flavor add), or every flavor when it has none, as Trove.
func (s *Server) listFlavors(w http.ResponseWriter, c *call) error {
	fs, err := s.Registry.Flavors(c.ctx())
	if ds := c.r.PathValue("ds"); ds != "" {
		// A version's flavors: its flavor list, or every flavor when it
		// has none.
		v, verr := s.Registry.FindVersion(c.ctx(), ds, c.r.PathValue("v"))
		if verr != nil {
			return verr
		}
		fs, err = s.Registry.AllowedFlavors(c.ctx(), v.ID)
	}
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for _, f := range fs {
		out = append(out, flavorView(c, f))
	}
	writeJSON(w, http.StatusOK, map[string]any{"flavors": out})
	return nil
}

func (s *Server) showFlavor(w http.ResponseWriter, c *call) error {
	f, err := s.Registry.Flavor(c.ctx(), c.r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"flavor": flavorView(c, f)})
	return nil
}

// Per-version flavor lists. Trove edits them with trove-manage
// datastore_version_flavor_add/delete on its host and has no REST route;
// these mgmt routes (marked as strata's) and `strata datastore version
// flavor add|delete|list` do the same.

func (s *Server) mgmtVersionFlavors(w http.ResponseWriter, c *call) error {
	v, err := s.Registry.Version(c.ctx(), c.r.PathValue("id"))
	if err != nil {
		return err
	}
	return s.writeVersionFlavors(w, c, v.ID)
}

func (s *Server) writeVersionFlavors(w http.ResponseWriter, c *call, versionID string) error {
	fs, err := s.Registry.VersionFlavors(c.ctx(), versionID)
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for _, f := range fs {
		out = append(out, flavorView(c, f))
	}
	writeJSON(w, http.StatusOK, map[string]any{"flavors": out})
	return nil
}

// mgmtAddVersionFlavors takes {"flavors": ["id or name", ...]} and answers
// the version's list.
func (s *Server) mgmtAddVersionFlavors(w http.ResponseWriter, c *call) error {
	var req struct {
		Flavors *[]string `json:"flavors"`
	}
	if err := decode(c, &req); err != nil {
		return err
	}
	if req.Flavors == nil || len(*req.Flavors) == 0 {
		return errorf(http.StatusBadRequest, `flavors: name at least one flavor (id or name): {"flavors": ["strata.small"]}`)
	}
	if len(*req.Flavors) > 100 {
		return errorf(http.StatusBadRequest, "flavors: %d given, at most 100 at once", len(*req.Flavors))
	}
	v, err := s.Registry.Version(c.ctx(), c.r.PathValue("id"))
	if err != nil {
		return err
	}
	if _, err := s.Registry.AddVersionFlavors(c.ctx(), v.DatastoreID, v.ID, *req.Flavors); err != nil {
		return err
	}
	return s.writeVersionFlavors(w, c, v.ID)
}

func (s *Server) mgmtDeleteVersionFlavor(w http.ResponseWriter, c *call) error {
	v, err := s.Registry.Version(c.ctx(), c.r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := s.Registry.DeleteVersionFlavor(c.ctx(), v.DatastoreID, v.ID, c.r.PathValue("flavor")); err != nil {
		return err
	}
	return accepted(w)
}

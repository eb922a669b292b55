package api

import (
	"net/http"

	"strata/controller/registry"
)

func flavorView(c *call, f registry.Flavor) map[string]any {
	return map[string]any{"id": f.ID, "str_id": f.ID, "name": f.Name, "ram": f.RAMMB, "vcpus": f.VCPUs,
		"disk": f.DiskGB, "ephemeral": 0, "links": c.links("/flavors/" + f.ID)}
}

// listFlavors also answers /datastores/{ds}/versions/{v}/flavors: every
// flavor fits every version here.
func (s *Server) listFlavors(w http.ResponseWriter, c *call) error {
	if ds := c.r.PathValue("ds"); ds != "" {
		if _, err := s.Registry.FindVersion(c.ctx(), ds, c.r.PathValue("v")); err != nil {
			return err
		}
	}
	fs, err := s.Registry.Flavors(c.ctx())
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

package api

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"strata/controller/auth"
	"strata/controller/quotas"
)

// This file is Trove's limits and quotas: GET /limits (the project's
// absolute limits with their usage, and the API's rate limits as the
// caller has used them), the management API's GET/PUT
// /mgmt/quotas/{project} (`openstack database quota show/update`), and the
// per-user rate limit every authenticated route takes from.

// rateVerbs are the verbs rate limits are kept for, in Trove's order.
var rateVerbs = []string{"POST", "PUT", "DELETE", "GET"}

// rateVerb folds a method into its bucket: PATCH is an update (PUT),
// anything else unusual counts as GET.
func rateVerb(method string) string {
	switch method {
	case "POST", "PUT", "DELETE":
		return method
	case "PATCH":
		return "PUT"
	}
	return "GET"
}

func rateKey(p auth.Principal, verb string) string {
	return verb + "|" + p.ProjectID + "|" + p.UserID
}

// takeRate takes one request of the caller's from its verb's bucket.
func (s *Server) takeRate(p auth.Principal, method string) (bool, time.Duration) {
	if s.limiter == nil {
		return true, 0
	}
	return s.limiter.Take(rateKey(p, rateVerb(method)))
}

func (s *Server) quotas() *quotas.Quotas {
	if s.Lifecycle == nil {
		return nil
	}
	return s.Lifecycle.Quotas
}

// listLimits answers GET /limits as Trove does: first the ABSOLUTE entry
// (max_<resource>, and strata's used_<resource> beside it), then one
// entry per rate-limited verb.
func (s *Server) listLimits(w http.ResponseWriter, c *call) error {
	q := s.quotas()
	if q == nil {
		return errorf(http.StatusNotImplemented, "this controller keeps no quotas")
	}
	limits, err := q.Limits(c.ctx(), s.DB, c.project)
	if err != nil {
		return err
	}
	used, err := quotas.Usage(c.ctx(), s.DB, c.project)
	if err != nil {
		return err
	}
	abs := map[string]any{"verb": "ABSOLUTE"}
	for _, r := range quotas.Resources {
		abs["max_"+string(r)] = limits[r]
		abs["used_"+string(r)] = used[r]
	}
	out := []map[string]any{abs}
	if s.limiter != nil {
		for _, verb := range rateVerbs {
			remaining, full := s.limiter.Remaining(rateKey(c.principal, verb))
			if full.IsZero() {
				full = time.Now()
			}
			out = append(out, map[string]any{"verb": verb, "uri": "*", "regex": ".*", "value": s.APIRate, "unit": "MINUTE",
				"remaining": remaining, "nextAvailable": full.UTC().Format("2006-01-02T15:04:05Z")})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"limits": out})
	return nil
}

// projectPattern bounds a project id in a quota URL: Keystone's are 32 hex
// digits, strata's embedded identity's UUIDs.
var projectPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func quotaProject(c *call) (string, error) {
	id := c.r.PathValue("id")
	if !projectPattern.MatchString(id) {
		return "", errorf(http.StatusBadRequest, "project id %q: want 1 to 64 letters, digits, '-' or '_'", trunc(id))
	}
	return id, nil
}

// mgmtShowQuotas answers `openstack database quota show`: each resource
// with its use and limit. As in Trove, a project's own members may read
// its quotas; other projects' need the admin role.
func (s *Server) mgmtShowQuotas(w http.ResponseWriter, c *call) error {
	w.Header().Set(strataHeader, "1")
	id, err := quotaProject(c)
	if err != nil {
		return err
	}
	if id != c.project && !c.principal.IsAdmin() {
		return errorf(http.StatusForbidden, "the quotas of another project need the admin role")
	}
	q := s.quotas()
	if q == nil {
		return errorf(http.StatusNotImplemented, "this controller keeps no quotas")
	}
	limits, err := q.Limits(c.ctx(), s.DB, id)
	if err != nil {
		return err
	}
	used, err := quotas.Usage(c.ctx(), s.DB, id)
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for _, r := range quotas.Resources {
		out = append(out, map[string]any{"resource": string(r), "in_use": used[r], "reserved": 0, "limit": limits[r]})
	}
	writeJSON(w, http.StatusOK, map[string]any{"quotas": out})
	return nil
}

// mgmtUpdateQuotas answers `openstack database quota update`: the body
// names resources and their new limits (-1: unlimited; null: unchanged);
// the answer holds the limits set. Limits below current usage are
// accepted, as in Trove: they refuse what comes next, they delete nothing.
func (s *Server) mgmtUpdateQuotas(w http.ResponseWriter, c *call) error {
	id, err := quotaProject(c)
	if err != nil {
		return err
	}
	q := s.quotas()
	if q == nil {
		return errorf(http.StatusNotImplemented, "this controller keeps no quotas")
	}
	var req struct {
		Quotas *map[string]*int64 `json:"quotas"`
	}
	if err := decode(c, &req); err != nil {
		return err
	}
	if req.Quotas == nil {
		return errorf(http.StatusBadRequest, "quotas is required: {\"quotas\": {\"instances\": N, \"volumes\": GB, \"backups\": N}}")
	}
	set := quotas.Limits{}
	for name, v := range *req.Quotas {
		switch {
		case !quotas.Known(name):
			return errorf(http.StatusBadRequest, "Quota resources %s are not known (known: instances, volumes, backups).", strconv.Quote(trunc(name)))
		case v == nil:
			continue
		case *v < quotas.Unlimited:
			return errorf(http.StatusBadRequest, "Quota limit '%d' for %s must be greater than or equal to -1.", *v, name)
		}
		set[quotas.Resource(name)] = *v
	}
	if len(set) == 0 {
		return errorf(http.StatusBadRequest, "quotas names no resource to change")
	}
	all, err := q.Set(c.ctx(), id, set)
	if err != nil {
		return err
	}
	out := map[string]any{}
	for r := range set {
		out[string(r)] = all[r]
	}
	s.log().Info("quotas set", "project", id, "quotas", fmt.Sprint(set), "by", c.principal.UserName)
	writeJSON(w, http.StatusOK, map[string]any{"quotas": out})
	return nil
}

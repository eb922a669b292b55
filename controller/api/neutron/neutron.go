// Package neutron serves, in the embedded mode, the one part of the
// Neutron v2.0 API clients use to find a network by name: listing and
// showing networks. The networks are the compute driver's own (the local
// driver's blocks of loopback addresses), so that `openstack network
// list` shows them and tools that look a network up by name before
// passing its id in an instance's nics — the tempest plugin does — find
// it. Listed in the Keystone catalog as the "network" service.
//
// It is not a Neutron: no subnets, ports, routers or security groups, and
// nothing can be created. In OpenStack mode it is not mounted; the real
// Neutron answers.
package neutron

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"strata/controller/auth"
	"strata/controller/compute"
)

// Prefix is where the network API lives below the controller's root (the
// catalog lists BASE+Prefix).
const Prefix = "/network"

// Handler serves Prefix/v2.0/networks.
type Handler struct {
	// Networks lists the compute driver's networks.
	Networks func(ctx context.Context) ([]compute.Network, error)
	Auth     auth.Authenticator
	Logger   *slog.Logger
}

// Register mounts the routes on mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+Prefix, h.versions)
	mux.HandleFunc("GET "+Prefix+"/{$}", h.versions)
	mux.HandleFunc("GET "+Prefix+"/v2.0/networks", h.authed(h.list))
	mux.HandleFunc("GET "+Prefix+"/v2.0/networks/{id}", h.authed(h.show))
}

func base(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + Prefix
}

func (h *Handler) versions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"versions": []any{map[string]any{
		"id": "v2.0", "status": "CURRENT", "links": []map[string]string{{"rel": "self", "href": base(r) + "/v2.0/"}}}}})
}

func (h *Handler) log() *slog.Logger {
	if h.Logger == nil {
		return slog.Default()
	}
	return h.Logger
}

// authed needs a valid token and writes Neutron's error shape.
func (h *Handler) authed(next func(w http.ResponseWriter, r *http.Request, nets []compute.Network) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, err := h.Auth.Authenticate(r.Context(), r.Header.Get("X-Auth-Token"))
		if errors.Is(err, auth.ErrUnauthorized) {
			writeError(w, http.StatusUnauthorized, "Unauthorized", "The request you have made requires authentication.")
			return
		}
		if err != nil {
			h.log().Error("authenticating a network request failed", "err", err)
			writeError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "the identity service could not check the token; try again")
			return
		}
		nets, err := h.Networks(r.Context())
		if err == nil {
			err = next(w, r, nets)
		}
		if err != nil {
			h.log().Error("network request failed", "path", r.URL.Path, "err", err)
			writeError(w, http.StatusInternalServerError, "InternalError", "the networks could not be listed; the controller's log has the details")
		}
	}
}

// view is a network as Neutron shows one. The networks are the
// controller's, shared by every project.
func view(n compute.Network) map[string]any {
	return map[string]any{"id": n.ID, "name": n.Name, "status": "ACTIVE", "admin_state_up": true, "shared": true,
		"router:external": false, "subnets": []string{}, "tenant_id": "", "project_id": "", "tags": []string{},
		"description": "strata compute driver network " + strings.Join(n.CIDRs, ", "), "is_default": n.Default}
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request, nets []compute.Network) error {
	q := r.URL.Query()
	out := []map[string]any{}
	for _, n := range nets {
		if (q.Has("name") && q.Get("name") != n.Name) || (q.Has("id") && q.Get("id") != n.ID) {
			continue
		}
		out = append(out, view(n))
	}
	writeJSON(w, http.StatusOK, map[string]any{"networks": out})
	return nil
}

func (h *Handler) show(w http.ResponseWriter, r *http.Request, nets []compute.Network) error {
	id := r.PathValue("id")
	for _, n := range nets {
		if n.ID == id {
			writeJSON(w, http.StatusOK, map[string]any{"network": view(n)})
			return nil
		}
	}
	if len(id) > 80 {
		id = id[:80] + "..."
	}
	writeError(w, http.StatusNotFound, "NetworkNotFound", "Network "+id+" could not be found.")
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// writeError uses Neutron's error shape.
func writeError(w http.ResponseWriter, code int, typ, msg string) {
	writeJSON(w, code, map[string]any{"NeutronError": map[string]any{"type": typ, "message": msg, "detail": ""}})
}

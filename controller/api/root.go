package api

import (
	"io"
	"net/http"
	"strings"

	"strata/agent/wire"
	"strata/controller/lifecycle"
)

func (s *Server) rootStatus(w http.ResponseWriter, c *call) error {
	var st wire.IsRootEnabledResult
	if _, err := s.guestQuery(c, wire.KindIsRootEnabled, nil, &st); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"rootEnabled": st.Enabled})
	return nil
}

// enableRoot answers POST /instances/{id}/root, with an optional body
// {"password": "..."}; the password is returned once and not kept.
func (s *Server) enableRoot(w http.ResponseWriter, c *call) error {
	var args wire.EnableRootArgs
	body, err := io.ReadAll(c.r.Body)
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(body)) != "" {
		c.r.Body = io.NopCloser(strings.NewReader(string(body)))
		var req struct {
			Password *string `json:"password"`
		}
		if err := decode(c, &req); err != nil {
			return err
		}
		if req.Password != nil {
			if err := lifecycle.CheckPassword(*req.Password); err != nil {
				return err
			}
			args.Password = *req.Password
		}
	}
	var creds wire.RootCredentials
	in, err := s.guestQuery(c, wire.KindEnableRoot, args, &creds)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": map[string]string{"name": creds.Name, "password": creds.Password}})
	s.syncUsers(w, c, in, wire.KindEnableRoot)
	return nil
}

func (s *Server) disableRoot(w http.ResponseWriter, c *call) error {
	in, err := s.guestQuery(c, wire.KindDisableRoot, nil, nil)
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	s.syncUsers(w, c, in, wire.KindDisableRoot)
	return nil
}

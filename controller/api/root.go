package api

import (
	"io"
	"net/http"
	"strings"

	"strata/agent/wire"
	"strata/controller/lifecycle"
)

func (s *Server) rootStatus(w http.ResponseWriter, c *call) error {
	in, err := s.guest(c)
	if err != nil {
		return err
	}
	res, err := s.guestCall(c, in, wire.KindIsRootEnabled, nil)
	if err != nil {
		return err
	}
	var st wire.IsRootEnabledResult
	if err := res.Decode(&st); err != nil {
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
	in, err := s.guest(c)
	if err != nil {
		return err
	}
	res, err := s.guestCall(c, in, wire.KindEnableRoot, args)
	if err != nil {
		return err
	}
	var creds wire.RootCredentials
	if err := res.Decode(&creds); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": map[string]string{"name": creds.Name, "password": creds.Password}})
	return nil
}

func (s *Server) disableRoot(w http.ResponseWriter, c *call) error {
	in, err := s.guest(c)
	if err != nil {
		return err
	}
	if _, err := s.guestCall(c, in, wire.KindDisableRoot, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

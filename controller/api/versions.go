package api

import "net/http"

func (s *Server) versionDoc(r *http.Request) map[string]any {
	return map[string]any{
		"id": "v1.0", "status": "CURRENT", "updated": "2012-08-01T00:00:00Z",
		"links": []map[string]string{{"href": s.base(r) + "/v1.0/", "rel": "self"}},
	}
}

// versions answers GET / with the API versions (Trove's shape).
func (s *Server) versions(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"versions": []any{s.versionDoc(r)}})
	return nil
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"version": s.versionDoc(r)})
	return nil
}

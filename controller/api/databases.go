package api

import (
	"net/http"

	"strata/agent/wire"
	"strata/controller/lifecycle"
)

func databaseView(d wire.Database) map[string]any {
	out := map[string]any{"name": d.Name}
	if d.CharacterSet != "" {
		out["character_set"] = d.CharacterSet
	}
	if d.Collation != "" {
		out["collate"] = d.Collation
	}
	return out
}

func (s *Server) listDatabases(w http.ResponseWriter, c *call) error {
	limit, marker, err := page(c)
	if err != nil {
		return err
	}
	var list wire.ListDatabasesResult
	in, err := s.guestQuery(c, wire.KindListDatabases, nil, &list)
	if err != nil {
		return err
	}
	writePage(w, c, "databases", "/instances/"+in.ID+"/databases", list.Databases,
		func(d wire.Database) string { return d.Name }, databaseView, limit, marker)
	return nil
}

func checkDatabases(dbs []databaseReq) ([]wire.Database, error) {
	if len(dbs) == 0 {
		return nil, errorf(http.StatusBadRequest, "databases: give at least one database")
	}
	if len(dbs) > wire.MaxItemsPerOp {
		return nil, errorf(http.StatusBadRequest, "databases: at most %d at once", wire.MaxItemsPerOp)
	}
	var out []wire.Database
	for _, d := range dbs {
		if err := lifecycle.CheckDatabaseName(d.Name); err != nil {
			return nil, err
		}
		if err := lifecycle.CheckCharset("character_set", d.CharacterSet); err != nil {
			return nil, err
		}
		if err := lifecycle.CheckCharset("collate", d.Collate); err != nil {
			return nil, err
		}
		out = append(out, d.wire())
	}
	return out, nil
}

func (s *Server) createDatabases(w http.ResponseWriter, c *call) error {
	var req struct {
		Databases []databaseReq `json:"databases"`
	}
	if err := decode(c, &req); err != nil {
		return err
	}
	dbs, err := checkDatabases(req.Databases)
	if err != nil {
		return err
	}
	return s.guestCast(w, c, wire.KindCreateDatabases, wire.CreateDatabasesArgs{Databases: dbs})
}

func (s *Server) deleteDatabase(w http.ResponseWriter, c *call) error {
	name := c.r.PathValue("db")
	if err := lifecycle.CheckDatabaseName(name); err != nil {
		return err
	}
	return s.guestCast(w, c, wire.KindDeleteDatabase, wire.DeleteDatabaseArgs{Name: name})
}

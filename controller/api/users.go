package api

import (
	"fmt"
	"net/http"
	"strings"

	"strata/agent/wire"
	"strata/controller/lifecycle"
)

func userView(u wire.User) map[string]any {
	dbs := []map[string]string{}
	for _, d := range u.Databases {
		dbs = append(dbs, map[string]string{"name": d})
	}
	host := u.Host
	if host == "" {
		host = "%"
	}
	return map[string]any{"name": u.Name, "host": host, "databases": dbs}
}

// userRef parses the {user} path segment: "name" or "name@host" (the
// client quotes it; the mux has unquoted it).
func userRef(c *call) (wire.UserRef, error) {
	raw := c.r.PathValue("user")
	name, host, _ := strings.Cut(raw, "@")
	if err := lifecycle.CheckUserName(name, host); err != nil {
		return wire.UserRef{}, err
	}
	return wire.UserRef{Name: name, Host: host}, nil
}

func (s *Server) listUsers(w http.ResponseWriter, c *call) error {
	limit, marker, err := page(c)
	if err != nil {
		return err
	}
	var list wire.ListUsersResult
	in, err := s.guestQuery(c, wire.KindListUsers, nil, &list)
	if err != nil {
		return err
	}
	writePage(w, c, "users", "/instances/"+in.ID+"/users", list.Users,
		func(u wire.User) string { return u.Name + "@" + u.Host }, userView, limit, marker)
	return nil
}

func (s *Server) createUsers(w http.ResponseWriter, c *call) error {
	var req struct {
		Users []userReq `json:"users"`
	}
	if err := decode(c, &req); err != nil {
		return err
	}
	if len(req.Users) == 0 {
		return errorf(http.StatusBadRequest, "users: give at least one user")
	}
	if len(req.Users) > wire.MaxItemsPerOp {
		return errorf(http.StatusBadRequest, "users: at most %d at once", wire.MaxItemsPerOp)
	}
	var users []wire.User
	for _, u := range req.Users {
		if err := lifecycle.CheckUserName(u.Name, u.Host); err != nil {
			return err
		}
		if err := lifecycle.CheckPassword(u.Password); err != nil {
			return err
		}
		for _, d := range u.Databases {
			if err := lifecycle.CheckDatabaseName(d.Name); err != nil {
				return err
			}
		}
		users = append(users, u.wire())
	}
	return s.userCast(w, c, wire.KindCreateUsers, wire.CreateUsersArgs{Users: users})
}

func (s *Server) showUser(w http.ResponseWriter, c *call) error {
	ref, err := userRef(c)
	if err != nil {
		return err
	}
	var list wire.ListUsersResult
	in, err := s.guestQuery(c, wire.KindListUsers, nil, &list)
	if err != nil {
		return err
	}
	for _, u := range list.Users {
		if u.Name == ref.Name && (ref.Host == "" || ref.Host == u.Host || (ref.Host == "%" && u.Host == "")) {
			writeJSON(w, http.StatusOK, map[string]any{"user": userView(u)})
			return nil
		}
	}
	return errorf(http.StatusNotFound, "user %q not found on instance %s", ref.Name, in.ID)
}

// updateUser answers PUT /instances/{id}/users/{user} with {"user":
// {"name"?, "host"?, "password"?}}: a new name, host and/or password, all
// or nothing (the agent's update_user; a datastore without it answers
// 400 naming itself).
func (s *Server) updateUser(w http.ResponseWriter, c *call) error {
	ref, err := userRef(c)
	if err != nil {
		return err
	}
	var req struct {
		User *struct {
			Name     *string `json:"name"`
			Host     *string `json:"host"`
			Password *string `json:"password"`
		} `json:"user"`
	}
	if err := decode(c, &req); err != nil {
		return err
	}
	u := req.User
	if u == nil || (u.Name == nil && u.Host == nil && u.Password == nil) {
		return errorf(http.StatusBadRequest, "user: give at least one of name, host and password to change")
	}
	args := wire.UpdateUserArgs{User: ref}
	if u.Name != nil {
		args.NewName = *u.Name
	}
	if u.Host != nil {
		args.NewHost = *u.Host
		if args.NewHost == "" {
			return errorf(http.StatusBadRequest, "user.host is empty; leave it out to keep the host")
		}
	}
	newName := ref.Name
	if u.Name != nil {
		newName = *u.Name
	}
	if err := lifecycle.CheckUserName(newName, args.NewHost); err != nil {
		return err
	}
	if u.Password != nil {
		if err := lifecycle.CheckPassword(*u.Password); err != nil {
			return err
		}
		args.NewPassword = *u.Password
	}
	return s.userCast(w, c, wire.KindUpdateUser, args)
}

// changePasswords answers PUT /instances/{id}/users with {"users":
// [{"name", "host"?, "password"}, ...]}: every password changes or none
// (the agent's change_passwords).
func (s *Server) changePasswords(w http.ResponseWriter, c *call) error {
	var req struct {
		Users []struct {
			Name     string `json:"name"`
			Host     string `json:"host"`
			Password string `json:"password"`
		} `json:"users"`
	}
	if err := decode(c, &req); err != nil {
		return err
	}
	if len(req.Users) == 0 {
		return errorf(http.StatusBadRequest, "users: give at least one user and its new password")
	}
	if len(req.Users) > wire.MaxItemsPerOp {
		return errorf(http.StatusBadRequest, "users: at most %d at once", wire.MaxItemsPerOp)
	}
	seen := map[string]bool{}
	var users []wire.User
	for _, u := range req.Users {
		if err := lifecycle.CheckUserName(u.Name, u.Host); err != nil {
			return err
		}
		if err := lifecycle.CheckPassword(u.Password); err != nil {
			return fmt.Errorf("user %s: %w", u.Name, err)
		}
		host := u.Host
		if host == "" {
			host = "%"
		}
		if seen[u.Name+"@"+host] {
			return errorf(http.StatusBadRequest, "user %s@%s is listed twice", u.Name, host)
		}
		seen[u.Name+"@"+host] = true
		users = append(users, wire.User{Name: u.Name, Host: u.Host, Password: u.Password})
	}
	return s.userCast(w, c, wire.KindChangePasswords, wire.ChangePasswordsArgs{Users: users})
}

func (s *Server) deleteUser(w http.ResponseWriter, c *call) error {
	ref, err := userRef(c)
	if err != nil {
		return err
	}
	return s.userCast(w, c, wire.KindDeleteUser, ref)
}

func (s *Server) listAccess(w http.ResponseWriter, c *call) error {
	ref, err := userRef(c)
	if err != nil {
		return err
	}
	var list wire.ListAccessResult
	if _, err := s.guestQuery(c, wire.KindListAccess, ref, &list); err != nil {
		return err
	}
	out := []map[string]string{}
	for _, d := range list.Databases {
		out = append(out, map[string]string{"name": d})
	}
	writeJSON(w, http.StatusOK, map[string]any{"databases": out})
	return nil
}

func (s *Server) grantAccess(w http.ResponseWriter, c *call) error {
	ref, err := userRef(c)
	if err != nil {
		return err
	}
	var req struct {
		Databases []nameRef `json:"databases"`
	}
	if err := decode(c, &req); err != nil {
		return err
	}
	if len(req.Databases) == 0 {
		return errorf(http.StatusBadRequest, "databases: give at least one database to grant")
	}
	var dbs []string
	for _, d := range req.Databases {
		if err := lifecycle.CheckDatabaseName(d.Name); err != nil {
			return err
		}
		dbs = append(dbs, d.Name)
	}
	return s.guestCast(w, c, wire.KindGrantAccess, wire.GrantAccessArgs{Name: ref.Name, Host: ref.Host, Databases: dbs})
}

func (s *Server) revokeAccess(w http.ResponseWriter, c *call) error {
	ref, err := userRef(c)
	if err != nil {
		return err
	}
	db := c.r.PathValue("db")
	if err := lifecycle.CheckDatabaseName(db); err != nil {
		return err
	}
	return s.guestCast(w, c, wire.KindRevokeAccess, wire.RevokeAccessArgs{Name: ref.Name, Host: ref.Host, Database: db})
}

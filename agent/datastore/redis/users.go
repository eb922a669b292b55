package redis

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// userRules are the ACL rules of a user created through the API: every
// key, channel and data command, none of the administrative ones (CONFIG,
// ACL, SHUTDOWN, REPLICAOF, DEBUG, ...), which stay with root and the
// agent.
var userRules = []string{"on", "~*", "&*", "+@all", "-@admin"}

// errNoDatabaseAccess answers grant, revoke and list access: an ACL user
// reaches every numbered database or none.
var errNoDatabaseAccess = wire.Errorf(wire.CodeNotSupported,
	"redis ACL users cannot be limited to a database (every user may SELECT any of the numbered databases), so access cannot be granted, revoked or listed")

// ListUsers lists ACL users; the default (root) and agent users are left
// out. Host is "%": Redis users have no host part.
func (m *Manager) ListUsers(ctx context.Context) ([]wire.User, error) {
	if err := m.ready(ctx); err != nil {
		return nil, err
	}
	r, err := m.do(ctx, "ACL", "USERS")
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	out := []wire.User{}
	names := r.Strings()
	slices.Sort(names)
	for _, n := range names {
		if !reservedUsers[strings.ToLower(n)] && !isReplicationAccount(n) {
			out = append(out, wire.User{Name: n, Host: "%"})
		}
	}
	return out, nil
}

// CreateUsers creates all of users or none: every name and password is
// checked, and none may exist, before the first ACL SETUSER; a failure
// part-way deletes what this call created. The server gets the password's
// SHA-256 only. Users may not name databases (see errNoDatabaseAccess).
func (m *Manager) CreateUsers(ctx context.Context, users []wire.User) error {
	if err := checkUsers(users); err != nil {
		return err
	}
	if err := m.ready(ctx); err != nil {
		return err
	}
	for _, u := range users {
		exists, err := m.userExists(ctx, u.Name)
		if err != nil {
			return err
		}
		if exists {
			return wire.Errorf(wire.CodeAlreadyExists, "user %s exists already", show(u.Name))
		}
	}
	var created []string
	undo := func() {
		for _, n := range created {
			if _, err := m.do(context.WithoutCancel(ctx), "ACL", "DELUSER", n); err != nil {
				m.log.Error("could not delete a user after a failed create", "user", n, "err", err)
			}
		}
	}
	for _, u := range users {
		args := append([]string{"ACL", "SETUSER", u.Name, "reset"}, userRules...)
		args = append(args, passwordHash(u.Password))
		if _, err := m.do(ctx, args...); err != nil {
			undo()
			return fmt.Errorf("create user %s: %w", show(u.Name), err)
		}
		created = append(created, u.Name)
	}
	if err := m.saveACL(ctx); err != nil {
		undo()
		return err
	}
	return nil
}

// checkUsers validates a user list; hosts become "%".
func checkUsers(users []wire.User) error {
	if err := datastore.CheckListLength("users", len(users)); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i := range users {
		u := &users[i]
		ref := wire.UserRef{Name: u.Name, Host: u.Host}
		if err := checkUserRef(&ref); err != nil {
			return err
		}
		u.Host = ref.Host
		if seen[u.Name] {
			return invalid("user %s is listed twice", show(u.Name))
		}
		seen[u.Name] = true
		if err := datastore.CheckPassword(u.Password); err != nil {
			return wire.Errorf(wire.CodeInvalidArgument, "user %s: %s", show(u.Name), err.(*wire.OpError).Message)
		}
		if len(u.Databases) > 0 {
			return errNoDatabaseAccess
		}
	}
	return nil
}

func (m *Manager) userExists(ctx context.Context, name string) (bool, error) {
	r, err := m.do(ctx, "ACL", "GETUSER", name)
	if err != nil {
		return false, fmt.Errorf("look up user: %w", err)
	}
	return r.Kind != 0, nil
}

// saveACL writes the users to the ACL file, so they survive a restart
// (and a rebuild: the file is on the data volume).
func (m *Manager) saveACL(ctx context.Context) error {
	if _, err := m.do(ctx, "ACL", "SAVE"); err != nil {
		return fmt.Errorf("save users: %w", err)
	}
	return nil
}

// DeleteUser deletes an ACL user (and so ends its connections).
func (m *Manager) DeleteUser(ctx context.Context, u wire.UserRef) error {
	if err := checkUserRef(&u); err != nil {
		return err
	}
	if err := m.ready(ctx); err != nil {
		return err
	}
	exists, err := m.userExists(ctx, u.Name)
	if err != nil {
		return err
	}
	if !exists {
		return wire.Errorf(wire.CodeNotFound, "user %s does not exist", show(u.Name))
	}
	if _, err := m.do(ctx, "ACL", "DELUSER", u.Name); err != nil {
		return fmt.Errorf("delete user %s: %w", show(u.Name), err)
	}
	return m.saveACL(ctx)
}

func (m *Manager) GrantAccess(context.Context, wire.UserRef, []string) error {
	return errNoDatabaseAccess
}

func (m *Manager) RevokeAccess(context.Context, wire.UserRef, string) error {
	return errNoDatabaseAccess
}

func (m *Manager) ListAccess(context.Context, wire.UserRef) ([]string, error) {
	return nil, errNoDatabaseAccess
}

// fault, when a test sets it, is called after an account update reached
// the server and before it is saved; its error ends the update there, as
// a failed ACL SAVE would, so the tests reach the compensation.
var fault = func(step string) error { return nil }

// UpdateUser renames an ACL user and/or sets its password. Redis has no
// ACL rename: the new user is made with the API's user rules and the old
// user's password hashes (or the new password's), and the old user is
// deleted, both in one MULTI/EXEC so no client sees half of it. Anything
// that fails after (a refused command in the EXEC, ACL SAVE) puts the old
// user back as it was. Redis users have no host: only "" or "%".
func (m *Manager) UpdateUser(ctx context.Context, a wire.UpdateUserArgs) error {
	old, target, err := datastore.UpdateTarget(a, false, checkUserRef, datastore.CheckPassword)
	if err != nil {
		return err
	}
	rename := target.Name != old.Name
	if !rename && a.NewPassword == "" {
		return invalid("user %s: give a new name or password (Redis users have no host)", show(old.Name))
	}
	if err := m.ready(ctx); err != nil {
		return err
	}
	hashes, err := m.passwordHashes(ctx, old.Name)
	if err != nil {
		return err
	}
	if rename {
		exists, err := m.userExists(ctx, target.Name)
		if err != nil {
			return err
		}
		if exists {
			return wire.Errorf(wire.CodeAlreadyExists, "user %s exists already", show(target.Name))
		}
	}
	newHashes := hashes
	if a.NewPassword != "" {
		newHashes = []string{passwordHash(a.NewPassword)}
	}
	apply := [][]string{setUser(target.Name, newHashes)}
	undo := [][]string{setUser(old.Name, hashes)}
	if rename {
		apply = append(apply, []string{"ACL", "DELUSER", old.Name})
		undo = append(undo, []string{"ACL", "DELUSER", target.Name})
	}
	return m.applyACL(ctx, "update_user", apply, undo)
}

// ChangePasswords sets the passwords of existing ACL users in one
// MULTI/EXEC; a failure after it puts every old password back.
func (m *Manager) ChangePasswords(ctx context.Context, users []wire.User) error {
	if err := checkUsers(users); err != nil {
		return err
	}
	if err := m.ready(ctx); err != nil {
		return err
	}
	var apply, undo [][]string
	for _, u := range users {
		hashes, err := m.passwordHashes(ctx, u.Name)
		if err != nil {
			return err
		}
		apply = append(apply, []string{"ACL", "SETUSER", u.Name, "resetpass", passwordHash(u.Password)})
		undo = append(undo, append([]string{"ACL", "SETUSER", u.Name, "resetpass"}, hashes...))
	}
	return m.applyACL(ctx, "change_passwords", apply, undo)
}

// setUser is the ACL SETUSER of a user the API manages, with its password
// hashes ("#hex").
func setUser(name string, hashes []string) []string {
	args := append([]string{"ACL", "SETUSER", name, "reset"}, userRules...)
	return append(args, hashes...)
}

// passwordHashes returns an existing user's password hashes as ACL rules
// ("#hex"), or not_found.
func (m *Manager) passwordHashes(ctx context.Context, name string) ([]string, error) {
	r, err := m.do(ctx, "ACL", "GETUSER", name)
	if err != nil {
		return nil, fmt.Errorf("look up user: %w", err)
	}
	if r.Kind == 0 {
		return nil, wire.Errorf(wire.CodeNotFound, "user %s does not exist", show(name))
	}
	var out []string
	for i := 0; i+1 < len(r.Array); i += 2 {
		if r.Array[i].Str == "passwords" {
			for _, h := range r.Array[i+1].Strings() {
				out = append(out, "#"+h)
			}
		}
	}
	return out, nil
}

// applyACL runs apply in one MULTI/EXEC and saves the ACL file; if a
// command is refused or the save fails, undo (also one MULTI/EXEC) puts
// the users back and the file is saved again.
func (m *Manager) applyACL(ctx context.Context, what string, apply, undo [][]string) error {
	err := m.multi(ctx, apply)
	if err == nil {
		err = fault(what + ".applied")
	}
	if err == nil {
		err = m.saveACL(ctx)
	}
	if err == nil {
		return nil
	}
	err = fmt.Errorf("%s: %w", strings.ReplaceAll(what, "_", " "), err)
	uctx := context.WithoutCancel(ctx)
	uerr := m.multi(uctx, undo)
	if uerr == nil {
		uerr = m.saveACL(uctx)
	}
	if uerr != nil {
		m.log.Error("could not put users back after a failed change", "what", what, "err", uerr)
		return fmt.Errorf("%w; putting the users back failed too: %v", err, uerr)
	}
	return err
}

// multi runs commands in one MULTI/EXEC on the admin connection, which it
// holds throughout so no other command of the agent's lands inside. A
// command the server refuses, at queueing or in EXEC, is an error.
func (m *Manager) multi(ctx context.Context, cmds [][]string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.doLocked(ctx, "MULTI"); err != nil {
		return err
	}
	for _, c := range cmds {
		if _, err := m.doLocked(ctx, c...); err != nil {
			if m.conn != nil {
				m.doLocked(ctx, "DISCARD")
			}
			return err
		}
	}
	r, err := m.doLocked(ctx, "EXEC")
	if err != nil {
		return err
	}
	for i, e := range r.Array {
		if e.Kind == '-' {
			return fmt.Errorf("%s: redis: %s", strings.Join(cmds[i][:2], " "), e.Str)
		}
	}
	return nil
}

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
		if !reservedUsers[strings.ToLower(n)] {
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

package postgresql

import (
	"context"
	"fmt"
	"strings"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// ListUsers lists login roles with the databases each may connect to;
// system, agent and root roles are left out. Passwords are never returned.
// Roles have no host part; Host is "%".
func (m *Manager) ListUsers(ctx context.Context) ([]wire.User, error) {
	if err := m.ready(ctx); err != nil {
		return nil, err
	}
	rows, err := m.conn().QueryContext(ctx, "SELECT rolname FROM pg_roles WHERE rolcanlogin ORDER BY rolname")
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list users: %w", err)
		}
		if !reservedUser(n) {
			names = append(names, n)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	out := []wire.User{}
	for _, n := range names {
		u := wire.User{Name: n, Host: "%"}
		dbs, err := m.grantedDatabases(ctx, n)
		if err != nil {
			return nil, err
		}
		if len(dbs) > 0 {
			u.Databases = dbs
		}
		out = append(out, u)
	}
	return out, nil
}

// CreateUsers creates all of users or none: every name, password and
// database is checked, and none of the roles may exist, before the first
// CREATE ROLE; a failure part-way drops what this call created. The
// password reaches the server as a SCRAM verifier only.
func (m *Manager) CreateUsers(ctx context.Context, users []wire.User) error {
	if err := checkUsers(users); err != nil {
		return err
	}
	if err := m.ready(ctx); err != nil {
		return err
	}
	for _, u := range users {
		exists, err := m.roleExists(ctx, u.Name)
		if err != nil {
			return err
		}
		if exists {
			return wire.Errorf(wire.CodeAlreadyExists, "user %s exists already", show(u.Name))
		}
		for _, db := range u.Databases {
			ok, err := m.databaseExists(ctx, db)
			if err != nil {
				return err
			}
			if !ok {
				return wire.Errorf(wire.CodeNotFound, "user %s: database %s does not exist", show(u.Name), show(db))
			}
		}
	}
	for i, u := range users {
		err := m.exec(ctx, "CREATE ROLE "+quoteIdent(u.Name)+" LOGIN PASSWORD '"+scramVerifier(u.Password)+"'")
		if err == nil {
			err = m.grant(ctx, u.Name, u.Databases)
		}
		if err != nil {
			for _, done := range users[:i+1] {
				if derr := m.dropRole(context.WithoutCancel(ctx), done.Name); derr != nil {
					m.log.Error("could not drop a user after a failed create", "user", done.Name, "err", derr)
				}
			}
			return fmt.Errorf("create user %s: %w", show(u.Name), err)
		}
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
		if err := checkPassword(u.Password); err != nil {
			return wire.Errorf(wire.CodeInvalidArgument, "user %s: %s", show(u.Name), err.(*wire.OpError).Message)
		}
		if len(u.Databases) > wire.MaxItemsPerOp {
			return invalid("user %s: %d databases, at most %d", show(u.Name), len(u.Databases), wire.MaxItemsPerOp)
		}
		for _, db := range u.Databases {
			if err := checkDatabaseName(db); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *Manager) roleExists(ctx context.Context, name string) (bool, error) {
	var n int
	if err := m.conn().QueryRowContext(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", name).Scan(&n); err != nil {
		return false, fmt.Errorf("look up user: %w", err)
	}
	return n > 0, nil
}

// existingUser validates ref and fails with not_found if the role does not
// exist or is not a login role.
func (m *Manager) existingUser(ctx context.Context, ref *wire.UserRef) error {
	if err := checkUserRef(ref); err != nil {
		return err
	}
	if err := m.ready(ctx); err != nil {
		return err
	}
	var n int
	if err := m.conn().QueryRowContext(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1 AND rolcanlogin", ref.Name).Scan(&n); err != nil {
		return fmt.Errorf("look up user: %w", err)
	}
	if n == 0 {
		return wire.Errorf(wire.CodeNotFound, "user %s does not exist", show(ref.Name))
	}
	return nil
}

// DeleteUser drops a role. What it owns in any database is handed to the
// admin role first (its tables survive it, as in Trove) and its
// privileges are revoked, which PostgreSQL requires before DROP ROLE.
func (m *Manager) DeleteUser(ctx context.Context, u wire.UserRef) error {
	if err := m.existingUser(ctx, &u); err != nil {
		return err
	}
	return m.dropRole(ctx, u.Name)
}

func (m *Manager) dropRole(ctx context.Context, name string) error {
	exists, err := m.roleExists(ctx, name)
	if err != nil || !exists {
		return err
	}
	dbs, err := m.connectableDatabases(ctx)
	if err != nil {
		return err
	}
	role := quoteIdent(name)
	for _, db := range dbs {
		if err := m.inDatabase(ctx, db, "REASSIGN OWNED BY "+role+" TO "+AdminRole, "DROP OWNED BY "+role); err != nil {
			return fmt.Errorf("drop user %s: %w", show(name), err)
		}
	}
	return m.exec(ctx, "DROP ROLE "+role)
}

// connectableDatabases lists every database that accepts connections
// (template0 does not).
func (m *Manager) connectableDatabases(ctx context.Context) ([]string, error) {
	rows, err := m.conn().QueryContext(ctx, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname")
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("list databases: %w", err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// grant gives the role every privilege on each database and on its public
// schema (where PostgreSQL 15 no longer lets everyone create tables).
func (m *Manager) grant(ctx context.Context, role string, dbs []string) error {
	for _, db := range dbs {
		if err := m.exec(ctx, "GRANT ALL ON DATABASE "+quoteIdent(db)+" TO "+quoteIdent(role)); err != nil {
			return err
		}
		if err := m.inDatabase(ctx, db, "GRANT ALL ON SCHEMA public TO "+quoteIdent(role)); err != nil {
			return err
		}
	}
	return nil
}

// GrantAccess gives the user all privileges on each database.
func (m *Manager) GrantAccess(ctx context.Context, u wire.UserRef, dbs []string) error {
	if err := checkUserRef(&u); err != nil {
		return err
	}
	if len(dbs) == 0 || len(dbs) > wire.MaxItemsPerOp {
		return invalid("give 1 to %d databases", wire.MaxItemsPerOp)
	}
	for _, db := range dbs {
		if err := checkDatabaseName(db); err != nil {
			return err
		}
	}
	if err := m.existingUser(ctx, &u); err != nil {
		return err
	}
	for _, db := range dbs {
		ok, err := m.databaseExists(ctx, db)
		if err != nil {
			return err
		}
		if !ok {
			return wire.Errorf(wire.CodeNotFound, "database %s does not exist", show(db))
		}
	}
	return m.grant(ctx, u.Name, dbs)
}

// RevokeAccess removes the user's privileges on one database and its
// public schema; objects the user created there stay.
func (m *Manager) RevokeAccess(ctx context.Context, u wire.UserRef, db string) error {
	if err := checkUserRef(&u); err != nil {
		return err
	}
	if err := checkDatabaseName(db); err != nil {
		return err
	}
	if err := m.existingUser(ctx, &u); err != nil {
		return err
	}
	granted, err := m.grantedDatabases(ctx, u.Name)
	if err != nil {
		return err
	}
	found := false
	for _, g := range granted {
		found = found || g == db
	}
	if !found {
		return wire.Errorf(wire.CodeNotFound, "user %s has no access to database %s", show(u.Name), show(db))
	}
	if err := m.inDatabase(ctx, db, "REVOKE ALL ON SCHEMA public FROM "+quoteIdent(u.Name)); err != nil {
		return err
	}
	return m.exec(ctx, "REVOKE ALL ON DATABASE "+quoteIdent(db)+" FROM "+quoteIdent(u.Name))
}

// ListAccess lists the databases the user may connect to.
func (m *Manager) ListAccess(ctx context.Context, u wire.UserRef) ([]string, error) {
	if err := m.existingUser(ctx, &u); err != nil {
		return nil, err
	}
	dbs, err := m.grantedDatabases(ctx, u.Name)
	if dbs == nil {
		dbs = []string{}
	}
	return dbs, err
}

// grantedDatabases lists the user databases on which the role holds
// CONNECT by a grant of its own (not through PUBLIC).
func (m *Manager) grantedDatabases(ctx context.Context, role string) ([]string, error) {
	rows, err := m.conn().QueryContext(ctx, `
		SELECT DISTINCT d.datname FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) a
		WHERE NOT d.datistemplate AND a.privilege_type = 'CONNECT'
		  AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)
		ORDER BY 1`, role)
	if err != nil {
		return nil, fmt.Errorf("list access: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var db string
		if err := rows.Scan(&db); err != nil {
			return nil, fmt.Errorf("list access: %w", err)
		}
		if !systemDatabases[strings.ToLower(db)] {
			out = append(out, db)
		}
	}
	return out, rows.Err()
}

// fault, when a test sets it, is called between the statements of an
// account update and its error ends the update there, as a server error
// at that point would.
var fault = func(step string) error { return nil }

// UpdateUser renames a role and/or sets its password in one transaction:
// PostgreSQL's role statements are transactional, so a failure anywhere
// rolls both back and the old role keeps working with its old password.
// Grants, ownership and the SCRAM verifier follow the role's oid, not its
// name. Roles have no host: only "" or "%" is accepted as the new host.
func (m *Manager) UpdateUser(ctx context.Context, a wire.UpdateUserArgs) error {
	old, target, err := datastore.UpdateTarget(a, false, checkUserRef, checkPassword)
	if err != nil {
		return err
	}
	rename := target.Name != old.Name
	if !rename && a.NewPassword == "" {
		return invalid("user %s: give a new name or password (PostgreSQL users have no host)", show(old.Name))
	}
	if err := m.existingUser(ctx, &old); err != nil {
		return err
	}
	if rename {
		exists, err := m.roleExists(ctx, target.Name)
		if err != nil {
			return err
		}
		if exists {
			return wire.Errorf(wire.CodeAlreadyExists, "a role named %s exists already", show(target.Name))
		}
	}
	var stmts []string
	if rename {
		stmts = append(stmts, "ALTER ROLE "+quoteIdent(old.Name)+" RENAME TO "+quoteIdent(target.Name))
	}
	if a.NewPassword != "" {
		stmts = append(stmts, "ALTER ROLE "+quoteIdent(target.Name)+" PASSWORD '"+scramVerifier(a.NewPassword)+"'")
	}
	if err := m.inTx(ctx, "update_user", stmts); err != nil {
		return fmt.Errorf("update user %s: %w", show(old.Name), err)
	}
	return nil
}

// ChangePasswords sets the passwords of existing roles in one transaction:
// all change or none.
func (m *Manager) ChangePasswords(ctx context.Context, users []wire.User) error {
	if err := checkUsers(users); err != nil {
		return err
	}
	var stmts []string
	for _, u := range users {
		if len(u.Databases) > 0 {
			return invalid("user %s: changing passwords takes no databases", show(u.Name))
		}
		ref := wire.UserRef{Name: u.Name, Host: u.Host}
		if err := m.existingUser(ctx, &ref); err != nil {
			return err
		}
		stmts = append(stmts, "ALTER ROLE "+quoteIdent(u.Name)+" PASSWORD '"+scramVerifier(u.Password)+"'")
	}
	if err := m.inTx(ctx, "change_passwords", stmts); err != nil {
		return fmt.Errorf("change passwords: %w", err)
	}
	return nil
}

// inTx runs statements in one transaction, calling fault before each
// after the first.
func (m *Manager) inTx(ctx context.Context, what string, stmts []string) error {
	tx, err := m.conn().BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	for i, s := range stmts {
		if i > 0 {
			if err := fault(fmt.Sprintf("%s.%d", what, i)); err != nil {
				tx.Rollback()
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, s); err != nil {
			tx.Rollback()
			return fmt.Errorf("%s: %w", datastore.FirstWords(s), err)
		}
	}
	return tx.Commit()
}

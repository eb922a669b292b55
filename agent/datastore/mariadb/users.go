package mariadb

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// ListUsers lists user accounts with the databases each may use; system
// and anonymous accounts are left out. Passwords are never returned.
func (m *Manager) ListUsers(ctx context.Context) ([]wire.User, error) {
	if err := m.ready(ctx); err != nil {
		return nil, err
	}
	rows, err := m.conn().QueryContext(ctx, "SELECT User, Host FROM mysql.user WHERE User <> '' ORDER BY User, Host")
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	var users []wire.User
	for rows.Next() {
		var u wire.User
		if err := rows.Scan(&u.Name, &u.Host); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list users: %w", err)
		}
		if reservedUsers[strings.ToLower(u.Name)] || strings.EqualFold(u.Name, m.cfg.AdminUser) || isReplicationAccount(u.Name) {
			continue
		}
		users = append(users, u)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	out := []wire.User{}
	for _, u := range users {
		dbs, err := m.grantedDatabases(ctx, wire.UserRef{Name: u.Name, Host: u.Host})
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

// CreateUsers creates all of users or none: every name, host, password and
// database is checked, and none of the accounts may exist, before the first
// CREATE USER; a failure part-way drops what this call created.
func (m *Manager) CreateUsers(ctx context.Context, users []wire.User) error {
	if err := m.checkUsers(users); err != nil {
		return err
	}
	if err := m.ready(ctx); err != nil {
		return err
	}
	for _, u := range users {
		ref := wire.UserRef{Name: u.Name, Host: u.Host}
		exists, err := m.userExists(ctx, ref)
		if err != nil {
			return err
		}
		if exists {
			return wire.Errorf(wire.CodeAlreadyExists, "user %s@%s exists already", show(u.Name), show(u.Host))
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
		if err := m.createUser(ctx, u); err != nil {
			for _, done := range users[:i+1] {
				acct, _ := account(wire.UserRef{Name: done.Name, Host: done.Host})
				m.exec(context.WithoutCancel(ctx), "DROP USER IF EXISTS "+acct)
			}
			return err
		}
	}
	return nil
}

func (m *Manager) createUser(ctx context.Context, u wire.User) error {
	acct, err := account(wire.UserRef{Name: u.Name, Host: u.Host})
	if err != nil {
		return err
	}
	stmts := []string{"CREATE USER " + acct + identifiedVia(m.authPlugin(), u.Password)}
	for _, db := range u.Databases {
		stmts = append(stmts, "GRANT ALL PRIVILEGES ON "+grantIdent(db)+".* TO "+acct)
	}
	if err := m.exec(ctx, stmts...); err != nil {
		return fmt.Errorf("create user %s: %w", show(u.Name), err)
	}
	return nil
}

// checkUsers validates a user list and defaults hosts to %.
func (m *Manager) checkUsers(users []wire.User) error {
	if err := datastore.CheckListLength("users", len(users)); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i := range users {
		u := &users[i]
		ref := wire.UserRef{Name: u.Name, Host: u.Host}
		if err := m.checkUserRef(&ref); err != nil {
			return err
		}
		u.Host = ref.Host
		if seen[u.Name+"@"+u.Host] {
			return invalid("user %s@%s is listed twice", show(u.Name), show(u.Host))
		}
		seen[u.Name+"@"+u.Host] = true
		if err := datastore.CheckPassword(u.Password); err != nil {
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

func (m *Manager) userExists(ctx context.Context, u wire.UserRef) (bool, error) {
	var n int
	if err := m.conn().QueryRowContext(ctx, "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?", u.Name, u.Host).Scan(&n); err != nil {
		return false, fmt.Errorf("look up user: %w", err)
	}
	return n > 0, nil
}

// existingUser validates ref and fails with not_found if the account does
// not exist.
func (m *Manager) existingUser(ctx context.Context, ref *wire.UserRef) (string, error) {
	if err := m.checkUserRef(ref); err != nil {
		return "", err
	}
	if err := m.ready(ctx); err != nil {
		return "", err
	}
	ok, err := m.userExists(ctx, *ref)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", wire.Errorf(wire.CodeNotFound, "user %s@%s does not exist", show(ref.Name), show(ref.Host))
	}
	return account(*ref)
}

// DeleteUser drops an account.
func (m *Manager) DeleteUser(ctx context.Context, u wire.UserRef) error {
	acct, err := m.existingUser(ctx, &u)
	if err != nil {
		return err
	}
	return m.exec(ctx, "DROP USER "+acct)
}

// GrantAccess gives the user all privileges on each database.
func (m *Manager) GrantAccess(ctx context.Context, u wire.UserRef, dbs []string) error {
	if err := m.checkUserRef(&u); err != nil {
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
	acct, err := m.existingUser(ctx, &u)
	if err != nil {
		return err
	}
	stmts := make([]string, 0, len(dbs))
	for _, db := range dbs {
		ok, err := m.databaseExists(ctx, db)
		if err != nil {
			return err
		}
		if !ok {
			return wire.Errorf(wire.CodeNotFound, "database %s does not exist", show(db))
		}
		stmts = append(stmts, "GRANT ALL PRIVILEGES ON "+grantIdent(db)+".* TO "+acct)
	}
	return m.exec(ctx, stmts...)
}

// RevokeAccess removes the user's privileges on one database.
func (m *Manager) RevokeAccess(ctx context.Context, u wire.UserRef, db string) error {
	if err := m.checkUserRef(&u); err != nil {
		return err
	}
	if err := checkDatabaseName(db); err != nil {
		return err
	}
	acct, err := m.existingUser(ctx, &u)
	if err != nil {
		return err
	}
	granted, err := m.grantedDatabases(ctx, u)
	if err != nil {
		return err
	}
	found := false
	for _, g := range granted {
		found = found || g == db
	}
	if !found {
		return wire.Errorf(wire.CodeNotFound, "user %s@%s has no access to database %s", show(u.Name), show(u.Host), show(db))
	}
	return m.exec(ctx, "REVOKE ALL PRIVILEGES ON "+grantIdent(db)+".* FROM "+acct)
}

// ListAccess lists the databases the user has privileges on.
func (m *Manager) ListAccess(ctx context.Context, u wire.UserRef) ([]string, error) {
	if _, err := m.existingUser(ctx, &u); err != nil {
		return nil, err
	}
	dbs, err := m.grantedDatabases(ctx, u)
	if dbs == nil {
		dbs = []string{}
	}
	return dbs, err
}

func (m *Manager) grantedDatabases(ctx context.Context, u wire.UserRef) ([]string, error) {
	rows, err := m.conn().QueryContext(ctx, "SELECT Db FROM mysql.db WHERE User = ? AND Host = ?", u.Name, u.Host)
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
		out = append(out, unescapeGrantDB(db))
	}
	sort.Strings(out)
	return out, rows.Err()
}

// fault, when a test sets it, is called between the steps of an account
// update and its error ends the update there, as a server error at that
// point would: the tests reach the compensation against the real server.
var fault = func(step string) error { return nil }

// UpdateUser renames an account (RENAME USER keeps its grants) and/or sets
// its password. MariaDB has no transactions for account statements, so
// the steps run in an order that one compensation undoes: every check
// first (the account exists, the new name and host are valid and free,
// the password is acceptable), then the rename, then the password, which
// if it fails renames the account back. The old account thus keeps
// working with its old password whatever fails.
func (m *Manager) UpdateUser(ctx context.Context, a wire.UpdateUserArgs) error {
	old, target, err := datastore.UpdateTarget(a, true, m.checkUserRef, datastore.CheckPassword)
	if err != nil {
		return err
	}
	rename := target != old
	if !rename && a.NewPassword == "" {
		return invalid("user %s@%s: give a new name, host or password", show(old.Name), show(old.Host))
	}
	oldAcct, err := m.existingUser(ctx, &old)
	if err != nil {
		return err
	}
	newAcct, err := account(target)
	if err != nil {
		return err
	}
	// A new password keeps the account's plugin: an account made before
	// the version changed its plugin keeps working with its clients.
	var plugin string
	if a.NewPassword != "" {
		if plugin, err = m.accountPlugin(ctx, old); err != nil {
			return err
		}
	}
	if rename {
		exists, err := m.userExists(ctx, target)
		if err != nil {
			return err
		}
		if exists {
			return wire.Errorf(wire.CodeAlreadyExists, "user %s@%s exists already", show(target.Name), show(target.Host))
		}
		if err := m.exec(ctx, "RENAME USER "+oldAcct+" TO "+newAcct); err != nil {
			return fmt.Errorf("rename user %s@%s: %w", show(old.Name), show(old.Host), err)
		}
	}
	if a.NewPassword == "" {
		return nil
	}
	err = fault("update_user.renamed")
	if err == nil {
		err = m.exec(ctx, "ALTER USER "+newAcct+identifiedVia(plugin, a.NewPassword))
	}
	if err == nil {
		return nil
	}
	err = fmt.Errorf("set the password of user %s@%s: %w", show(target.Name), show(target.Host), err)
	if rename {
		if uerr := m.exec(context.WithoutCancel(ctx), "RENAME USER "+newAcct+" TO "+oldAcct); uerr != nil {
			m.log.Error("could not rename a user back after a failed update", "user", old.Name, "host", old.Host, "err", uerr)
			return fmt.Errorf("%w; renaming it back to %s@%s failed too: %v", err, show(old.Name), show(old.Host), uerr)
		}
	}
	return err
}

// ChangePasswords sets the passwords of existing accounts, all or none:
// every account is checked and its current credentials read first; a
// failure part-way puts back the credentials of those already changed.
func (m *Manager) ChangePasswords(ctx context.Context, users []wire.User) error {
	if err := m.checkUsers(users); err != nil {
		return err
	}
	for _, u := range users {
		if len(u.Databases) > 0 {
			return invalid("user %s: changing passwords takes no databases", show(u.Name))
		}
	}
	if err := m.ready(ctx); err != nil {
		return err
	}
	type saved struct{ acct, plugin, auth string }
	var before []saved
	for _, u := range users {
		ref := wire.UserRef{Name: u.Name, Host: u.Host}
		acct, err := m.existingUser(ctx, &ref)
		if err != nil {
			return err
		}
		s := saved{acct: acct}
		if err := m.conn().QueryRowContext(ctx, "SELECT plugin, authentication_string FROM mysql.user WHERE User = ? AND Host = ?",
			ref.Name, ref.Host).Scan(&s.plugin, &s.auth); err != nil {
			return fmt.Errorf("read the credentials of user %s: %w", show(u.Name), err)
		}
		if !pluginPattern.MatchString(s.plugin) {
			return wire.Errorf(wire.CodeFailedPrecondition, "user %s@%s authenticates with %s, which the agent does not restore; change it alone", show(u.Name), show(u.Host), show(s.plugin))
		}
		before = append(before, s)
	}
	for i, u := range users {
		err := fault("change_passwords." + u.Name)
		if err == nil {
			err = m.exec(ctx, "ALTER USER "+before[i].acct+identifiedVia(before[i].plugin, u.Password))
		}
		if err == nil {
			continue
		}
		err = fmt.Errorf("change the password of user %s: %w", show(u.Name), err)
		for _, s := range before[:i] {
			auth, qerr := quoteString(s.auth)
			if qerr == nil {
				qerr = m.exec(context.WithoutCancel(ctx), "ALTER USER "+s.acct+" IDENTIFIED VIA "+s.plugin+" USING "+auth)
			}
			if qerr != nil {
				m.log.Error("could not restore a password after a failed change", "account", s.acct, "err", qerr)
				err = fmt.Errorf("%w; restoring the old password of %s failed too: %v", err, s.acct, qerr)
			}
		}
		return err
	}
	return nil
}

// authPlugin is the plugin new accounts get: the one prepare (or restore)
// was given, mysql_native_password by default.
func (m *Manager) authPlugin() string {
	if st, _ := m.lc.State(); st.AuthPlugin != "" {
		return st.AuthPlugin
	}
	return wire.AuthPluginNative
}

// accountPlugin reads the plugin an existing account authenticates with;
// one the agent cannot set a password for is a failed_precondition.
func (m *Manager) accountPlugin(ctx context.Context, u wire.UserRef) (string, error) {
	var plugin string
	if err := m.conn().QueryRowContext(ctx, "SELECT plugin FROM mysql.user WHERE User = ? AND Host = ?", u.Name, u.Host).Scan(&plugin); err != nil {
		return "", fmt.Errorf("read the plugin of user %s@%s: %w", show(u.Name), show(u.Host), err)
	}
	if !pluginPattern.MatchString(plugin) {
		return "", wire.Errorf(wire.CodeFailedPrecondition, "user %s@%s authenticates with %s, for which the agent sets no password", show(u.Name), show(u.Host), show(plugin))
	}
	return plugin, nil
}

// ensureAuthPlugin records plugin as the one new accounts get and, for
// ed25519, installs the server plugin (shipped with mariadb-server, not
// loaded by default). INSTALL SONAME is recorded in the mysql.plugin
// table, so it lasts across restarts and a rebuild that keeps the volume.
func (m *Manager) ensureAuthPlugin(ctx context.Context, plugin string) error {
	if plugin == wire.AuthPluginEd25519 {
		var n int
		if err := m.conn().QueryRowContext(ctx,
			"SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'ed25519' AND PLUGIN_STATUS = 'ACTIVE'").Scan(&n); err != nil {
			return fmt.Errorf("look up the ed25519 plugin: %w", err)
		}
		if n == 0 {
			if err := m.exec(ctx, "INSTALL SONAME 'auth_ed25519'"); err != nil {
				return fmt.Errorf("install the ed25519 authentication plugin: %w", err)
			}
		}
	}
	if err := m.lc.Update(func(s *datastore.State) { s.AuthPlugin = plugin }); err != nil {
		return fmt.Errorf("record the authentication plugin: %w", err)
	}
	return nil
}

package postgresql

import (
	"context"
	"fmt"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// rootOptions are the attributes of the remote superuser, as Trove gives
// its "root".
const rootOptions = " SUPERUSER CREATEDB CREATEROLE REPLICATION BYPASSRLS LOGIN"

// EnableRoot creates (or re-enables and resets the password of) the
// superuser "root", which may log in from anywhere with its password. An
// empty password is generated from crypto/rand. The password is returned
// once and kept nowhere; the server holds its SCRAM verifier only. The
// admin role "postgres" is never given a password (Trove's advice too).
func (m *Manager) EnableRoot(ctx context.Context, password string) (wire.RootCredentials, error) {
	if password == "" {
		password = datastore.GeneratePassword()
	} else if err := checkPassword(password); err != nil {
		return wire.RootCredentials{}, err
	}
	if err := m.ready(ctx); err != nil {
		return wire.RootCredentials{}, err
	}
	exists, err := m.roleExists(ctx, RootRole)
	if err != nil {
		return wire.RootCredentials{}, err
	}
	verb := "CREATE ROLE "
	if exists {
		verb = "ALTER ROLE "
	}
	if err := m.exec(ctx, verb+quoteIdent(RootRole)+" WITH"+rootOptions+" PASSWORD '"+scramVerifier(password)+"'"); err != nil {
		return wire.RootCredentials{}, fmt.Errorf("enable root: %w", err)
	}
	return wire.RootCredentials{Name: RootRole, Password: password}, nil
}

// DisableRoot takes the root role's login and password away. The role
// stays (with whatever it owns), so no data goes with it; enabling again
// gives it a new password.
func (m *Manager) DisableRoot(ctx context.Context) error {
	if err := m.ready(ctx); err != nil {
		return err
	}
	exists, err := m.roleExists(ctx, RootRole)
	if err != nil || !exists {
		return err
	}
	return m.exec(ctx, "ALTER ROLE "+quoteIdent(RootRole)+" WITH NOLOGIN PASSWORD NULL")
}

// IsRootEnabled reports whether a superuser other than the agent's admin
// role can log in (Trove's test: any superuser outside its own accounts).
func (m *Manager) IsRootEnabled(ctx context.Context) (bool, error) {
	if err := m.ready(ctx); err != nil {
		return false, err
	}
	var n int
	if err := m.conn().QueryRowContext(ctx,
		"SELECT count(*) FROM pg_roles WHERE rolsuper AND rolcanlogin AND rolname <> $1", AdminRole).Scan(&n); err != nil {
		return false, fmt.Errorf("is root enabled: %w", err)
	}
	return n > 0, nil
}

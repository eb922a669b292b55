package mariadb

import (
	"context"
	"fmt"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// rootAccount is the remote root account root enable creates (Trove's
// root@'%'). The local root stays unix_socket-only for the agent.
const rootAccount = "'root'@'%'"

// EnableRoot creates (or resets the password of) root@'%' with every
// privilege. An empty password is generated from crypto/rand. The password
// is returned once and kept nowhere.
func (m *Manager) EnableRoot(ctx context.Context, password string) (wire.RootCredentials, error) {
	if password == "" {
		password = datastore.GeneratePassword()
	} else if err := datastore.CheckPassword(password); err != nil {
		return wire.RootCredentials{}, err
	}
	if err := m.ready(ctx); err != nil {
		return wire.RootCredentials{}, err
	}
	auth := identifiedVia(m.authPlugin(), password)
	exists, err := m.userExists(ctx, wire.UserRef{Name: "root", Host: "%"})
	if err != nil {
		return wire.RootCredentials{}, err
	}
	stmt := "CREATE USER " + rootAccount + auth
	if exists {
		stmt = "ALTER USER " + rootAccount + auth
	}
	if err := m.exec(ctx, stmt, "GRANT ALL PRIVILEGES ON *.* TO "+rootAccount+" WITH GRANT OPTION"); err != nil {
		return wire.RootCredentials{}, fmt.Errorf("enable root: %w", err)
	}
	return wire.RootCredentials{Name: "root", Password: password}, nil
}

// DisableRoot drops root@'%'.
func (m *Manager) DisableRoot(ctx context.Context) error {
	if err := m.ready(ctx); err != nil {
		return err
	}
	return m.exec(ctx, "DROP USER IF EXISTS "+rootAccount)
}

// IsRootEnabled reports whether root can log in from anywhere but the
// guest itself (Trove's test: a root account whose host is not
// localhost).
func (m *Manager) IsRootEnabled(ctx context.Context) (bool, error) {
	if err := m.ready(ctx); err != nil {
		return false, err
	}
	var n int
	if err := m.conn().QueryRowContext(ctx,
		"SELECT COUNT(*) FROM mysql.user WHERE User = 'root' AND Host NOT IN ('localhost', '127.0.0.1', '::1')").Scan(&n); err != nil {
		return false, fmt.Errorf("is root enabled: %w", err)
	}
	return n > 0, nil
}

package redis

import (
	"context"
	"fmt"
	"slices"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// EnableRoot switches Redis's default user on with a password (Trove's
// Redis root enable: "enable authentication"; here the default user is
// otherwise off, not open). Clients then authenticate with AUTH <password>
// or AUTH default <password> and may run every command. An empty password
// is generated from crypto/rand; the password is returned once and the
// server keeps only its SHA-256.
func (m *Manager) EnableRoot(ctx context.Context, password string) (wire.RootCredentials, error) {
	if password == "" {
		password = datastore.GeneratePassword()
	} else if err := datastore.CheckPassword(password); err != nil {
		return wire.RootCredentials{}, err
	}
	if err := m.ready(ctx); err != nil {
		return wire.RootCredentials{}, err
	}
	if _, err := m.do(ctx, "ACL", "SETUSER", RootUser, "on", "resetpass", passwordHash(password), "~*", "&*", "+@all"); err != nil {
		return wire.RootCredentials{}, fmt.Errorf("enable root: %w", err)
	}
	if err := m.saveACL(ctx); err != nil {
		return wire.RootCredentials{}, err
	}
	return wire.RootCredentials{Name: RootUser, Password: password}, nil
}

// DisableRoot switches the default user off, removes its password and ends
// its connections. Unlike Trove (which made Redis open again), the default
// connection is then refused, not trusted.
func (m *Manager) DisableRoot(ctx context.Context) error {
	if err := m.ready(ctx); err != nil {
		return err
	}
	if _, err := m.do(ctx, "ACL", "SETUSER", RootUser, "off", "resetpass"); err != nil {
		return fmt.Errorf("disable root: %w", err)
	}
	if err := m.saveACL(ctx); err != nil {
		return err
	}
	if _, err := m.do(ctx, "CLIENT", "KILL", "USER", RootUser); err != nil {
		return fmt.Errorf("disable root: end its connections: %w", err)
	}
	return nil
}

// IsRootEnabled reports whether the default user is on.
func (m *Manager) IsRootEnabled(ctx context.Context) (bool, error) {
	if err := m.ready(ctx); err != nil {
		return false, err
	}
	r, err := m.do(ctx, "ACL", "GETUSER", RootUser)
	if err != nil {
		return false, fmt.Errorf("is root enabled: %w", err)
	}
	for i := 0; i+1 < len(r.Array); i += 2 {
		if r.Array[i].Str == "flags" {
			return slices.Contains(r.Array[i+1].Strings(), "on"), nil
		}
	}
	return false, fmt.Errorf("is root enabled: ACL GETUSER %s has no flags", RootUser)
}

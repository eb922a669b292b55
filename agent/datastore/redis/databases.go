package redis

import (
	"context"

	"strata/agent/wire"
)

// Redis numbers its databases (0-15 here, chosen per connection with
// SELECT) and cannot create, name or drop one, so Trove's database
// operations do not map: they answer not_supported, as Trove's Redis
// guest raised DatastoreOperationNotSupported.
var errNoNamedDatabases = wire.Errorf(wire.CodeNotSupported,
	"redis has no named databases (it numbers them 0-15; a client picks one with SELECT), so databases cannot be listed, created or deleted")

func (m *Manager) ListDatabases(context.Context) ([]wire.Database, error) {
	return nil, errNoNamedDatabases
}

func (m *Manager) CreateDatabases(context.Context, []wire.Database) error { return errNoNamedDatabases }

func (m *Manager) DeleteDatabase(context.Context, string) error { return errNoNamedDatabases }

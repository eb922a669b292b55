package redis

import (
	"context"

	"strata/agent/datastore"
	"strata/agent/wire"
)

var _ datastore.Upgrader = (*Manager)(nil)

// UpgradeDatastore: a newer Redis converts nothing in place; it loaded
// the older server's RDB when it started (or refused to start, which
// fails the upgrade's prepare first). The step checks that the dataset
// is loaded and reports the server's version; the data reaches the new
// format at the next save.
func (m *Manager) UpgradeDatastore(ctx context.Context) (wire.UpgradeResult, error) {
	if err := m.ready(ctx); err != nil {
		return wire.UpgradeResult{}, err
	}
	info, err := m.persistence(ctx)
	if err != nil {
		return wire.UpgradeResult{}, wire.Errorf(wire.CodeUnavailable, "%v", err)
	}
	if info["loading"] != "0" {
		return wire.UpgradeResult{}, wire.Errorf(wire.CodeUnavailable, "redis is still loading its dataset; try again")
	}
	return wire.UpgradeResult{ServerVersion: info["redis_version"]}, nil
}

package datastore

import (
	"context"

	"strata/agent/wire"
)

// Upgrader is a Manager with an upgrade step for data an older version of
// its server left (wire.KindUpgradeDatastore): after a datastore version
// upgrade rebuilt the guest onto the new version's image, the prepared
// server runs on the old data and this brings it to the server's version.
// Run on upgraded data it changes nothing. The dispatcher answers
// not_supported, naming the datastore, for a manager without it.
type Upgrader interface {
	UpgradeDatastore(ctx context.Context) (wire.UpgradeResult, error)
}

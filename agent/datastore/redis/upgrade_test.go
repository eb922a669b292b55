package redis_test

import (
	"strings"
	"testing"

	"strata/agent/datastore/redis/redistest"
	"strata/agent/wire"
)

// Redis's upgrade step converts nothing: on a running server with its
// dataset loaded it reports the server's version and no change; before
// prepare it is refused like every operation that needs the server.
func TestUpgradeDatastoreChecksTheLoadedDatasetAndReportsTheVersion(t *testing.T) {
	inst, _ := redistest.PreparedT(t, wire.PrepareArgs{})
	res, err := inst.Manager.UpgradeDatastore(ctxT(t))
	if err != nil || res.Upgraded || !strings.Contains(res.ServerVersion, ".") {
		t.Fatalf("UpgradeDatastore = %+v, %v; want the server's version and nothing changed", res, err)
	}
	fresh := redistest.NewT(t)
	_, err = fresh.Manager.UpgradeDatastore(ctxT(t))
	wantCode(t, err, wire.CodeFailedPrecondition)
}

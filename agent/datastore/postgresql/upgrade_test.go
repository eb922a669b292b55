package postgresql_test

import (
	"strings"
	"testing"
)

// PostgreSQL's upgrade step within a major converts nothing: it reports
// the server's version and the data directory's major, which match.
func TestUpgradeDatastoreWithinAMajorChangesNothing(t *testing.T) {
	inst := sharedServer(t)
	res, err := inst.Manager.UpgradeDatastore(ctxT(t))
	if err != nil || res.Upgraded || res.DataVersion == "" || !strings.HasPrefix(res.ServerVersion, res.DataVersion+".") {
		t.Fatalf("UpgradeDatastore = %+v, %v; want the data's major under the server's version and nothing changed", res, err)
	}
}

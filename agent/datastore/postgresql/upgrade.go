package postgresql

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"strata/agent/datastore"
	"strata/agent/wire"
)

var _ datastore.Upgrader = (*Manager)(nil)

// UpgradeDatastore: within one PostgreSQL major the data directory's
// format is the same, so a minor upgrade converts nothing; a major one
// needs pg_upgrade, which the controller refuses (the server of another
// major would not even have started on this data). The step checks that
// the data directory's major (PG_VERSION) is the running server's and
// reports the server's version.
func (m *Manager) UpgradeDatastore(ctx context.Context) (wire.UpgradeResult, error) {
	if err := m.ready(ctx); err != nil {
		return wire.UpgradeResult{}, err
	}
	var res wire.UpgradeResult
	if err := m.conn().QueryRowContext(ctx, `SELECT current_setting('server_version')`).Scan(&res.ServerVersion); err != nil {
		return res, wire.Errorf(wire.CodeUnavailable, "reading the server's version: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(m.cfg.DataDir, "PG_VERSION"))
	if err != nil {
		return res, wire.Errorf(wire.CodeInternal, "reading the data directory's major: %v", err)
	}
	res.DataVersion = strings.TrimSpace(string(b))
	if major, _, _ := strings.Cut(res.ServerVersion, "."); major != res.DataVersion {
		return res, wire.Errorf(wire.CodeFailedPrecondition, "the data directory is PostgreSQL %s and the server %s: a major upgrade needs pg_upgrade, which this image does not do; restore a backup onto an instance of the new version instead", res.DataVersion, res.ServerVersion)
	}
	return res, nil
}

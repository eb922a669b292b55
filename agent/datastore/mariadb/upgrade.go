package mariadb

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"strata/agent/datastore"
	"strata/agent/wire"
)

var _ datastore.Upgrader = (*Manager)(nil)

// upgradeInfoFiles are where the server's upgrade tool records, in the
// datadir, the version it last upgraded the data to: MariaDB 11 writes
// mariadb_upgrade_info, 10.x mysql_upgrade_info.
var upgradeInfoFiles = []string{"mariadb_upgrade_info", "mysql_upgrade_info"}

// dataVersion is the version the data was last upgraded to, "" when the
// datadir does not say.
func (m *Manager) dataVersion() string {
	for _, name := range upgradeInfoFiles {
		if b, err := os.ReadFile(filepath.Join(m.cfg.DataDir, name)); err == nil {
			return strings.TrimRight(string(b), "\x00\r\n ")
		}
	}
	return ""
}

// UpgradeDatastore runs mariadb-upgrade against the running server: on
// data an older server left (a datastore version upgrade) it brings the
// system tables to the server's version and checks the user tables; on
// data of the server's own version the tool sees its upgrade record and
// changes nothing. It fails with the tool's output when the tool fails:
// the controller's upgrade task then rolls the instance back.
func (m *Manager) UpgradeDatastore(ctx context.Context) (wire.UpgradeResult, error) {
	if err := m.ready(ctx); err != nil {
		return wire.UpgradeResult{}, err
	}
	var res wire.UpgradeResult
	if err := m.conn().QueryRowContext(ctx, "SELECT VERSION()").Scan(&res.ServerVersion); err != nil {
		return res, wire.Errorf(wire.CodeUnavailable, "reading the server's version: %v", err)
	}
	res.DataVersion = m.dataVersion()
	// The tool reads no option file (the guest's client sections could
	// name another server); it logs in as the agent's admin account over
	// the socket, as the agent does.
	cmd := exec.CommandContext(ctx, m.cfg.UpgradeTool, "--no-defaults", "--socket="+m.cfg.Socket, "--user="+m.cfg.AdminUser)
	if err := datastore.RunTool(cmd); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return res, wire.Errorf(wire.CodeFailedPrecondition, "%s is not installed in this image", m.cfg.UpgradeTool)
		}
		return res, wire.Errorf(wire.CodeInternal, "upgrading data of %s to %s: %v", orUnknown(res.DataVersion), res.ServerVersion, err)
	}
	after := m.dataVersion()
	res.Upgraded = after != res.DataVersion
	if after == "" {
		return res, wire.Errorf(wire.CodeInternal, "%s ended without recording the version it upgraded the data to (%s)",
			filepath.Base(m.cfg.UpgradeTool), strings.Join(upgradeInfoFiles, " or "))
	}
	m.log.Info("upgrade step done", "server_version", res.ServerVersion, "data_version_before", res.DataVersion, "data_version", after, "upgraded", res.Upgraded)
	return res, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "an unrecorded version"
	}
	return s
}

package wire

// KindUpgradeDatastore runs the datastore's own upgrade step on data a
// server of an older version left on the data volume (MariaDB:
// mariadb-upgrade, which brings the system tables to the running
// server's version): the step of a datastore version upgrade that follows
// the rebuild onto the new version's image. Run again on upgraded data
// it changes nothing. A datastore.Upgrader capability.
const KindUpgradeDatastore Kind = "upgrade_datastore" // no args → UpgradeResult

// UpgradeResult says what the upgrade step found and did.
type UpgradeResult struct {
	// ServerVersion is the running server's full version string.
	ServerVersion string `json:"server_version"`
	// DataVersion is the version the data was last upgraded to before the
	// step ("" when the data volume does not say).
	DataVersion string `json:"data_version,omitempty"`
	// Upgraded is true when the step changed the data (false: the data
	// was the server's version already).
	Upgraded bool `json:"upgraded"`
}

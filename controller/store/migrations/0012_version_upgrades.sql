-- Upgrade paths between versions of one datastore (issue 18): an
-- instance of from_version may be upgraded (PATCH datastore_version,
-- `openstack database instance upgrade`) to to_version, and to no version
-- without a row here.
CREATE TABLE datastore_version_upgrades (
	from_version_id TEXT NOT NULL,
	to_version_id   TEXT NOT NULL,
	created_at      BIGINT NOT NULL,
	PRIMARY KEY (from_version_id, to_version_id)
);

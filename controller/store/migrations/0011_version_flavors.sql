-- Per-version flavor lists (Trove's datastore_version_flavor_add/delete):
-- a version with rows here is created only with these flavors, and its
-- flavors route lists only them; a version without rows takes every
-- flavor.
CREATE TABLE datastore_version_flavors (
	version_id TEXT NOT NULL,
	flavor_id  TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	PRIMARY KEY (version_id, flavor_id)
);

-- The availability zone a create asked for (Trove's availability_zone),
-- honoured by a compute driver that places servers in zones (Nova);
-- empty: the driver's default. Kept so a rebuilt server stays there.
ALTER TABLE instances ADD COLUMN availability_zone TEXT NOT NULL DEFAULT '';

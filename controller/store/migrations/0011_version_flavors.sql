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

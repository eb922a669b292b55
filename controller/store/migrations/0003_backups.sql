-- Backups (issue 14). A row is the controller's record of one backup: what
-- was asked (name, parent), where it is (store, location = the object
-- prefix) and how it ended. The manifest (JSON, with the data key only in
-- wrapped form) and the agent's result (positions, stream digest) are kept
-- so a restore needs nothing but this row and the store. Rows are
-- soft-deleted (deleted_at) once their objects are gone.
CREATE TABLE backups (
	id                   TEXT PRIMARY KEY,
	project_id           TEXT NOT NULL,
	instance_id          TEXT NOT NULL,
	name                 TEXT NOT NULL,
	description          TEXT,
	parent_id            TEXT,
	chain_position       INTEGER NOT NULL,
	datastore_version_id TEXT NOT NULL,
	status               TEXT NOT NULL,
	fail_reason          TEXT,
	store                TEXT NOT NULL,
	location             TEXT NOT NULL,
	stored_bytes         BIGINT NOT NULL DEFAULT 0,
	raw_bytes            BIGINT NOT NULL DEFAULT 0,
	result               TEXT,
	manifest             TEXT,
	created_at           BIGINT NOT NULL,
	updated_at           BIGINT NOT NULL,
	deleted_at           BIGINT
);
CREATE INDEX backups_project ON backups (project_id, created_at);
CREATE INDEX backups_instance ON backups (instance_id, status);
CREATE INDEX backups_parent ON backups (parent_id);

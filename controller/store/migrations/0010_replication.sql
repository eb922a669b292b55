-- Replication (issue 17, docs/replication.md): a replica's link to its
-- source. One row per replica, kept apart from instances so the instance
-- row stays what every instance has. account is the replication account's
-- name on the source (its password is never stored here).
CREATE TABLE replication_links (
	instance_id TEXT PRIMARY KEY,
	source_id   TEXT NOT NULL,
	account     TEXT NOT NULL,
	created_at  BIGINT NOT NULL
);
CREATE INDEX replication_links_source ON replication_links (source_id);

-- A replica's link as its agent last reported it in a heartbeat (lag,
-- positions, last error), for the view. No row: no report of a link.
CREATE TABLE replication_reports (
	instance_id TEXT PRIMARY KEY,
	status      TEXT NOT NULL,
	received_at BIGINT NOT NULL
);

-- A replication source ejected from its group (failover,
-- docs/replication.md): the replica elected in its place, and the
-- position the group forked from it at — what the elected replica had
-- received from it when it was promoted, in its datastore's terms (a
-- MariaDB GTID list, a PostgreSQL LSN, a Redis offset with its
-- replication ID). A rejoin checks that the ejected source holds nothing
-- past it. The row goes when the instance rejoins or is deleted.
CREATE TABLE ejections (
	instance_id  TEXT PRIMARY KEY,
	elected_id   TEXT NOT NULL,
	fork_pos     TEXT NOT NULL,
	fork_repl_id TEXT NOT NULL DEFAULT '',
	ejected_at   BIGINT NOT NULL
);

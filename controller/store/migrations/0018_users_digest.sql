-- A Redis server's users as its heartbeat last described them
-- (wire.Heartbeat.UsersDigest, '' when it sent none) and for how many
-- heartbeats in a row it has been that: the controller resyncs a replica
-- whose digest differs from its source's (lifecycle.CheckUserDrift).
ALTER TABLE instance_reports ADD COLUMN users_digest TEXT NOT NULL DEFAULT '';
ALTER TABLE instance_reports ADD COLUMN users_digest_beats BIGINT NOT NULL DEFAULT 0;

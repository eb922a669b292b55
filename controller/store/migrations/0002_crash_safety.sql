-- Crash safety: what a controller needs to converge after a crash.

-- Desired state: why the running server must be restarted (it runs with
-- launch settings older than the compute driver's), and the digest of the
-- configuration set the guest last applied (recovery re-applies a
-- different one).
ALTER TABLE instances ADD COLUMN server_restart_reason TEXT;
ALTER TABLE instances ADD COLUMN configuration_applied TEXT;

-- The operation queue: the run an operation is at (re-runs after an
-- interruption), when the controller gives up on it (and drops secret
-- arguments), and whether a failure nobody waits for must be recorded on
-- the instance (a guest call answered 202).
ALTER TABLE agent_ops ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agent_ops ADD COLUMN expires_at BIGINT;
ALTER TABLE agent_ops ADD COLUMN watched INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agent_ops ADD COLUMN reported_at BIGINT;
CREATE INDEX agent_ops_watched ON agent_ops (watched, reported_at);

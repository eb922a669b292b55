-- Automatic failover (docs/replication.md): on a replication source, the
-- grace period in seconds after its last heartbeat before the controller
-- ejects it and promotes the most current replica; 0: off (a failover is
-- the operator's eject). It moves with the source role at a switchover or
-- failover.
ALTER TABLE instances ADD COLUMN auto_failover_grace_s INTEGER NOT NULL DEFAULT 0;

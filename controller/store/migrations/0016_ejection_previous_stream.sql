-- A Redis failover's fork with the group's stream before it
-- (docs/replication.md, "Rejoin of an ejected source"): the replication
-- ID the elected replica followed before the fork's own, and the last
-- offset of the group's history under it (where the group continued it
-- under the fork's ID). An ejected source started again from a snapshot
-- taken before its promotion holds a prefix of that stream. Empty when
-- the elected replica had none (or the row is older than this).
ALTER TABLE ejections ADD COLUMN fork_prev_repl_id TEXT NOT NULL DEFAULT '';
ALTER TABLE ejections ADD COLUMN fork_prev_end TEXT NOT NULL DEFAULT '';

-- Trove's locality (docs/controller.md): the server group policy an
-- instance was created with ('' none: affinity or anti-affinity), and the
-- key of the group it is in — the id of the replication source that
-- founded it; its replicas carry the same policy and key.
ALTER TABLE instances ADD COLUMN locality TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN server_group TEXT NOT NULL DEFAULT '';

-- A user can be disabled (Keystone's enabled flag): it cannot log in, and
-- its tokens were revoked when it was disabled.
ALTER TABLE users ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;

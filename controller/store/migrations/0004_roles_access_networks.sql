-- Role assignments as Keystone keeps them, so that the embedded identity
-- serves what tempest's dynamic credentials need: a user is created in a
-- domain (its project, now default_project_id, is optional) and gets roles
-- on projects. Every existing user keeps the member role (and admin, if it
-- had the flag) on its project.
--
-- users loses NOT NULL on its project: SQLite cannot alter a column, so the
-- table is rebuilt, and tokens with it (tokens references users; dropping
-- users first would cascade into tokens). The new tables reference their
-- new names; renaming rewrites those references (SQLite) or keeps them by
-- identity (PostgreSQL).
ALTER TABLE projects ADD COLUMN description TEXT NOT NULL DEFAULT '';
CREATE TABLE users_v2 (
	id                 TEXT PRIMARY KEY,
	name               TEXT NOT NULL,
	domain_id          TEXT NOT NULL,
	password_hash      TEXT NOT NULL,
	default_project_id TEXT REFERENCES projects(id) ON DELETE SET NULL,
	created_at         BIGINT NOT NULL,
	UNIQUE (domain_id, name)
);
INSERT INTO users_v2 (id, name, domain_id, password_hash, default_project_id, created_at)
	SELECT id, name, domain_id, password_hash, project_id, created_at FROM users;
CREATE TABLE role_assignments (
	user_id    TEXT NOT NULL REFERENCES users_v2(id) ON DELETE CASCADE,
	project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
	role       TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	PRIMARY KEY (user_id, project_id, role)
);
CREATE INDEX role_assignments_project ON role_assignments (project_id);
INSERT INTO role_assignments (user_id, project_id, role, created_at)
	SELECT id, project_id, 'member', created_at FROM users;
INSERT INTO role_assignments (user_id, project_id, role, created_at)
	SELECT id, project_id, 'admin', created_at FROM users WHERE admin <> 0;
CREATE TABLE tokens_v2 (
	hash       TEXT PRIMARY KEY,
	user_id    TEXT NOT NULL REFERENCES users_v2(id) ON DELETE CASCADE,
	project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
	issued_at  BIGINT NOT NULL,
	expires_at BIGINT NOT NULL
);
INSERT INTO tokens_v2 (hash, user_id, project_id, issued_at, expires_at)
	SELECT hash, user_id, project_id, issued_at, expires_at FROM tokens;
DROP TABLE tokens;
DROP TABLE users;
ALTER TABLE users_v2 RENAME TO users;
ALTER TABLE tokens_v2 RENAME TO tokens;
CREATE INDEX tokens_expires ON tokens (expires_at);

-- Instances: how Trove's access (is_public, allowed_cidrs) was asked for,
-- and the networks (resolved nics) the compute driver attaches them to.
-- JSON documents; NULL for instances made before.
ALTER TABLE instances ADD COLUMN access TEXT;
ALTER TABLE instances ADD COLUMN nics TEXT;

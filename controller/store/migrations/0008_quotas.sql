-- Per-project quotas (issue 19): only the limits an operator set. A
-- project without a row for a resource has the controller's default.
-- Usage is never stored: it is derived from the instances, backups and
-- queued resize tasks in the transaction that checks it, so it cannot
-- drift from the rows it counts.
CREATE TABLE quotas (
	project_id TEXT NOT NULL,
	resource   TEXT NOT NULL,
	hard_limit BIGINT NOT NULL,
	updated_at BIGINT NOT NULL,
	PRIMARY KEY (project_id, resource)
);

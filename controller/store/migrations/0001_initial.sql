-- The controller's first schema. Times are BIGINT milliseconds since the
-- epoch (UTC); booleans are INTEGER 0/1; JSON documents are TEXT.
-- {{serial}} is an auto-incrementing integer primary key in each dialect.

-- Identity (the embedded Keystone subset).
CREATE TABLE projects (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL UNIQUE,
	domain_id  TEXT NOT NULL,
	created_at BIGINT NOT NULL
);
CREATE TABLE users (
	id            TEXT PRIMARY KEY,
	name          TEXT NOT NULL,
	domain_id     TEXT NOT NULL,
	password_hash TEXT NOT NULL,
	project_id    TEXT NOT NULL REFERENCES projects(id),
	admin         INTEGER NOT NULL DEFAULT 0,
	created_at    BIGINT NOT NULL,
	UNIQUE (domain_id, name)
);
CREATE TABLE tokens (
	hash       TEXT PRIMARY KEY,
	user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
	issued_at  BIGINT NOT NULL,
	expires_at BIGINT NOT NULL
);
CREATE INDEX tokens_expires ON tokens (expires_at);

-- Images in the local image store.
CREATE TABLE images (
	id               TEXT PRIMARY KEY,
	name             TEXT NOT NULL,
	disk_format      TEXT NOT NULL,
	container_format TEXT NOT NULL,
	sha256           TEXT NOT NULL,
	size_bytes       BIGINT NOT NULL,
	location         TEXT NOT NULL,
	properties       TEXT NOT NULL DEFAULT '{}',
	created_at       BIGINT NOT NULL
);

-- Registry.
CREATE TABLE datastores (
	id                 TEXT PRIMARY KEY,
	name               TEXT NOT NULL UNIQUE,
	default_version_id TEXT,
	created_at         BIGINT NOT NULL,
	updated_at         BIGINT NOT NULL
);
CREATE TABLE datastore_versions (
	id              TEXT PRIMARY KEY,
	datastore_id    TEXT NOT NULL REFERENCES datastores(id),
	name            TEXT NOT NULL,
	manager         TEXT NOT NULL,
	image_id        TEXT NOT NULL,
	packages        TEXT NOT NULL DEFAULT '',
	active          INTEGER NOT NULL,
	port            INTEGER NOT NULL,
	boot_timeout_s  INTEGER NOT NULL,
	rules           TEXT,
	rules_source    TEXT,
	rules_loaded_at BIGINT,
	created_at      BIGINT NOT NULL,
	updated_at      BIGINT NOT NULL,
	UNIQUE (datastore_id, name)
);
CREATE TABLE flavors (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL UNIQUE,
	ram_mb     INTEGER NOT NULL,
	vcpus      INTEGER NOT NULL,
	disk_gb    INTEGER NOT NULL,
	created_at BIGINT NOT NULL
);

-- Configuration groups.
CREATE TABLE configurations (
	id                   TEXT PRIMARY KEY,
	project_id           TEXT NOT NULL,
	name                 TEXT NOT NULL,
	description          TEXT NOT NULL DEFAULT '',
	datastore_version_id TEXT NOT NULL REFERENCES datastore_versions(id),
	values_json          TEXT NOT NULL,
	created_at           BIGINT NOT NULL,
	updated_at           BIGINT NOT NULL
);
CREATE INDEX configurations_project ON configurations (project_id);

-- Instances, desired state: what the controller asked for and decided.
CREATE TABLE instances (
	id                   TEXT PRIMARY KEY,
	project_id           TEXT NOT NULL,
	name                 TEXT NOT NULL,
	datastore_version_id TEXT NOT NULL REFERENCES datastore_versions(id),
	flavor_id            TEXT NOT NULL REFERENCES flavors(id),
	volume_size_gb       INTEGER NOT NULL,
	configuration_id     TEXT REFERENCES configurations(id),
	task                 TEXT NOT NULL,
	task_started_at      BIGINT,
	errored              INTEGER NOT NULL DEFAULT 0,
	fault_message        TEXT,
	fault_details        TEXT,
	fault_at             BIGINT,
	restart_required     INTEGER NOT NULL DEFAULT 0,
	volume               TEXT,
	server               TEXT,
	host                 TEXT,
	port                 INTEGER,
	created_at           BIGINT NOT NULL,
	updated_at           BIGINT NOT NULL,
	deleted_at           BIGINT
);
CREATE INDEX instances_project ON instances (project_id, deleted_at);

-- Instances, reported state: the latest heartbeat each agent sent.
CREATE TABLE instance_reports (
	instance_id       TEXT PRIMARY KEY,
	agent_version     TEXT NOT NULL,
	boot_id           TEXT NOT NULL,
	seq               BIGINT NOT NULL,
	status            TEXT NOT NULL,
	status_detail     TEXT NOT NULL DEFAULT '',
	volume            TEXT,
	last_completed_op TEXT NOT NULL DEFAULT '',
	sent_at           BIGINT NOT NULL,
	received_at       BIGINT NOT NULL,
	heartbeats        BIGINT NOT NULL DEFAULT 1
);

-- Agent enrolment and the durable operation queue (agentendpoint.Store).
CREATE TABLE agent_tokens (
	token_hash  TEXT PRIMARY KEY,
	instance_id TEXT NOT NULL,
	created_at  BIGINT NOT NULL,
	used_at     BIGINT
);
CREATE INDEX agent_tokens_instance ON agent_tokens (instance_id);
CREATE TABLE agent_keys (
	fingerprint    TEXT PRIMARY KEY,
	instance_id    TEXT NOT NULL,
	authorized_key TEXT NOT NULL,
	enrolled_at    BIGINT NOT NULL
);
CREATE INDEX agent_keys_instance ON agent_keys (instance_id);
CREATE TABLE agent_ops (
	seq         {{serial}},
	instance_id TEXT NOT NULL,
	op_id       TEXT NOT NULL,
	kind        TEXT NOT NULL,
	args        TEXT,
	digest      TEXT NOT NULL,
	queued_at   BIGINT NOT NULL,
	ack_state   TEXT,
	acked_at    BIGINT,
	acks        INTEGER NOT NULL DEFAULT 0,
	result      TEXT,
	done_at     BIGINT,
	UNIQUE (instance_id, op_id)
);
CREATE INDEX agent_ops_pending ON agent_ops (instance_id, done_at, seq);

-- The durable task engine.
CREATE TABLE tasks (
	seq         {{serial}},
	id          TEXT NOT NULL UNIQUE,
	instance_id TEXT NOT NULL,
	kind        TEXT NOT NULL,
	step        TEXT NOT NULL,
	state       TEXT NOT NULL,
	payload     TEXT NOT NULL,
	attempts    INTEGER NOT NULL DEFAULT 0,
	run_after   BIGINT NOT NULL,
	deadline    BIGINT,
	lease_owner TEXT,
	lease_until BIGINT,
	error       TEXT,
	created_at  BIGINT NOT NULL,
	updated_at  BIGINT NOT NULL
);
CREATE INDEX tasks_due ON tasks (state, run_after);
CREATE INDEX tasks_instance ON tasks (instance_id, state);

-- Enrolment tokens expire (the datastore version's boot timeout, or an
-- hour): a token that leaks from a config drive later is of no use. NULL
-- (tokens written before this) means an hour from created_at.
ALTER TABLE agent_tokens ADD COLUMN expires_at BIGINT;

-- An operation whose arguments carry passwords (prepare, create_users,
-- enable_root) keeps them no longer than its timeout: at args_until they
-- are dropped and the operation is no longer sent, answered or not. NULL:
-- kept until the result (the arguments hold no secret).
ALTER TABLE agent_ops ADD COLUMN args_until BIGINT;
CREATE INDEX agent_ops_args_until ON agent_ops (args_until);

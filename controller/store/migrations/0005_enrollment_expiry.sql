-- Enrolment tokens expire (the datastore version's boot timeout, or an
-- hour): a token that leaks from a config drive later is of no use. NULL
-- (tokens written before this) means an hour from created_at.
ALTER TABLE agent_tokens ADD COLUMN expires_at BIGINT;

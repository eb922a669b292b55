-- root_on_create per datastore version (Trove's option of that name): a
-- new instance of the version gets its remote root account at create, and
-- the generated password is in the create response.
ALTER TABLE datastore_versions ADD COLUMN root_on_create INTEGER NOT NULL DEFAULT 0;

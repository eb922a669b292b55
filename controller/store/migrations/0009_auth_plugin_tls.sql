-- auth_plugin per datastore version (issue 16 item 8): the MariaDB
-- authentication plugin the version's accounts get; '' is the agent's
-- default (mysql_native_password).
ALTER TABLE datastore_versions ADD COLUMN auth_plugin TEXT NOT NULL DEFAULT '';

-- auth_plugin per datastore version (issue 16 item 8): the MariaDB
-- authentication plugin the version's accounts get; '' is the agent's
-- default (mysql_native_password).
ALTER TABLE datastore_versions ADD COLUMN auth_plugin TEXT NOT NULL DEFAULT '';

-- The SHA-256 fingerprint of the certificate the instance's datastore
-- presents to TLS clients (issue 16 item 7), as its prepare, restore or
-- rebuild reported it; '' when unknown (made before, or no TLS: Redis).
ALTER TABLE instances ADD COLUMN tls_fingerprint TEXT NOT NULL DEFAULT '';

package postgresql

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// PostgreSQL truncates identifiers longer than NAMEDATALEN-1 bytes (63)
// with only a notice; longer names are refused instead.
const maxIdentifier = 63

var (
	databaseNamePattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_$-]*$`)
	userNamePattern     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.$-]*$`)
	encodingPattern     = regexp.MustCompile(`^[A-Za-z0-9_]{1,32}$`)
	// Locale names as libc spells them: en_US.UTF-8, de_DE@euro, C.utf8.
	collationPattern = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,64}$`)
	paramPattern     = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
)

// systemDatabases are never listed, created or dropped.
var systemDatabases = map[string]bool{"postgres": true, "template0": true, "template1": true}

// AdminRole is the bootstrap superuser initdb creates; the agent logs in as
// it over the local socket with peer authentication (no password exists).
const AdminRole = "postgres"

// RootRole is the remote superuser root enable creates (Trove's "root").
const RootRole = "root"

// reservedUsers may not be created, dropped or listed by users: the
// server's and the agent's accounts and names PostgreSQL itself reserves.
var reservedUsers = map[string]bool{
	AdminRole: true, RootRole: true, "os_admin": true, "public": true, "none": true,
	"current_user": true, "session_user": true, "current_role": true,
	ReplicationGroup: true,
}

// reservedUser reports the names users may not create, drop or see: the
// reserved ones, PostgreSQL's pg_ roles and the replication accounts
// (wire.ReplicationAccountPrefix).
func reservedUser(name string) bool {
	n := strings.ToLower(name)
	return reservedUsers[n] || strings.HasPrefix(n, "pg_") || strings.HasPrefix(n, wire.ReplicationAccountPrefix)
}

// clientOnlyEncodings are encodings PostgreSQL accepts from clients but
// cannot store.
var clientOnlyEncodings = map[string]bool{
	"BIG5": true, "GB18030": true, "GBK": true, "JOHAB": true, "SJIS": true, "SHIFT_JIS_2004": true, "UHC": true,
}

// managedParameters are set by the agent's base configuration (paths,
// sockets, listening, authentication, what runs commands or loads code);
// a configuration group may not override them whatever the rules say.
var managedParameters = map[string]bool{
	"data_directory": true, "config_file": true, "hba_file": true, "ident_file": true, "external_pid_file": true,
	"listen_addresses": true, "port": true, "unix_socket_directories": true, "unix_socket_group": true,
	"unix_socket_permissions": true, "archive_command": true, "archive_library": true, "restore_command": true,
	"archive_cleanup_command": true, "recovery_end_command": true, "shared_preload_libraries": true,
	"local_preload_libraries": true, "session_preload_libraries": true, "dynamic_library_path": true,
	"logging_collector": true, "log_directory": true, "log_filename": true, "password_encryption": true,
	"ssl": true, "ssl_cert_file": true, "ssl_key_file": true, "ssl_ca_file": true, "ssl_crl_file": true,
	"krb_server_keyfile": true, "include": true, "include_dir": true, "include_if_exists": true,
	"wal_log_hints": true,
}

// parameters is what a configuration group may name.
var parameters = datastore.Parameters{Pattern: paramPattern, Managed: managedParameters}

// checkConfiguration validates a configuration group.
var checkConfiguration = parameters.Check

var checkDatabaseName = datastore.DatabaseNames{
	Engine: "PostgreSQL", Max: maxIdentifier, Pattern: databaseNamePattern, System: systemDatabases,
}.Check

// Shorthands for the shared helpers every check uses.
var (
	invalid = datastore.Invalid
	show    = datastore.Show
)

// checkUserRef validates a role name. PostgreSQL roles have no host part:
// only "" and "%" (anywhere, pg_hba.conf decides) are accepted, and the
// host is normalised to "%".
func checkUserRef(u *wire.UserRef) error {
	switch {
	case u.Name == "":
		return invalid("user name is empty")
	case len(u.Name) > maxIdentifier:
		return invalid("user name %s is %d bytes long; PostgreSQL allows %d", show(u.Name), len(u.Name), maxIdentifier)
	case !userNamePattern.MatchString(u.Name):
		return invalid("user name %s: use only A-Z a-z 0-9 _ . $ - (starting with a letter or _)", show(u.Name))
	case reservedUser(u.Name):
		return invalid("user %s is reserved for the system", show(u.Name))
	case u.Host != "" && u.Host != "%":
		return invalid("host %s: PostgreSQL users have no host part (leave it empty or %%)", show(u.Host))
	}
	u.Host = "%"
	return nil
}

// checkPassword admits printable ASCII only: clients normalise non-ASCII
// passwords with SASLprep before SCRAM, and not all of them the same way,
// so such a password could work from one client and not another.
func checkPassword(pw string) error {
	switch {
	case pw == "":
		return invalid("password is empty")
	case len(pw) > datastore.MaxPassword:
		return invalid("password is %d bytes long; at most %d allowed", len(pw), datastore.MaxPassword)
	}
	for i := 0; i < len(pw); i++ {
		if pw[i] < 0x20 || pw[i] > 0x7e {
			return invalid("password: only printable ASCII characters are allowed (byte %d is 0x%02x)", i, pw[i])
		}
	}
	return nil
}

func checkEncoding(name, v string) error {
	if v == "" {
		return nil
	}
	if !encodingPattern.MatchString(v) {
		return invalid("database %s: encoding %s: use only A-Z a-z 0-9 _", show(name), show(v))
	}
	if clientOnlyEncodings[strings.ToUpper(v)] {
		return invalid("database %s: encoding %s is for clients only; PostgreSQL cannot store it", show(name), v)
	}
	return nil
}

func checkCollation(name, v string) error {
	if v != "" && !collationPattern.MatchString(v) {
		return invalid("database %s: collation %s: use only A-Z a-z 0-9 _ . @ -", show(name), show(v))
	}
	return nil
}

// quoteIdent double-quotes an identifier, doubling quotes. Callers
// validate first; quoting is the second line of defence.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// quoteLiteral makes a standard SQL string literal. Backslashes and NUL
// are refused so the literal means the same with
// standard_conforming_strings off.
func quoteLiteral(s string) (string, error) {
	if strings.ContainsAny(s, "\\\x00") {
		return "", invalid("value %s contains a backslash or NUL", show(s))
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'", nil
}

// scramIterations is PostgreSQL's default scram_iterations.
const scramIterations = 4096

// scramVerifier computes the SCRAM-SHA-256 verifier PostgreSQL stores for
// a password (RFC 5802/7677, PostgreSQL's text form). Sending the verifier
// keeps the password out of the statement text, so out of the server's
// logs and pg_stat_activity; its characters are base64 and $ : only.
func scramVerifier(password string) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	return scramVerifierWithSalt(password, salt, scramIterations)
}

func scramVerifierWithSalt(password string, salt []byte, iterations int) string {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		panic(fmt.Sprintf("pbkdf2: %v", err)) // fixed parameters: a bug
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey[:]), b64(serverKey))
}

package mariadb

import (
	"crypto/sha1"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"regexp"
	"strings"

	"filippo.io/edwards25519"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// Limits from MariaDB 10.11: schema names 64 characters, user names 80
// (mysql.global_priv.User is char(80)), host names 255.
const (
	maxDatabaseName = 64
	maxUserName     = 80
	maxHostName     = 255
)

// Names are restricted to characters that need no thought anywhere (SQL,
// file names in the data directory, logs), and quoted anyway.
var (
	databaseNamePattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_$-]*$`)
	userNamePattern     = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.$-]*$`)
	// Host patterns: names, IPv4/IPv6 addresses, netmasks, % and _
	// wildcards.
	hostPattern    = regexp.MustCompile(`^[A-Za-z0-9%_.:/-]+$`)
	charsetPattern = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
	paramPattern   = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	// pluginPattern: authentication plugins whose stored string the agent
	// may put back (change_passwords' compensation).
	pluginPattern = regexp.MustCompile(`^(mysql_native_password|ed25519)$`)
)

// systemDatabases are never listed, created or dropped.
var systemDatabases = map[string]bool{
	"mysql": true, "information_schema": true, "performance_schema": true, "sys": true,
}

// reservedUsers are the server's and the agent's own accounts; users may
// not create, drop or list them.
var reservedUsers = map[string]bool{
	"root": true, "mariadb.sys": true, "mysql": true, "debian-sys-maint": true, "os_admin": true,
}

// Shorthands for the shared helpers every check uses.
var (
	invalid = datastore.Invalid
	show    = datastore.Show
)

var checkDatabaseName = datastore.DatabaseNames{
	Engine: "MariaDB", Max: maxDatabaseName, Pattern: databaseNamePattern, System: systemDatabases,
}.Check

func (m *Manager) checkUserRef(u *wire.UserRef) error {
	if u.Host == "" {
		u.Host = "%"
	}
	switch {
	case u.Name == "":
		return invalid("user name is empty")
	case len(u.Name) > maxUserName:
		return invalid("user name %s is %d characters long; MariaDB allows %d", show(u.Name), len(u.Name), maxUserName)
	case !userNamePattern.MatchString(u.Name):
		return invalid("user name %s: use only A-Z a-z 0-9 _ . $ - (not starting with . $ or -)", show(u.Name))
	case reservedUsers[strings.ToLower(u.Name)] || strings.EqualFold(u.Name, m.cfg.AdminUser) || isReplicationAccount(u.Name):
		return invalid("user %s is reserved for the system", show(u.Name))
	case len(u.Host) > maxHostName:
		return invalid("host %s is %d characters long; MariaDB allows %d", show(u.Host), len(u.Host), maxHostName)
	case !hostPattern.MatchString(u.Host):
		return invalid("host %s: use a host name, an IP address or netmask, %% or _ wildcards", show(u.Host))
	}
	return nil
}

func checkCharset(what, v string) error {
	if v != "" && !charsetPattern.MatchString(v) {
		return invalid("%s %s: use only a-z 0-9 _", what, show(v))
	}
	return nil
}

// quoteIdent backtick-quotes an identifier, doubling backticks. Callers
// validate first; quoting is the second line of defence.
func quoteIdent(s string) string {
	return "`" + strings.ReplaceAll(s, "`", "``") + "`"
}

// grantIdent quotes a database name for GRANT/REVOKE, where _ and % are
// wildcards: a grant on `a_b` must not also open `aXb`.
func grantIdent(db string) string {
	r := strings.NewReplacer(`\`, `\\`, `_`, `\_`, `%`, `\%`)
	return quoteIdent(r.Replace(db))
}

// unescapeGrantDB reverses grantIdent's escaping for mysql.db.Db values.
func unescapeGrantDB(db string) string {
	return strings.NewReplacer(`\\`, `\`, `\_`, `_`, `\%`, `%`).Replace(db)
}

// quoteString makes an SQL string literal. The agent's sessions always run
// with NO_BACKSLASH_ESCAPES (see connector), so doubling quotes is the
// whole job; backslashes and NUL are refused outright so the literal would
// be safe even without that mode.
func quoteString(s string) (string, error) {
	if strings.ContainsAny(s, "\\\x00") {
		return "", invalid("value %s contains a backslash or NUL", show(s))
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'", nil
}

// account renders 'name'@'host' for validated names.
func account(u wire.UserRef) (string, error) {
	n, err := quoteString(u.Name)
	if err != nil {
		return "", err
	}
	h, err := quoteString(u.Host)
	if err != nil {
		return "", err
	}
	return n + "@" + h, nil
}

// nativePasswordHash is mysql_native_password's stored form,
// "*" + hex(SHA1(SHA1(password))). Sending the hash keeps the password out
// of the statement text (and so out of the processlist and logs), and the
// literal is hex digits only.
func nativePasswordHash(pw string) string {
	a := sha1.Sum([]byte(pw))
	b := sha1.Sum(a[:])
	return "*" + strings.ToUpper(hex.EncodeToString(b[:]))
}

// ed25519PasswordKey is the ed25519 plugin's stored form: the unpadded
// base64 of the public key whose secret scalar is the clamped first half
// of SHA-512(password) (MariaDB's auth_ed25519, as the server's own
// ed25519_password() computes it; a test compares the two). Sending the
// key, like the native hash, keeps the password out of the statement text;
// the literal is base64 characters only.
func ed25519PasswordKey(pw string) string {
	h := sha512.Sum512([]byte(pw))
	s, err := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	if err != nil {
		panic("ed25519: a 32-byte slice was refused: " + err.Error()) // cannot happen: h[:32] is 32 bytes
	}
	return base64.RawStdEncoding.EncodeToString(new(edwards25519.Point).ScalarBaseMult(s).Bytes())
}

// identifiedVia renders an account's credentials clause for plugin
// (empty: mysql_native_password) from the stored form of password, never
// the password itself.
func identifiedVia(plugin, password string) string {
	if plugin == wire.AuthPluginEd25519 {
		return " IDENTIFIED VIA ed25519 USING '" + ed25519PasswordKey(password) + "'"
	}
	return " IDENTIFIED VIA mysql_native_password USING '" + nativePasswordHash(password) + "'"
}

package redis

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"

	"strata/agent/datastore"
	"strata/agent/wire"
)

const maxUserName = 64

// AdminUser is the agent's own ACL user; RootUser is Redis's default user,
// which root enable opens (Trove's Redis root is "authentication for the
// default connection").
const (
	AdminUser = "os_admin"
	RootUser  = "default"
)

var (
	userNamePattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)
	paramPattern    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,63}$`)
)

var reservedUsers = map[string]bool{AdminUser: true, RootUser: true, "root": true}

// managedParameters are set by the agent's base configuration (paths,
// sockets, listening, authentication, process control, what may be
// changed at run time); a configuration group may not override them.
var managedParameters = map[string]bool{
	"dir": true, "dbfilename": true, "appendfilename": true, "appenddirname": true, "aclfile": true,
	"requirepass": true, "masterauth": true, "masteruser": true, "user": true, "include": true,
	"unixsocket": true, "unixsocketperm": true, "bind": true, "port": true, "tls-port": true,
	"protected-mode": true, "logfile": true, "pidfile": true, "daemonize": true, "supervised": true,
	"syslog-enabled": true, "syslog-ident": true, "rename-command": true, "loadmodule": true,
	"enable-protected-configs": true, "enable-debug-command": true, "enable-module-command": true,
	"cluster-config-file": true, "cluster-enabled": true, "replicaof": true, "slaveof": true,
}

// parameters is what a configuration group may name.
var parameters = datastore.Parameters{Pattern: paramPattern, Managed: managedParameters}

// checkConfiguration validates a configuration group.
var checkConfiguration = parameters.Check

// Shorthands for the shared helpers every check uses.
var (
	invalid = datastore.Invalid
	show    = datastore.Show
)

func notSupported(format string, args ...any) error {
	return wire.Errorf(wire.CodeNotSupported, format, args...)
}

// checkUserRef validates an ACL user name. Redis users have no host part:
// only "" and "%" are accepted, and the host becomes "%".
func checkUserRef(u *wire.UserRef) error {
	switch {
	case u.Name == "":
		return invalid("user name is empty")
	case len(u.Name) > maxUserName:
		return invalid("user name %s is %d bytes long; at most %d allowed", show(u.Name), len(u.Name), maxUserName)
	case !userNamePattern.MatchString(u.Name):
		return invalid("user name %s: use only A-Z a-z 0-9 _ . - (not starting with . or -)", show(u.Name))
	case reservedUsers[strings.ToLower(u.Name)] || isReplicationAccount(u.Name):
		return invalid("user %s is reserved for the system", show(u.Name))
	case u.Host != "" && u.Host != "%":
		return invalid("host %s: Redis users have no host part (leave it empty or %%)", show(u.Host))
	}
	u.Host = "%"
	return nil
}

// passwordHash is the ACL form of a password, "#" + hex(SHA-256): the
// password itself never reaches the server (nor its ACL file, nor
// SLOWLOG or MONITOR), and the rule is hex digits only.
func passwordHash(pw string) string {
	h := sha256.Sum256([]byte(pw))
	return "#" + hex.EncodeToString(h[:])
}

// isReplicationAccount tells a replica's account on its primary
// (wire.ReplicationAccountPrefix): hidden from user listings and refused
// as a user name.
func isReplicationAccount(name string) bool {
	return strings.HasPrefix(strings.ToLower(name), wire.ReplicationAccountPrefix)
}

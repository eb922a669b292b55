package datastore

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"strata/agent/wire"
)

// Invalid is an invalid_argument error.
func Invalid(format string, args ...any) error {
	return wire.Errorf(wire.CodeInvalidArgument, format, args...)
}

// Show renders a rejected value for an error message: quoted, escaped,
// truncated.
func Show(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// CheckListLength checks how many items (what: "databases", "users") an
// operation names: at least one, at most wire.MaxItemsPerOp.
func CheckListLength(what string, n int) error {
	if n == 0 {
		return Invalid("no %s given", what)
	}
	if n > wire.MaxItemsPerOp {
		return Invalid("%d %s given, at most %d per operation", n, what, wire.MaxItemsPerOp)
	}
	return nil
}

// MaxPassword bounds a user's or root's password, in bytes.
const MaxPassword = 256

// CheckPassword admits any password of valid UTF-8 without NUL, 1 to
// MaxPassword bytes long: for servers that get only its hash.
func CheckPassword(pw string) error {
	switch {
	case pw == "":
		return Invalid("password is empty")
	case len(pw) > MaxPassword:
		return Invalid("password is %d bytes long; at most %d allowed", len(pw), MaxPassword)
	case !utf8.ValidString(pw):
		return Invalid("password is not valid UTF-8")
	case strings.ContainsRune(pw, 0):
		return Invalid("password contains a NUL byte")
	}
	return nil
}

// CheckManaged refuses a configuration group that touches a parameter the
// agent manages (paths, sockets, authentication, ...), naming it, before
// the generic checks would call it merely invalid.
func CheckManaged(args wire.ConfigurationArgs, managed map[string]bool) error {
	for name := range args.Values {
		if managed[name] {
			return Invalid("parameter %s is managed by the agent and cannot be part of a configuration group", name)
		}
	}
	return nil
}

// DatabaseNames is a datastore's rule for database names.
type DatabaseNames struct {
	Engine  string         // named in messages: "MariaDB"
	Max     int            // the longest name the server takes
	Pattern *regexp.Regexp // the characters admitted (ASCII only)
	System  map[string]bool
}

// Check admits a name that matches the pattern, fits the server and is not
// one of the system databases (compared in lower case).
func (n DatabaseNames) Check(name string) error {
	switch {
	case name == "":
		return Invalid("database name is empty")
	case !n.Pattern.MatchString(name):
		return Invalid("database name %s: use only A-Z a-z 0-9 _ $ - (not starting with $ or -)", Show(name))
	case len(name) > n.Max: // ASCII by now: bytes are characters
		return Invalid("database name %s is %d characters long; %s allows %d", Show(name), len(name), n.Engine, n.Max)
	case n.System[strings.ToLower(name)]:
		return Invalid("database %s is a system database", Show(name))
	}
	return nil
}

// Parameters is a datastore's rule for the names in a configuration group:
// the pattern a name must match, and the parameters the agent manages.
type Parameters struct {
	Pattern *regexp.Regexp
	Managed map[string]bool
}

// Check validates a configuration group: a managed parameter is refused by
// name, then names, rules and values go through CheckConfiguration.
func (p Parameters) Check(args wire.ConfigurationArgs) ([]Setting, error) {
	if err := CheckManaged(args, p.Managed); err != nil {
		return nil, err
	}
	return CheckConfiguration(args, p.NameOK)
}

// NameOK says whether a configuration group may name the parameter.
func (p Parameters) NameOK(name string) bool {
	return p.Pattern.MatchString(name) && !p.Managed[name]
}

// UpdateTarget checks an account update's arguments with the engine's own
// checks and returns the account as it is and as it will be: an empty new
// name keeps the old one, and so does an empty new host when keepHost is
// set (engines whose accounts have hosts).
func UpdateTarget(a wire.UpdateUserArgs, keepHost bool, checkRef func(*wire.UserRef) error, checkPassword func(string) error) (old, target wire.UserRef, err error) {
	old = a.User
	if err := checkRef(&old); err != nil {
		return old, target, err
	}
	target = wire.UserRef{Name: a.NewName, Host: a.NewHost}
	if target.Name == "" {
		target.Name = old.Name
	}
	if keepHost && target.Host == "" {
		target.Host = old.Host
	}
	if err := checkRef(&target); err != nil {
		return old, target, fmt.Errorf("new name or host: %w", err)
	}
	if a.NewPassword != "" {
		if err := checkPassword(a.NewPassword); err != nil {
			return old, target, err
		}
	}
	return old, target, nil
}

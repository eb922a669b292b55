package datastore

import (
	"fmt"
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

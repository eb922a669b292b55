package lifecycle

import (
	"net/netip"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Names that reach a guest's database are checked here as well as by the
// agent: the API refuses anything that is not a plain identifier before it
// is queued, so an injection attempt never leaves the controller. The
// patterns are the intersection of what the datastore managers accept.
var (
	databaseNamePattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_$-]{0,63}$`)
	userNamePattern     = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.$-]{0,79}$`)
	hostPattern         = regexp.MustCompile(`^[A-Za-z0-9%_.:/-]{1,255}$`)
	charsetPattern      = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
	instanceNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._ -]{0,254}$`)
)

// systemDatabases may not be created, dropped or granted.
var systemDatabases = map[string]bool{
	"mysql": true, "information_schema": true, "performance_schema": true, "sys": true,
	"postgres": true, "template0": true, "template1": true,
}

// reservedUsers are the datastores' and the agent's own accounts.
var reservedUsers = map[string]bool{
	"root": true, "mariadb.sys": true, "mysql": true, "debian-sys-maint": true, "os_admin": true, "postgres": true,
}

func show(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strings.ToValidUTF8(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s), "?")
}

// CheckDatabaseName validates a database name.
func CheckDatabaseName(name string) error {
	switch {
	case name == "":
		return wrap(ErrBadRequest, "database name is empty")
	case !databaseNamePattern.MatchString(name):
		return wrap(ErrBadRequest, "database name %q: use 1-64 characters of A-Z a-z 0-9 _ $ - (not starting with $ or -)", show(name))
	case systemDatabases[strings.ToLower(name)]:
		return wrap(ErrBadRequest, "database %q is a system database", show(name))
	}
	return nil
}

// CheckCharset validates a character set or collation name.
func CheckCharset(what, v string) error {
	if v != "" && !charsetPattern.MatchString(v) {
		return wrap(ErrBadRequest, "%s %q: use 1-64 characters of a-z 0-9 _", what, show(v))
	}
	return nil
}

// CheckUserName validates a user name and host ("" means any host).
func CheckUserName(name, host string) error {
	switch {
	case name == "":
		return wrap(ErrBadRequest, "user name is empty")
	case !userNamePattern.MatchString(name):
		return wrap(ErrBadRequest, "user name %q: use 1-80 characters of A-Z a-z 0-9 _ . $ - (not starting with . $ or -)", show(name))
	case reservedUsers[strings.ToLower(name)]:
		return wrap(ErrBadRequest, "user %q is reserved for the system", show(name))
	case host != "" && !hostPattern.MatchString(host):
		return wrap(ErrBadRequest, "host %q: use a host name, an IP address or netmask, %% or _ wildcards", show(host))
	}
	return nil
}

// CheckPassword validates a password.
func CheckPassword(pw string) error {
	switch {
	case pw == "":
		return wrap(ErrBadRequest, "password is empty")
	case len(pw) > 256:
		return wrap(ErrBadRequest, "password is longer than 256 bytes")
	case !utf8.ValidString(pw) || strings.ContainsAny(pw, "\x00\\"):
		return wrap(ErrBadRequest, "password must be UTF-8 without NUL or backslash")
	}
	return nil
}

// CheckInstanceName validates an instance name.
func CheckInstanceName(name string) error {
	if !instanceNamePattern.MatchString(name) {
		return wrap(ErrBadRequest, "instance name %q: use 1-255 characters of A-Z a-z 0-9 . _ - and spaces, starting with a letter or digit", show(name))
	}
	return nil
}

// MaxAllowedCIDRs bounds access.allowed_cidrs: the publisher checks
// every connection against the list.
const MaxAllowedCIDRs = 100

// CheckAllowedCIDRs checks Trove's access.allowed_cidrs (IPv4 addresses or
// blocks, as Trove's schema takes them) and returns them in canonical
// form, duplicates refused.
func CheckAllowedCIDRs(cidrs []string) ([]string, error) {
	if len(cidrs) > MaxAllowedCIDRs {
		return nil, wrap(ErrBadRequest, "access.allowed_cidrs: %d entries; at most %d", len(cidrs), MaxAllowedCIDRs)
	}
	out := []string{}
	seen := map[string]bool{}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			a, aerr := netip.ParseAddr(c)
			if aerr != nil {
				return nil, wrap(ErrBadRequest, "access.allowed_cidrs: %q is not an IPv4 address or CIDR block", show(c))
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if !p.Addr().Is4() {
			return nil, wrap(ErrBadRequest, "access.allowed_cidrs: %q is not IPv4", show(c))
		}
		s := p.String()
		if seen[s] {
			return nil, wrap(ErrBadRequest, "access.allowed_cidrs: %s is listed twice", s)
		}
		seen[s] = true
		out = append(out, s)
	}
	return out, nil
}

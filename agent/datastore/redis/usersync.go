package redis

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"strata/agent/wire"
)

// Redis replication carries keys, not ACL users: a replica has its
// source's users only as its seed backup's ACL file held them. The
// controller carries the rest (export_users on the source, import_users
// on each replica). The set is every user the API manages: the API's
// users and root (the default user); never the agent's own user nor a
// replication account, which belong to each server.

// rootRules and the API users' userRules are the only permissions a
// synced line may carry, as ACL LIST writes them, in this order.
var rootRules = []string{"~*", "&*", "+@all"}

// clearRules take a user back to nothing but its on/off flag and
// sanitize-payload (which no rule clears); the line's rules follow.
var clearRules = []string{"resetpass", "resetkeys", "resetchannels", "clearselectors", "-@all"}

// syncedUser is one validated line: "user <name> <rules...>".
type syncedUser struct {
	name  string
	rules []string // flags, password hashes, permissions
	line  string
}

// ExportUsers lists the API-managed users as ACL LIST describes them
// (rules and "#<sha256>" password hashes). A user the API would not have
// made (another name form, other rules: root may make such users) is
// left out and named in Skipped, so no replica's import refuses the set
// for it.
func (m *Manager) ExportUsers(ctx context.Context) (wire.ExportUsersResult, error) {
	return m.exportUsers(ctx, true)
}

// exportUsers is ExportUsers; warn logs each user left out.
func (m *Manager) exportUsers(ctx context.Context, warn bool) (wire.ExportUsersResult, error) {
	res := wire.ExportUsersResult{Users: []string{}}
	if err := m.ready(ctx); err != nil {
		return res, err
	}
	lines, err := m.aclList(ctx)
	if err != nil {
		return res, err
	}
	for _, line := range lines {
		name := lineName(line)
		if !managedName(name) {
			continue
		}
		u, err := parseSyncedUser(line)
		if err != nil {
			if warn {
				m.log.Warn("user left out of the replicas' sync: not in a form the API makes", "user", name, "err", err)
			}
			res.Skipped = append(res.Skipped, name)
			continue
		}
		res.Users = append(res.Users, u.line)
	}
	return res, nil
}

// UsersDigestEvery is how many heartbeats may reuse a digest while the
// ACL file looks unchanged: users changed without an ACL SAVE (root's
// own ACL SETUSER) show within that many.
const UsersDigestEvery = 30

// usersDigestCache is the last UsersDigest and what it was read at.
type usersDigestCache struct {
	mu      sync.Mutex
	digest  string
	modTime time.Time
	size    int64
	uses    int
}

// UsersDigest is wire.UsersDigest of what ExportUsers would answer now,
// for heartbeats: read from the server again only when the ACL file's
// modification time or size changed (every API user change and every
// import ends with ACL SAVE) or after UsersDigestEvery heartbeats,
// otherwise the last one.
func (m *Manager) UsersDigest(ctx context.Context) (string, error) {
	c := &m.digest
	c.mu.Lock()
	defer c.mu.Unlock()
	fi, statErr := os.Stat(m.cfg.ACLFile)
	if statErr == nil && c.digest != "" && c.uses < UsersDigestEvery && fi.ModTime().Equal(c.modTime) && fi.Size() == c.size {
		c.uses++
		return c.digest, nil
	}
	res, err := m.exportUsers(ctx, false)
	if err != nil {
		c.digest = ""
		return "", err
	}
	c.digest, c.uses = wire.UsersDigest(res.Users), 1
	if statErr == nil {
		// Read before the export: a save racing it shows next time.
		c.modTime, c.size = fi.ModTime(), fi.Size()
	} else {
		c.modTime, c.size = time.Time{}, -1
	}
	return c.digest, nil
}

// ImportUsers makes the API-managed users exactly lines (as ExportUsers
// gave them on the source): a user listed is created, or reset to
// exactly its rules and password hashes when it differs; an API user not
// listed is deleted; root is set when listed (never deleted); the
// agent's user and replication accounts are never touched. Every line is
// checked before anything changes; a bad one is invalid_argument naming
// the line. All changes go in one MULTI/EXEC, then ACL SAVE; a refused
// command or a failed save puts the previous users back. Users already
// as listed are left alone: a re-run changes nothing and saves nothing.
func (m *Manager) ImportUsers(ctx context.Context, lines []string) (wire.ImportUsersResult, error) {
	var res wire.ImportUsersResult
	want, err := parseImport(lines)
	if err != nil {
		return res, err
	}
	if err := m.ready(ctx); err != nil {
		return res, err
	}
	current, err := m.aclList(ctx)
	if err != nil {
		return res, err
	}
	have := map[string]string{} // managed name → its current line
	for _, line := range current {
		if name := lineName(line); managedName(name) {
			have[name] = line
		}
	}
	var apply, undo [][]string
	listed := map[string]bool{}
	for _, u := range want {
		listed[u.name] = true
		old, exists := have[u.name]
		if exists && old == u.line {
			continue
		}
		set := append(append([]string{"ACL", "SETUSER", u.name}, clearRules...), u.rules...)
		// A flag no rule clears (sanitize-payload, set by "reset") takes
		// deleting the user first; root cannot be deleted, and never has it.
		if exists && u.name != RootUser && hasFlag(old, "sanitize-payload") && !slices.Contains(u.rules, "sanitize-payload") {
			apply = append(apply, []string{"ACL", "DELUSER", u.name})
		}
		apply = append(apply, set)
		res.Changed = append(res.Changed, u.name)
		if exists {
			undo = append(undo, restore(old)...)
		} else {
			undo = append(undo, []string{"ACL", "DELUSER", u.name})
		}
	}
	for _, line := range current {
		name := lineName(line)
		if !managedName(name) || name == RootUser || listed[name] {
			continue
		}
		apply = append(apply, []string{"ACL", "DELUSER", name})
		res.Deleted = append(res.Deleted, name)
		undo = append(undo, restore(line)...)
	}
	if len(apply) == 0 {
		return res, nil
	}
	if err := m.applyACL(ctx, "import_users", apply, undo); err != nil {
		return wire.ImportUsersResult{}, err
	}
	return res, nil
}

// aclList is ACL LIST: one line per user, "user <name> <rules...>".
func (m *Manager) aclList(ctx context.Context) ([]string, error) {
	r, err := m.do(ctx, "ACL", "LIST")
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return r.Strings(), nil
}

// lineName is the user an ACL LIST line describes ("" if none).
func lineName(line string) string {
	f := strings.SplitN(line, " ", 3)
	if len(f) < 2 || f[0] != "user" {
		return ""
	}
	return f[1]
}

// managedName tells the users the sync carries: root and every name
// ListUsers shows.
func managedName(name string) bool {
	if name == RootUser {
		return true
	}
	return name != "" && !reservedUsers[strings.ToLower(name)] && !isReplicationAccount(name)
}

func hasFlag(line, flag string) bool {
	return slices.Contains(strings.Fields(line), flag)
}

// restore gives back a user as an ACL LIST line described it: deleted
// (unless root) and set again from the line's rules, which is what
// ACL LOAD does with the same text. Selectors, "(...)", are one rule
// each though they hold spaces.
func restore(line string) [][]string {
	name := lineName(line)
	rules := aclRules(strings.TrimPrefix(line, "user "+name))
	if name == RootUser {
		return [][]string{append(append([]string{"ACL", "SETUSER", name}, clearRules...), rules...)}
	}
	return [][]string{{"ACL", "DELUSER", name}, append([]string{"ACL", "SETUSER", name}, rules...)}
}

// aclRules splits the rules of an ACL LIST line at spaces outside
// parentheses.
func aclRules(s string) []string {
	var out []string
	var cur strings.Builder
	depth := 0
	for _, c := range s {
		switch {
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case c == ' ' && depth == 0:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
			continue
		}
		cur.WriteRune(c)
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// parseImport checks every line of an import before anything changes.
func parseImport(lines []string) ([]syncedUser, error) {
	if lines == nil {
		return nil, invalid("users: the whole set is required (an empty list deletes every API user)")
	}
	if len(lines) > wire.MaxImportUsers {
		return nil, invalid("users: %d lines; at most %d in one import", len(lines), wire.MaxImportUsers)
	}
	out := make([]syncedUser, 0, len(lines))
	seen := map[string]bool{}
	for i, line := range lines {
		u, err := parseSyncedUser(line)
		if err == nil && seen[u.name] {
			err = fmt.Errorf("user %s is listed twice", show(u.name))
		}
		if err != nil {
			return nil, invalid("users: line %d refused, nothing changed: %v", i+1, err)
		}
		seen[u.name] = true
		out = append(out, u)
	}
	return out, nil
}

// parseSyncedUser accepts exactly the lines ACL LIST writes for users the
// API makes: "user <name>" then on or off, the API user's
// sanitize-payload (set by its "reset"), password hashes ("#" and 64
// lowercase hex digits), and the permissions — an API user's
// "~* &* +@all -@admin", root's "~* &* +@all". Root, switched off, may
// have nopass instead of hashes (it can log in neither way). Nothing
// else: no other key, channel or command rule, no selector, no ">"
// clear password, no control byte. Errors quote no hash.
func parseSyncedUser(line string) (syncedUser, error) {
	for _, c := range []byte(line) {
		if c < 0x20 || c > 0x7e {
			return syncedUser{}, fmt.Errorf("byte 0x%02x: a line is printable ASCII, one user", c)
		}
	}
	f := strings.Split(line, " ")
	if len(f) < 3 || f[0] != "user" {
		return syncedUser{}, fmt.Errorf(`not "user <name> <rules>"`)
	}
	u := syncedUser{name: f[1], rules: f[2:], line: line}
	if u.name != RootUser {
		ref := wire.UserRef{Name: u.name}
		if err := checkUserRef(&ref); err != nil {
			return syncedUser{}, fmt.Errorf("%s", err.(*wire.OpError).Message)
		}
	}
	perms := userRules[1:]
	if u.name == RootUser {
		perms = rootRules
	}
	var state string
	var nopass, sanitize bool
	hashes := map[string]bool{}
	i := 0
	for ; i < len(u.rules) && !strings.HasPrefix(u.rules[i], "~"); i++ {
		r := u.rules[i]
		switch {
		case r == "on" || r == "off":
			if state != "" {
				return syncedUser{}, fmt.Errorf("user %s: on/off given twice", show(u.name))
			}
			state = r
		case r == "sanitize-payload" && u.name != RootUser && !sanitize:
			sanitize = true
		case r == "nopass" && u.name == RootUser && !nopass:
			nopass = true
		case isHashRule(r):
			if hashes[r] {
				return syncedUser{}, fmt.Errorf("user %s: a password hash is given twice", show(u.name))
			}
			hashes[r] = true
		default:
			return syncedUser{}, fmt.Errorf("user %s: rule %s is not one the API gives (%s)", show(u.name), ruleShown(r), strings.Join(perms, " "))
		}
	}
	switch {
	case state == "":
		return syncedUser{}, fmt.Errorf("user %s: neither on nor off", show(u.name))
	case nopass && (state != "off" || len(hashes) > 0):
		return syncedUser{}, fmt.Errorf("user %s: nopass is accepted only for root switched off, without passwords", show(u.name))
	case !slices.Equal(u.rules[i:], perms):
		return syncedUser{}, fmt.Errorf("user %s: permissions must be exactly %q", show(u.name), strings.Join(perms, " "))
	}
	return u, nil
}

// isHashRule tells "#" followed by 64 lowercase hex digits.
func isHashRule(r string) bool {
	if len(r) != 65 || r[0] != '#' {
		return false
	}
	for _, c := range []byte(r[1:]) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ruleShown names a refused rule without echoing a secret: a password
// (">...") or something hash-like is shown by its first byte only.
func ruleShown(r string) string {
	if strings.HasPrefix(r, ">") || strings.HasPrefix(r, "#") || strings.HasPrefix(r, "<") {
		return fmt.Sprintf("%q… (%d bytes)", r[:1], len(r))
	}
	return show(r)
}

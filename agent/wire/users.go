package wire

// ExportUsersResult is a source's API-managed users (export_users), each
// one line as the datastore describes it (Redis: an `ACL LIST` line,
// "user <name> <rules...>", password hashes included). Together they are
// the whole set: import_users makes a replica's users exactly these.
type ExportUsersResult struct {
	Users []string `json:"users"`
	// Skipped names users the datastore holds that are not in a form the
	// API makes (created by root with other rules): they are left out of
	// Users, and an import removes them from a replica.
	Skipped []string `json:"skipped,omitempty"`
}

// ImportUsersArgs is the whole set of API-managed users a replica gets,
// as export_users gave them.
type ImportUsersArgs struct {
	Users []string `json:"users"`
}

// ImportUsersResult names what the import changed: users created or
// whose rules or password hashes were reset, and users deleted. Both
// empty: the replica held the set already.
type ImportUsersResult struct {
	Changed []string `json:"changed,omitempty"`
	Deleted []string `json:"deleted,omitempty"`
}

// MaxImportUsers bounds the users one import carries: the API's users
// (created at most MaxItemsPerOp at a time, with no total bound the agent
// knows) and root. An import of more is refused whole. A Redis line with
// one password hash is about 120 bytes, so this many stay well inside
// MaxMessageSize.
const MaxImportUsers = 5000

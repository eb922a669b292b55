package wire

import "encoding/json"

// Kind names an operation. Each kind lists its argument type (sent in
// Operation.Args) and its result type (returned in Result.Payload); "—"
// means none. Arguments are decoded strictly: an unknown field is an
// invalid_argument error.
type Kind string

const (
	KindPrepare            Kind = "prepare"             // PrepareArgs → PrepareResult
	KindStatus             Kind = "status"              // — → StatusResult
	KindRestart            Kind = "restart"             // — → —
	KindStop               Kind = "stop"                // — → —
	KindListDatabases      Kind = "list_databases"      // — → ListDatabasesResult
	KindCreateDatabases    Kind = "create_databases"    // CreateDatabasesArgs → —
	KindDeleteDatabase     Kind = "delete_database"     // DeleteDatabaseArgs → —
	KindListUsers          Kind = "list_users"          // — → ListUsersResult
	KindCreateUsers        Kind = "create_users"        // CreateUsersArgs → —
	KindDeleteUser         Kind = "delete_user"         // UserRef → —
	KindGrantAccess        Kind = "grant_access"        // GrantAccessArgs → —
	KindRevokeAccess       Kind = "revoke_access"       // RevokeAccessArgs → —
	KindListAccess         Kind = "list_access"         // UserRef → ListAccessResult
	KindEnableRoot         Kind = "enable_root"         // EnableRootArgs → RootCredentials
	KindDisableRoot        Kind = "disable_root"        // — → —
	KindIsRootEnabled      Kind = "is_root_enabled"     // — → IsRootEnabledResult
	KindApplyConfiguration Kind = "apply_configuration" // ConfigurationArgs → ConfigurationResult
	KindFilesystemStats    Kind = "filesystem_stats"    // — → FilesystemStats
	KindListLogs           Kind = "list_logs"           // — → ListLogsResult
	KindTailLog            Kind = "tail_log"            // TailLogArgs → LogTail
	// KindResizeFilesystem grows the data volume's filesystem to fill its
	// device after the controller extended the volume.
	KindResizeFilesystem Kind = "resize_filesystem" // — → FilesystemStats
	// KindBackup streams a backup of the datastore to the controller over
	// one data channel (see ChannelStream and backups.go).
	KindBackup Kind = "backup" // BackupArgs → BackupResult
	// KindRestore makes a fresh guest's datastore from a chain of backups
	// the controller streams in, instead of prepare.
	KindRestore Kind = "restore" // RestoreArgs → RestoreResult
	// KindUpdateUser renames an account (name, host) and/or sets its
	// password, all or nothing; a datastore.UserUpdater capability.
	KindUpdateUser Kind = "update_user" // UpdateUserArgs → —
	// KindChangePasswords sets the passwords of several existing
	// accounts, all or nothing where the engine allows it.
	KindChangePasswords Kind = "change_passwords" // ChangePasswordsArgs → —
	// KindSetLog turns a log the user may switch (LogInfo.Switchable) on
	// or off, at once and across restarts.
	KindSetLog Kind = "set_log" // SetLogArgs → LogInfo
	// KindPublishLog streams a log's whole current content to the
	// controller over one data channel (stream 0), as a backup does.
	KindPublishLog Kind = "publish_log" // PublishLogArgs → PublishLogResult
	// Replication (a datastore.Replicator capability, see replication.go).
	// On the primary: create and drop one replica's replication account.
	KindCreateReplicationAccount Kind = "create_replication_account" // ReplicationAccountArgs → ReplicationSourceResult
	KindDropReplicationAccount   Kind = "drop_replication_account"   // ReplicationAccountRef → —
	// On a replica: follow a primary, report the link, and detach.
	KindStartReplication  Kind = "start_replication"  // StartReplicationArgs → ReplicationStatus
	KindReplicationStatus Kind = "replication_status" // — → ReplicationStatus
	KindDetachReplica     Kind = "detach_replica"     // — → ReplicationStatus
	// KindGetConfiguration reports the configuration the datastore's
	// files give it: the base configuration the agent rendered for the
	// flavor, the log switches, then the configuration group, later
	// files winning (a datastore.ConfigurationReader capability).
	KindGetConfiguration Kind = "get_configuration" // — → EffectiveConfiguration
	// Switchover: the old primary stops taking writes (and takes them
	// again on a rollback); the chosen replica waits until it applied the
	// old primary's last position, then becomes a writable primary.
	KindSetReadOnly    Kind = "set_read_only"   // SetReadOnlyArgs → ReplicationStatus
	KindPromoteReplica Kind = "promote_replica" // PromoteReplicaArgs → ReplicationStatus
	// KindRejoinReplication makes a former primary, stopped cleanly
	// after its fence, a replica of the new one (a datastore.Rejoiner
	// capability: PostgreSQL, whose former primary cannot simply be told
	// to follow). It is delivered while the server is stopped.
	KindRejoinReplication Kind = "rejoin_replication" // StartReplicationArgs → ReplicationStatus
	// User sync (a datastore.UserSyncer capability: Redis, whose
	// replication carries no ACL users). On a source: its API-managed
	// users as the server describes them (rules and password hashes,
	// never passwords). On a replica: make its API-managed users exactly
	// that set.
	KindExportUsers Kind = "export_users" // — → ExportUsersResult
	KindImportUsers Kind = "import_users" // ImportUsersArgs → ImportUsersResult
)

// Kinds lists every kind this protocol version defines.
var Kinds = []Kind{
	KindPrepare, KindStatus, KindRestart, KindStop,
	KindListDatabases, KindCreateDatabases, KindDeleteDatabase,
	KindListUsers, KindCreateUsers, KindDeleteUser, KindGrantAccess, KindRevokeAccess, KindListAccess,
	KindEnableRoot, KindDisableRoot, KindIsRootEnabled,
	KindApplyConfiguration, KindFilesystemStats, KindListLogs, KindTailLog,
	KindResizeFilesystem, KindBackup, KindRestore,
	KindUpdateUser, KindChangePasswords,
	KindSetLog, KindPublishLog,
	KindCreateReplicationAccount, KindDropReplicationAccount,
	KindStartReplication, KindReplicationStatus, KindDetachReplica,
	KindApplyFlavor, KindGetConfiguration,
	KindSetReadOnly, KindPromoteReplica,
	KindUpgradeDatastore, KindRejoinReplication,
	KindExportUsers, KindImportUsers,
}

// MaxItemsPerOp bounds the databases or users one operation may carry.
const MaxItemsPerOp = 100

// Database is a schema. Empty CharacterSet/Collation mean the server's
// default.
type Database struct {
	Name         string `json:"name"`
	CharacterSet string `json:"character_set,omitempty"`
	Collation    string `json:"collation,omitempty"`
}

// User is a database account. Password is only ever sent to the agent
// (create); listings leave it empty. Host defaults to "%".
type User struct {
	Name      string   `json:"name"`
	Host      string   `json:"host,omitempty"`
	Password  string   `json:"password,omitempty"`
	Databases []string `json:"databases,omitempty"`
}

// UserRef names an account.
type UserRef struct {
	Name string `json:"name"`
	Host string `json:"host,omitempty"`
}

// PrepareArgs initialise a fresh guest's datastore (Trove's prepare).
type PrepareArgs struct {
	// MemoryMB is the flavor's RAM; buffer sizes are derived from it.
	MemoryMB  int        `json:"memory_mb,omitempty"`
	Databases []Database `json:"databases,omitempty"`
	Users     []User     `json:"users,omitempty"`
	// EnableRoot creates the remote root account now (Trove's
	// root_enabled_on_create); the generated password is in the result.
	EnableRoot bool `json:"enable_root,omitempty"`
	// RootPassword, with EnableRoot, is the root password the controller
	// chose (root_on_create: it was handed out in the create response);
	// empty means generate one. A given password is not echoed in
	// PrepareResult.Root.
	RootPassword string `json:"root_password,omitempty"`
	// Configuration, if set, is applied as the initial override set.
	Configuration *ConfigurationArgs `json:"configuration,omitempty"`
	// AuthPlugin is the authentication plugin the datastore gives the
	// accounts it creates (MariaDB: AuthPluginNative or AuthPluginEd25519;
	// empty: the manager's default). Other managers refuse a value.
	AuthPlugin string `json:"auth_plugin,omitempty"`
}

// MariaDB authentication plugins a datastore version may choose
// (PrepareArgs.AuthPlugin, RestoreArgs.AuthPlugin).
const (
	// AuthPluginNative stores unsalted SHA-1(SHA-1(password)); every
	// MySQL-protocol client speaks it. The default.
	AuthPluginNative = "mysql_native_password"
	// AuthPluginEd25519 stores an ed25519 public key derived from the
	// password; clients need MariaDB's ed25519 support.
	AuthPluginEd25519 = "ed25519"
)

// ValidAuthPlugin reports whether p is empty or one of the plugins above.
func ValidAuthPlugin(p string) bool {
	return p == "" || p == AuthPluginNative || p == AuthPluginEd25519
}

// PrepareResult reports what prepare created.
type PrepareResult struct {
	Root *RootCredentials `json:"root,omitempty"`
	// Formatted is true when prepare made a new filesystem on the data
	// device; false when it found one (rebuild keeps its data) or there is
	// no device.
	Formatted bool `json:"formatted"`
	// Initialized is false when the data directory held a database already
	// (rebuild), which prepare then kept.
	Initialized bool `json:"initialized"`
	// TLSFingerprint is the SHA-256 of the DER certificate the datastore
	// presents to TLS clients, as lowercase hex pairs joined by colons;
	// empty when the datastore serves no TLS.
	TLSFingerprint string `json:"tls_fingerprint,omitempty"`
}

// StatusResult is the datastore's current status.
type StatusResult struct {
	Status DatastoreStatus `json:"status"`
	Detail string          `json:"detail,omitempty"`
}

type CreateDatabasesArgs struct {
	Databases []Database `json:"databases"`
}

type DeleteDatabaseArgs struct {
	Name string `json:"name"`
}

type ListDatabasesResult struct {
	Databases []Database `json:"databases"`
}

type CreateUsersArgs struct {
	Users []User `json:"users"`
}

// UpdateUserArgs changes one account: a new name, host and/or password
// (an empty field keeps the current value; at least one must change).
type UpdateUserArgs struct {
	User        UserRef `json:"user"`
	NewName     string  `json:"new_name,omitempty"`
	NewHost     string  `json:"new_host,omitempty"`
	NewPassword string  `json:"new_password,omitempty"`
}

// ChangePasswordsArgs sets each user's Password (Databases must be
// empty).
type ChangePasswordsArgs struct {
	Users []User `json:"users"`
}

type ListUsersResult struct {
	Users []User `json:"users"`
}

type GrantAccessArgs struct {
	Name      string   `json:"name"`
	Host      string   `json:"host,omitempty"`
	Databases []string `json:"databases"`
}

type RevokeAccessArgs struct {
	Name     string `json:"name"`
	Host     string `json:"host,omitempty"`
	Database string `json:"database"`
}

type ListAccessResult struct {
	Databases []string `json:"databases"`
}

// EnableRootArgs: an empty Password means generate one.
type EnableRootArgs struct {
	Password string `json:"password,omitempty"`
}

// RootCredentials are returned once, by enable_root (and prepare with
// EnableRoot); the agent writes no copy to disk (ResultHoldsCredentials).
type RootCredentials struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

type IsRootEnabledResult struct {
	Enabled bool `json:"enabled"`
}

// ConfigurationArgs is a complete override set (a configuration group):
// after the operation the datastore's override file holds exactly Values.
// Every name in Values must have a rule in Rules; the rules come from the
// controller's validation-rules file for this datastore version.
type ConfigurationArgs struct {
	Values map[string]json.RawMessage `json:"values"`
	Rules  []ParameterRule            `json:"rules"`
}

// ParameterRule follows Trove's validation-rules.json entries, extended
// with allowed values.
type ParameterRule struct {
	Name string `json:"name"`
	// Type is "integer", "float", "string" or "boolean".
	Type string `json:"type"`
	// Min and Max bound integer and float values; kept as JSON numbers so
	// 64-bit limits survive.
	Min *json.Number `json:"min,omitempty"`
	Max *json.Number `json:"max,omitempty"`
	// RestartRequired: the server only reads the value at start.
	RestartRequired bool `json:"restart_required"`
	// AllowedValues, if set, lists the accepted values (case-insensitive).
	AllowedValues []string `json:"allowed_values,omitempty"`
	// AllowEmpty admits the empty string for a string parameter whose
	// empty value means something (Redis's save "" turns snapshots off).
	AllowEmpty bool `json:"allow_empty,omitempty"`
	// Apply is how a change takes effect: live, reload or restart (see
	// ApplyMethod for the default).
	Apply string `json:"apply,omitempty"`
	// Description is for people (Trove's rules carry none; ours may).
	Description string `json:"description,omitempty"`
}

// ConfigurationResult says what took effect now and what waits for a
// restart.
type ConfigurationResult struct {
	AppliedLive     []string `json:"applied_live,omitempty"`
	PendingRestart  []string `json:"pending_restart,omitempty"`
	RestartRequired bool     `json:"restart_required"`
}

// EffectiveConfiguration is the configuration a datastore's files give
// it, parameter → value: a JSON number where the file's value is a plain
// number (sizes with a K/M/G suffix in MariaDB's files as bytes), else the
// value as written, unquoted, as a JSON string.
type EffectiveConfiguration struct {
	Values map[string]json.RawMessage `json:"values"`
}

// LogInfo describes one log the agent can tail.
type LogInfo struct {
	Name string `json:"name"`
	// Type is "datastore" or "agent".
	Type      string `json:"type"`
	Path      string `json:"path,omitempty"`
	Enabled   bool   `json:"enabled"`
	SizeBytes int64  `json:"size_bytes"`
	// Switchable: set_log turns it on and off (Trove's USER logs); the
	// others are always written (Trove's SYS logs).
	Switchable bool `json:"switchable,omitempty"`
}

// SetLogArgs switch one log on or off.
type SetLogArgs struct {
	Name   string `json:"name"`
	Enable bool   `json:"enable"`
}

// PublishLogArgs name the log to stream.
type PublishLogArgs struct {
	Name string `json:"name"`
}

// PublishLogResult reports a published log: the digest of the bytes sent
// on the stream (the log's content, uncompressed) and how many lines they
// hold.
type PublishLogResult struct {
	Name   string       `json:"name"`
	Stream StreamDigest `json:"stream"`
	Lines  int64        `json:"lines"`
}

type ListLogsResult struct {
	Logs []LogInfo `json:"logs"`
}

// MaxTailLines bounds TailLogArgs.Lines; MaxTailBytes bounds the text
// returned.
const (
	MaxTailLines = 5000
	MaxTailBytes = 512 << 10
)

type TailLogArgs struct {
	Name  string `json:"name"`
	Lines int    `json:"lines"`
}

// LogTail holds the last lines of a log, oldest first. Truncated is set
// when MaxTailBytes cut lines off the front.
type LogTail struct {
	Name      string   `json:"name"`
	Lines     []string `json:"lines"`
	Truncated bool     `json:"truncated,omitempty"`
}

// ResultHoldsCredentials reports whether a successful result of kind
// carries credentials (a root password): the agent answers a resend with
// such a result from memory only and never writes it to disk.
func ResultHoldsCredentials(kind Kind, payload json.RawMessage) bool {
	if len(payload) == 0 {
		return false
	}
	switch kind {
	case KindEnableRoot:
		return true
	case KindPrepare:
		var p PrepareResult
		return json.Unmarshal(payload, &p) != nil || p.Root != nil
	}
	return false
}

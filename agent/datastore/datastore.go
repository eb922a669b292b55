// Package datastore is the one interface every datastore manager implements
// (MariaDB in datastore/mariadb; PostgreSQL and Redis next to it, laid out
// the same way), plus what managers share: the service controller
// interface, the lifecycle (state file, prepare at most once, status,
// restart and stop), prepare's common steps (data volume, configuration
// files, waiting for the server), argument and configuration rule checks,
// SQL helpers, files, passwords and log tailing. What differs between
// datastores stays in their managers: nothing here names one.
//
// A manager turns validated operations into changes on its database. It
// must validate every name and value before changing anything, return a
// *wire.OpError with the right code for anything the caller got wrong, and
// never talk to the controller itself: it returns facts and errors, the
// agent's dispatch reports them.
package datastore

import (
	"context"

	"strata/agent/wire"
)

// Manager is a datastore manager. Methods a datastore cannot do return
// wire.CodeNotSupported (embed Unsupported to get that by default).
type Manager interface {
	// Prepare makes a fresh guest's database: data volume, data
	// directory, configuration, start, initial databases and users.
	Prepare(ctx context.Context, args wire.PrepareArgs) (wire.PrepareResult, error)
	// Status never fails: what cannot be determined is StatusUnknown with
	// the reason in Detail.
	Status(ctx context.Context) wire.StatusResult
	Restart(ctx context.Context) error
	Stop(ctx context.Context) error

	ListDatabases(ctx context.Context) ([]wire.Database, error)
	CreateDatabases(ctx context.Context, dbs []wire.Database) error
	DeleteDatabase(ctx context.Context, name string) error

	ListUsers(ctx context.Context) ([]wire.User, error)
	CreateUsers(ctx context.Context, users []wire.User) error
	DeleteUser(ctx context.Context, user wire.UserRef) error
	GrantAccess(ctx context.Context, user wire.UserRef, databases []string) error
	RevokeAccess(ctx context.Context, user wire.UserRef, database string) error
	ListAccess(ctx context.Context, user wire.UserRef) ([]string, error)

	EnableRoot(ctx context.Context, password string) (wire.RootCredentials, error)
	DisableRoot(ctx context.Context) error
	IsRootEnabled(ctx context.Context) (bool, error)

	ApplyConfiguration(ctx context.Context, args wire.ConfigurationArgs) (wire.ConfigurationResult, error)

	// DataPath is a path on the data volume, for filesystem stats.
	DataPath() string
	// Logs lists the datastore's own logs; TailLog returns the last lines
	// of one of them.
	Logs(ctx context.Context) ([]wire.LogInfo, error)
	TailLog(ctx context.Context, name string, lines int) (wire.LogTail, error)
}

// Flusher is a manager whose datastore can be made to write out what it
// has acknowledged, whatever its own durability settings say
// (innodb_flush_log_at_trx_commit, synchronous_commit, appendfsync...).
// The agent calls Flush after every operation that changes the guest and
// then syncs the data and configuration filesystems (SyncFS), so that an
// operation reported done survives the VM being killed right after.
type Flusher interface {
	Flush(ctx context.Context) error
}

// Service starts and stops the database server process. In the guest it
// is a systemd unit (package datastore/systemd); tests run the real server
// binary directly.
type Service interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	Restart(ctx context.Context) error
	// Enable makes the server start at boot.
	Enable(ctx context.Context) error
}

// Unsupported answers every Manager method with not_supported; a manager
// embeds it and overrides what its datastore can do.
type Unsupported struct{ Datastore string }

func (u Unsupported) err(op string) error {
	return wire.Errorf(wire.CodeNotSupported, "%s does not support %s", u.Datastore, op)
}

func (u Unsupported) Prepare(context.Context, wire.PrepareArgs) (wire.PrepareResult, error) {
	return wire.PrepareResult{}, u.err("prepare")
}
func (u Unsupported) Status(context.Context) wire.StatusResult {
	return wire.StatusResult{Status: wire.StatusUnknown, Detail: u.Datastore + " reports no status"}
}
func (u Unsupported) Restart(context.Context) error { return u.err("restart") }
func (u Unsupported) Stop(context.Context) error    { return u.err("stop") }
func (u Unsupported) ListDatabases(context.Context) ([]wire.Database, error) {
	return nil, u.err("databases")
}
func (u Unsupported) CreateDatabases(context.Context, []wire.Database) error {
	return u.err("databases")
}
func (u Unsupported) DeleteDatabase(context.Context, string) error { return u.err("databases") }
func (u Unsupported) ListUsers(context.Context) ([]wire.User, error) {
	return nil, u.err("users")
}
func (u Unsupported) CreateUsers(context.Context, []wire.User) error { return u.err("users") }
func (u Unsupported) DeleteUser(context.Context, wire.UserRef) error { return u.err("users") }
func (u Unsupported) GrantAccess(context.Context, wire.UserRef, []string) error {
	return u.err("user access")
}
func (u Unsupported) RevokeAccess(context.Context, wire.UserRef, string) error {
	return u.err("user access")
}
func (u Unsupported) ListAccess(context.Context, wire.UserRef) ([]string, error) {
	return nil, u.err("user access")
}
func (u Unsupported) EnableRoot(context.Context, string) (wire.RootCredentials, error) {
	return wire.RootCredentials{}, u.err("root")
}
func (u Unsupported) DisableRoot(context.Context) error           { return u.err("root") }
func (u Unsupported) IsRootEnabled(context.Context) (bool, error) { return false, u.err("root") }
func (u Unsupported) ApplyConfiguration(context.Context, wire.ConfigurationArgs) (wire.ConfigurationResult, error) {
	return wire.ConfigurationResult{}, u.err("configuration")
}
func (u Unsupported) DataPath() string { return "/" }
func (u Unsupported) Logs(context.Context) ([]wire.LogInfo, error) {
	return nil, nil
}
func (u Unsupported) TailLog(_ context.Context, name string, _ int) (wire.LogTail, error) {
	return wire.LogTail{}, wire.Errorf(wire.CodeNotFound, "no log named %q", name)
}

var _ Manager = Unsupported{}

// UserUpdater is a Manager whose accounts can be renamed and given new
// passwords (Trove's user update and change passwords). The dispatcher
// type-asserts it and answers not_supported, naming the datastore, for a
// manager without it. Both calls are all or nothing: whatever fails, every
// account keeps its old name, host and password, and a renamed account
// keeps its privileges. Passwords go to the server as hashes only, as at
// create.
type UserUpdater interface {
	UpdateUser(ctx context.Context, args wire.UpdateUserArgs) error
	ChangePasswords(ctx context.Context, users []wire.User) error
}

// LogSwitcher is a manager with logs the user may turn on and off
// (wire.LogInfo.Switchable: MariaDB's slow query log, PostgreSQL's slow
// statements). SetLog applies the switch to the running server and keeps
// it in a file the server reads before the configuration group's, so it
// survives a restart; a group that sets the same parameter wins, and
// SetLog then refuses with failed_precondition naming it.
type LogSwitcher interface {
	SetLog(ctx context.Context, name string, enable bool) (wire.LogInfo, error)
}

// ConfigurationReader is a manager that reports the configuration its
// server runs with as its files hold it (EffectiveValues of the base
// configuration rendered at prepare, the log switches and the group), not
// recomputed from a second copy of the defaults.
type ConfigurationReader interface {
	Configuration(ctx context.Context) (wire.EffectiveConfiguration, error)
}

// LogPath is a manager that can name the file behind a log, for
// publishing its whole content.
type LogPath interface {
	LogPath(name string) (string, error)
}

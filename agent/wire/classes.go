package wire

import "fmt"

// Class says how an operation kind behaves when a crash cuts it short and
// when it may be delivered. Both ends read it: the controller decides from
// it whether an interrupted operation runs again and when to deliver it,
// the agent whether a re-run may treat "already exists" as done and
// whether it must flush before reporting done.
//
// Every kind in Kinds has exactly one entry in Classes (a unit test holds
// it): a new kind must say here how it survives a crash.
type Class struct {
	// Idempotent: running the operation again after an interruption
	// converges on the same state as one uninterrupted run. The
	// controller re-runs such an operation (with the same id and a higher
	// Operation.Attempt) when its result is interrupted, at most
	// MaxAttempts times and never after the operation's timeout. A kind
	// that is not idempotent ends interrupted, and the controller records
	// that as a fault.
	Idempotent bool
	// NeedsDatastore: the operation only works while the database server
	// answers. The controller delivers it only once the agent reports the
	// datastore running, and retries an unavailable result like an
	// interrupted one.
	NeedsDatastore bool
	// Mutates: the operation changes the guest's state. The agent reports
	// it done only once its effect is on disk whatever the datastore's
	// own durability settings (the datastore's flush, then syncfs of the
	// data and configuration filesystems), and its result carries the
	// datastore's status afterwards.
	Mutates bool
	// SecretArgs: the arguments carry passwords. The controller keeps
	// them only until the final result, the re-run bound or the
	// operation's timeout, whichever comes first.
	SecretArgs bool
	// SecretResult: the result carries a password, handed out once.
	SecretResult bool
	// ExistsIsDone: on a re-run, what this kind creates may exist from
	// the interrupted run: that counts as done (a first run still answers
	// already_exists). NotFoundIsDone is the same for a kind that
	// removes: not_found on a re-run counts as done.
	ExistsIsDone   bool
	NotFoundIsDone bool
	// Since is the protocol version that introduced the kind (0: 1).
	// The controller sends the kind only to an agent of that protocol
	// or newer; an older agent's operation ends not_supported without
	// being sent. A kind added after protocol 1 must set it.
	Since int
}

// MaxAttempts bounds the runs of one operation: the first plus re-runs
// after interruptions (or an unavailable datastore, for kinds that need
// it).
const MaxAttempts = 4

// Classes classifies every kind. Reads are idempotent and mutate nothing;
// every kind this protocol version defines today converges when run
// again. A kind that cannot (a restore into a volume that was written
// half-way, say) sets Idempotent false.
var Classes = map[Kind]Class{
	// Resumable: re-run, prepare converges on the data volume's state
	// (format only if blank, initialise only if not initialised, create
	// what is missing).
	KindPrepare: {Idempotent: true, Mutates: true, SecretArgs: true, SecretResult: true, ExistsIsDone: true},
	KindStatus:  {Idempotent: true},
	// Restart and stop work on a stopped server too: not held back.
	KindRestart:         {Idempotent: true, Mutates: true},
	KindStop:            {Idempotent: true, Mutates: true},
	KindListDatabases:   {Idempotent: true, NeedsDatastore: true},
	KindCreateDatabases: {Idempotent: true, NeedsDatastore: true, Mutates: true, ExistsIsDone: true},
	KindDeleteDatabase:  {Idempotent: true, NeedsDatastore: true, Mutates: true, NotFoundIsDone: true},
	KindListUsers:       {Idempotent: true, NeedsDatastore: true},
	KindCreateUsers:     {Idempotent: true, NeedsDatastore: true, Mutates: true, SecretArgs: true, ExistsIsDone: true},
	KindDeleteUser:      {Idempotent: true, NeedsDatastore: true, Mutates: true, NotFoundIsDone: true},
	KindGrantAccess:     {Idempotent: true, NeedsDatastore: true, Mutates: true},
	KindRevokeAccess:    {Idempotent: true, NeedsDatastore: true, Mutates: true, NotFoundIsDone: true},
	KindListAccess:      {Idempotent: true, NeedsDatastore: true},
	// A re-run sets a new password; the interrupted run's was never
	// handed out.
	KindEnableRoot:    {Idempotent: true, NeedsDatastore: true, Mutates: true, SecretArgs: true, SecretResult: true},
	KindDisableRoot:   {Idempotent: true, NeedsDatastore: true, Mutates: true},
	KindIsRootEnabled: {Idempotent: true, NeedsDatastore: true},
	// A complete override set: applying it again gives the same files.
	// Parameters applied live need the server, the files do not; the
	// manager says unavailable when a live one cannot be set.
	KindApplyConfiguration: {Idempotent: true, NeedsDatastore: true, Mutates: true},
	KindFilesystemStats:    {Idempotent: true},
	KindListLogs:           {Idempotent: true},
	KindTailLog:            {Idempotent: true},
	// Growing ext4 to its device's size again is a no-op.
	KindResizeFilesystem: {Idempotent: true, Mutates: true},
	// Writing the base configuration for a memory size again gives the
	// same file; the server need not run (it reads it at its next start).
	KindApplyFlavor: {Idempotent: true, Mutates: true},
	// The upgrade step brings data to the running server's version; run
	// on upgraded data it does nothing.
	KindUpgradeDatastore: {Idempotent: true, NeedsDatastore: true, Mutates: true, Since: 2},
	// A backup reads the running server and changes nothing the guest
	// keeps; a run cut short leaves a stream the controller refuses, so it
	// is not re-run: the backup fails visibly and another can be taken.
	KindBackup: {NeedsDatastore: true},
	// A restore writes the data volume from the stream: half a restore is
	// not a state a second run converges from, so it is never re-run; the
	// datastore stays stopped unless the whole chain arrived intact.
	KindRestore: {Mutates: true},
	// A rename is not re-run: after a cut-short run the old name may be
	// gone and the new one there, or not, and a second run cannot tell
	// its own rename from an account that existed already. It ends
	// interrupted, a recorded fault; the manager's compensation covers
	// failures it sees, not a crash.
	KindUpdateUser: {NeedsDatastore: true, Mutates: true, SecretArgs: true},
	// Setting the same passwords again converges.
	KindChangePasswords: {Idempotent: true, NeedsDatastore: true, Mutates: true, SecretArgs: true},
	// Writing the same switch again gives the same file and setting.
	KindSetLog: {Idempotent: true, NeedsDatastore: true, Mutates: true},
	// Like a backup: a stream cut short is refused by the controller and
	// the publish fails visibly; it is not re-run.
	KindPublishLog: {},
	// The account is created if missing and given this password and
	// grant: a re-run converges on the same account.
	KindCreateReplicationAccount: {Idempotent: true, NeedsDatastore: true, Mutates: true, SecretArgs: true, ExistsIsDone: true},
	KindDropReplicationAccount:   {Idempotent: true, NeedsDatastore: true, Mutates: true, NotFoundIsDone: true},
	// A re-run finds the link configured and only makes sure it runs: the
	// starting position is set only while no link exists, so a re-run
	// never rewinds a replica that applied events already.
	KindStartReplication:  {Idempotent: true, NeedsDatastore: true, Mutates: true, SecretArgs: true},
	KindReplicationStatus: {Idempotent: true, NeedsDatastore: true},
	// Detaching a detached server changes nothing.
	KindDetachReplica: {Idempotent: true, NeedsDatastore: true, Mutates: true},
	// Reads files only: answers while the server is stopped too.
	KindGetConfiguration: {Idempotent: true},
	// Setting the same switch again gives the same setting and file.
	KindSetReadOnly: {Idempotent: true, NeedsDatastore: true, Mutates: true},
	// A re-run waits for a position reached already (gtid_slave_pos
	// outlives the link) and detaches a detached server: it converges.
	KindPromoteReplica: {Idempotent: true, NeedsDatastore: true, Mutates: true},
	// Its server is stopped when it arrives (so not NeedsDatastore); a
	// re-run finds the server a standby of the same source and only makes
	// sure the link is loaded, as start_replication does.
	KindRejoinReplication: {Idempotent: true, Mutates: true, SecretArgs: true, Since: 2},
	// A read; its result holds password hashes, secrets too.
	KindExportUsers: {Idempotent: true, NeedsDatastore: true, SecretResult: true, Since: 2},
	// The whole set each time: a re-run finds the users as listed and
	// changes nothing. Its arguments hold password hashes.
	KindImportUsers: {Idempotent: true, NeedsDatastore: true, Mutates: true, SecretArgs: true, Since: 2},
}

// ClassOf returns kind's class. An unknown kind (a newer controller's, or
// a typo) is treated as not idempotent, needing nothing and mutating: it
// is never re-run, and it is flushed if it did run.
func ClassOf(kind Kind) Class {
	if c, ok := Classes[kind]; ok {
		return c
	}
	return Class{Mutates: true}
}

// CheckClasses reports kinds listed in Kinds without a class, or classed
// without being listed.
func CheckClasses() error {
	listed := map[Kind]bool{}
	for _, k := range Kinds {
		listed[k] = true
		if _, ok := Classes[k]; !ok {
			return fmt.Errorf("operation kind %s has no entry in wire.Classes: say whether it is idempotent, needs the datastore, mutates", k)
		}
	}
	for k := range Classes {
		if !listed[k] {
			return fmt.Errorf("wire.Classes names %s, which is not in wire.Kinds", k)
		}
	}
	return nil
}

// Rerunnable reports whether an operation of kind that ended with res may
// run again with a higher Attempt: it was cut short (interrupted), or it
// needed the datastore and found it unavailable; and its kind is
// idempotent. Success and every other failure are final.
func Rerunnable(kind Kind, res Result) bool {
	if res.Error == nil {
		return false
	}
	c := ClassOf(kind)
	switch res.Error.Code {
	case CodeInterrupted:
		return c.Idempotent
	case CodeUnavailable:
		return c.Idempotent && c.NeedsDatastore
	}
	return false
}

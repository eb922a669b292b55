package wire

import (
	"fmt"
	"regexp"
)

// Replication: a primary keeps one replication account per replica; a
// replica follows its primary from the position its seed backup ended at
// (docs/replication.md). The controller chooses the account's name and
// password (crypto/rand) and sends the password to both ends in SecretArgs
// kinds only; no result carries it back.

// ReplicationAccountPrefix starts every replication account's name: the
// agent hides such accounts from user listings and refuses them as user
// names, so users can neither see nor drop a replica's link.
const ReplicationAccountPrefix = "strata_repl_"

var replicationAccountPattern = regexp.MustCompile(`^` + ReplicationAccountPrefix + `[a-z0-9]{1,20}$`)

// CheckReplicationAccount checks a replication account name's shape.
func CheckReplicationAccount(name string) error {
	if !replicationAccountPattern.MatchString(name) {
		return fmt.Errorf("replication account %q: want %s followed by 1 to 20 lowercase letters or digits", name, ReplicationAccountPrefix)
	}
	return nil
}

// ReplicationAccountArgs create (or reset) one replica's account on the
// primary, allowed to replicate and nothing else.
type ReplicationAccountArgs struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

// ReplicationAccountRef names an account to drop.
type ReplicationAccountRef struct {
	Name string `json:"name"`
}

// ReplicationSourceResult is what the primary reports when it hands out
// an account: its current position, for people and for checks.
type ReplicationSourceResult struct {
	GTIDBinlogPos string `json:"gtid_binlog_pos,omitempty"`
	// LSN is a PostgreSQL primary's current WAL position (X/Y).
	LSN string `json:"lsn,omitempty"`
	// ReplID and ReplOffset are a Redis primary's replication ID and
	// offset (INFO replication: master_replid, master_repl_offset).
	ReplID     string `json:"repl_id,omitempty"`
	ReplOffset *int64 `json:"repl_offset,omitempty"`
}

// StartReplicationArgs make a restored server a replica of the primary at
// Host:Port (the replica's own way to the primary; in a guest a fixed
// address the host relays) with Account, starting after GTIDSlavePos (the
// seed backup's position; empty: the primary's first event; MariaDB
// only: a PostgreSQL replica starts where its restored data ends). Applied only
// while the server has no replication link; a re-run with a link in place
// only makes sure it runs.
type StartReplicationArgs struct {
	Host         string `json:"host"`
	Port         int    `json:"port"`
	Account      string `json:"account"`
	Password     string `json:"password"`
	GTIDSlavePos string `json:"gtid_slave_pos,omitempty"`
	// Repoint moves a replica's existing link to another source (a
	// switchover): the link keeps its own GTID position, GTIDSlavePos is
	// ignored, and a server without a link is refused.
	Repoint bool `json:"repoint,omitempty"`
	// ForkLSN (rejoin_replication, PostgreSQL) is the WAL position the
	// group forked from this server at: what the replica promoted in its
	// place had received from it (a failover). A server that ran past it
	// (it crashed, or was started again) is rewound to the source's
	// history with pg_rewind before it follows — unless its WAL past the
	// fork holds a committed transaction: refused, since following would
	// drop it. Empty: the server must have stopped cleanly at the fork (a
	// switchover's old primary).
	ForkLSN string `json:"fork_lsn,omitempty"`
}

// SetReadOnlyArgs fence a primary (ReadOnly: its users' writes are
// refused, across restarts) or lift the fence (a switchover rolled back).
type SetReadOnlyArgs struct {
	ReadOnly bool `json:"read_only"`
}

// MaxPromoteWait bounds PromoteReplicaArgs.TimeoutSeconds.
const MaxPromoteWait = 3600

// PromoteReplicaArgs make a replica a writable primary once it applied
// GTIDPos (MariaDB: the fenced primary's gtid_binlog_pos) or LSN
// (PostgreSQL: the fenced primary's WAL position), waiting at most
// TimeoutSeconds; on timeout nothing changes. Exactly one of the
// positions is given (ReplOffset, with an optional ReplID, for Redis);
// each manager requires its own.
type PromoteReplicaArgs struct {
	GTIDPos string `json:"gtid_pos,omitempty"`
	LSN     string `json:"lsn,omitempty"`
	// ReplOffset is a fenced Redis primary's master_repl_offset; ReplID,
	// if given, its master_replid, which the replica's must equal.
	ReplOffset     *int64 `json:"repl_offset,omitempty"`
	ReplID         string `json:"repl_id,omitempty"`
	TimeoutSeconds int    `json:"timeout_seconds"`
}

// Validate checks the arguments' shape.
func (a PromoteReplicaArgs) Validate() error {
	given := 0
	for _, ok := range []bool{a.GTIDPos != "", a.LSN != "", a.ReplOffset != nil} {
		if ok {
			given++
		}
	}
	switch {
	case given == 0:
		return fmt.Errorf("gtid_pos: required")
	case given > 1:
		return fmt.Errorf("gtid_pos, lsn and repl_offset: give one position, not several")
	case a.ReplOffset != nil && *a.ReplOffset < 0:
		return fmt.Errorf("repl_offset %d: want 0 or more", *a.ReplOffset)
	case a.ReplID != "" && a.ReplOffset == nil:
		return fmt.Errorf("repl_id: only with repl_offset")
	case a.ReplID != "" && !replIDPattern.MatchString(a.ReplID):
		return fmt.Errorf("repl_id %q: want 40 hexadecimal digits", truncate(a.ReplID, 50))
	}
	if a.TimeoutSeconds < 1 || a.TimeoutSeconds > MaxPromoteWait {
		return fmt.Errorf("timeout_seconds %d: want 1 to %d", a.TimeoutSeconds, MaxPromoteWait)
	}
	if err := CheckLSN(a.LSN); err != nil {
		return fmt.Errorf("lsn: %w", err)
	}
	return CheckGTIDList(a.GTIDPos)
}

var replIDPattern = regexp.MustCompile(`^[0-9a-f]{40}$`)

var lsnPattern = regexp.MustCompile(`^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$`)

// CheckLSN checks a PostgreSQL WAL position's form ("16/B374D848": two
// hexadecimal 32-bit halves); empty is allowed.
func CheckLSN(s string) error {
	if s != "" && !lsnPattern.MatchString(s) {
		return fmt.Errorf("WAL position %q: want two hexadecimal numbers of at most 8 digits separated by a slash (16/B374D848)", truncate(s, 40))
	}
	return nil
}

var (
	gtidListPattern  = regexp.MustCompile(`^([0-9]{1,10}-[0-9]{1,10}-[0-9]{1,20})(,[0-9]{1,10}-[0-9]{1,10}-[0-9]{1,20})*$`)
	replicaHostRegex = regexp.MustCompile(`^[A-Za-z0-9.:-]{1,253}$`)
)

// CheckGTIDList checks a MariaDB GTID list ("0-1-42,1-2-7"); empty is
// allowed.
func CheckGTIDList(s string) error {
	if s != "" && !gtidListPattern.MatchString(s) {
		return fmt.Errorf("GTID position %q: want domain-server-sequence triples separated by commas", s)
	}
	return nil
}

// Validate checks the arguments' shape; the password's content is the
// manager's to check.
func (a StartReplicationArgs) Validate() error {
	switch {
	case !replicaHostRegex.MatchString(a.Host):
		return fmt.Errorf("host %q: want an IP address or host name", a.Host)
	case a.Port < 1 || a.Port > 65535:
		return fmt.Errorf("port %d: want 1 to 65535", a.Port)
	case a.Password == "":
		return fmt.Errorf("password: required")
	}
	if err := CheckReplicationAccount(a.Account); err != nil {
		return fmt.Errorf("account: %w", err)
	}
	if err := CheckGTIDList(a.GTIDSlavePos); err != nil {
		return fmt.Errorf("gtid_slave_pos: %w", err)
	}
	if a.ForkLSN != "" {
		if err := CheckLSN(a.ForkLSN); err != nil {
			return fmt.Errorf("fork_lsn: %w", err)
		}
	}
	return nil
}

// Replication roles a server reports.
const (
	RoleStandalone = "standalone" // no link configured
	RoleReplica    = "replica"
)

// ReplicationStatus is a replica's link as its server reports it.
// SecondsBehind is nil when the server cannot tell (the link is down).
type ReplicationStatus struct {
	Role          string `json:"role"`
	SourceHost    string `json:"source_host,omitempty"`
	SourcePort    int    `json:"source_port,omitempty"`
	IORunning     bool   `json:"io_running"`
	SQLRunning    bool   `json:"sql_running"`
	SecondsBehind *int64 `json:"seconds_behind,omitempty"`
	// GTIDSlavePos is what the replica applied; GTIDIOPos what it
	// received; GTIDBinlogPos what this server wrote to its own binary
	// log (on a replica, with log_slave_updates, what it applied).
	GTIDSlavePos  string `json:"gtid_slave_pos,omitempty"`
	GTIDIOPos     string `json:"gtid_io_pos,omitempty"`
	GTIDBinlogPos string `json:"gtid_binlog_pos,omitempty"`
	// PostgreSQL: ReceivedLSN is the WAL a replica received and flushed,
	// ReplayedLSN what it replayed; LSN is this server's own WAL position
	// (a primary's pg_current_wal_lsn, read after the fence on a fenced
	// one; a replica's replayed position). BytesBehind is the WAL distance
	// from the primary's position, as its WAL sender last reported it, to
	// what the replica replayed; nil when the link is down.
	ReceivedLSN string `json:"received_lsn,omitempty"`
	ReplayedLSN string `json:"replayed_lsn,omitempty"`
	LSN         string `json:"lsn,omitempty"`
	BytesBehind *int64 `json:"bytes_behind,omitempty"`
	// ForkLSN (PostgreSQL, promote_replica's result) is where the
	// promoted server's new timeline branched from the one it followed
	// (its timeline history's switch point): the exact end of the WAL it
	// shares with its former primary. A former primary whose WAL goes
	// past it rejoins only through pg_rewind. Older agents never send it.
	ForkLSN string `json:"fork_lsn,omitempty"`
	// Redis: ReplID and ReplOffset are this server's replication ID and
	// offset (a replica's: what it processed of its primary's stream; a
	// fenced primary's: read after the fence). Bytes behind is the
	// primary's ReplOffset less the replica's, both read at once; a
	// replica alone cannot know it. LastIOSecondsAgo is the time since
	// the replica last heard from its primary (master_last_io_seconds_ago:
	// the primary pings every repl-ping-replica-period, 10 s), nil when
	// the link is down.
	ReplID           string `json:"repl_id,omitempty"`
	ReplOffset       *int64 `json:"repl_offset,omitempty"`
	LastIOSecondsAgo *int64 `json:"last_io_seconds_ago,omitempty"`
	// ReplID2 and ReplID2End: a Redis server's previous replication ID
	// (master_replid2) and the last offset of the history that was that
	// ID's (second_repl_offset less one). A primary started again from
	// its snapshot continues its old stream (the snapshot's) under a new
	// ID; a failover's ejected source is checked against the group's
	// fork with them. A replica that continued its stream with a promoted
	// server (a partial resynchronisation) keeps the one it followed
	// before: a failover records it with the fork. Absent when the server
	// has no previous ID; older agents send it for primaries only.
	ReplID2    string `json:"repl_id2,omitempty"`
	ReplID2End *int64 `json:"repl_id2_end,omitempty"`
	ReadOnly   bool   `json:"read_only"`
	// LastError is the link's last I/O or SQL error, empty when none.
	LastError string `json:"last_error,omitempty"`
	// LinkStopped says the link stopped on an error it does not retry by
	// itself (MariaDB: a replication thread that is off with an error
	// number, e.g. the source's 1236 for a position it lacks, or an
	// event the replica failed to apply); one that is reconnecting is
	// not stopped. A controller waiting for the link gives up at once.
	// Older agents never send it.
	LinkStopped bool `json:"link_stopped,omitempty"`
}

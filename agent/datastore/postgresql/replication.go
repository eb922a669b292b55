package postgresql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// Replication is PostgreSQL streaming replication (docs/replication.md).
//
// On the primary every replica has a role of its own (REPLICATION LOGIN,
// nothing else), member of ReplicationGroup, and a physical replication
// slot of the same name that keeps the WAL the replica has not received
// (bounded by max_slot_wal_keep_size). pg_hba.conf.tmpl lets the group's
// members in to the replication pseudo-database with SCRAM and refuses
// them any SQL session; membership lives in the catalog, so the rendered
// file is the same on every server and needs no per-account rule.
//
// A replica is restored from a backup of the primary with
// RestoreArgs.Standby: standby.signal is in place before its first start,
// so it never ends recovery and its WAL stays the primary's.
// StartReplication then writes primary_conninfo and primary_slot_name
// into replicationFile (included last by postgresql.conf, so no
// configuration group changes them) and reloads: since PostgreSQL 13 both
// are reloadable, and the startup process starts its WAL receiver. A
// standby is read-only by nature: the server refuses every write.
//
// A server that ended recovery (restored without Standby, detached or
// promoted) has written WAL of its own on the primary's timeline or a new
// one; following a primary again would need pg_rewind, which is not
// built: StartReplication refuses it. The one exception is a switchover's
// old primary, stopped cleanly after its fence before the replica was
// promoted: its WAL ends with the shutdown checkpoint every replica
// received, so the new primary's timeline begins after it, and
// RejoinReplication starts it as a standby that follows that timeline.

var (
	_ datastore.Replicator = (*Manager)(nil)
	_ datastore.Rejoiner   = (*Manager)(nil)
)

// ReplicationGroup is the role every replication account is a member of
// (NOLOGIN); pg_hba.conf names it. Users can neither create nor see it.
const ReplicationGroup = "strata_replication"

const standbySignal = "standby.signal"

// replicationFile holds a replica's link or a fenced primary's
// default_transaction_read_only; absent on a standalone writable server.
// It may hold the replication password, so only the server's account
// reads it.
func replicationFile(cfg Config) string {
	return filepath.Join(filepath.Dir(cfg.OverridesFile), "strata-replication.conf")
}

func writeStandbySignal(dataDir string) error {
	if err := os.WriteFile(filepath.Join(dataDir, standbySignal), nil, 0o600); err != nil {
		return fmt.Errorf("standby.signal: %w", err)
	}
	return nil
}

// rewindFunctions are what pg_rewind calls on its source (PostgreSQL 15's
// pg_rewind documentation lists them) to list and read the source's data
// directory over an ordinary SQL session. Granting them to a replication
// account widens nothing: a REPLICATION role may already take a base
// backup, every file of the cluster; these read the same files through
// another door, and write nothing.
const rewindFunctions = "pg_catalog.pg_ls_dir(text, boolean, boolean), pg_catalog.pg_stat_file(text, boolean), " +
	"pg_catalog.pg_read_binary_file(text), pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)"

// CreateReplicationAccount makes (or resets) one replica's role, LOGIN
// REPLICATION and nothing else, with the password as a SCRAM verifier,
// a member of ReplicationGroup, and its physical slot (reserving WAL from
// now on); a re-run resets the password and attributes and keeps the
// slot. The role may also execute rewindFunctions, so that a former
// primary can rewind itself from this server (pg_hba.conf.tmpl lets it
// reach the postgres database, no other). It returns the primary's WAL
// position.
func (m *Manager) CreateReplicationAccount(ctx context.Context, args wire.ReplicationAccountArgs) (wire.ReplicationSourceResult, error) {
	var res wire.ReplicationSourceResult
	if err := wire.CheckReplicationAccount(args.Name); err != nil {
		return res, invalid("%v", err)
	}
	if err := checkPassword(args.Password); err != nil {
		return res, err
	}
	if err := m.ready(ctx); err != nil {
		return res, err
	}
	if rec, err := m.inRecovery(ctx); err != nil {
		return res, err
	} else if rec {
		return res, wire.Errorf(wire.CodeFailedPrecondition, "create replication account %s: this server is a replica; accounts are made on its primary", args.Name)
	}
	if err := m.ensureHBA(ctx); err != nil {
		return res, err
	}
	if ok, err := m.roleExists(ctx, ReplicationGroup); err != nil {
		return res, err
	} else if !ok {
		if err := m.exec(ctx, "CREATE ROLE "+quoteIdent(ReplicationGroup)+" NOLOGIN"); err != nil && sqlState(err) != "42710" { // duplicate_object: a concurrent run
			return res, fmt.Errorf("create replication group: %w", err)
		}
	}
	exists, err := m.roleExists(ctx, args.Name)
	if err != nil {
		return res, err
	}
	verb := "CREATE ROLE "
	if exists {
		verb = "ALTER ROLE "
	}
	role := quoteIdent(args.Name)
	if err := m.exec(ctx,
		verb+role+" WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOBYPASSRLS PASSWORD '"+scramVerifier(args.Password)+"'",
		"GRANT "+quoteIdent(ReplicationGroup)+" TO "+role,
		"GRANT EXECUTE ON FUNCTION "+rewindFunctions+" TO "+role,
	); err != nil {
		return res, fmt.Errorf("create replication account %s: %w", args.Name, err)
	}
	// The slot reserves WAL at once: the replica, restored from a backup
	// taken before, connects later (the backup slot keeps the WAL from
	// the backup's end until then).
	_, err = m.conn().ExecContext(ctx, `SELECT pg_create_physical_replication_slot($1, true)
		WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, args.Name)
	if err != nil && sqlState(err) != "42710" {
		return res, fmt.Errorf("create replication slot %s: %w", args.Name, err)
	}
	if err := m.conn().QueryRowContext(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&res.LSN); err != nil {
		return res, wire.Errorf(wire.CodeUnavailable, "postgresql: %v", err)
	}
	m.log.Info("replication account ready", "account", args.Name, "lsn", res.LSN, "reset", exists)
	return res, nil
}

// ensureHBA brings pg_hba.conf to the template (an instance prepared
// before the replication rules) and reloads when it changed.
func (m *Manager) ensureHBA(ctx context.Context) error {
	want, err := renderHBA()
	if err != nil {
		return err
	}
	if have, err := os.ReadFile(m.cfg.HBAFile); err == nil && string(have) == string(want) {
		return nil
	}
	if err := datastore.WriteConfigFile(m.cfg.HBAFile, want, 0o644); err != nil {
		return err
	}
	if err := m.exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("reload pg_hba.conf: %w", err)
	}
	m.log.Info("pg_hba.conf brought up to date for replication")
	return nil
}

// DropReplicationAccount ends the replica's WAL sender, drops its slot,
// revokes its grants and drops its role (its membership, so its
// pg_hba.conf rule, goes with it).
// What is already gone is fine.
func (m *Manager) DropReplicationAccount(ctx context.Context, name string) error {
	if err := wire.CheckReplicationAccount(name); err != nil {
		return invalid("%v", err)
	}
	if err := m.ready(ctx); err != nil {
		return err
	}
	if rec, err := m.inRecovery(ctx); err != nil {
		return err
	} else if rec {
		return wire.Errorf(wire.CodeFailedPrecondition, "drop replication account %s: this server is a replica; accounts are dropped on its primary", name)
	}
	exists, err := m.roleExists(ctx, name)
	if err != nil {
		return err
	}
	if exists {
		// No new session from now on, then the open ones ended.
		if err := m.exec(ctx, "ALTER ROLE "+quoteIdent(name)+" NOLOGIN"); err != nil {
			return fmt.Errorf("drop replication account %s: %w", name, err)
		}
	}
	if _, err := m.conn().ExecContext(ctx, `SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1`, name); err != nil {
		return fmt.Errorf("drop replication account %s: end its sessions: %w", name, err)
	}
	// The WAL sender may hold the slot a moment after its end.
	for i := 0; ; i++ {
		_, err = m.conn().ExecContext(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name)
		if sqlState(err) != "55006" || i == 50 { // object_in_use
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("drop replication slot %s: %w", name, err)
	}
	if exists {
		// The role's grants (rewindFunctions) go first: DROP ROLE refuses
		// a role that still holds privileges.
		if err := m.exec(ctx, "REVOKE EXECUTE ON FUNCTION "+rewindFunctions+" FROM "+quoteIdent(name), "DROP ROLE IF EXISTS "+quoteIdent(name)); err != nil {
			return fmt.Errorf("drop replication account %s: %w", name, err)
		}
	}
	m.log.Info("replication account dropped", "account", name, "existed", exists)
	return nil
}

// source is a replica's link as StartReplication wrote it.
type source struct {
	Host    string
	Port    int
	Account string
}

// sourceLine starts the replication file's machine-readable line.
const sourceLine = "# source: "

// configuredSource reads the link from replicationFile; ok is false
// without one (no file, or a fence).
func (m *Manager) configuredSource() (source, bool, error) {
	data, err := os.ReadFile(replicationFile(m.cfg))
	if errors.Is(err, os.ErrNotExist) {
		return source{}, false, nil
	} else if err != nil {
		return source{}, false, fmt.Errorf("replication settings: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, sourceLine); ok {
			f := strings.Fields(rest)
			if len(f) == 3 {
				port, err := strconv.Atoi(f[1])
				if err == nil {
					return source{Host: f[0], Port: port, Account: f[2]}, true, nil
				}
			}
		}
	}
	return source{}, false, nil
}

// confString is a postgresql.conf string: its parser reads backslash
// escapes and doubled quotes.
func confString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}

// conninfoValue is a libpq connection-string value: single-quoted, with
// backslash and quote escaped.
func conninfoValue(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// replicaConfig renders replicationFile for a link. The connection asks
// for TLS (every strata server offers it) and names the replica by its
// account, as its slot is.
func replicaConfig(args wire.StartReplicationArgs) []byte {
	conninfo := fmt.Sprintf("host=%s port=%d user=%s password=%s application_name=%s sslmode=require connect_timeout=10",
		conninfoValue(args.Host), args.Port, conninfoValue(args.Account), conninfoValue(args.Password), conninfoValue(args.Account))
	return []byte("# Written by strata-agent: this server is a standby (docs/replication.md). Removed on detach.\n" +
		fmt.Sprintf("%s%s %d %s\n", sourceLine, args.Host, args.Port, args.Account) +
		"hot_standby = on\n" +
		"primary_conninfo = " + confString(conninfo) + "\n" +
		"primary_slot_name = " + confString(args.Account) + "\n")
}

// writeReplicationFile writes replicationFile readable by the server's
// account only (a link holds the password).
func (m *Manager) writeReplicationFile(data []byte) error {
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return err
	}
	path := replicationFile(m.cfg)
	if err := datastore.WriteConfigFile(path, data, 0o600); err != nil {
		return err
	}
	return osUser.Chown(path)
}

// StartReplication attaches this standby (restored with
// RestoreArgs.Standby) to the primary at args.Host:Port through the slot
// named after args.Account: replicationFile written, configuration
// reloaded, the WAL receiver started by the server. A re-run with the
// same source only makes sure the settings are loaded; another source is
// refused (detach first), and so is a server that is not a standby (its
// WAL is its own: see the package comment). With args.Repoint an
// existing link moves to another source (a switchover): new conninfo and
// slot, reloaded, and the standby follows the new primary's timeline
// (recovery_target_timeline is 'latest'); a server without a link is
// refused before anything is written.
func (m *Manager) StartReplication(ctx context.Context, args wire.StartReplicationArgs) (wire.ReplicationStatus, error) {
	if err := args.Validate(); err != nil {
		return wire.ReplicationStatus{}, invalid("start replication: %v", err)
	}
	if args.GTIDSlavePos != "" {
		return wire.ReplicationStatus{}, invalid("start replication: gtid_slave_pos: a PostgreSQL replica starts where its restored data ends; leave it empty")
	}
	if err := checkPassword(args.Password); err != nil {
		return wire.ReplicationStatus{}, err
	}
	if err := m.ready(ctx); err != nil {
		return wire.ReplicationStatus{}, err
	}
	rec, err := m.inRecovery(ctx)
	if err != nil {
		return wire.ReplicationStatus{}, err
	}
	cur, linked, err := m.configuredSource()
	if err != nil {
		return wire.ReplicationStatus{}, err
	}
	verb := "start replication"
	switch {
	case args.Repoint:
		verb = "repoint replication"
		if !rec || !linked {
			st, _ := m.ReplicationStatus(ctx)
			return st, wire.Errorf(wire.CodeFailedPrecondition, "repoint replication: this server follows no source")
		}
	case !rec:
		st, _ := m.ReplicationStatus(ctx)
		return st, wire.Errorf(wire.CodeFailedPrecondition,
			"start replication: this server is not a standby: it ended recovery and wrote WAL of its own, so it cannot follow a primary "+
				"(restore a replica's seed with standby, or rebuild it; a former primary would need pg_rewind)")
	case linked && (cur.Host != args.Host || cur.Port != args.Port):
		st, _ := m.ReplicationStatus(ctx)
		return st, wire.Errorf(wire.CodeFailedPrecondition,
			"start replication: this server follows %s:%d already; detach it first", cur.Host, cur.Port)
	}
	// Only the server's own standby.signal makes it a standby; it is in
	// place (the server is in recovery), and stays across restarts.
	if _, err := os.Stat(filepath.Join(m.cfg.DataDir, standbySignal)); errors.Is(err, os.ErrNotExist) {
		if err := writeStandbySignal(m.cfg.DataDir); err != nil {
			return wire.ReplicationStatus{}, err
		}
	}
	if err := m.writeReplicationFile(replicaConfig(args)); err != nil {
		return wire.ReplicationStatus{}, err
	}
	if err := m.exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("%s: reload: %w", verb, err)
	}
	if err := m.waitSetting(ctx, "primary_slot_name", args.Account); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("%s: %w", verb, err)
	}
	m.log.Info("replication started", "source", fmt.Sprintf("%s:%d", args.Host, args.Port), "account", args.Account, "repoint", args.Repoint)
	return m.ReplicationStatus(ctx)
}

// waitSetting waits until a new session sees name = want: a reload is
// the postmaster's to read, after pg_reload_conf returned. A setting
// that never arrives means postgresql.conf does not include the file
// (rendered before it did).
func (m *Manager) waitSetting(ctx context.Context, name, want string) error {
	deadline := time.Now().Add(10 * time.Second)
	var got string
	for {
		err := func() error {
			c, err := pgx.ConnectConfig(ctx, m.connConfig("postgres"))
			if err != nil {
				return err
			}
			defer c.Close(context.WithoutCancel(ctx))
			return c.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got)
		}()
		if err == nil && got == want {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return wire.Errorf(wire.CodeUnavailable, "postgresql: reading %s: %v", name, err)
			}
			return wire.Errorf(wire.CodeFailedPrecondition,
				"%s is %q after a reload, not %q: the server does not read %s (its postgresql.conf predates it; rebuild the instance)",
				name, got, want, replicationFile(m.cfg))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (m *Manager) inRecovery(ctx context.Context) (bool, error) {
	var rec bool
	if err := m.conn().QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
		return false, wire.Errorf(wire.CodeUnavailable, "postgresql: %v", err)
	}
	return rec, nil
}

// statusQuery reads a server's replication state in one statement. On a
// standby: WAL received and replayed, whether replay runs, the WAL
// receiver's state and the primary's position as its WAL sender last
// reported it (latest_end_lsn). The lag in bytes is that position minus
// the replayed one; the lag in seconds is 0 when everything received is
// replayed, else the age of the last replayed commit (the usual reading:
// an idle primary writes no commits, and a replica that replayed all it
// received is not behind). On a primary: its WAL position and whether
// new transactions default to read-only (the fence).
const statusQuery = `SELECT r.rec,
	CASE WHEN r.rec THEN pg_last_wal_replay_lsn()::text ELSE pg_current_wal_lsn()::text END,
	pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
	CASE WHEN r.rec THEN NOT pg_is_wal_replay_paused() ELSE false END,
	r.rec OR current_setting('default_transaction_read_only')::bool,
	w.status,
	CASE WHEN w.status = 'streaming' THEN GREATEST(0, pg_wal_lsn_diff(w.latest_end_lsn, pg_last_wal_replay_lsn()))::bigint END,
	CASE WHEN w.status = 'streaming' THEN
		CASE WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
		ELSE floor(GREATEST(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())))::bigint END
	END
FROM (SELECT pg_is_in_recovery() AS rec) r LEFT JOIN pg_stat_wal_receiver w ON true`

// ReplicationStatus reports a standby's link (RoleReplica: it is in
// recovery, whether or not it has a source yet) or a primary's position
// (RoleStandalone). IORunning is the WAL receiver streaming, SQLRunning
// replay not paused.
func (m *Manager) ReplicationStatus(ctx context.Context) (wire.ReplicationStatus, error) {
	st := wire.ReplicationStatus{Role: wire.RoleStandalone}
	if err := m.ready(ctx); err != nil {
		return st, err
	}
	var (
		rec                   bool
		lsn, recv, replay, ws sql.NullString
		bytes, secs           sql.NullInt64
	)
	if err := m.conn().QueryRowContext(ctx, statusQuery).Scan(&rec, &lsn, &recv, &replay, &st.SQLRunning, &st.ReadOnly, &ws, &bytes, &secs); err != nil {
		return st, wire.Errorf(wire.CodeUnavailable, "postgresql: replication status: %v", err)
	}
	st.LSN = lsn.String
	if !rec {
		return st, nil
	}
	st.Role = wire.RoleReplica
	st.ReceivedLSN, st.ReplayedLSN = recv.String, replay.String
	st.IORunning = ws.String == "streaming"
	if bytes.Valid {
		st.BytesBehind = &bytes.Int64
	}
	if secs.Valid {
		st.SecondsBehind = &secs.Int64
	}
	src, linked, err := m.configuredSource()
	if err != nil {
		return st, err
	}
	switch {
	case !linked:
		st.LastError = "no source yet: this standby waits for start_replication"
	default:
		st.SourceHost, st.SourcePort = src.Host, src.Port
		if !st.IORunning {
			st.LastError = "the WAL receiver is not streaming"
			if ws.Valid {
				st.LastError += " (" + ws.String + ")"
			}
			if line := m.lastLogError(); line != "" {
				st.LastError += "; the server's log: " + line
			}
		}
	}
	if len(st.LastError) > 1000 { // it travels in every heartbeat
		st.LastError = st.LastError[:1000]
	}
	return st, nil
}

// lastLogError is the server log's last FATAL or ERROR line among its
// last lines (the WAL receiver's connection failures are there only).
func (m *Manager) lastLogError() string {
	tail, err := datastore.TailFile(LogGeneral, m.cfg.LogFile, 30, 16<<10)
	if err != nil {
		return ""
	}
	for i := len(tail.Lines) - 1; i >= 0; i-- {
		if l := tail.Lines[i]; strings.Contains(l, "FATAL:") || strings.Contains(l, "ERROR:") {
			return l
		}
	}
	return ""
}

// DetachReplica promotes a standby (pg_promote waits until it is a
// primary, on a timeline of its own, and removes standby.signal) and
// removes replicationFile (the link, or a fence): a standalone writable
// server keeping its data. On a standalone server it only lifts a fence.
func (m *Manager) DetachReplica(ctx context.Context) (wire.ReplicationStatus, error) {
	if err := m.ready(ctx); err != nil {
		return wire.ReplicationStatus{}, err
	}
	rec, err := m.inRecovery(ctx)
	if err != nil {
		return wire.ReplicationStatus{}, err
	}
	if rec {
		var done bool
		if err := m.conn().QueryRowContext(ctx, "SELECT pg_promote(true, 60)").Scan(&done); err != nil {
			return wire.ReplicationStatus{}, fmt.Errorf("detach replica: promote: %w", err)
		}
		if !done {
			return wire.ReplicationStatus{}, wire.Errorf(wire.CodeUnavailable, "detach replica: the promotion did not finish within 60 s")
		}
	}
	if err := m.removeReplicationFile(ctx, "detach replica"); err != nil {
		return wire.ReplicationStatus{}, err
	}
	m.log.Info("replica detached: writable", "promoted", rec)
	return m.ReplicationStatus(ctx)
}

// removeReplicationFile removes the link or the fence and reloads, and
// waits until new sessions are writable by default.
func (m *Manager) removeReplicationFile(ctx context.Context, verb string) error {
	if err := os.Remove(replicationFile(m.cfg)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w", verb, err)
	}
	os.Remove(filepath.Join(m.cfg.DataDir, standbySignal)) // the promotion removed it; a standalone server has none
	if err := m.exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("%s: reload: %w", verb, err)
	}
	return m.waitSetting(ctx, "default_transaction_read_only", "off")
}

// fenceConfig keeps a fenced primary's new transactions read-only by
// default across a restart; DetachReplica and SetReadOnly(false) remove
// it.
const fenceConfig = "# Written by strata-agent: this primary is fenced for a switchover (docs/replication.md).\n" +
	"default_transaction_read_only = on\n"

// SetReadOnly fences (or unfences) a primary. PostgreSQL has no
// server-wide read-only switch short of being a standby, so the fence is
// the strongest honest approximation:
//
//  1. default_transaction_read_only = on in replicationFile (it survives
//     a restart), reloaded, and waited for until a new session sees it;
//  2. every other client session ended (pg_terminate_backend, waiting
//     for each to exit): a transaction in flight is rolled back, never
//     half committed; the WAL senders and the agent's own sessions stay;
//  3. one synchronous commit of the agent's own, so the WAL is flushed
//     past every commit acknowledged before (synchronous_commit = off
//     included);
//  4. the position read after that: a replica that replayed it has every
//     transaction the primary acknowledged.
//
// Its limits: the setting is a default, so a session opened after the
// fence may still write if it asks (SET default_transaction_read_only =
// off, BEGIN READ WRITE), and a superuser (root enabled) may undo it; a
// write that does so after the fence's position is not in the promoted
// replica. Clients that only use the default are refused with "cannot
// execute ... in a read-only transaction". And the server itself still
// writes WAL after the fence (the background writer's snapshots,
// autovacuum, checkpoints), which its replicas keep receiving: promoted
// while another replica received such a record, the new primary's
// timeline forks before that replica's position and it cannot follow
// (PostgreSQL logs "forked off current database system timeline ...
// before current recovery point"). With more than one replica, stop the
// fenced primary cleanly (the stop kind) before the promotion: its WAL
// senders wait until every replica flushed the shutdown checkpoint, so
// all hold the same WAL, and the promotion replays all of it first
// (TestSwitchoverRepointsTheOtherReplicaToThePromotedOne). A standby is
// read-only already: fencing it changes nothing. Lifting the fence on a
// standby is refused.
func (m *Manager) SetReadOnly(ctx context.Context, readOnly bool) (wire.ReplicationStatus, error) {
	if err := m.ready(ctx); err != nil {
		return wire.ReplicationStatus{}, err
	}
	rec, err := m.inRecovery(ctx)
	if err != nil {
		return wire.ReplicationStatus{}, err
	}
	if !readOnly {
		if rec {
			st, _ := m.ReplicationStatus(ctx)
			return st, wire.Errorf(wire.CodeFailedPrecondition, "lift the fence: this server is a standby (it follows %s:%d); detach it first", st.SourceHost, st.SourcePort)
		}
		if err := m.removeReplicationFile(ctx, "lift the fence"); err != nil {
			return wire.ReplicationStatus{}, err
		}
		m.log.Info("primary fence lifted: writable")
		return m.ReplicationStatus(ctx)
	}
	if rec {
		return m.ReplicationStatus(ctx)
	}
	if err := m.writeReplicationFile(fenceFile(m.fenceXIDs())); err != nil {
		return wire.ReplicationStatus{}, err
	}
	if err := m.exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("fence: reload: %w", err)
	}
	if err := m.waitSetting(ctx, "default_transaction_read_only", "on"); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("fence: %w", err)
	}
	var ended int
	if err := m.conn().QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND usename IS DISTINCT FROM $1`, AdminRole).Scan(&ended); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("fence: end sessions: %w", err)
	}
	if err := m.flushPastCommits(ctx, m.noteFenceXID); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("fence: %w", err)
	}
	st, err := m.ReplicationStatus(ctx)
	m.log.Info("primary fenced: read-only by default", "sessions_ended", ended, "lsn", st.LSN)
	return st, err
}

// flushPastCommits commits one transaction synchronously (read-write
// although the server's default is read-only): its commit record's flush
// covers every commit before it. The transaction writes nothing but its
// commit; noted (with its id, before the commit) tells the fence file,
// so that a rejoin's count of commits past a fork leaves it out.
func (m *Manager) flushPastCommits(ctx context.Context, noted func(xid uint32) error) error {
	tx, err := m.conn().BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{"SET TRANSACTION READ WRITE", "SET LOCAL synchronous_commit = on"} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	var xid int64
	if err := tx.QueryRowContext(ctx, "SELECT pg_current_xact_id()::text::bigint % 4294967296").Scan(&xid); err != nil {
		return fmt.Errorf("pg_current_xact_id: %w", err)
	}
	if err := noted(uint32(xid)); err != nil {
		return err
	}
	return tx.Commit()
}

// fenceXIDLine starts a fence file's line naming one of the fence's own
// transactions (flushPastCommits), which wrote nothing but a commit.
const fenceXIDLine = "# fence transaction: "

// maxFenceXIDs bounds the fence transactions a fence file remembers (one
// per set_read_only while fenced).
const maxFenceXIDs = 32

// noteFenceXID adds xid to the fence file's fence transactions.
func (m *Manager) noteFenceXID(xid uint32) error {
	xids := m.fenceXIDs()
	xids[xid] = true
	return m.writeReplicationFile(fenceFile(xids))
}

// fenceFile is the fence file naming xids, the newest maxFenceXIDs of
// them (by number: the fence's transactions are minutes apart, never
// billions).
func fenceFile(xids map[uint32]bool) []byte {
	list := make([]uint32, 0, len(xids))
	for x := range xids {
		list = append(list, x)
	}
	slices.Sort(list)
	if len(list) > maxFenceXIDs {
		list = list[len(list)-maxFenceXIDs:]
	}
	var b strings.Builder
	b.WriteString(fenceConfig)
	for _, x := range list {
		fmt.Fprintf(&b, "%s%d\n", fenceXIDLine, x)
	}
	return []byte(b.String())
}

// fenceXIDs are the fence transactions the fence file names (none
// without a fence file).
func (m *Manager) fenceXIDs() map[uint32]bool {
	out := map[uint32]bool{}
	data, fenced := m.fenceFile()
	if !fenced {
		return out
	}
	for _, line := range strings.Split(data, "\n") {
		if v, ok := strings.CutPrefix(line, fenceXIDLine); ok {
			if x, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil {
				out[uint32(x)] = true
			}
		}
	}
	return out
}

// fenceFile returns the replication file's text when it is a fence's
// (fenced: this primary is fenced).
func (m *Manager) fenceFile() (data string, fenced bool) {
	b, err := os.ReadFile(replicationFile(m.cfg))
	if err != nil || !strings.HasPrefix(string(b), fenceConfig) {
		return "", false
	}
	return string(b), true
}

// PromoteReplica waits until this standby replayed args.LSN (the fenced
// primary's position), then detaches it (DetachReplica: pg_promote). On
// timeout nothing changes. A re-run after the promotion finds a primary
// whose WAL reaches the position and changes nothing more.
func (m *Manager) PromoteReplica(ctx context.Context, args wire.PromoteReplicaArgs) (wire.ReplicationStatus, error) {
	if (args.GTIDPos != "" || args.ReplOffset != nil) && args.LSN == "" {
		return wire.ReplicationStatus{}, invalid("promote: gtid_pos: a PostgreSQL replica is promoted at a WAL position; give lsn")
	}
	if err := args.Validate(); err != nil {
		return wire.ReplicationStatus{}, invalid("promote: %v", err)
	}
	if err := m.ready(ctx); err != nil {
		return wire.ReplicationStatus{}, err
	}
	deadline := time.Now().Add(time.Duration(args.TimeoutSeconds) * time.Second)
	for {
		var rec bool
		var reached sql.NullBool
		err := m.conn().QueryRowContext(ctx, `SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery()
			THEN pg_last_wal_replay_lsn() >= $1::pg_lsn ELSE pg_current_wal_lsn() >= $1::pg_lsn END`, args.LSN).Scan(&rec, &reached)
		if err != nil {
			return wire.ReplicationStatus{}, wire.Errorf(wire.CodeUnavailable, "promote: waiting for %s: %v", args.LSN, err)
		}
		if !rec && !reached.Bool {
			st, _ := m.ReplicationStatus(ctx)
			return st, wire.Errorf(wire.CodeFailedPrecondition, "promote: this server is no standby, and its WAL (%s) ends before %s", st.LSN, args.LSN)
		}
		if reached.Bool {
			break
		}
		if time.Now().After(deadline) {
			st, _ := m.ReplicationStatus(ctx)
			reason := st.LastError
			if reason == "" {
				reason = fmt.Sprintf("WAL receiver streaming %v, replay running %v", st.IORunning, st.SQLRunning)
			}
			return st, wire.Errorf(wire.CodeFailedPrecondition,
				"promote: the replica did not replay the primary's position %s within %d s (it received %s and replayed %s; %s); nothing was changed",
				args.LSN, args.TimeoutSeconds, st.ReceivedLSN, st.ReplayedLSN, reason)
		}
		select {
		case <-ctx.Done():
			return wire.ReplicationStatus{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	st, err := m.DetachReplica(ctx)
	if err != nil {
		return st, err
	}
	if st.ForkLSN, err = m.timelineFork(ctx); err != nil {
		return st, err
	}
	m.log.Info("replica promoted: writable", "lsn", args.LSN, "wal_lsn", st.LSN, "fork_lsn", st.ForkLSN)
	return st, nil
}

// timelineFork is where this server's current timeline branched from
// the one before it: the switch point on the last line of its timeline
// history file (pg_wal/TTTTTTTT.history: parent timeline, switch point,
// reason), "" on timeline 1. On a promoted standby it is the exact end
// of the WAL it replayed from the primary it followed — what that
// primary's WAL must not go past to follow it without pg_rewind. A
// re-run reads the same line until the server is promoted again.
func (m *Manager) timelineFork(ctx context.Context) (string, error) {
	var tli string
	if err := m.conn().QueryRowContext(ctx, `SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)`).Scan(&tli); err != nil {
		return "", wire.Errorf(wire.CodeUnavailable, "the promoted server's timeline: %v", err)
	}
	if tli == "00000001" {
		return "", nil
	}
	var history string
	if err := m.conn().QueryRowContext(ctx, `SELECT pg_read_file('pg_wal/' || $1 || '.history')`, tli).Scan(&history); err != nil {
		return "", wire.Errorf(wire.CodeUnavailable, "the promoted server's timeline %s history: %v", tli, err)
	}
	fork, err := historySwitchPoint(history)
	if err != nil {
		return "", fmt.Errorf("the promoted server's timeline %s history: %w", tli, err)
	}
	return fork, nil
}

// historySwitchPoint is the switch point on a timeline history file's
// last entry (lines "parentTLI<tab>switchpoint<tab>reason"; "#" starts a
// comment).
func historySwitchPoint(history string) (string, error) {
	var last string
	for _, line := range strings.Split(history, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && !strings.HasPrefix(f[0], "#") {
			if _, err := strconv.ParseUint(f[0], 10, 32); err != nil {
				return "", fmt.Errorf("line %q: parent timeline: %v", line, err)
			}
			v, err := parseLSN(f[1])
			if err != nil {
				return "", fmt.Errorf("line %q: %w", line, err)
			}
			last = fmt.Sprintf("%X/%X", v>>32, uint32(v))
		}
	}
	if last == "" {
		return "", fmt.Errorf("no entry in %q", history)
	}
	return last, nil
}

// Cluster states pg_controldata reports (LC_ALL=C) for a server that was
// shut down cleanly, as a primary or as a standby.
var cleanShutdownStates = map[string]bool{"shut down": true, "shut down in recovery": true}

// RejoinReplication makes this former primary, stopped by the
// switchover after its fence, a standby of the new primary (see
// datastore.Rejoiner). Its cluster state must say it was shut down
// cleanly: its last WAL record is then the shutdown checkpoint, which
// the promoted replica replayed before its timeline began, so the new
// timeline's history holds all of this server's WAL and no pg_rewind is
// needed. standby.signal and the link (replicationFile, which replaces
// the fence: a standby is read-only by nature) are written, then the
// server starts, fetches the new timeline's history from the source
// (recovery_target_timeline is 'latest') and streams. If this server's
// WAL went past the fork after all (the promoted replica lacked its
// shutdown checkpoint), PostgreSQL itself refuses to follow and the
// status's last_error carries its log line; the standby stays read-only.
//
// A server that answers is not stopped: a standby goes through
// StartReplication (a re-run after the rejoin), a primary is refused
// (it ran, and wrote WAL, after the switchover).
//
// With args.ForkLSN (a failover: the server crashed, or ran on, past the
// position the promoted replica had received from it) the server, running
// as a primary or stopped in any state, is rewound instead
// (rewindAndRejoin, rewind.go) — unless it committed a transaction past
// the fork, which is refused before anything changes.
func (m *Manager) RejoinReplication(ctx context.Context, args wire.StartReplicationArgs) (wire.ReplicationStatus, error) {
	if err := args.Validate(); err != nil {
		return wire.ReplicationStatus{}, invalid("rejoin: %v", err)
	}
	if args.GTIDSlavePos != "" || args.Repoint {
		return wire.ReplicationStatus{}, invalid("rejoin: gtid_slave_pos and repoint: a former primary follows from where its own WAL ends; leave them out")
	}
	if err := checkPassword(args.Password); err != nil {
		return wire.ReplicationStatus{}, err
	}
	if err := m.lc.RequirePrepared(); err != nil {
		return wire.ReplicationStatus{}, err
	}
	if m.ping(ctx) == nil {
		rec, err := m.inRecovery(ctx)
		if err != nil {
			return wire.ReplicationStatus{}, err
		}
		if rec {
			return m.StartReplication(ctx, args)
		}
		if args.ForkLSN != "" {
			return m.rewindAndRejoin(ctx, args, true)
		}
		st, _ := m.ReplicationStatus(ctx)
		return st, wire.Errorf(wire.CodeFailedPrecondition,
			"rejoin: this server runs as a primary (WAL at %s): it was started again after the switchover stopped it, so its WAL may go past the new primary's fork and only pg_rewind could make it a standby; delete it and create a replica of the new primary", st.LSN)
	}
	// A crashed server (a pid file without its process) goes on to the
	// control file, which says it was not shut down cleanly.
	if st := datastore.ProcessStatus("postgres", m.cfg.PidFile, true); st.Status == wire.StatusBlocked {
		return wire.ReplicationStatus{}, wire.Errorf(wire.CodeUnavailable, "rejoin: the server is not stopped: %s", st.Detail)
	}
	if args.ForkLSN != "" {
		return m.rewindAndRejoin(ctx, args, false)
	}
	state, err := m.clusterState(ctx)
	if err != nil {
		return wire.ReplicationStatus{}, err
	}
	if !cleanShutdownStates[state] {
		return wire.ReplicationStatus{}, wire.Errorf(wire.CodeFailedPrecondition,
			"rejoin: the data directory's cluster state is %q, not \"shut down\": the server stopped without a shutdown checkpoint, so its WAL may hold records the new primary never received, and only pg_rewind could make it a standby; delete it and create a replica of the new primary", state)
	}
	if err := writeStandbySignal(m.cfg.DataDir); err != nil {
		return wire.ReplicationStatus{}, err
	}
	if err := m.writeReplicationFile(replicaConfig(args)); err != nil {
		return wire.ReplicationStatus{}, err
	}
	// From here the server can only start as a standby: a failed start
	// leaves a stopped standby-to-be, which a re-run starts again.
	if err := m.lc.Restart(ctx, m.cfg.Service, m.waitReady); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("rejoin: start as a standby: %w", err)
	}
	if err := m.waitSetting(ctx, "primary_slot_name", args.Account); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("rejoin: %w", err)
	}
	m.log.Info("former primary rejoined as a standby", "source", fmt.Sprintf("%s:%d", args.Host, args.Port), "account", args.Account, "cluster_state", state)
	return m.ReplicationStatus(ctx)
}

// clusterState is the "Database cluster state" pg_controldata reads from
// the stopped server's control file.
func (m *Manager) clusterState(ctx context.Context) (string, error) {
	cd, err := m.controlData(ctx)
	if err != nil {
		return "", err
	}
	state, ok := cd["Database cluster state"]
	if !ok {
		return "", fmt.Errorf("rejoin: pg_controldata -D %s printed no cluster state", m.cfg.DataDir)
	}
	return state, nil
}

// controlData is what pg_controldata prints of the control file, field
// name → value.
func (m *Manager) controlData(ctx context.Context) (map[string]string, error) {
	cmd := exec.CommandContext(ctx, m.tool("pg_controldata"), "-D", m.cfg.DataDir)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("rejoin: pg_controldata -D %s: %v: %s", m.cfg.DataDir, err, strings.TrimSpace(string(out)))
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return fields, nil
}

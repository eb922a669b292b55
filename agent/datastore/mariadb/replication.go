package mariadb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// Replication is MariaDB GTID replication (docs/replication.md). Every
// server writes a binary log (strata.cnf.tmpl: log_bin, ROW format,
// log_slave_updates) so any instance can be a source; a replica keeps its
// own server_id and read_only in replicationFile, which
// sorts after the configuration group's file so a group cannot make a
// replica writable.

var _ datastore.Replicator = (*Manager)(nil)

// replicationFile holds a replica's settings (server_id, read_only), a
// fenced primary's read_only (SetReadOnly), or — on a server that was a
// replica, detached or promoted — the server_id it keeps, so a restart
// does not turn it back to the default 1 and the GTIDs it writes keep
// their server part; absent on a server that never was a replica.
func (m *Manager) replicationFile() string {
	return filepath.Join(filepath.Dir(m.cfg.OverridesFile), "97-strata-replication.cnf")
}

// CreateReplicationAccount makes args.Name@'%' with REPLICATION SLAVE
// (and REPLICATION CLIENT, for SHOW MASTER STATUS) and nothing else, or
// resets an existing one's password and grant: a re-run converges.
func (m *Manager) CreateReplicationAccount(ctx context.Context, args wire.ReplicationAccountArgs) (wire.ReplicationSourceResult, error) {
	var res wire.ReplicationSourceResult
	if err := wire.CheckReplicationAccount(args.Name); err != nil {
		return res, invalid("%v", err)
	}
	if err := datastore.CheckPassword(args.Password); err != nil {
		return res, err
	}
	if err := m.ready(ctx); err != nil {
		return res, err
	}
	var logBin int
	if err := m.conn().QueryRowContext(ctx, "SELECT @@log_bin").Scan(&logBin); err != nil {
		return res, wire.Errorf(wire.CodeUnavailable, "mariadb: %v", err)
	}
	if logBin != 1 {
		return res, wire.Errorf(wire.CodeFailedPrecondition,
			"this server writes no binary log, so no replica can follow it (it was prepared before strata turned log_bin on); rebuild the instance to get the current configuration")
	}
	acct, _ := account(wire.UserRef{Name: args.Name, Host: "%"})
	hash := nativePasswordHash(args.Password)
	if err := m.exec(ctx,
		"CREATE USER IF NOT EXISTS "+acct+" IDENTIFIED VIA mysql_native_password USING '"+hash+"'",
		"ALTER USER "+acct+" IDENTIFIED VIA mysql_native_password USING '"+hash+"'",
		"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO "+acct,
	); err != nil {
		return res, fmt.Errorf("create replication account %s: %w", args.Name, err)
	}
	if err := m.conn().QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&res.GTIDBinlogPos); err != nil {
		return res, wire.Errorf(wire.CodeUnavailable, "mariadb: %v", err)
	}
	m.log.Info("replication account ready", "account", args.Name, "gtid_binlog_pos", res.GTIDBinlogPos)
	return res, nil
}

// DropReplicationAccount removes a replica's account; a missing one is
// not_found.
func (m *Manager) DropReplicationAccount(ctx context.Context, name string) error {
	if err := wire.CheckReplicationAccount(name); err != nil {
		return invalid("%v", err)
	}
	if err := m.ready(ctx); err != nil {
		return err
	}
	ref := wire.UserRef{Name: name, Host: "%"}
	exists, err := m.userExists(ctx, ref)
	if err != nil {
		return err
	}
	if !exists {
		return wire.Errorf(wire.CodeNotFound, "replication account %s does not exist", name)
	}
	acct, _ := account(ref)
	// Kill the replica's dump threads too: a dropped account must not
	// keep receiving events on a connection it opened before.
	if err := m.exec(ctx, "DROP USER "+acct); err != nil {
		return fmt.Errorf("drop replication account %s: %w", name, err)
	}
	m.killSessionsOf(ctx, name)
	m.log.Info("replication account dropped", "account", name)
	return nil
}

// killSessionsOf ends the connections of an account (best effort: a
// session that ended meanwhile is fine).
func (m *Manager) killSessionsOf(ctx context.Context, user string) {
	rows, err := m.conn().QueryContext(ctx, "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?", user)
	if err != nil {
		return
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if rows.Scan(&id) == nil {
			ids = append(ids, id)
		}
	}
	rows.Close()
	for _, id := range ids {
		m.exec(ctx, "KILL CONNECTION "+strconv.FormatInt(id, 10))
	}
}

// StartReplication makes this server a read-only replica of args.Host.
// Order: the settings file first (server_id must differ from the
// primary's before the link starts, and read_only must survive a
// restart), then read_only and server_id live, then — only while no link
// exists — gtid_slave_pos and CHANGE MASTER, then START SLAVE. With
// args.Repoint (a switchover) an existing link is moved instead: STOP
// SLAVE, CHANGE MASTER to the new source keeping the link's own GTID
// position, START SLAVE; a server without a link is refused before
// anything is written.
func (m *Manager) StartReplication(ctx context.Context, args wire.StartReplicationArgs) (wire.ReplicationStatus, error) {
	if err := args.Validate(); err != nil {
		return wire.ReplicationStatus{}, invalid("start replication: %v", err)
	}
	if err := datastore.CheckPassword(args.Password); err != nil {
		return wire.ReplicationStatus{}, err
	}
	host, err := quoteString(args.Host)
	if err != nil {
		return wire.ReplicationStatus{}, err
	}
	user, _ := quoteString(args.Account)
	pw, err := quoteString(args.Password)
	if err != nil {
		return wire.ReplicationStatus{}, err
	}
	if err := m.ready(ctx); err != nil {
		return wire.ReplicationStatus{}, err
	}
	if args.Repoint {
		// Checked before anything is written: a refused repoint
		// leaves the server as it was.
		if st, err := m.ReplicationStatus(ctx); err != nil {
			return st, err
		} else if st.Role != wire.RoleReplica {
			return st, wire.Errorf(wire.CodeFailedPrecondition, "repoint replication: this server follows no source")
		}
	}
	serverID, err := m.writeReplicaSettings()
	if err != nil {
		return wire.ReplicationStatus{}, err
	}
	if err := m.exec(ctx, "SET GLOBAL read_only = ON", "SET GLOBAL server_id = "+strconv.FormatUint(uint64(serverID), 10)); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("start replication: %w", err)
	}
	st, err := m.ReplicationStatus(ctx)
	if err != nil {
		return st, err
	}
	if args.Repoint {
		// A switchover moves the link: same GTID position, new source
		// and account. CHANGE MASTER needs the threads stopped; a re-run
		// does the same again.
		if err := m.exec(ctx, "STOP SLAVE", fmt.Sprintf("CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %d, MASTER_USER = %s, MASTER_PASSWORD = %s, "+
			"MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 5", host, args.Port, user, pw)); err != nil {
			return st, wire.Errorf(wire.CodeFailedPrecondition, "repoint replication: %s", datastore.FirstWords(err.Error()))
		}
	} else if st.Role == wire.RoleStandalone {
		stmts := []string{}
		if args.GTIDSlavePos != "" {
			stmts = append(stmts, "SET GLOBAL gtid_slave_pos = '"+args.GTIDSlavePos+"'")
		}
		stmts = append(stmts, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %d, MASTER_USER = %s, MASTER_PASSWORD = %s, "+
			"MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 5", host, args.Port, user, pw))
		if err := m.exec(ctx, stmts...); err != nil {
			return st, wire.Errorf(wire.CodeFailedPrecondition, "start replication: %s", datastore.FirstWords(err.Error()))
		}
	} else if st.SourceHost != args.Host || st.SourcePort != args.Port {
		return st, wire.Errorf(wire.CodeFailedPrecondition,
			"start replication: this server follows %s:%d already; detach it first", st.SourceHost, st.SourcePort)
	}
	if err := m.exec(ctx, "START SLAVE"); err != nil {
		return st, fmt.Errorf("start replication: %w", err)
	}
	m.log.Info("replication started", "source", fmt.Sprintf("%s:%d", args.Host, args.Port), "account", args.Account,
		"gtid_slave_pos", args.GTIDSlavePos, "server_id", serverID)
	return m.ReplicationStatus(ctx)
}

// writeReplicaSettings writes a replica's settings file (read_only, and
// the server_id it keeps) and returns the server_id.
func (m *Manager) writeReplicaSettings() (uint32, error) {
	serverID, err := m.replicaServerID()
	if err != nil {
		return 0, err
	}
	return serverID, m.writeSettings(serverID, true, "this server is a replica")
}

// writeSettings writes the replication settings file: the server_id (0:
// none) and read_only ON or not; with neither it removes the file.
func (m *Manager) writeSettings(serverID uint32, readOnly bool, why string) error {
	if serverID == 0 && !readOnly {
		if err := os.Remove(m.replicationFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("replication settings: %w", err)
		}
		return nil
	}
	cnf := "# Written by strata-agent: " + why + " (docs/replication.md).\n[mysqld]\n"
	if serverID != 0 {
		cnf += fmt.Sprintf("server_id = %d\n", serverID)
	}
	if readOnly {
		cnf += "read_only = ON\n"
	}
	return datastore.WriteConfigFile(m.replicationFile(), []byte(cnf), 0o644)
}

// settings reads the settings file: the server_id it keeps (0: none) and
// whether it makes the server read-only.
func (m *Manager) settings() (uint32, bool, error) {
	data, err := os.ReadFile(m.replicationFile())
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("replication settings: %w", err)
	}
	kv := parseOverrides(data)
	var id uint32
	if n, err := strconv.ParseUint(kv["server_id"], 10, 32); err == nil && n > 1 {
		id = uint32(n)
	}
	return id, strings.EqualFold(kv["read_only"], "ON"), nil
}

// keepReplicaReadOnly, before a kept data directory's server starts (a
// rebuild's prepare), makes a server whose data holds a replication link
// (master.info: its source, account and GTID position) start as a
// replica. Its settings file was on the root disk the rebuild replaced:
// without it the server would start writable, with the default
// server_id, until the controller's relink — and a user's write in
// between would be a transaction its source never had.
func (m *Manager) keepReplicaReadOnly() error {
	if _, err := os.Stat(filepath.Join(m.cfg.DataDir, "master.info")); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("replication link in the data directory: %w", err)
	}
	serverID, err := m.writeReplicaSettings()
	if err != nil {
		return err
	}
	m.log.Info("kept data directory holds a replication link: the server starts read-only, as a replica", "server_id", serverID)
	return nil
}

// replicaServerID keeps the server_id a replica was given (a re-run must
// not change it) or draws a new one: random, never 1 (a primary's
// default), so replicas of one group differ with near certainty.
func (m *Manager) replicaServerID() (uint32, error) {
	if id, _, err := m.settings(); err != nil || id != 0 {
		return id, err
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b[:])%(1<<31-2) + 2, nil
}

// ReplicationStatus reads SHOW ALL SLAVES STATUS' default connection and
// the GTID variables.
func (m *Manager) ReplicationStatus(ctx context.Context) (wire.ReplicationStatus, error) {
	st := wire.ReplicationStatus{Role: wire.RoleStandalone}
	if err := m.ready(ctx); err != nil {
		return st, err
	}
	if err := m.conn().QueryRowContext(ctx, "SELECT @@gtid_slave_pos, @@gtid_binlog_pos, @@read_only").
		Scan(&st.GTIDSlavePos, &st.GTIDBinlogPos, &st.ReadOnly); err != nil {
		return st, wire.Errorf(wire.CodeUnavailable, "mariadb: %v", err)
	}
	row, err := m.slaveStatus(ctx)
	if err != nil || row == nil {
		return st, err
	}
	st.Role = wire.RoleReplica
	st.SourceHost = row["Master_Host"]
	st.SourcePort, _ = strconv.Atoi(row["Master_Port"])
	st.IORunning = row["Slave_IO_Running"] == "Yes"
	st.SQLRunning = row["Slave_SQL_Running"] == "Yes"
	// "Connecting" retries by itself; "No" with an error waits for a
	// START SLAVE that only an operator or the controller gives.
	st.LinkStopped = row["Slave_IO_Running"] == "No" && nonzero(row["Last_IO_Errno"]) ||
		row["Slave_SQL_Running"] == "No" && nonzero(row["Last_SQL_Errno"])
	if s, ok := row["Seconds_Behind_Master"]; ok && s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			st.SecondsBehind = &n
		}
	}
	st.GTIDIOPos = row["Gtid_IO_Pos"]
	switch {
	case row["Last_IO_Error"] != "":
		st.LastError = "I/O: " + row["Last_IO_Error"]
	case row["Last_SQL_Error"] != "":
		st.LastError = "SQL: " + row["Last_SQL_Error"]
	}
	if len(st.LastError) > 1000 { // it travels in every heartbeat
		st.LastError = st.LastError[:1000]
	}
	return st, nil
}

// nonzero says whether an error number column holds an error.
func nonzero(errno string) bool { return errno != "" && errno != "0" }

// slaveStatus is SHOW SLAVE STATUS' one row by column name, nil when no
// link is configured. NULL columns read as "".
func (m *Manager) slaveStatus(ctx context.Context) (map[string]string, error) {
	rows, err := m.conn().QueryContext(ctx, "SHOW SLAVE STATUS")
	if err != nil {
		return nil, wire.Errorf(wire.CodeUnavailable, "mariadb: show slave status: %v", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if !rows.Next() {
		return nil, rows.Err()
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, fmt.Errorf("show slave status: %w", err)
	}
	out := make(map[string]string, len(cols))
	for i, c := range cols {
		out[c] = vals[i].String
	}
	return out, nil
}

// DetachReplica stops and forgets the link (RESET SLAVE ALL: the relay
// logs and the stored credentials go too), leaves only the server_id in
// the settings file and turns read_only off: a standalone writable server
// that keeps its data and its server_id, across restarts too.
func (m *Manager) DetachReplica(ctx context.Context) (wire.ReplicationStatus, error) {
	if err := m.ready(ctx); err != nil {
		return wire.ReplicationStatus{}, err
	}
	if err := m.exec(ctx, "STOP SLAVE", "RESET SLAVE ALL"); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("detach replica: %w", err)
	}
	if err := m.keepServerIDOnly(); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("detach replica: %w", err)
	}
	if err := m.exec(ctx, "SET GLOBAL read_only = OFF"); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("detach replica: %w", err)
	}
	m.log.Info("replica detached")
	return m.ReplicationStatus(ctx)
}

// keepServerIDOnly makes the settings file hold the server's server_id
// alone (read_only goes), or removes it if it holds none. A fence
// (SetReadOnly) keeps a primary read-only across a restart with read_only
// in the same file; a replica's settings (StartReplication) replace it.
func (m *Manager) keepServerIDOnly() error {
	id, _, err := m.settings()
	if err != nil {
		return err
	}
	return m.writeSettings(id, false, "this server keeps the server_id it had as a replica")
}

// SetReadOnly fences (or unfences) a primary. Fencing writes the
// settings file first (a restart stays fenced), then sets read_only,
// which waits for the commits in flight, so the binary log position read
// after it is the last one users wrote. Lifting the fence on a server
// that follows a source is refused: a replica stays read-only.
func (m *Manager) SetReadOnly(ctx context.Context, readOnly bool) (wire.ReplicationStatus, error) {
	if err := m.ready(ctx); err != nil {
		return wire.ReplicationStatus{}, err
	}
	st, err := m.ReplicationStatus(ctx)
	if err != nil {
		return st, err
	}
	if readOnly {
		id, ro, err := m.settings()
		if err != nil {
			return st, err
		}
		if !ro {
			if err := m.writeSettings(id, true, "this primary is fenced for a switchover"); err != nil {
				return st, err
			}
		}
		if err := m.exec(ctx, "SET GLOBAL read_only = ON"); err != nil {
			return st, fmt.Errorf("fence: %w", err)
		}
		m.log.Info("primary fenced: read-only")
		return m.ReplicationStatus(ctx)
	}
	if st.Role != wire.RoleStandalone {
		return st, wire.Errorf(wire.CodeFailedPrecondition, "lift the fence: this server follows %s:%d; detach it first", st.SourceHost, st.SourcePort)
	}
	if err := m.keepServerIDOnly(); err != nil {
		return st, fmt.Errorf("lift the fence: %w", err)
	}
	if err := m.exec(ctx, "SET GLOBAL read_only = OFF"); err != nil {
		return st, fmt.Errorf("lift the fence: %w", err)
	}
	m.log.Info("primary fence lifted: writable")
	return m.ReplicationStatus(ctx)
}

// PromoteReplica waits (MASTER_GTID_WAIT) until this replica applied
// args.GTIDPos, then detaches it: STOP SLAVE and RESET SLAVE ALL keep
// the binary log and gtid_slave_pos, so the other servers of the group
// can follow it from their own positions. A timeout changes nothing. A
// re-run after a detach finds the position reached (gtid_slave_pos
// outlives the link) and detaching again changes nothing.
func (m *Manager) PromoteReplica(ctx context.Context, args wire.PromoteReplicaArgs) (wire.ReplicationStatus, error) {
	if err := args.Validate(); err != nil {
		return wire.ReplicationStatus{}, invalid("promote: %v", err)
	}
	if args.GTIDPos == "" { // a PostgreSQL position alone
		return wire.ReplicationStatus{}, invalid("promote: gtid_pos: required (MariaDB waits for a GTID position, not a WAL lsn)")
	}
	if err := m.ready(ctx); err != nil {
		return wire.ReplicationStatus{}, err
	}
	var res sql.NullInt64
	if err := m.conn().QueryRowContext(ctx, "SELECT MASTER_GTID_WAIT(?, ?)", args.GTIDPos, args.TimeoutSeconds).Scan(&res); err != nil {
		return wire.ReplicationStatus{}, wire.Errorf(wire.CodeUnavailable, "promote: waiting for %s: %v", args.GTIDPos, err)
	}
	if !res.Valid || res.Int64 != 0 {
		st, _ := m.ReplicationStatus(ctx)
		reason := st.LastError
		if reason == "" {
			reason = fmt.Sprintf("I/O thread running %v, SQL thread running %v", st.IORunning, st.SQLRunning)
		}
		return st, wire.Errorf(wire.CodeFailedPrecondition,
			"promote: the replica did not apply the primary's position %s within %d s (it applied %s; %s); nothing was changed",
			args.GTIDPos, args.TimeoutSeconds, st.GTIDSlavePos, reason)
	}
	st, err := m.DetachReplica(ctx)
	if err != nil {
		return st, err
	}
	m.log.Info("replica promoted: writable", "gtid_pos", args.GTIDPos, "gtid_binlog_pos", st.GTIDBinlogPos)
	return st, nil
}

// isReplicationAccount reports names the replication kinds own.
func isReplicationAccount(name string) bool {
	return strings.HasPrefix(strings.ToLower(name), wire.ReplicationAccountPrefix)
}

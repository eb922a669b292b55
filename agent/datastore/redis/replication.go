package redis

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// Replication is Redis's own (docs/replication.md): a replica follows its
// primary with REPLICAOF, authenticating as an ACL user of its own
// (masteruser, masterauth). A replica restored from a backup of its
// primary still makes a full synchronisation when it links: a snapshot
// taken on a primary without replicas carries no replication ID, so the
// primary sends its whole dataset and the restored keys are replaced by
// it. The replica's link, or a fenced primary's fence, is kept in
// replicationFile, included last by redis.conf.

var _ datastore.Replicator = (*Manager)(nil)

// replicationFile holds the replication settings: a replica's link, a
// fenced primary's fence, or nothing (standaloneConfig).
func replicationFile(cfg Config) string {
	return filepath.Join(filepath.Dir(cfg.OverridesFile), "strata-replication.conf")
}

const replicationHeader = "# Written by strata-agent: replication settings (docs/replication.md), included last.\n"

// standaloneConfig is the replication file of a writable primary.
const standaloneConfig = replicationHeader + "# A standalone, writable server.\n"

// fenceConfig is the replication file of a fenced primary (SetReadOnly).
var fenceConfig = replicationHeader + "# A fenced primary (switchover): every write refused. Removed when the fence is lifted.\n" +
	fmt.Sprintf("min-replicas-to-write %d\nmin-replicas-max-lag 10\n", fenceReplicas)

// replicaMarker, on the data volume, says the data is a replica's: the
// link itself (replicationFile) is on the root disk, which a rebuild
// replaces. A server prepared on such data without its link starts
// fenced (initialReplicationFile) until the controller links it again.
func replicaMarker(cfg Config) string { return filepath.Join(cfg.DataDir, "strata-replica") }

// initialReplicationFile is the replication file a server gets when it
// has none (a new server, or a rebuilt one): standalone, or fenced when
// its data is a replica's — writable, a rebuilt replica would take
// users' writes its source never had until its relink.
func initialReplicationFile(cfg Config) []byte {
	if exists(replicaMarker(cfg)) {
		return []byte(fenceConfig)
	}
	return []byte(standaloneConfig)
}

// replicationAccountRules are all a replica's link needs of its primary:
// AUTH (always allowed), PING, REPLCONF and PSYNC (SYNC, the old form,
// is not granted; Redis 7 replicas use PSYNC). No key or channel.
var replicationAccountRules = []string{"on", "resetkeys", "resetchannels", "-@all", "+psync", "+replconf", "+ping"}

// fenceReplicas is min-replicas-to-write on a fenced primary: more good
// replicas than any primary has, so every write is refused (NOREPLICAS).
const fenceReplicas = 1000000

// unfenced returns CONFIG SET's arguments that put min-replicas-to-write
// and min-replicas-max-lag back to what the server reads without a fence:
// the configuration group's, else the base and defaults layers', else
// Redis's defaults (0 and 10).
func (m *Manager) unfenced() []string {
	vals := m.baseValues()
	if data, err := os.ReadFile(m.cfg.OverridesFile); err == nil {
		for k, v := range parseOverrides(data) {
			vals[k] = v
		}
	}
	out := []string{}
	for _, p := range [][2]string{{"min-replicas-to-write", "0"}, {"min-replicas-max-lag", "10"}} {
		v, ok := vals[p[0]]
		if !ok {
			v = p[1]
		}
		out = append(out, p[0], v)
	}
	return out
}

// fenced tells a fence from a group's own min-replicas-to-write.
func fenced(minReplicas string) bool {
	n, err := strconv.Atoi(minReplicas)
	return err == nil && n >= fenceReplicas
}

// writeReplicationFile writes the replication settings the server reads
// at its next start; the live settings are the caller's.
func (m *Manager) writeReplicationFile(data []byte) error {
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return err
	}
	return writeServerFile(replicationFile(m.cfg), data, osUser)
}

// checkReplicationInclude refuses a server whose redis.conf was rendered
// before it included the replication file: a link made there would not
// survive a restart.
func (m *Manager) checkReplicationInclude(verb string) error {
	conf, err := os.ReadFile(m.cfg.ConfigFile)
	if err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	if !strings.Contains(string(conf), "include "+replicationFile(m.cfg)+"\n") {
		return wire.Errorf(wire.CodeFailedPrecondition,
			"%s: this server's redis.conf was written before strata kept replication settings (it does not include %s); apply its flavor again or rebuild it",
			verb, replicationFile(m.cfg))
	}
	return nil
}

// confQuote quotes a value for redis.conf: every byte but a letter or
// digit as \xHH inside double quotes, which Redis's parser decodes, so
// no value can end the line or the argument.
func confQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// info returns INFO section's fields.
func (m *Manager) info(ctx context.Context, section string) (map[string]string, error) {
	r, err := m.do(ctx, "INFO", section)
	if err != nil {
		return nil, wire.Errorf(wire.CodeUnavailable, "redis: info %s: %v", section, err)
	}
	return parseInfo(r.Str), nil
}

// parseInfo reads INFO's "field:value" lines (section headers and blank
// lines have no colon).
func parseInfo(text string) map[string]string {
	out := map[string]string{}
	addInfo(out, text)
	return out
}

func addInfo(out map[string]string, text string) {
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
}

// setting reads one parameter the server must have.
func (m *Manager) setting(ctx context.Context, name string) (string, error) {
	v, ok, err := m.configGet(ctx, name)
	if err == nil && !ok {
		err = fmt.Errorf("redis: config get %s: no such parameter", name)
	}
	return v, err
}

func intField(f map[string]string, k string) *int64 {
	n, err := strconv.ParseInt(f[k], 10, 64)
	if err != nil {
		return nil
	}
	return &n
}

// CreateReplicationAccount makes (or resets: a re-run sets the password
// again) one replica's ACL user, allowed only a replica's link
// (replicationAccountRules), saved to the ACL file like every user, and
// returns the primary's replication ID and offset. A replica refuses:
// accounts are made on its primary.
func (m *Manager) CreateReplicationAccount(ctx context.Context, args wire.ReplicationAccountArgs) (wire.ReplicationSourceResult, error) {
	var res wire.ReplicationSourceResult
	if err := wire.CheckReplicationAccount(args.Name); err != nil {
		return res, invalid("name: %v", err)
	}
	if err := datastore.CheckPassword(args.Password); err != nil {
		return res, err
	}
	if err := m.ready(ctx); err != nil {
		return res, err
	}
	f, err := m.info(ctx, "replication")
	if err != nil {
		return res, err
	}
	if f["role"] != "master" {
		return res, wire.Errorf(wire.CodeFailedPrecondition, "create replication account %s: this server is a replica; accounts are made on its primary", args.Name)
	}
	cmd := append([]string{"ACL", "SETUSER", args.Name, "reset"}, replicationAccountRules...)
	if _, err := m.do(ctx, append(cmd, passwordHash(args.Password))...); err != nil {
		return res, fmt.Errorf("create replication account %s: %w", args.Name, err)
	}
	if err := m.saveACL(ctx); err != nil {
		return res, err
	}
	if f, err = m.info(ctx, "replication"); err != nil {
		return res, err
	}
	res.ReplID, res.ReplOffset = f["master_replid"], intField(f, "master_repl_offset")
	m.log.Info("replication account ready", "account", args.Name, "repl_id", res.ReplID, "repl_offset", f["master_repl_offset"])
	return res, nil
}

// DropReplicationAccount deletes a replica's ACL user (Redis ends its
// connections, so the replica's link too) and saves the ACL file. A
// missing account is fine.
func (m *Manager) DropReplicationAccount(ctx context.Context, name string) error {
	if err := wire.CheckReplicationAccount(name); err != nil {
		return invalid("name: %v", err)
	}
	if err := m.ready(ctx); err != nil {
		return err
	}
	r, err := m.do(ctx, "ACL", "DELUSER", name)
	if err != nil {
		return fmt.Errorf("drop replication account %s: %w", name, err)
	}
	if r.Int > 0 {
		if err := m.saveACL(ctx); err != nil {
			return err
		}
	}
	m.log.Info("replication account dropped", "account", name, "existed", r.Int > 0)
	return nil
}

// replicaConfig is a replica's replication file.
func replicaConfig(args wire.StartReplicationArgs) []byte {
	return []byte(replicationHeader + "# A replica; removed on detach.\n" +
		fmt.Sprintf("replicaof %s %d\n", args.Host, args.Port) +
		"masteruser " + confQuote(args.Account) + "\n" +
		"masterauth " + confQuote(args.Password) + "\n" +
		"replica-read-only yes\n")
}

// StartReplication makes this server a read-only replica of
// args.Host:args.Port: the replication file first (the link survives a
// restart), then masteruser, masterauth and replica-read-only live, then
// REPLICAOF. A server that follows the same source already is left as
// it is (a controller's retry after a lost answer), one that follows
// another source is refused; with args.Repoint the existing link moves
// to another source instead, and a server without a link is refused.
// Both refusals change nothing.
func (m *Manager) StartReplication(ctx context.Context, args wire.StartReplicationArgs) (wire.ReplicationStatus, error) {
	verb := "start replication"
	if args.Repoint {
		verb = "repoint replication"
	}
	if err := args.Validate(); err != nil {
		return wire.ReplicationStatus{}, invalid("%s: %v", verb, err)
	}
	if args.GTIDSlavePos != "" {
		return wire.ReplicationStatus{}, invalid("%s: gtid_slave_pos: a Redis replica starts with a full synchronisation from its primary; leave it empty", verb)
	}
	if err := datastore.CheckPassword(args.Password); err != nil {
		return wire.ReplicationStatus{}, err
	}
	if err := m.ready(ctx); err != nil {
		return wire.ReplicationStatus{}, err
	}
	if err := m.checkReplicationInclude(verb); err != nil {
		return wire.ReplicationStatus{}, err
	}
	st, err := m.ReplicationStatus(ctx)
	if err != nil {
		return st, err
	}
	switch {
	case args.Repoint && st.Role != wire.RoleReplica:
		return st, wire.Errorf(wire.CodeFailedPrecondition, "repoint replication: this server follows no source")
	case !args.Repoint && st.Role == wire.RoleReplica && st.SourceHost == args.Host && st.SourcePort == args.Port:
		// The same source again (a controller's retry after a lost
		// answer): the link is in place; nothing is changed, as MariaDB
		// and PostgreSQL do.
		return st, nil
	case !args.Repoint && st.Role == wire.RoleReplica:
		return st, wire.Errorf(wire.CodeFailedPrecondition,
			"start replication: this server follows %s:%d already; detach it first, or repoint it", st.SourceHost, st.SourcePort)
	}
	if err := m.writeReplicationFile(replicaConfig(args)); err != nil {
		return st, err
	}
	if err := datastore.WriteFileAtomic(replicaMarker(m.cfg), []byte("# Written by strata-agent: this data is a replica's (docs/replication.md). Removed on detach.\n"), 0o600); err != nil {
		return st, fmt.Errorf("%s: %w", verb, err)
	}
	set := append([]string{"CONFIG", "SET", "masteruser", args.Account, "masterauth", args.Password, "replica-read-only", "yes"}, m.unfenced()...)
	if _, err := m.do(ctx, set...); err != nil {
		return st, fmt.Errorf("%s: %w", verb, err)
	}
	if _, err := m.do(ctx, "REPLICAOF", args.Host, strconv.Itoa(args.Port)); err != nil {
		return st, fmt.Errorf("%s: %w", verb, err)
	}
	m.log.Info("replication started", "source", fmt.Sprintf("%s:%d", args.Host, args.Port), "account", args.Account, "repoint", args.Repoint)
	return m.ReplicationStatus(ctx)
}

// ReplicationStatus reads INFO replication. A primary is standalone, with
// its replication ID and offset, and read-only when fenced. A replica's
// link is up or not (Redis applies what it receives as it receives it, so
// IORunning and SQLRunning are the same); its ReplOffset is what it
// processed, and the lag in bytes is its primary's ReplOffset less that,
// which only both statuses together tell.
func (m *Manager) ReplicationStatus(ctx context.Context) (wire.ReplicationStatus, error) {
	var st wire.ReplicationStatus
	if err := m.ready(ctx); err != nil {
		return st, err
	}
	f, err := m.info(ctx, "replication")
	if err != nil {
		return st, err
	}
	st.ReplID = f["master_replid"]
	// The previous ID, a primary's or a replica's: a replica that
	// followed a promoted server with a partial resynchronisation keeps
	// the stream it followed before as its second (what a failover
	// records of the group's history). Redis reports no previous ID as
	// forty zeros and offset -1.
	if id2, second := f["master_replid2"], intField(f, "second_repl_offset"); strings.Trim(id2, "0") != "" && second != nil && *second > 0 {
		end := *second - 1
		st.ReplID2, st.ReplID2End = id2, &end
	}
	if f["role"] != "slave" {
		st.Role = wire.RoleStandalone
		st.ReplOffset = intField(f, "master_repl_offset")
		fence, err := m.setting(ctx, "min-replicas-to-write")
		if err != nil {
			return st, err
		}
		st.ReadOnly = fenced(fence)
		return st, nil
	}
	st.Role = wire.RoleReplica
	st.SourceHost = f["master_host"]
	st.SourcePort, _ = strconv.Atoi(f["master_port"])
	st.IORunning = f["master_link_status"] == "up"
	st.SQLRunning = st.IORunning
	st.ReplOffset = intField(f, "slave_repl_offset")
	if st.IORunning {
		st.LastIOSecondsAgo = intField(f, "master_last_io_seconds_ago")
	}
	ro, err := m.setting(ctx, "replica-read-only")
	if err != nil {
		return st, err
	}
	st.ReadOnly = ro == "yes"
	if !st.IORunning {
		st.LastError = m.linkError(f)
	}
	return st, nil
}

// linkError says why a replica's link is down: how long, and the
// server's last warning (a replica's warnings are about its link).
func (m *Manager) linkError(f map[string]string) string {
	msg := "the link to the primary is down"
	if f["master_sync_in_progress"] == "1" {
		msg = "the first synchronisation with the primary is in progress"
	} else if s := f["master_link_down_since_seconds"]; s != "" && s != "-1" {
		msg += " since " + s + " s"
	}
	tail, err := datastore.TailFile(LogServer, m.cfg.LogFile, 50, 16<<10)
	if err != nil {
		return msg
	}
	for i := len(tail.Lines) - 1; i >= 0; i-- {
		l := tail.Lines[i]
		if _, text, ok := strings.Cut(l, " # "); ok {
			return msg + ": " + strings.TrimSpace(text)
		}
	}
	return msg
}

// DetachReplica makes this server a standalone writable primary:
// REPLICAOF NO ONE (it keeps its data, and its former primary's
// replication ID as a second one, so the others can repoint to it
// without a full synchronisation), its link's settings cleared, and a
// fence lifted, in the file first. Detaching a standalone server changes
// nothing but the fence.
func (m *Manager) DetachReplica(ctx context.Context) (wire.ReplicationStatus, error) {
	if err := m.ready(ctx); err != nil {
		return wire.ReplicationStatus{}, err
	}
	if err := m.writeReplicationFile([]byte(standaloneConfig)); err != nil {
		return wire.ReplicationStatus{}, err
	}
	if err := os.Remove(replicaMarker(m.cfg)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return wire.ReplicationStatus{}, fmt.Errorf("detach replica: %w", err)
	}
	if _, err := m.do(ctx, "REPLICAOF", "NO", "ONE"); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("detach replica: %w", err)
	}
	set := append([]string{"CONFIG", "SET", "masteruser", "", "masterauth", "", "replica-read-only", "no"}, m.unfenced()...)
	if _, err := m.do(ctx, set...); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("detach replica: %w", err)
	}
	m.log.Info("replica detached: writable")
	return m.ReplicationStatus(ctx)
}

// SetReadOnly fences a primary for a switchover, or lifts the fence.
// Redis has no read-only switch for a primary; the fence is
// min-replicas-to-write set beyond any replica count (with
// min-replicas-max-lag on), which makes the server refuse every write
// command, from every client, the agent's included, with NOREPLICAS, in
// MULTI and scripts too, while its replicas keep receiving its stream.
// It is in the replication file, so it holds across restarts. The
// result's ReplOffset is read after the fence: every write the server
// accepted is at or before it. Its limits: the server still writes on its
// own (keys expiring, whose deletions reach the replicas after the
// offset; promoting at the offset loses no write a client made);
// connections stay open and reads go on; root (the default user, +@all)
// may CONFIG SET the fence away, and so may a configuration group that
// sets min-replicas-to-write at run time (the file puts it back at the
// next start). CLIENT PAUSE WRITE, the other way, holds writes instead of
// refusing them and ends with a timeout or a restart. A replica is
// read-only already: fencing it changes nothing; lifting the fence on one
// is refused. Lifting the fence (as detach, start and repoint do) puts
// min-replicas-to-write and min-replicas-max-lag back to the group's (or
// the base configuration's) values; a group's stay at most 1000, below
// the fence's, so the status tells a fence from them.
func (m *Manager) SetReadOnly(ctx context.Context, readOnly bool) (wire.ReplicationStatus, error) {
	if err := m.ready(ctx); err != nil {
		return wire.ReplicationStatus{}, err
	}
	st, err := m.ReplicationStatus(ctx)
	if err != nil {
		return st, err
	}
	if st.Role == wire.RoleReplica {
		if readOnly {
			return st, nil
		}
		return st, wire.Errorf(wire.CodeFailedPrecondition, "lift the fence: this server is a replica (it follows %s:%d); detach it first", st.SourceHost, st.SourcePort)
	}
	if err := m.checkReplicationInclude("fence"); err != nil {
		return st, err
	}
	conf, set := standaloneConfig, append([]string{"CONFIG", "SET"}, m.unfenced()...)
	if readOnly {
		conf = fenceConfig
		set = []string{"CONFIG", "SET", "min-replicas-to-write", strconv.Itoa(fenceReplicas), "min-replicas-max-lag", "10"}
	}
	if err := m.writeReplicationFile([]byte(conf)); err != nil {
		return st, err
	}
	if _, err := m.do(ctx, set...); err != nil {
		return st, fmt.Errorf("fence: %w", err)
	}
	st, err = m.ReplicationStatus(ctx)
	m.log.Info("primary fence set", "read_only", readOnly, "repl_offset", fmtOffset(st.ReplOffset))
	return st, err
}

func fmtOffset(p *int64) string {
	if p == nil {
		return ""
	}
	return strconv.FormatInt(*p, 10)
}

// PromoteReplica waits until this replica processed args.ReplOffset of
// its primary's stream (and, if given, follows the stream args.ReplID
// names), then detaches it (DetachReplica). On timeout nothing changes.
// A re-run after the promotion finds a primary whose offset reaches the
// position and detaches again, which changes nothing more.
func (m *Manager) PromoteReplica(ctx context.Context, args wire.PromoteReplicaArgs) (wire.ReplicationStatus, error) {
	if err := args.Validate(); err != nil {
		return wire.ReplicationStatus{}, invalid("promote: %v", err)
	}
	if args.ReplOffset == nil {
		return wire.ReplicationStatus{}, invalid("promote: repl_offset: required (a Redis replica waits for its primary's replication offset)")
	}
	if err := m.ready(ctx); err != nil {
		return wire.ReplicationStatus{}, err
	}
	want := *args.ReplOffset
	deadline := time.Now().Add(time.Duration(args.TimeoutSeconds) * time.Second)
	for {
		f, err := m.info(ctx, "replication")
		if err != nil {
			return wire.ReplicationStatus{}, err
		}
		if f["role"] != "slave" {
			st, _ := m.ReplicationStatus(ctx)
			if off := intField(f, "master_repl_offset"); off != nil && *off >= want &&
				(args.ReplID == "" || args.ReplID == f["master_replid"] || args.ReplID == f["master_replid2"]) {
				break // promoted before
			}
			return st, wire.Errorf(wire.CodeFailedPrecondition, "promote: this server is no replica, and its stream (%s at %s) does not reach %d", f["master_replid"], f["master_repl_offset"], want)
		}
		if args.ReplID != "" && f["master_replid"] != args.ReplID {
			st, _ := m.ReplicationStatus(ctx)
			return st, wire.Errorf(wire.CodeFailedPrecondition,
				"promote: this replica follows the stream %s, not %s (it has not synchronised with that primary since); nothing was changed", f["master_replid"], args.ReplID)
		}
		if off := intField(f, "slave_repl_offset"); off != nil && *off >= want {
			break
		}
		if time.Now().After(deadline) {
			st, _ := m.ReplicationStatus(ctx)
			reason := st.LastError
			if reason == "" {
				reason = "link up"
			}
			return st, wire.Errorf(wire.CodeFailedPrecondition,
				"promote: the replica did not reach the primary's offset %d within %d s (it processed %s; %s); nothing was changed",
				want, args.TimeoutSeconds, f["slave_repl_offset"], reason)
		}
		select {
		case <-ctx.Done():
			return wire.ReplicationStatus{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	st, err := m.DetachReplica(ctx)
	if err != nil {
		return st, err
	}
	m.log.Info("replica promoted: writable", "repl_offset", want, "now", fmtOffset(st.ReplOffset))
	return st, nil
}

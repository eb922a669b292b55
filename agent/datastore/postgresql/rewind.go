package postgresql

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// A former primary rejoining after a failover (rejoin_replication with
// fork_lsn). The replica promoted in its place had received this server's
// WAL up to the fork; what this server wrote after it (it crashed with
// WAL its replicas never received, or it was started again and ran on)
// is not in the new primary's history, so the server cannot follow it
// as it is. pg_rewind makes its data directory the source's as of the
// fork plus the source's changes since, reading the changed files over
// an SQL session of the replication account (rewindFunctions), and the
// server then starts as a standby and replays the source's WAL.
//
// Rewinding drops whatever this server wrote after the fork. Most of it
// is harmless (checkpoints, hint bits, the end of crash recovery, the
// fence's own empty transaction), but a committed transaction is data a
// client was told was kept: the rejoin counts the commits in the
// server's own WAL from the fork on (pg_waldump) and refuses when there
// is one, before anything changes.

// rewindMarker exists while pg_rewind may be changing the data directory.
// pg_rewind is not atomic: a failure part-way leaves a directory that is
// neither this server's nor the source's, which its documentation says
// cannot be trusted; the marker makes a later rejoin refuse it.
func rewindMarker(cfg Config) string {
	return filepath.Join(filepath.Dir(cfg.OverridesFile), "strata-rewind-in-progress")
}

// parseLSN reads a WAL position as PostgreSQL prints it (16/B374D848).
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("WAL position %q: no slash", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("WAL position %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("WAL position %q: %w", s, err)
	}
	return h<<32 | l, nil
}

// pastCommits are the transactions this server committed from the fork
// on, as its own WAL records them.
type pastCommits struct {
	Count int
	// First is the first one's commit record position; FirstRels the
	// relations (relfilenodes) its records wrote to.
	First     string
	FirstRels string
	// Statistics counts the commits left out because they wrote only
	// the planner's statistics (an ANALYZE: autovacuum's, for one),
	// which the next ANALYZE computes again.
	Statistics int
	// End is the last position pg_waldump read: where the WAL ends.
	End string
}

// endOfWAL are pg_waldump's errors at the end of the valid WAL (an empty
// or partly written record, the next segment not yet there): where a
// read of a server's own WAL ends, not a failure.
var endOfWAL = []string{"invalid record length", "could not find a valid record after", "could not find file",
	"invalid magic number", "invalid resource manager ID", "record with incorrect prev-link", "contrecord is requested",
	"invalid record offset", "unexpected pageaddr", "incorrect resource manager data checksum"}

// commitsSince reads this server's WAL from fork on its current timeline
// with pg_waldump and counts the transactions committed there (COMMIT and
// COMMIT_PREPARED records), leaving out the fence's own transactions
// (flushPastCommits: they wrote nothing). The segment holding fork must
// still be in pg_wal: without it nothing can be said, and the rejoin is
// refused.
func (m *Manager) commitsSince(ctx context.Context, osUser datastore.OSUser, cd map[string]string, fork string) (pastCommits, error) {
	var res pastCommits
	pos, err := parseLSN(fork)
	if err != nil {
		return res, invalid("rejoin: fork_lsn: %v", err)
	}
	tli, err := strconv.ParseUint(cd["Latest checkpoint's TimeLineID"], 10, 32)
	if err != nil {
		return res, fmt.Errorf("rejoin: pg_controldata's timeline %q: %v", cd["Latest checkpoint's TimeLineID"], err)
	}
	segSize, err := strconv.ParseUint(cd["Bytes per WAL segment"], 10, 64)
	if err != nil || segSize == 0 || segSize > 1<<32 {
		return res, fmt.Errorf("rejoin: pg_controldata's WAL segment size %q", cd["Bytes per WAL segment"])
	}
	perID := (uint64(1) << 32) / segSize
	seg := pos / segSize
	name := fmt.Sprintf("%08X%08X%08X", tli, seg/perID, seg%perID)
	walDir := filepath.Join(m.cfg.DataDir, "pg_wal")
	if _, err := os.Stat(filepath.Join(walDir, name)); err != nil {
		return res, wire.Errorf(wire.CodeFailedPrecondition,
			"rejoin: this server's WAL at the fork %s (segment %s on its timeline %d) is not in %s (%v): whether it committed transactions past the fork cannot be told, so it is not rewound; nothing was changed; delete it and create a replica of the new primary",
			fork, name, tli, walDir, errors.Unwrap(err))
	}
	cmd := exec.CommandContext(ctx, m.tool("pg_waldump"), "--path="+walDir, "--timeline="+strconv.FormatUint(tli, 10), "--start="+fork)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "LANG=C"}
	cmd.SysProcAttr = sysProcAttr(osUser)
	runErr := cmd.Run()
	if runErr != nil {
		msg := stderr.String()
		end := false
		for _, e := range endOfWAL {
			end = end || strings.Contains(msg, e)
		}
		if !end || ctx.Err() != nil {
			return res, fmt.Errorf("rejoin: pg_waldump from %s: %v: %s", fork, runErr, datastore.LastLines(msg, 5))
		}
		res.End = msg
	}
	past := classifyPastCommits(stdout.String(), m.fenceXIDs())
	past.End = res.End
	return past, nil
}

// statisticsRels are the relfilenodes of pg_statistic, its TOAST table
// and their indexes (their OIDs: PostgreSQL gives a catalog its OID as
// its first relfilenode; one rewritten since, by VACUUM FULL, no longer
// matches, and its commits count).
var statisticsRels = map[string]bool{"2619": true, "2840": true, "2841": true, "2696": true}

// classifyPastCommits reads pg_waldump's output from the fork on and
// counts the commits in it: not the fence's own (fence: their xids,
// which wrote nothing), and not those whose every record wrote only the
// planner's statistics (in-place updates, pg_class's counts, are no
// transaction's data). The relations a transaction wrote to are the
// blkref lines of its records.
func classifyPastCommits(out string, fence map[uint32]bool) pastCommits {
	var res pastCommits
	rels := map[string]map[string]bool{} // xid → relfilenodes written
	other := map[string]bool{}           // xid → wrote a record with no relation
	for _, line := range strings.Split(out, "\n") {
		xid := waldumpField(line, "tx:")
		_, desc, ok := strings.Cut(line, "desc: ")
		if !ok || xid == "" || xid == "0" {
			continue
		}
		rmgr := waldumpField(line, "rmgr:")
		if rmgr == "Heap" && strings.HasPrefix(desc, "INPLACE ") {
			// An in-place update (pg_class's page and row counts, which
			// ANALYZE and VACUUM keep): not undone by an abort, not data.
			continue
		}
		if rmgr != "Transaction" {
			refs := 0
			for _, ref := range strings.Split(desc, "blkref #")[1:] {
				if r := waldumpField(ref, "rel "); r != "" {
					if rels[xid] == nil {
						rels[xid] = map[string]bool{}
					}
					rels[xid][r[strings.LastIndex(r, "/")+1:]] = true
					refs++
				}
			}
			if refs == 0 {
				other[xid] = true
			}
			continue
		}
		if !(strings.HasPrefix(desc, "COMMIT ") || strings.HasPrefix(desc, "COMMIT_PREPARED ")) {
			continue
		}
		if x, err := strconv.ParseUint(xid, 10, 32); err == nil && fence[uint32(x)] && strings.HasPrefix(desc, "COMMIT ") {
			continue
		}
		stats := len(rels[xid]) > 0 && !other[xid] && strings.HasPrefix(desc, "COMMIT ")
		for r := range rels[xid] {
			stats = stats && statisticsRels[r]
		}
		if stats {
			res.Statistics++
			continue
		}
		if res.Count == 0 {
			lsn := waldumpField(line, "lsn:")
			res.First = lsn
			if v, err := parseLSN(lsn); err == nil {
				res.First = fmt.Sprintf("%X/%X", v>>32, uint32(v))
			}
			res.FirstRels = strings.Join(slices.Sorted(maps.Keys(rels[xid])), ",")
		}
		res.Count++
	}
	return res
}

// waldumpField is the value after name in a pg_waldump line ("tx: 735,"
// → 735).
func waldumpField(line, name string) string {
	_, rest, ok := strings.Cut(line, name)
	if !ok {
		return ""
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return ""
	}
	return strings.TrimSuffix(f[0], ",")
}

func refusePastCommits(c pastCommits, fork string, what string) error {
	return wire.Errorf(wire.CodeFailedPrecondition,
		"rejoin: this server committed %d transaction(s) at or after the fork %s (the first at %s, writing to relfilenodes %q) that the new primary never received: following it would drop them, so it is not rewound; %s; "+
			"recover those transactions from it by hand, or delete it and create a replica of the new primary", c.Count, fork, c.First, c.FirstRels, what)
}

// rewindAndRejoin is RejoinReplication with a fork position: the commits
// past the fork counted (any: refused, nothing changed), the server
// stopped (fast: it is fenced) if it runs, its crash recovery finished
// if it stopped without a shutdown checkpoint (pg_rewind wants a clean
// target), pg_rewind --dry-run (a source it cannot use is found before
// anything changes), pg_rewind, then the server started as a standby of
// args.Host:Port as after a clean stop.
func (m *Manager) rewindAndRejoin(ctx context.Context, args wire.StartReplicationArgs, running bool) (wire.ReplicationStatus, error) {
	start := time.Now()
	if fi, err := os.Stat(rewindMarker(m.cfg)); err == nil {
		return wire.ReplicationStatus{}, wire.Errorf(wire.CodeFailedPrecondition,
			"rejoin: a rewind of this data directory began at %s and did not finish: pg_rewind is not atomic, and the directory is now neither this server's nor a copy of the source's; delete it and create a replica of the new primary",
			fi.ModTime().UTC().Format(time.RFC3339))
	}
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return wire.ReplicationStatus{}, err
	}
	cd, err := m.controlData(ctx)
	if err != nil {
		return wire.ReplicationStatus{}, err
	}
	if cd["wal_log_hints setting"] != "on" && cd["Data page checksum version"] == "0" {
		return wire.ReplicationStatus{}, wire.Errorf(wire.CodeFailedPrecondition,
			"rejoin: this server last ran without wal_log_hints and has no data checksums, so pg_rewind cannot tell which pages changed after the fork; nothing was changed; delete it and create a replica of the new primary")
	}
	nothing := "nothing was changed (the server is stopped as it was)"
	if running {
		nothing = "nothing was changed (the server runs as it did)"
	}
	past, err := m.commitsSince(ctx, osUser, cd, args.ForkLSN)
	if err != nil {
		return wire.ReplicationStatus{}, err
	}
	if past.Count > 0 {
		st, _ := m.ReplicationStatus(ctx)
		return st, refusePastCommits(past, args.ForkLSN, nothing)
	}
	if running {
		// Fenced, so only a client that asked for a read-write
		// transaction may still be writing: the fast stop ends it, and
		// the count after it is final.
		if err := m.lc.Stop(ctx, m.cfg.Service); err != nil {
			return wire.ReplicationStatus{}, fmt.Errorf("rejoin: stop the server: %w", err)
		}
		if cd, err = m.controlData(ctx); err != nil {
			return wire.ReplicationStatus{}, err
		}
		if past, err = m.commitsSince(ctx, osUser, cd, args.ForkLSN); err != nil || past.Count > 0 {
			restarted := "it was started again"
			if rerr := m.lc.Restart(context.WithoutCancel(ctx), m.cfg.Service, m.waitReady); rerr != nil {
				restarted = "starting it again failed: " + rerr.Error()
			}
			if err != nil {
				return wire.ReplicationStatus{}, fmt.Errorf("%w (the server was stopped for the rewind; %s)", err, restarted)
			}
			return wire.ReplicationStatus{}, refusePastCommits(past, args.ForkLSN, "a transaction committed while the server was being stopped; nothing was rewound and "+restarted)
		}
	}
	// undo puts a server that ran back as it was when the rewind cannot
	// go on before it changed the data directory.
	undo := func(err error) (wire.ReplicationStatus, error) {
		if running {
			// Even when the operation's time ran out: the server ran.
			if rerr := m.lc.Restart(context.WithoutCancel(ctx), m.cfg.Service, m.waitReady); rerr != nil {
				return wire.ReplicationStatus{}, fmt.Errorf("%w; starting the server again failed: %v", err, rerr)
			}
		}
		return wire.ReplicationStatus{}, err
	}
	state := cd["Database cluster state"]
	if !cleanShutdownStates[state] {
		if err := m.recoverAlone(ctx, osUser); err != nil {
			return undo(fmt.Errorf("rejoin: the data directory's cluster state is %q: finishing its crash recovery: %w", state, err))
		}
	}
	// A freshly promoted source still names its old timeline in its
	// control file until its end-of-recovery checkpoint completes (spread
	// over checkpoint_completion_target of checkpoint_timeout), and
	// pg_rewind reads the timeline there: "on the same timeline, no
	// rewind required" would leave this server on its own history. The
	// dry run is repeated until the source's checkpoint is done.
	waitStart := time.Now()
	deadline := waitStart.Add(sourceCheckpointWait)
	for {
		out, err := m.pgRewind(ctx, osUser, args, true)
		if err != nil {
			return undo(wire.Errorf(wire.CodeFailedPrecondition,
				"rejoin: pg_rewind --dry-run from %s:%d failed (%v), so the data directory was not rewound: %s", args.Host, args.Port, err, datastore.LastLines(out, 6)))
		}
		if !strings.Contains(out, sameTimeline) {
			break
		}
		if time.Now().After(deadline) {
			return undo(wire.Errorf(wire.CodeFailedPrecondition,
				"rejoin: %s:%d is still on this server's timeline after %s (its control file has no checkpoint of a new timeline: it is not promoted yet, or not this server's promoted replica), so the data directory was not rewound",
				args.Host, args.Port, sourceCheckpointWait))
		}
		m.log.Info("rejoin: waiting for the source's first checkpoint on its new timeline", "source", fmt.Sprintf("%s:%d", args.Host, args.Port))
		select {
		case <-ctx.Done():
			return undo(ctx.Err())
		case <-time.After(time.Second):
		}
	}
	waited := time.Since(waitStart)
	if err := datastore.WriteConfigFile(rewindMarker(m.cfg), []byte("pg_rewind from "+fmt.Sprintf("%s:%d", args.Host, args.Port)+" began\n"), 0o600); err != nil {
		return undo(err)
	}
	rewindStart := time.Now()
	out, err := m.pgRewind(ctx, osUser, args, false)
	if err != nil {
		return wire.ReplicationStatus{}, wire.Errorf(wire.CodeInternal,
			"rejoin: pg_rewind from %s:%d failed (%v) after it may have changed the data directory, which is no longer usable (pg_rewind is not atomic; a rejoin will refuse it): delete this instance and create a replica of the new primary; pg_rewind said: %s",
			args.Host, args.Port, err, datastore.LastLines(out, 6))
	}
	rewound := time.Since(rewindStart)
	m.log.Debug("pg_rewind", "output", out)
	diverged := rewindLine(out, "servers diverged at WAL location")
	// Slots are the server's own (its former replicas'): a standby made
	// from a backup has none, and these would hold WAL for nobody.
	slots, _ := os.ReadDir(filepath.Join(m.cfg.DataDir, "pg_replslot"))
	for _, s := range slots {
		if err := os.RemoveAll(filepath.Join(m.cfg.DataDir, "pg_replslot", s.Name())); err != nil {
			return wire.ReplicationStatus{}, fmt.Errorf("rejoin: remove the old slot %s: %w", s.Name(), err)
		}
	}
	if err := writeStandbySignal(m.cfg.DataDir); err != nil {
		return wire.ReplicationStatus{}, err
	}
	if err := osUser.Chown(filepath.Join(m.cfg.DataDir, standbySignal)); err != nil {
		return wire.ReplicationStatus{}, err
	}
	if err := m.writeReplicationFile(replicaConfig(args)); err != nil {
		return wire.ReplicationStatus{}, err
	}
	// The directory is a standby's now: whatever happens next, a start
	// follows the source, and a re-run starts it again.
	if err := os.Remove(rewindMarker(m.cfg)); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("rejoin: %w", err)
	}
	if err := m.lc.Restart(ctx, m.cfg.Service, m.waitReady); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("rejoin: start as a standby after the rewind: %w", err)
	}
	if err := m.waitSetting(ctx, "primary_slot_name", args.Account); err != nil {
		return wire.ReplicationStatus{}, fmt.Errorf("rejoin: %w", err)
	}
	m.log.Info("former primary rewound and rejoined as a standby", "source", fmt.Sprintf("%s:%d", args.Host, args.Port), "account", args.Account,
		"fork_lsn", args.ForkLSN, "diverged", diverged, "was_running", running, "cluster_state", state,
		"dry_runs_took", waited.Round(time.Millisecond), "rewind_took", rewound.Round(time.Millisecond), "took", time.Since(start).Round(time.Millisecond))
	return m.ReplicationStatus(ctx)
}

// sameTimeline is pg_rewind's word for a source whose control file names
// the target's timeline.
const sameTimeline = "source and target cluster are on the same timeline"

// sourceCheckpointWait bounds the wait for a promoted source's first
// checkpoint (checkpoint_timeout is 5 min by default, and the
// end-of-recovery checkpoint is spread over 90% of it).
const sourceCheckpointWait = 5 * time.Minute

// rewindLine is the rest of pg_rewind's line that starts with prefix.
func rewindLine(out, prefix string) string {
	for _, line := range strings.Split(out, "\n") {
		if _, rest, ok := strings.Cut(line, prefix); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}

// pgRewind runs pg_rewind as the server's account against the source
// over an SQL session of the replication account (to the postgres
// database, TLS required), the password in its environment, never on its
// command line. --no-ensure-shutdown: the target is stopped cleanly
// already (pg_rewind's own crash recovery would look for a
// postgresql.conf in the data directory, and this server's is not
// there); no --write-recovery-conf: the agent writes the link.
func (m *Manager) pgRewind(ctx context.Context, osUser datastore.OSUser, args wire.StartReplicationArgs, dryRun bool) (string, error) {
	conninfo := fmt.Sprintf("host=%s port=%d dbname=postgres user=%s sslmode=require connect_timeout=10 application_name=%s",
		conninfoValue(args.Host), args.Port, conninfoValue(args.Account), conninfoValue(args.Account))
	argv := []string{"--target-pgdata=" + m.cfg.DataDir, "--source-server=" + conninfo, "--no-ensure-shutdown"}
	if dryRun {
		argv = append(argv, "--dry-run")
	}
	cmd := exec.CommandContext(ctx, m.tool("pg_rewind"), argv...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "LANG=C", "HOME=" + m.cfg.DataDir, "PGPASSFILE=/dev/null", "PGPASSWORD=" + args.Password}
	cmd.SysProcAttr = sysProcAttr(osUser)
	err := cmd.Run()
	return out.String(), err
}

// shmWait bounds how long recoverAlone waits for a dead server's
// backends to let go of its shared memory.
const shmWait = 30 * time.Second

// recoverAlone finishes the crash recovery of a server that stopped
// without a shutdown checkpoint: the server in single-user mode, with its
// own configuration, replays its WAL and shuts down cleanly, accepting no
// connection meanwhile.
//
// The backends of a server that died (its postmaster killed) end a
// moment after it, and until the last one has, the data directory's
// shared memory is still in use and postgres refuses to start on it: that
// refusal is waited out (up to shmWait), any other failure is returned.
func (m *Manager) recoverAlone(ctx context.Context, osUser datastore.OSUser) error {
	deadline := time.Now().Add(shmWait)
	var out bytes.Buffer
	for {
		out.Reset()
		cmd := exec.CommandContext(ctx, m.tool("postgres"), "--single", "-c", "config_file="+m.cfg.ConfigFile, "template1")
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8"}
		cmd.SysProcAttr = sysProcAttr(osUser)
		err := cmd.Run()
		if err == nil {
			break
		}
		if !strings.Contains(out.String(), "pre-existing shared memory block") || time.Now().After(deadline) {
			return fmt.Errorf("postgres --single: %v: %s", err, datastore.LastLines(out.String(), 6))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres --single: the dead server's processes still hold its shared memory: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	state, err := m.clusterState(ctx)
	if err != nil {
		return err
	}
	if !cleanShutdownStates[state] {
		return fmt.Errorf("postgres --single ended with the cluster state %q: %s", state, datastore.LastLines(out.String(), 6))
	}
	return nil
}

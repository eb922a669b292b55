package lifecycle

import (
	"strings"
	"testing"
	"time"

	"strata/agent/wire"
)

// An ejected source may rejoin only when it holds nothing past its
// group's fork; pastFork says what it holds, in its datastore's terms.
func TestPastForkNamesWhatTheGroupNeverReceived(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	// group is the stream the group forked in; prior the one it followed
	// before, continued as group at offset 700 (a switchover's promotion).
	const group, old, fresh, prior = "aaaa", "bbbb", "cccc", "dddd"
	fork := forkPoint{pos: "1000", replID: group}
	promoted := forkPoint{pos: "1000", replID: group, prevReplID: prior, prevEnd: "700"}
	for _, tc := range []struct {
		name, manager string
		st            wire.ReplicationStatus
		fork          forkPoint
		want          string // "" or a piece of the reason
	}{
		{"mariadb at the fork", managerMariaDB, wire.ReplicationStatus{GTIDBinlogPos: "0-1-100"}, forkPoint{pos: "0-1-100"}, ""},
		{"mariadb behind the fork", managerMariaDB, wire.ReplicationStatus{GTIDBinlogPos: "0-1-90,1-1-5"}, forkPoint{pos: "0-2-120,1-1-5"}, ""},
		{"mariadb past the fork", managerMariaDB, wire.ReplicationStatus{GTIDBinlogPos: "0-1-101"}, forkPoint{pos: "0-1-100"}, "past the fork at 0-1-100 in domain 0"},
		{"mariadb the fork's number from another server", managerMariaDB, wire.ReplicationStatus{GTIDBinlogPos: "0-1-100"}, forkPoint{pos: "0-7-100"}, "from server 1; the group's is from server 7"},
		{"mariadb a domain the fork lacks", managerMariaDB, wire.ReplicationStatus{GTIDBinlogPos: "0-1-10,7-1-1"}, forkPoint{pos: "0-1-100"}, "in domain 7"},
		{"redis in the group's stream", managerRedis, wire.ReplicationStatus{ReplID: group, ReplOffset: n(900)}, fork, ""},
		{"redis past the fork", managerRedis, wire.ReplicationStatus{ReplID: group, ReplOffset: n(1010)}, fork, "10 bytes of writes past the fork"},
		{"redis started again, nothing written", managerRedis, wire.ReplicationStatus{ReplID: fresh, ReplOffset: n(800), ReplID2: group, ReplID2End: n(800)}, fork, ""},
		{"redis started again, then written", managerRedis, wire.ReplicationStatus{ReplID: fresh, ReplOffset: n(850), ReplID2: group, ReplID2End: n(800)}, fork, "50 bytes of writes since it started again"},
		{"redis started again from past the fork", managerRedis, wire.ReplicationStatus{ReplID: fresh, ReplOffset: n(1200), ReplID2: group, ReplID2End: n(1200)}, fork, "200 bytes of writes past the fork"},
		{"redis another stream", managerRedis, wire.ReplicationStatus{ReplID: fresh, ReplOffset: n(10), ReplID2: old, ReplID2End: n(10)}, fork, "is not the group's"},
		{"redis started again from a snapshot from before its promotion", managerRedis, wire.ReplicationStatus{ReplID: fresh, ReplOffset: n(600), ReplID2: prior, ReplID2End: n(600)}, promoted, ""},
		{"redis started again from a snapshot at its promotion", managerRedis, wire.ReplicationStatus{ReplID: fresh, ReplOffset: n(700), ReplID2: prior, ReplID2End: n(700)}, promoted, ""},
		{"redis started again from a snapshot from before its promotion, then written", managerRedis, wire.ReplicationStatus{ReplID: fresh, ReplOffset: n(650), ReplID2: prior, ReplID2End: n(600)}, promoted, "50 bytes of writes since it started again (stream cccc)"},
		{"redis started again in the older stream past the promotion", managerRedis, wire.ReplicationStatus{ReplID: fresh, ReplOffset: n(750), ReplID2: prior, ReplID2End: n(750)}, promoted, "50 bytes of writes past the point the group continued as aaaa (offset 700 of stream dddd)"},
		{"redis in the group's older stream", managerRedis, wire.ReplicationStatus{ReplID: prior, ReplOffset: n(700)}, promoted, ""},
		{"redis in the group's older stream past the promotion", managerRedis, wire.ReplicationStatus{ReplID: prior, ReplOffset: n(720)}, promoted, "20 bytes of writes past the point the group continued as aaaa (offset 700 of stream dddd)"},
		{"redis the older stream, the fork's record without it", managerRedis, wire.ReplicationStatus{ReplID: fresh, ReplOffset: n(600), ReplID2: prior, ReplID2End: n(600)}, fork, "is not the group's, which forked at aaaa:1000"},
		{"redis another stream, the older one recorded", managerRedis, wire.ReplicationStatus{ReplID: fresh, ReplOffset: n(600), ReplID2: old, ReplID2End: n(600)}, promoted, "before that was dddd up to offset 700"},
		{"redis in the fork's stream, the older one recorded", managerRedis, wire.ReplicationStatus{ReplID: group, ReplOffset: n(990)}, promoted, ""},
		{"redis no offset", managerRedis, wire.ReplicationStatus{ReplID: group}, fork, "cannot be compared"},
	} {
		got := pastFork(tc.manager, tc.st, tc.fork)
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// A rejoin ends once the instance applied its group's history up to the
// fork, in its datastore's terms.
func TestAppliedForkComparesPositionsAsNumbers(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		manager string
		st      wire.ReplicationStatus
		fork    string
		want    bool
	}{
		{managerMariaDB, wire.ReplicationStatus{GTIDSlavePos: "0-2-100"}, "0-1-100", true},
		{managerMariaDB, wire.ReplicationStatus{GTIDSlavePos: "0-1-99"}, "0-1-100", false},
		{managerMariaDB, wire.ReplicationStatus{GTIDSlavePos: "0-1-120"}, "0-1-100,1-1-3", false},
		{managerPostgreSQL, wire.ReplicationStatus{ReplayedLSN: "10/0"}, "9/FF000000", true},
		{managerPostgreSQL, wire.ReplicationStatus{ReplayedLSN: "9/FF000000"}, "10/0", false},
		{managerRedis, wire.ReplicationStatus{ReplOffset: n(1000)}, "1000", true},
		{managerRedis, wire.ReplicationStatus{ReplOffset: n(999)}, "1000", false},
		{managerRedis, wire.ReplicationStatus{}, "1000", false},
	} {
		if _, got := appliedFork(tc.manager, tc.st, tc.fork); got != tc.want {
			t.Errorf("%s %+v against the fork %s: %v, want %v", tc.manager, tc.st, tc.fork, got, tc.want)
		}
	}
}

// A PostgreSQL replica whose WAL receiver restarted reports a received
// LSN back at the start of its segment: the election (and the fork it
// records) takes what it replayed when that is further.
func TestAReplicasReceivedLSNThatWentBackCountsAsWhatItReplayed(t *testing.T) {
	c, ok := receivedPosition(managerPostgreSQL, wire.ReplicationStatus{ReceivedLSN: "0/3000000", ReplayedLSN: "0/30001A8"})
	if !ok || c.pos != "0/30001A8" {
		t.Fatalf("position %q, %v; want the replayed 0/30001A8", c.pos, ok)
	}
	c, ok = receivedPosition(managerPostgreSQL, wire.ReplicationStatus{ReceivedLSN: "0/3000200", ReplayedLSN: "0/30001A8"})
	if !ok || c.pos != "0/3000200" {
		t.Fatalf("position %q, %v; want the received 0/3000200", c.pos, ok)
	}
}

// A wait for a link ends at its deadline, or at once when the agent says
// the link stopped on an error it does not retry (MariaDB's 1236: the
// source lacks the position); a link that is reconnecting is waited for.
func TestALinkWaitEndsAtOnceWhenTheLinkStoppedForGood(t *testing.T) {
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	m := &Manager{Now: func() time.Time { return now }}
	deadline := now.Add(linkTimeout)
	reconnecting := wire.ReplicationStatus{LastError: "I/O: error reconnecting to master"}
	if over, _ := m.linkWaitOver(reconnecting, deadline); over {
		t.Fatal("a reconnecting link's wait ended before its deadline")
	}
	stopped := wire.ReplicationStatus{LastError: "I/O: Got fatal error 1236 from master", LinkStopped: true}
	if over, how := m.linkWaitOver(stopped, deadline); !over || !strings.Contains(how, "stopped") {
		t.Fatalf("a stopped link's wait: over %v (%q), want over at once, saying it stopped", over, how)
	}
	now = deadline.Add(time.Second)
	if over, how := m.linkWaitOver(reconnecting, deadline); !over || !strings.Contains(how, linkTimeout.String()) {
		t.Fatalf("a reconnecting link past its deadline: over %v (%q), want over after %s", over, how, linkTimeout)
	}
}

// The fork a promoted PostgreSQL replica reports is trusted only when it
// is at or past the position it was promoted at.
func TestPromotedForkIsTrustedOnlyAtOrPastThePromotion(t *testing.T) {
	for _, c := range []struct {
		manager, fork, at, want string
	}{
		{managerPostgreSQL, "0/3000128", "0/3000100", "0/3000128"},
		{managerPostgreSQL, "0/3000100", "0/3000100", "0/3000100"},
		{managerPostgreSQL, "0/30000F8", "0/3000100", ""},
		{managerPostgreSQL, "", "0/3000100", ""},
		{managerPostgreSQL, "not-an-lsn", "0/3000100", ""},
		{"mariadb", "0/3000128", "0-1-5", ""},
	} {
		if got := promotedFork(c.manager, wire.ReplicationStatus{ForkLSN: c.fork}, c.at); got != c.want {
			t.Errorf("promotedFork(%s, %q, %q) = %q, want %q", c.manager, c.fork, c.at, got, c.want)
		}
	}
}

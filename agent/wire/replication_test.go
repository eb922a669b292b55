package wire

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestCheckLSN(t *testing.T) {
	for _, ok := range []string{"", "0/0", "16/B374D848", "ffffffff/FFFFFFFF", "0/1"} {
		if err := CheckLSN(ok); err != nil {
			t.Errorf("CheckLSN(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"/", "0/", "/0", "16B374D848", "1/2/3", "g/0", "0/1'; SELECT 1; --", "123456789/0", " 0/1", "0/1\n"} {
		if err := CheckLSN(bad); err == nil || !strings.Contains(err.Error(), "WAL position") {
			t.Errorf("CheckLSN(%q) = %v, want a refusal", bad, err)
		}
	}
}

func TestPromoteReplicaArgsTakeOnePosition(t *testing.T) {
	for _, c := range []struct {
		args PromoteReplicaArgs
		want string // "" ok
	}{
		{PromoteReplicaArgs{GTIDPos: "0-1-42", TimeoutSeconds: 5}, ""},
		{PromoteReplicaArgs{LSN: "0/3000060", TimeoutSeconds: 5}, ""},
		{PromoteReplicaArgs{TimeoutSeconds: 5}, "gtid_pos: required"},
		{PromoteReplicaArgs{GTIDPos: "0-1-42", LSN: "0/1", TimeoutSeconds: 5}, "give one position"},
		{PromoteReplicaArgs{ReplOffset: ptr(int64(0)), TimeoutSeconds: 5}, ""},
		{PromoteReplicaArgs{ReplOffset: ptr(int64(42)), ReplID: "0123456789abcdef0123456789abcdef01234567", TimeoutSeconds: 5}, ""},
		{PromoteReplicaArgs{ReplOffset: ptr(int64(42)), LSN: "0/1", TimeoutSeconds: 5}, "give one position"},
		{PromoteReplicaArgs{ReplOffset: ptr(int64(-1)), TimeoutSeconds: 5}, "repl_offset -1"},
		{PromoteReplicaArgs{ReplOffset: ptr(int64(1)), ReplID: "abc\r\nFLUSHALL", TimeoutSeconds: 5}, "repl_id"},
		{PromoteReplicaArgs{GTIDPos: "0-1-42", ReplID: "0123456789abcdef0123456789abcdef01234567", TimeoutSeconds: 5}, "only with repl_offset"},
		{PromoteReplicaArgs{LSN: "0/x", TimeoutSeconds: 5}, "lsn: WAL position"},
		{PromoteReplicaArgs{GTIDPos: "0-1", TimeoutSeconds: 5}, "GTID position"},
		{PromoteReplicaArgs{LSN: "0/1", TimeoutSeconds: 0}, "timeout_seconds"},
	} {
		err := c.args.Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: %v, want %q", c.args, err, c.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// The new PostgreSQL fields are optional: MariaDB's JSON is what it was.
func TestReplicationJSONKeepsTheGTIDShape(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{ReplicationSourceResult{GTIDBinlogPos: "0-1-2"}, `{"gtid_binlog_pos":"0-1-2"}`},
		{PromoteReplicaArgs{GTIDPos: "0-1-2", TimeoutSeconds: 3}, `{"gtid_pos":"0-1-2","timeout_seconds":3}`},
		{ReplicationStatus{Role: RoleReplica, GTIDSlavePos: "0-1-2"}, `{"role":"replica","io_running":false,"sql_running":false,"gtid_slave_pos":"0-1-2","read_only":false}`},
		{RestoreArgs{Chain: []RestoreBackup{}}, `{"chain":[]}`},
		{PromoteReplicaArgs{ReplOffset: ptr(int64(0)), TimeoutSeconds: 3}, `{"repl_offset":0,"timeout_seconds":3}`},
		{ReplicationSourceResult{ReplID: "ab", ReplOffset: ptr(int64(7))}, `{"repl_id":"ab","repl_offset":7}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil || string(b) != c.want {
			t.Errorf("%T: %s, %v; want %s", c.v, b, err, c.want)
		}
	}
	var a PromoteReplicaArgs
	if err := json.Unmarshal([]byte(`{"lsn":"0/3000060","timeout_seconds":3}`), &a); err != nil || a.LSN != "0/3000060" || a.Validate() != nil {
		t.Errorf("an lsn promotion: %+v, %v", a, err)
	}
}

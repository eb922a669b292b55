package transport

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"strata/agent/wire"
)

// A controller from before users_digest decodes heartbeats strictly into
// a Heartbeat without it and answers an accepted one with no payload:
// the agent sends it no digest, and starts only once a reply says the
// controller takes it (a reply naming fields this agent does not know
// included).
func TestTheUsersDigestGoesOnlyToAControllerThatTakesIt(t *testing.T) {
	hb := wire.Heartbeat{BootID: "b", Seq: 1, SentAt: time.Now(), Status: wire.StatusRunning, UsersDigest: wire.UsersDigest([]string{"user default off ~* &* +@all"})}
	var oldHeartbeat struct {
		AgentVersion    string                  `json:"agent_version"`
		BootID          string                  `json:"boot_id"`
		Seq             uint64                  `json:"seq"`
		SentAt          time.Time               `json:"sent_at"`
		Status          wire.DatastoreStatus    `json:"status"`
		StatusDetail    string                  `json:"status_detail,omitempty"`
		Volume          *wire.FilesystemStats   `json:"volume,omitempty"`
		LastCompletedOp string                  `json:"last_completed_op,omitempty"`
		Replication     *wire.ReplicationStatus `json:"replication,omitempty"`
	}
	full, _ := json.Marshal(hb)
	if err := wire.DecodeStrict(full, &oldHeartbeat); err == nil || !strings.Contains(err.Error(), "users_digest") {
		t.Fatalf("an old controller would take a heartbeat with the digest (%v): the test proves nothing", err)
	}
	takes := takesOf(nil, wire.HeartbeatReply{}) // the old controller's answer
	sent, _ := json.Marshal(takenOf(hb, takes))
	if err := wire.DecodeStrict(sent, &oldHeartbeat); err != nil {
		t.Fatalf("an old controller refuses the heartbeat: %v", err)
	}
	takes = takesOf([]byte(`{"users_digest":true,"something_newer":true}`), takes)
	sent, _ = json.Marshal(takenOf(hb, takes))
	var got wire.Heartbeat
	if err := wire.DecodeStrict(sent, &got); err != nil || got.UsersDigest != hb.UsersDigest || got.Validate() != nil {
		t.Fatalf("to a controller that takes it: %+v, %v", got, err)
	}
	// A garbled reply keeps what was known; an empty one (the session's
	// controller replaced by an old one) forgets it.
	if !takesOf([]byte(`{`), takes).UsersDigest || takesOf(nil, takes).UsersDigest {
		t.Fatal("replies misread")
	}
}

package wire

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestHelloWithoutAVersionIsProtocol1(t *testing.T) {
	var h Hello
	if err := DecodeStrict([]byte(`{"instance_id":"i","agent_version":"old","boot_id":"b"}`), &h); err != nil {
		t.Fatal(err)
	}
	if h.Protocol() != 1 {
		t.Fatalf("protocol %d, want 1", h.Protocol())
	}
	v := 0
	h.ProtocolVersion = &v
	if h.Protocol() != 0 {
		t.Fatalf("an explicit 0 reads as %d", h.Protocol())
	}
}

func TestCheckProtocolServesOneVersionBack(t *testing.T) {
	if MinProtocolVersion != ProtocolVersion-1 {
		t.Fatalf("min %d, current %d: a controller serves one version back", MinProtocolVersion, ProtocolVersion)
	}
	for v := MinProtocolVersion; v <= ProtocolVersion; v++ {
		if msg := CheckProtocol(v); msg != "" {
			t.Fatalf("protocol %d refused: %s", v, msg)
		}
	}
	for _, tc := range []struct {
		v    int
		want string
	}{
		{MinProtocolVersion - 1, "too old for this controller: rebuild the instance"},
		{ProtocolVersion + 1, "newer than this controller: upgrade the controller first"},
	} {
		msg := CheckProtocol(tc.v)
		if !IsProtocolRefusal(msg) || !strings.Contains(msg, tc.want) ||
			!strings.Contains(msg, fmt.Sprintf("agent speaks protocol %d, this controller serves protocols %d to %d", tc.v, MinProtocolVersion, ProtocolVersion)) {
			t.Fatalf("protocol %d: %q", tc.v, msg)
		}
	}
	if IsProtocolRefusal("garbled hello: json: unknown field") {
		t.Fatal("another refusal taken for a protocol refusal")
	}
}

// A protocol 1 agent decodes Welcome strictly: a Welcome for it must not
// carry the protocol field.
func TestWelcomeOmitsTheProtocolForProtocol1(t *testing.T) {
	b, _ := json.Marshal(Welcome{InstanceID: "i"})
	if strings.Contains(string(b), "protocol_version") {
		t.Fatalf("welcome %s", b)
	}
	type welcomeV1 struct {
		InstanceID string `json:"instance_id"`
		ServerTime string `json:"server_time"`
	}
	var w welcomeV1
	if err := DecodeStrict(b, &w); err != nil {
		t.Fatalf("a protocol 1 agent cannot read %s: %v", b, err)
	}
}

func TestKindProtocol(t *testing.T) {
	for _, k := range Kinds {
		if p := KindProtocol(k); p < 1 || p > ProtocolVersion {
			t.Errorf("kind %s: protocol %d outside 1..%d", k, p, ProtocolVersion)
		}
	}
	if KindProtocol("no_such_kind") != 1 {
		t.Fatal("an unknown kind is not protocol 1")
	}
}

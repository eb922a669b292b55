package api_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"strata/agent/wire"
	"strata/controller/store/storetest"
)

// An agent whose protocol the controller does not serve is refused at
// hello; the instance shows why as its fault, keeps its enrolled key and
// its status, and an agent of the right protocol (what a rebuild onto a
// right image boots) brings it up.
func TestAgentOfAnUnservedProtocolShowsAsTheInstancesFault(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	fc.protocol = wire.ProtocolVersion + 1
	r := newRig(t, rigOptions{compute: fc})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("skewed", nil))["instance"].(map[string]any)["id"].(string)

	want := fmt.Sprintf("agent fake-1 refused: protocol version refused: agent speaks protocol %d, this controller serves protocols %d to %d; the agent is newer than this controller",
		wire.ProtocolVersion+1, wire.MinProtocolVersion, wire.ProtocolVersion)
	var in map[string]any
	deadline := time.Now().Add(30 * time.Second)
	for {
		in = c.instance(id)
		if f, ok := in["fault"].(map[string]any); ok && strings.HasPrefix(f["message"].(string), want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fault starting %q; instance %v", want, in)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if in["status"] != "BUILD" {
		t.Fatalf("status %v after the refusal, want BUILD (the refusal is no failure of the build)", in["status"])
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM agent_keys WHERE instance_id = ?", id); n != 1 {
		t.Fatalf("%d agent keys after the refusal, want the enrolled one kept", n)
	}

	g := fc.guest(id)
	g.halt()
	g.mu.Lock()
	g.protocol = 0
	boot := g.lastBoot
	g.mu.Unlock()
	g.boot(t, boot)
	c.waitStatus(id, "ACTIVE", 30*time.Second)
}

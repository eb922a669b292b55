package api_test

import (
	"strings"
	"testing"
	"time"

	"strata/agent/wire"
)

// GET /instances/{id}/configuration is what the instance's agent reports
// (its rendered defaults with the attached group over them), passed
// through; an agent that cannot answer is an error with its message, never
// an empty configuration.
func TestInstanceConfigurationIsWhatTheAgentReports(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("conf", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	conf := func() map[string]any {
		return c.must(200, "GET", "/instances/"+id+"/configuration", nil)["instance"].(map[string]any)["configuration"].(map[string]any)
	}
	if got := conf(); got["max_connections"] != 151.0 || got["character_set_server"] != "utf8mb4" {
		t.Fatalf("defaults without a group = %v", got)
	}

	cfgID := c.must(200, "POST", "/configurations", map[string]any{"configuration": map[string]any{
		"name": "tuned", "values": map[string]any{"max_connections": 300},
		"datastore": map[string]any{"type": "mariadb", "version": "10.11"}}})["configuration"].(map[string]any)["id"].(string)
	c.must(202, "PUT", "/instances/"+id, map[string]any{"instance": map[string]any{"configuration": cfgID}})
	waitFor(t, "the group to be applied", 10*time.Second, func() bool { return r.compute.guest(id).applied("max_connections") == "300" })
	if got := conf(); got["max_connections"] != 300.0 || got["character_set_server"] != "utf8mb4" {
		t.Fatalf("with the group = %v", got)
	}

	// An agent that keeps failing the read: 503 with its message.
	g := r.compute.guest(id)
	g.mu.Lock()
	g.interrupt[wire.KindGetConfiguration] = true
	g.mu.Unlock()
	code, doc := c.do("GET", "/instances/"+id+"/configuration", nil)
	if code != 503 || !strings.Contains(errorMessage(doc), "get_configuration") {
		t.Fatalf("an agent that cannot answer: %d %v", code, doc)
	}
}

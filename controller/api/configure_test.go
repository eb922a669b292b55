package api_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"strata/controller/store/storetest"
)

// These tests read the guest's configuration the moment the request
// answers — no polling — as the tempest plugin does with SQL right after
// its PUT or PATCH: a change is applied before it is answered.

func groupBody(name string, values map[string]any) map[string]any {
	return map[string]any{"configuration": map[string]any{"name": name, "values": values,
		"datastore": map[string]any{"type": "mariadb", "version": "10.11"}}}
}

func patchValues(values map[string]any) map[string]any {
	return map[string]any{"configuration": map[string]any{"values": values}}
}

func attach(id string, cfg any) map[string]any {
	return map[string]any{"instance": map[string]any{"configuration": cfg}}
}

// TestConfigurationChangesAnswerOnceApplied: create with a group, attach,
// PATCH, PUT and detach each answer after the guest runs with the result;
// a restart-only value leaves the instance RESTART_REQUIRED at once.
func TestConfigurationChangesAnswerOnceApplied(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	created := c.must(200, "POST", "/configurations", groupBody("at-create", map[string]any{"max_connections": 300}))["configuration"].(map[string]any)["id"].(string)
	withGroup := c.must(200, "POST", "/instances", createBody("with-group", map[string]any{"configuration": created}))["instance"].(map[string]any)["id"].(string)
	plain := c.must(200, "POST", "/instances", createBody("plain", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(withGroup, "ACTIVE", 20*time.Second)
	if got := r.compute.guest(withGroup).applied("max_connections"); got != "300" {
		t.Fatalf("created with a group: the guest runs max_connections=%q, want 300", got)
	}
	c.waitStatus(plain, "ACTIVE", 20*time.Second)
	g := r.compute.guest(plain)

	cfg := c.must(200, "POST", "/configurations", groupBody("tuned", map[string]any{"max_connections": 555}))["configuration"].(map[string]any)["id"].(string)
	if doc := c.must(202, "PUT", "/instances/"+plain, attach(plain, cfg)); doc != nil {
		t.Fatalf("attach applied everywhere answers without a body, as Trove: %v", doc)
	}
	if got := g.applied("max_connections"); got != "555" {
		t.Fatalf("right after attach: max_connections=%q, want 555", got)
	}
	if doc := c.must(200, "PATCH", "/configurations/"+cfg, patchValues(map[string]any{"max_connections": 666})); doc != nil {
		t.Fatalf("PATCH applied everywhere answers without a body: %v", doc)
	}
	if got := g.applied("max_connections"); got != "666" {
		t.Fatalf("right after PATCH: max_connections=%q, want 666", got)
	}
	c.must(202, "PUT", "/configurations/"+cfg, map[string]any{"configuration": map[string]any{"values": map[string]any{"max_connections": 777, "long_query_time": 2.5}}})
	if got, lqt := g.applied("max_connections"), g.applied("long_query_time"); got != "777" || lqt != "2.5" {
		t.Fatalf("right after PUT: max_connections=%q long_query_time=%q, want 777 and 2.5", got, lqt)
	}
	// A restart-only value: applied (marked) before the answer.
	c.must(200, "PATCH", "/configurations/"+cfg, patchValues(map[string]any{"performance_schema": true}))
	if st := c.instance(plain)["status"]; st != "RESTART_REQUIRED" {
		t.Fatalf("right after a restart-only value: status %v, want RESTART_REQUIRED", st)
	}
	c.must(202, "PUT", "/instances/"+plain, attach(plain, nil))
	if got := g.applied("max_connections"); got != "" {
		t.Fatalf("right after detach: max_connections=%q, want the server's default (no override)", got)
	}
	// The other instance was not touched by any of it.
	if got := r.compute.guest(withGroup).applied("max_connections"); got != "300" {
		t.Fatalf("an instance with another group: max_connections=%q", got)
	}
}

// TestAnInstanceThatDoesNotApplyInTimeIsNamed: the wait is bounded; the
// answer names the instance still applying; the durable task finishes it
// afterwards. A guest that refuses is named with its reason, gets a fault
// and stays ACTIVE.
func TestAnInstanceThatDoesNotApplyInTimeIsNamed(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{configureWait: time.Second})
	c := r.admin()
	cfg := c.must(200, "POST", "/configurations", groupBody("slow", map[string]any{"max_connections": 100}))["configuration"].(map[string]any)["id"].(string)
	id := c.must(200, "POST", "/instances", createBody("slow-db", map[string]any{"configuration": cfg}))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	g := r.compute.guest(id)

	gate := make(chan struct{})
	g.mu.Lock()
	g.applyGate = gate
	g.mu.Unlock()
	start := time.Now()
	doc := c.must(200, "PATCH", "/configurations/"+cfg, patchValues(map[string]any{"max_connections": 200}))
	took := time.Since(start)
	ap, _ := doc["configuration_apply"].(map[string]any)
	pending, _ := ap["pending"].([]any)
	if len(pending) != 1 || pending[0].(map[string]any)["id"] != id || !strings.Contains(pending[0].(map[string]any)["reason"].(string), "stays queued") {
		t.Fatalf("answer while the guest is slow (after %s): %v", took, doc)
	}
	if took > 10*time.Second {
		t.Fatalf("the bounded wait took %s", took)
	}
	close(gate)
	waitFor(t, "the queued change to be applied", 10*time.Second, func() bool { return g.applied("max_connections") == "200" })
	waitFor(t, "the configure task to finish", 10*time.Second, func() bool {
		return storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'configure' AND state = 'queued'", id) == 0
	})
	if in := c.instance(id); in["fault"] != nil || in["status"] != "ACTIVE" {
		t.Fatalf("after the late apply: %v", in)
	}

	g.mu.Lock()
	g.applyGate, g.refuse = nil, "max_connections: the server refuses 201 today"
	g.mu.Unlock()
	doc = c.must(200, "PATCH", "/configurations/"+cfg, patchValues(map[string]any{"max_connections": 201}))
	failed, _ := doc["configuration_apply"].(map[string]any)["failed"].([]any)
	if len(failed) != 1 || !strings.Contains(failed[0].(map[string]any)["reason"].(string), "the server refuses 201 today") {
		t.Fatalf("answer when the guest refuses: %v", doc)
	}
	in := c.instance(id)
	if in["status"] != "ACTIVE" || in["fault"] == nil || g.applied("max_connections") != "200" {
		t.Fatalf("after a refused change: status %v fault %v, guest runs %s (want ACTIVE, a fault, 200 unchanged)", in["status"], in["fault"], g.applied("max_connections"))
	}
}

// TestAControllerStoppedMidApplyFinishesItWhenItRunsAgain: the change is a
// durable task; the request's controller stops while the guest applies;
// the next controller on the same state finishes it.
func TestAControllerStoppedMidApplyFinishesItWhenItRunsAgain(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	dir := t.TempDir()
	agentAddr := freeAddr(t)
	r1 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	c := r1.admin()
	cfg := c.must(200, "POST", "/configurations", groupBody("kept", map[string]any{"max_connections": 100}))["configuration"].(map[string]any)["id"].(string)
	id := c.must(200, "POST", "/instances", createBody("kept-db", map[string]any{"configuration": cfg}))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	g := fc.guest(id)
	gate := make(chan struct{})
	g.mu.Lock()
	g.applyGate = gate
	g.mu.Unlock()

	var wg sync.WaitGroup
	wg.Go(func() {
		// The answer is lost with its controller (the connection closes);
		// what matters is the state.
		req, _ := http.NewRequest("PATCH", c.base+"/v1.0/"+c.project+"/configurations/"+cfg, strings.NewReader(`{"configuration":{"values":{"max_connections":300}}}`))
		req.Header.Set("X-Auth-Token", c.token)
		req.Header.Set("Content-Type", "application/json")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	})
	waitFor(t, "the guest to start applying", 10*time.Second, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.applying == 1
	})
	r1.ctl.Stop()
	wg.Wait()

	// The guest keeps running (as VMs outlive their controller) and
	// reconnects to the next one, which sends the operation again.
	r2 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	close(gate)
	c = r2.admin()
	waitFor(t, "the change to be applied after the restart", 20*time.Second, func() bool { return g.applied("max_connections") == "300" })
	waitFor(t, "the configure task to finish", 20*time.Second, func() bool {
		return storetest.Count(t, r2.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'configure' AND state = 'done'", id) == 1
	})
	if in := c.instance(id); in["status"] != "ACTIVE" || in["fault"] != nil {
		t.Fatalf("after the restart: %v", in)
	}
	if n := storetest.Count(t, r2.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND state IN ('queued', 'failed')", id); n != 0 {
		t.Fatalf("%d configure tasks left queued or failed", n)
	}
}

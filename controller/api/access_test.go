package api_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"strata/controller/compute"
	"strata/controller/store/storetest"
)

// addressesOf returns the view's addresses by type.
func addressesOf(in map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, a := range in["addresses"].([]any) {
		a := a.(map[string]any)
		out[a["type"].(string)] = a
	}
	return out
}

// TestAccessUpdatesPublishAndUnpublishAnInstance: what trove-tempest-plugin's
// update-access test does, and more. Each PUT answers once the change is
// in force: the next GET shows it, and the server is (un)published.
func TestAccessUpdatesPublishAndUnpublishAnInstance(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("pub", map[string]any{"access": map[string]any{"is_public": true}}))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	in := c.instance(id)
	pub, ok := addressesOf(in)["public"]
	if !ok || pub["port"] != float64(3306) || pub["address"] == addressesOf(in)["private"]["address"] {
		t.Fatalf("a public instance's addresses: %v; want a public one of its own at the standard port", in["addresses"])
	}
	// ip, as Trove's: every address, the private one clients use first.
	if ip := fmt.Sprint(in["ip"]); ip != fmt.Sprintf("[%v %v]", addressesOf(in)["private"]["address"], pub["address"]) {
		t.Fatalf("a public instance's ip = %s; want its private address, then its public one", ip)
	}

	put := func(access any) {
		t.Helper()
		if code, doc := c.do("PUT", "/instances/"+id, map[string]any{"instance": map[string]any{"access": access}}); code != 202 {
			t.Fatalf("PUT access %v: HTTP %d %v", access, code, doc)
		}
	}
	put(map[string]any{"is_public": false})
	in = c.instance(id)
	if a := in["access"].(map[string]any); a["is_public"] != false || in["status"] != "ACTIVE" {
		t.Fatalf("after going private: access %v status %v", a, in["status"])
	}
	if _, ok := addressesOf(in)["public"]; ok {
		t.Fatalf("a private instance lists a public address: %v", in["addresses"])
	}
	if ip := fmt.Sprint(in["ip"]); ip != fmt.Sprintf("[%v]", addressesOf(in)["private"]["address"]) {
		t.Fatalf("a private instance's ip = %s; want its private address alone", ip)
	}
	if _, ok := r.compute.publication(id); ok {
		t.Fatal("the server is still published")
	}

	// CIDRs alone (troveclient's --allowed-cidr): the instance stays private.
	put(map[string]any{"allowed_cidrs": []any{"10.0.0.0/8", "192.0.2.1"}})
	if a := c.instance(id)["access"].(map[string]any); a["is_public"] != false || fmt.Sprint(a["allowed_cidrs"]) != "[10.0.0.0/8 192.0.2.1/32]" {
		t.Fatalf("after a CIDR change: %v", a)
	}
	// Public again keeps the CIDRs; PATCH does the same as PUT.
	if code, doc := c.do("PATCH", "/instances/"+id, map[string]any{"instance": map[string]any{"access": map[string]any{"is_public": true}}}); code != 202 {
		t.Fatalf("PATCH access: HTTP %d %v", code, doc)
	}
	in = c.instance(id)
	if a := in["access"].(map[string]any); a["is_public"] != true || fmt.Sprint(a["allowed_cidrs"]) != "[10.0.0.0/8 192.0.2.1/32]" {
		t.Fatalf("after going public: %v", a)
	}
	if _, ok := addressesOf(in)["public"]; !ok {
		t.Fatalf("a public instance lists no public address: %v", in["addresses"])
	}
	if a, ok := r.compute.publication(id); !ok || fmt.Sprint(a.AllowedCIDRs) != "[10.0.0.0/8 192.0.2.1/32]" {
		t.Fatalf("published as %+v, %v", a, ok)
	}
	// Everyone again: an empty list.
	put(map[string]any{"is_public": true, "allowed_cidrs": []any{}})
	if a, ok := r.compute.publication(id); !ok || len(a.AllowedCIDRs) != 0 {
		t.Fatalf("published as %+v, %v; want no CIDRs", a, ok)
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'access' AND state = 'done'", id); n != 4 {
		t.Fatalf("%d access tasks done, want 4", n)
	}
	// Deleting a public instance removes its publication with the server.
	c.must(202, "DELETE", "/instances/"+id, nil)
	waitFor(t, "the instance to go", 20*time.Second, func() bool { code, _ := c.do("GET", "/instances/"+id, nil); return code == 404 })
	if _, ok := r.compute.publication(id); ok {
		t.Fatal("a deleted instance is still published")
	}
}

// TestAllowedCIDRsAtCreateReachTheDriver: a private instance created with
// allowed_cidrs has them applied by the driver (the Nova driver's
// security group rules) before it is ACTIVE, not only stored and shown.
func TestAllowedCIDRsAtCreateReachTheDriver(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("cidrs", map[string]any{"access": map[string]any{"allowed_cidrs": []any{"10.0.0.0/8"}}}))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	calls := r.compute.callsSnapshot()
	pub, created := slices.Index(calls, "Publish "+id+" false [10.0.0.0/8]"), slices.Index(calls, "CreateServer "+id)
	if pub < 0 || pub < created {
		t.Fatalf("calls %v: want the CIDRs published after the server was created", calls)
	}
	// Without access nothing is published.
	plain := c.must(200, "POST", "/instances", createBody("plain", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(plain, "ACTIVE", 20*time.Second)
	for _, call := range r.compute.callsSnapshot() {
		if strings.HasPrefix(call, "Publish "+plain) {
			t.Fatalf("an instance created without access was published: %s", call)
		}
	}
}

// TestPublicIsRefusedWhereTheDriverCannotPublish: without public
// addresses, public at create and at update is a 400 naming what to
// configure, and nothing is made or changed.
func TestPublicIsRefusedWhereTheDriverCannotPublish(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	fc.noPublic = true
	r := newRig(t, rigOptions{compute: fc})
	c := r.admin()
	code, doc := c.do("POST", "/instances", createBody("pub", map[string]any{"access": map[string]any{"is_public": true}}))
	if code != 400 || !strings.Contains(errorMessage(doc), "--public-addresses") {
		t.Fatalf("public create without public addresses: HTTP %d %v", code, doc)
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM instances"); n != 0 {
		t.Fatalf("%d instances made by a refused create", n)
	}
	id := c.must(200, "POST", "/instances", createBody("priv", map[string]any{"access": map[string]any{"is_public": false, "allowed_cidrs": []any{"10.0.0.0/8"}}}))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	code, doc = c.do("PUT", "/instances/"+id, map[string]any{"instance": map[string]any{"access": map[string]any{"is_public": true}}})
	if code != 400 || !strings.Contains(errorMessage(doc), "--public-addresses") {
		t.Fatalf("public update without public addresses: HTTP %d %v", code, doc)
	}
	if a := c.instance(id)["access"].(map[string]any); a["is_public"] != false {
		t.Fatalf("access after a refused update: %v", a)
	}
	// A driver without the capability at all (Nova today).
	r2 := newRig(t, rigOptions{driver: func(fc *fakeCompute) compute.Driver { return plainDriver{fc} }})
	c2 := r2.admin()
	code, doc = c2.do("POST", "/instances", createBody("pub", map[string]any{"access": map[string]any{"is_public": true}}))
	if code != 400 || !strings.Contains(errorMessage(doc), "cannot publish") {
		t.Fatalf("public create on a driver that cannot publish: HTTP %d %v", code, doc)
	}
}

// TestAControllerStoppedMidAccessChangeFinishesIt: the change is a durable
// task; the controller stops while the driver publishes; the next one on
// the same state finishes it, and access shows the change only then.
func TestAControllerStoppedMidAccessChangeFinishesIt(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	dir := t.TempDir()
	agentAddr := freeAddr(t)
	r1 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	c := r1.admin()
	id := c.must(200, "POST", "/instances", createBody("kept", map[string]any{"access": map[string]any{"is_public": true}}))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	gate := make(chan struct{})
	fc.pubMu.Lock()
	fc.pubGate = gate
	fc.pubMu.Unlock()

	var wg sync.WaitGroup
	wg.Go(func() {
		req, _ := http.NewRequest("PUT", c.base+"/v1.0/"+c.project+"/instances/"+id, strings.NewReader(`{"instance":{"access":{"is_public":false}}}`))
		req.Header.Set("X-Auth-Token", c.token)
		req.Header.Set("Content-Type", "application/json")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	})
	waitFor(t, "the driver to start publishing", 10*time.Second, func() bool {
		fc.pubMu.Lock()
		defer fc.pubMu.Unlock()
		return fc.publishing > 0
	})
	if a := c.instance(id)["access"].(map[string]any); a["is_public"] != true {
		t.Fatalf("access shows %v before the change is in force", a)
	}
	r1.ctl.Stop()
	wg.Wait()

	r2 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr})
	close(gate)
	c = r2.admin()
	waitFor(t, "the access task to finish", 20*time.Second, func() bool {
		return storetest.Count(t, r2.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'access' AND state = 'done'", id) == 1
	})
	in := c.instance(id)
	if a := in["access"].(map[string]any); a["is_public"] != false || in["status"] != "ACTIVE" {
		t.Fatalf("after the restart: access %v status %v", a, in["status"])
	}
	if _, ok := addressesOf(in)["public"]; ok {
		t.Fatalf("addresses after the restart: %v", in["addresses"])
	}
	if _, ok := fc.publication(id); ok {
		t.Fatal("still published after the restart")
	}
	if n := storetest.Count(t, r2.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND state IN ('queued', 'failed')", id); n != 0 {
		t.Fatalf("%d tasks left queued or failed", n)
	}
}

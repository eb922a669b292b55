package api_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"strata/controller/compute"
	"strata/controller/store/storetest"
	"strata/controller/tasks"
)

// silence ages a halted guest's last heartbeat by ten minutes, again if
// a heartbeat still in flight lands after.
func silence(t *testing.T, r *rig, id string) {
	t.Helper()
	// A heartbeat read before the halt may still be stored after it (its
	// session handles it late under load, as a CI run saw): the age is
	// set once the session is over.
	waitFor(t, "the halted guest's session to end", 60*time.Second, func() bool { return !r.ctl.Endpoint.Server.Connected(id) })
	waitFor(t, "the halted guest's heartbeat to be old", 20*time.Second, func() bool {
		if _, err := r.ctl.DB.Exec(context.Background(), "UPDATE instance_reports SET received_at = received_at - 600000 WHERE instance_id = ?", id); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		old := time.Now().Add(-5 * time.Minute).UnixMilli()
		return storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM instance_reports WHERE instance_id = ? AND received_at < ?", id, old) == 1
	})
}

// failoverGroup is a MariaDB source with two replicas (fake compute and
// guests, guest calls bounded at 2 s unless o says otherwise) that
// received aPos and bPos, for failovers.
func failoverGroup(t *testing.T, o rigOptions, aPos, bPos string) (fc *fakeCompute, r *rig, c *client, src, a, b string) {
	t.Helper()
	return failoverGroupOn(t, newFakeCompute(t), o, aPos, bPos)
}

// failoverGroupOn is failoverGroup on the fake compute fc.
func failoverGroupOn(t *testing.T, fc *fakeCompute, o rigOptions, aPos, bPos string) (_ *fakeCompute, r *rig, c *client, src, a, b string) {
	t.Helper()
	o.compute = fc
	if o.guestCallTimeout == 0 {
		o.guestCallTimeout = 2 * time.Second
	}
	r = newRig(t, o)
	c = r.admin()
	src = newActive(c, "primary")
	ids := replicaIDs(t, c, src, 2)
	a, b = ids[0], ids[1]
	fc.guest(a).setIOPos(aPos)
	fc.guest(b).setIOPos(bPos)
	return fc, r, c, src, a, b
}

// wantFenced checks that an ejected source's server was fenced by the
// compute driver and cannot be started.
func wantFenced(t *testing.T, fc *fakeCompute, src string) {
	t.Helper()
	if !slices.Contains(fc.callsSnapshot(), "FenceServer "+src) {
		t.Fatalf("the ejected source's server was not fenced: %v", fc.callsSnapshot())
	}
	if err := fc.StartServer(context.Background(), fc.server(src)); !errors.Is(err, compute.ErrFenced) {
		t.Fatalf("starting the fenced source: %v", err)
	}
}

func eject(c *client, id string) (int, map[string]any) {
	return c.do("POST", "/instances/"+id+"/action", map[string]any{"eject_replica_source": map[string]any{}})
}

// Failover (eject-replica-source): refused while the source's heartbeat
// is current and on an instance that is not a source; once the source is
// silent, the replica that received the most is promoted (after applying
// all it received), the other follows it from its own position with a new
// account, the old source leaves the group with a fault saying so, and
// its fence waits queued until it comes back — then it is read-only.
func TestEjectElectsTheMostCurrentReplica(t *testing.T) {
	t.Parallel()
	fc, r, c, src, a, b := failoverGroup(t, rigOptions{}, "0-1-60", "0-1-70")

	if code, doc := eject(c, src); code != 400 || !strings.Contains(errorMessage(doc), "current heartbeat") {
		t.Fatalf("eject of a live source: HTTP %d %v", code, doc)
	}
	if code, doc := eject(c, a); code != 400 || !strings.Contains(errorMessage(doc), "is not a replica source") {
		t.Fatalf("eject of a replica: HTTP %d %v", code, doc)
	}
	if code, doc := eject(r.otherProjectClient(), src); code != 404 {
		t.Fatalf("eject of another project's source: HTTP %d %v", code, doc)
	}
	if code, doc := c.do("POST", "/instances/"+src+"/action", map[string]any{"eject_replica_source": map[string]any{"x": 1}}); code != 400 || !strings.Contains(errorMessage(doc), "takes no arguments") {
		t.Fatalf("eject with arguments: HTTP %d %v", code, doc)
	}

	// The source goes silent; its last heartbeat ages past the limit.
	fc.guest(src).halt()
	silence(t, r, src)
	if code, doc := eject(c, src); code != 202 {
		t.Fatalf("eject: HTTP %d %v", code, doc)
	}
	waitFor(t, "the failover", 60*time.Second, func() bool {
		in := c.instance(b)
		of, _ := c.instance(a)["replica_of"].(map[string]any)
		return in["status"] == "ACTIVE" && in["replica_of"] == nil && of != nil && of["id"] == b && c.instance(a)["status"] == "ACTIVE"
	})
	bv := c.instance(b)
	if l := asList(bv["replicas"]); len(l) != 1 || l[0].(map[string]any)["id"] != a {
		t.Fatalf("the elected source lists %v", bv["replicas"])
	}
	sv := c.instance(src)
	f, _ := sv["fault"].(map[string]any)
	if sv["replicas"] != nil || sv["replica_of"] != nil || f == nil || !strings.Contains(f["message"].(string), "ejected from its replication group: "+b) {
		t.Fatalf("the ejected source: replicas %v, replica_of %v, fault %v", sv["replicas"], sv["replica_of"], sv["fault"])
	}
	g := fc.guest(b)
	g.mu.Lock()
	promotedAt, link := g.repl.promotedAt, g.repl.link
	g.mu.Unlock()
	if promotedAt != "0-1-70" || link != nil {
		t.Fatalf("the elected replica promoted at %q (want its received 0-1-70), link %+v", promotedAt, link)
	}
	accounts, _, _ := g.replication()
	_, la, _ := fc.guest(a).replication()
	if la == nil || la.Host != bv["ip"].([]any)[0] || la.GTIDSlavePos != "0-1-42" || accounts[la.Account] != la.Password || len(la.Password) < 32 {
		t.Fatalf("the other replica follows %+v; the new source holds %v", la, keys(accounts))
	}
	// The old source is fenced by the compute driver: off, and kept off.
	// Its agent's fence waits queued besides.
	calls := fc.callsSnapshot()
	if i := slices.Index(calls, "FenceServer "+src); i < 0 {
		t.Fatalf("the ejected source's server was not fenced: %v", calls)
	}
	if !strings.Contains(f["message"].(string), "its server is fenced") {
		t.Fatalf("the ejected source's fault does not say it is fenced: %v", f["message"])
	}
	if err := fc.StartServer(context.Background(), fc.server(src)); !errors.Is(err, compute.ErrFenced) {
		t.Fatalf("starting the fenced source: %v", err)
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM agent_ops WHERE instance_id = ? AND kind = 'set_read_only' AND done_at IS NULL", src); n != 1 {
		t.Fatalf("%d fences queued for the ejected source, want 1", n)
	}
}

// A source whose VM died is being started again by the recovery (status
// REBOOT) and its agent never comes back: an operator's eject is
// accepted, as the automatic failover's is — the recovery is cancelled
// and the failover fences the server it was restarting, which stays off.
func TestEjectCancelsARecoveryRestartingTheSource(t *testing.T) {
	t.Parallel()
	fc, r, c, src, a, b := failoverGroup(t, rigOptions{}, "0-1-70", "0-1-60")

	fc.mu.Lock()
	fc.silentIDs[src] = true // started again, it boots no agent
	fc.mu.Unlock()
	fc.powerOffOne(src)
	c.waitStatus(src, "REBOOT", 10*time.Second)
	silence(t, r, src)
	if c.instance(src)["status"] != "REBOOT" {
		t.Fatalf("the source is %v before the eject, want REBOOT (its recovery running)", c.instance(src)["status"])
	}
	if code, doc := eject(c, src); code != 202 {
		t.Fatalf("eject of a source its recovery is restarting: HTTP %d %v", code, doc)
	}
	waitFor(t, "the failover", 60*time.Second, func() bool {
		in := c.instance(a)
		of, _ := c.instance(b)["replica_of"].(map[string]any)
		return in["status"] == "ACTIVE" && in["replica_of"] == nil && of != nil && of["id"] == a && c.instance(b)["status"] == "ACTIVE"
	})
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE instance_id = ? AND kind = 'recover' AND state = ?", src, tasks.StateCancelled); n != 1 {
		t.Fatalf("%d cancelled recover tasks on the ejected source, want 1", n)
	}
	sv := c.instance(src)
	if f, _ := sv["fault"].(map[string]any); f == nil || !strings.Contains(f["message"].(string), "ejected from its replication group: "+a) {
		t.Fatalf("the ejected source: status %v, fault %v", sv["status"], sv["fault"])
	}
	wantFenced(t, fc, src)
}

// A controller restart while the elected replica's promotion is in
// flight: the election stored before the restart stands (the other
// replica is never promoted), and the failover finishes.
func TestEjectAcrossAControllerRestart(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	dir, agentAddr := t.TempDir(), freeAddr(t)
	r1 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr, guestCallTimeout: 2 * time.Second})
	c := r1.admin()
	src := newActive(c, "primary")
	ids := replicaIDs(t, c, src, 2)
	a, b := ids[0], ids[1]
	fc.guest(a).setIOPos("0-1-80")
	fc.guest(b).setIOPos("0-1-70")
	ga := fc.guest(a)
	gate := make(chan struct{})
	ga.mu.Lock()
	ga.repl.promoteGate = gate
	ga.mu.Unlock()

	fc.guest(src).halt()
	silence(t, r1, src)
	if code, doc := eject(c, src); code != 202 {
		t.Fatalf("eject: HTTP %d %v", code, doc)
	}
	for _, id := range []string{src, a, b} {
		if st := c.instance(id)["status"]; st != "EJECT" && id != src {
			t.Fatalf("member %s is %v during the failover, want EJECT", id, st)
		}
	}
	waitFor(t, "the elected replica's promotion in flight", 30*time.Second, func() bool {
		ga.mu.Lock()
		defer ga.mu.Unlock()
		return ga.applying == 1
	})
	// Past the election (the old source fenced, a promoting) no member's
	// task may be reset.
	for _, id := range []string{src, a, b} {
		if code, doc := c.do("POST", "/instances/"+id+"/action", map[string]any{"reset_status": map[string]any{}}); code != 422 || !strings.Contains(errorMessage(doc), "failover of its replication group") {
			t.Fatalf("reset_status of member %s during the failover: HTTP %d %v", id, code, doc)
		}
	}
	// What each replica received changes while the controller is down:
	// a new election would pick b.
	fc.guest(b).setIOPos("0-1-90")
	r1.ctl.Stop()
	fc.powerOff()
	ga.mu.Lock()
	ga.repl.promoteGate = nil
	ga.mu.Unlock()
	close(gate)

	r2 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr, guestCallTimeout: 2 * time.Second})
	c = r2.admin()
	waitFor(t, "the failover to finish", 60*time.Second, func() bool {
		of, _ := c.instance(b)["replica_of"].(map[string]any)
		return c.instance(a)["status"] == "ACTIVE" && c.instance(a)["replica_of"] == nil && of != nil && of["id"] == a &&
			c.instance(b)["status"] == "ACTIVE"
	})
	gb := fc.guest(b)
	gb.mu.Lock()
	bPromotes, bLink := gb.repl.promotes, gb.repl.link
	gb.mu.Unlock()
	if bPromotes != 0 || bLink == nil {
		t.Fatalf("the replica not elected was promoted %d times (link %+v)", bPromotes, bLink)
	}
	ga.mu.Lock()
	at := ga.repl.promotedAt
	ga.mu.Unlock()
	if at != "0-1-80" {
		t.Fatalf("the elected replica promoted at %q, want its received 0-1-80", at)
	}
}

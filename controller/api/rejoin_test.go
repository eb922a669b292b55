package api_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"strata/controller/compute"
	"strata/controller/store/storetest"
)

func rejoin(c *client, id string) (int, map[string]any) {
	return c.do("POST", "/instances/"+id+"/action", map[string]any{"rejoin_as_replica": map[string]any{}})
}

// ejectedGroup is a MariaDB source with two replicas that received up to
// aPos and bPos, failed over (its guest halted, its heartbeat old, eject):
// it returns the rig, the old source and the replica elected (a).
func ejectedGroup(t *testing.T, aPos, bPos string) (fc *fakeCompute, r *rig, c *client, src, a, b string) {
	t.Helper()
	return ejectedGroupOn(t, newFakeCompute(t), rigOptions{}, aPos, bPos)
}

// ejectedGroupOn is ejectedGroup on the fake compute fc and a rig made
// with opts (failoverGroupOn).
func ejectedGroupOn(t *testing.T, fc *fakeCompute, opts rigOptions, aPos, bPos string) (_ *fakeCompute, r *rig, c *client, src, a, b string) {
	t.Helper()
	_, r, c, src, a, b = failoverGroupOn(t, fc, opts, aPos, bPos)
	if code, doc := rejoin(c, src); code != 400 || !strings.Contains(errorMessage(doc), "was not ejected") {
		t.Fatalf("rejoin of a source that was not ejected: HTTP %d %v", code, doc)
	}
	fc.guest(src).halt()
	silence(t, r, src)
	if code, doc := eject(c, src); code != 202 {
		t.Fatalf("eject: HTTP %d %v", code, doc)
	}
	waitFor(t, "the failover", 60*time.Second, func() bool {
		f, _ := c.instance(src)["fault"].(map[string]any)
		return c.instance(a)["status"] == "ACTIVE" && c.instance(a)["replica_of"] == nil && f != nil && c.instance(src)["status"] != "EJECT"
	})
	return fc, r, c, src, a, b
}

// A failed-over MariaDB source whose writes all reached the elected
// replica (its gtid_binlog_pos inside the position the group forked at)
// rejoins as that replica's replica on request: its server's fence is
// lifted and it starts, it is made read-only before anything else, gets
// its own account on the new source and follows it from its own
// position; the fault goes, and the group lists it.
func TestAnEjectedMariaDBSourceRejoinsAsAReplicaOfTheElectedOne(t *testing.T) {
	t.Parallel()
	// The old source's position once fenced is 0-1-101: a received it
	// all.
	fc, r, c, src, a, b := ejectedGroup(t, "0-1-101", "0-1-90")
	f, _ := c.instance(src)["fault"].(map[string]any)
	if !strings.Contains(f["message"].(string), "rejoin_as_replica") {
		t.Fatalf("the ejected source's fault does not say how to rejoin: %v", f["message"])
	}
	if code, doc := c.do("POST", "/instances/"+src+"/action", map[string]any{"rejoin_as_replica": map[string]any{"source": a}}); code != 400 || !strings.Contains(errorMessage(doc), "takes no arguments") {
		t.Fatalf("rejoin with arguments: HTTP %d %v", code, doc)
	}
	if code, doc := rejoin(r.otherProjectClient(), src); code != 404 {
		t.Fatalf("rejoin of another project's instance: HTTP %d %v", code, doc)
	}
	if code, doc := rejoin(c, b); code != 400 || !strings.Contains(errorMessage(doc), "was not ejected") {
		t.Fatalf("rejoin of a replica: HTTP %d %v", code, doc)
	}
	if code, doc := rejoin(c, src); code != 202 {
		t.Fatalf("rejoin: HTTP %d %v", code, doc)
	}
	if st := c.instance(src)["status"]; st != "REJOIN" {
		t.Fatalf("status during the rejoin: %v, want REJOIN", st)
	}
	if code, doc := c.do("POST", "/instances/"+src+"/action", map[string]any{"reset_status": map[string]any{}}); code != 422 || !strings.Contains(errorMessage(doc), "rejoin") {
		t.Fatalf("reset_status during the rejoin: HTTP %d %v", code, doc)
	}
	waitFor(t, "the rejoin", 30*time.Second, func() bool {
		in := c.instance(src)
		of, _ := in["replica_of"].(map[string]any)
		return in["status"] == "ACTIVE" && of != nil && of["id"] == a
	})
	in := c.instance(src)
	if in["fault"] != nil {
		t.Fatalf("the rejoined instance keeps its fault: %v", in["fault"])
	}
	av := c.instance(a)
	var listed []string
	for _, x := range asList(av["replicas"]) {
		listed = append(listed, x.(map[string]any)["id"].(string))
	}
	if !slices.Contains(listed, src) || !slices.Contains(listed, b) {
		t.Fatalf("the group's source lists %v, want %s and %s", listed, src, b)
	}
	calls := fc.callsSnapshot()
	unfence := slices.Index(calls, "UnfenceServer "+src)
	if unfence < 0 || !slices.Contains(calls[unfence:], "StartServer "+src) {
		t.Fatalf("the fenced server was not unfenced, then started: %v", calls)
	}
	events := fc.journal.events("fence "+src, "account "+a, "start "+src)
	if !before(events, "fence "+src, "account "+a+" "+acctOf(src)) || !before(events, "account "+a+" "+acctOf(src), "start "+src+" "+acctOf(src)+" repoint=false") {
		t.Fatalf("not fenced, then an account on %s, then the link: %v", a, events)
	}
	accounts, _, _ := fc.guest(a).replication()
	_, link, _ := fc.guest(src).replication()
	if link == nil || link.Host != av["ip"].([]any)[0] || link.GTIDSlavePos != "0-1-101" || accounts[link.Account] != link.Password || len(link.Password) < 32 {
		t.Fatalf("the rejoined source follows %+v; the new source holds %v", link, keys(accounts))
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM ejections WHERE instance_id = ?", src); n != 0 {
		t.Fatalf("the ejection is still recorded after the rejoin (%d)", n)
	}
	if code, doc := rejoin(c, src); code != 400 || !strings.Contains(errorMessage(doc), "was not ejected") {
		t.Fatalf("a second rejoin: HTTP %d %v", code, doc)
	}
}

// An ejected MariaDB source that holds a write the elected replica never
// received (its gtid_binlog_pos past the fork) is refused: it would drop
// that write by following. It is put back as it was — its server fenced
// again, no account on the new source, no link, the ejection kept — with
// the positions in its fault.
func TestAnEjectedSourceWithWritesTheGroupNeverReceivedIsRefusedAndFencedAgain(t *testing.T) {
	t.Parallel()
	fc, r, c, src, a, _ := ejectedGroup(t, "0-1-100", "0-1-90")
	if code, doc := rejoin(c, src); code != 202 {
		t.Fatalf("rejoin: HTTP %d %v", code, doc)
	}
	var msg string
	waitFor(t, "the refusal", 30*time.Second, func() bool {
		in := c.instance(src)
		f, _ := in["fault"].(map[string]any)
		if in["status"] == "REJOIN" || f == nil {
			return false
		}
		msg = f["message"].(string)
		return strings.Contains(msg, "rejoin refused")
	})
	for _, want := range []string{"never received", "0-1-101", "0-1-100", "fenced again", "still out of its replication group"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("the refusal's fault %q does not say %q", msg, want)
		}
	}
	if st, err := fc.ServerState(context.Background(), fc.server(src)); err != nil || st != compute.StateFenced {
		t.Fatalf("the refused source's server: %s, %v; want fenced", st, err)
	}
	if in := c.instance(src); in["replica_of"] != nil {
		t.Fatalf("the refused source shows replica_of %v", in["replica_of"])
	}
	if accounts, _, _ := fc.guest(a).replication(); accounts[acctOf(src)] != "" {
		t.Fatalf("the refused source got an account on %s", a)
	}
	if _, link, _ := fc.guest(src).replication(); link != nil {
		t.Fatalf("the refused source follows %+v", link)
	}
	if n := storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM ejections WHERE instance_id = ?", src); n != 1 {
		t.Fatalf("the ejection was not kept after the refusal (%d)", n)
	}
}

// A controller restart while the ejected source boots (its fence lifted,
// its server started, its agent not back yet): the rejoin task goes on
// from where it stood once the guest reports to the new controller, and
// the source follows the elected replica.
func TestARejoinFinishesAcrossAControllerRestart(t *testing.T) {
	t.Parallel()
	fc := newFakeCompute(t)
	dir, agentAddr := t.TempDir(), freeAddr(t)
	_, r1, c, src, a, _ := ejectedGroupOn(t, fc, rigOptions{stateDir: dir, agentListen: agentAddr}, "0-1-101", "0-1-90")
	// The source's server starts, but its guest stays silent: the
	// controller stops while the rejoin waits for it.
	fc.mu.Lock()
	fc.silentIDs[src] = true
	fc.mu.Unlock()
	if code, doc := rejoin(c, src); code != 202 {
		t.Fatalf("rejoin: HTTP %d %v", code, doc)
	}
	waitFor(t, "the fence lifted and the server started", 30*time.Second, func() bool {
		calls := fc.callsSnapshot()
		i := slices.Index(calls, "UnfenceServer "+src)
		return i >= 0 && slices.Contains(calls[i:], "StartServer "+src)
	})
	r1.ctl.Stop()
	// The guest finishes booting while no controller runs, and reports
	// to the new one.
	fc.powerOffOne(src)
	fc.mu.Lock()
	fc.silentIDs[src] = false
	fc.mu.Unlock()
	if err := fc.StartServer(context.Background(), fc.server(src)); err != nil {
		t.Fatal(err)
	}
	r2 := newRig(t, rigOptions{compute: fc, stateDir: dir, agentListen: agentAddr, guestCallTimeout: 2 * time.Second})
	c = r2.admin()
	waitFor(t, "the rejoin to finish", 60*time.Second, func() bool {
		in := c.instance(src)
		of, _ := in["replica_of"].(map[string]any)
		return in["status"] == "ACTIVE" && of != nil && of["id"] == a && in["fault"] == nil
	})
	accounts, _, _ := fc.guest(a).replication()
	_, link, _ := fc.guest(src).replication()
	if link == nil || link.GTIDSlavePos != "0-1-101" || accounts[link.Account] != link.Password {
		t.Fatalf("the rejoined source follows %+v; the new source holds %v", link, keys(accounts))
	}
}

package api_test

import (
	"strings"
	"testing"
	"time"
)

// TestAutomaticFailoverEjectsASilentSourceAfterItsGrace: strata's own
// automatic failover, set on a source with PATCH {"auto_failover":
// {"grace_seconds": N}} (bad values and replicas refused). The source's
// agent goes silent and nobody calls eject: once its last heartbeat is
// older than the grace period — not before — the controller fails the
// group over to the most current replica, fences the old source's server,
// and the setting moves to the new source.
func TestAutomaticFailoverEjectsASilentSourceAfterItsGrace(t *testing.T) {
	t.Parallel()
	fc, r, c, src, a, b := failoverGroup(t, rigOptions{heartbeatSeconds: 1}, "0-1-60", "0-1-70")
	set := func(c *client, id string, v any) (int, map[string]any) {
		return c.do("PATCH", "/instances/"+id, map[string]any{"instance": map[string]any{"auto_failover": v}})
	}
	for _, tc := range []struct {
		id     string
		v      any
		status int
		text   string
	}{
		{src, map[string]any{"grace_seconds": 3}, 400, "out of range: 0 (off) or 7 to 3600"},
		{src, map[string]any{"grace_seconds": 9223372037}, 400, "out of range"},
		{src, map[string]any{"grace_seconds": -1}, 400, "out of range"},
		{src, map[string]any{"grace": 10}, 400, "expected {\"grace_seconds\""},
		{src, map[string]any{"grace_seconds": "10"}, 400, "expected {\"grace_seconds\""},
		{src, 10, 400, "expected {\"grace_seconds\""},
		{a, map[string]any{"grace_seconds": 10}, 400, "is a replica: automatic failover is set on its source " + src},
	} {
		if st, doc := set(c, tc.id, tc.v); st != tc.status || !strings.Contains(errorMessage(doc), tc.text) {
			t.Errorf("auto_failover %v on %s = %d %v, want %d with %q", tc.v, tc.id, st, doc, tc.status, tc.text)
		}
	}
	if st, _ := set(r.otherProjectClient(), src, map[string]any{"grace_seconds": 10}); st != 404 {
		t.Errorf("auto_failover on another project's instance = %d, want 404", st)
	}
	const grace = 8
	if st, doc := set(c, src, map[string]any{"grace_seconds": grace}); st != 202 {
		t.Fatalf("auto_failover = %d %v", st, doc)
	}
	if af, _ := c.instance(src)["auto_failover"].(map[string]any); af == nil || af["grace_seconds"] != float64(grace) {
		t.Fatalf("the source shows auto_failover %v", c.instance(src)["auto_failover"])
	}

	// The source's agent goes silent; nobody ejects it.
	fc.guest(src).halt()
	silentSince := time.Now()
	waitFor(t, "the automatic failover", 60*time.Second, func() bool {
		in := c.instance(b)
		of, _ := c.instance(a)["replica_of"].(map[string]any)
		return in["status"] == "ACTIVE" && in["replica_of"] == nil && of != nil && of["id"] == b && c.instance(a)["status"] == "ACTIVE"
	})
	took := time.Since(silentSince)
	if took < grace*time.Second {
		t.Fatalf("the group failed over %.1fs after its source went silent, within the grace period of %ds", took.Seconds(), grace)
	}
	t.Logf("FIGURE automatic failover (fake guests): the new source ACTIVE %.1fs after the old one went silent (grace %ds)", took.Seconds(), grace)
	sv := c.instance(src)
	f, _ := sv["fault"].(map[string]any)
	if f == nil || !strings.Contains(f["message"].(string), "failed over automatically: ejected from its replication group: "+b) || sv["replicas"] != nil {
		t.Fatalf("the old source: fault %v, replicas %v", sv["fault"], sv["replicas"])
	}
	wantFenced(t, fc, src)
	if af, _ := c.instance(b)["auto_failover"].(map[string]any); af == nil || af["grace_seconds"] != float64(grace) || sv["auto_failover"] != nil {
		t.Fatalf("auto_failover after the failover: new source %v, old %v; want it moved to the new source", c.instance(b)["auto_failover"], sv["auto_failover"])
	}
	// Off again.
	if st, doc := set(c, b, map[string]any{"grace_seconds": 0}); st != 202 || c.instance(b)["auto_failover"] != nil {
		t.Fatalf("turning it off = %d %v; shows %v", st, doc, c.instance(b)["auto_failover"])
	}
}

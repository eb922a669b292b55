package api_test

import (
	"testing"
	"time"
)

// TestInstanceShowCarriesTheTLSFingerprint: the fingerprint the guest's
// prepare reported is in the instance's detail view (GET
// /instances/{id}) and the management view, not in the list's short
// view, and each instance has its own.
func TestInstanceShowCarriesTheTLSFingerprint(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	var prints []string
	for _, name := range []string{"tls1", "tls2"} {
		id := c.must(200, "POST", "/instances", createBody(name, nil))["instance"].(map[string]any)["id"].(string)
		c.waitStatus(id, "ACTIVE", 20*time.Second)
		g := r.compute.guest(id)
		g.mu.Lock()
		want := g.tlsFingerprint
		g.mu.Unlock()
		if want == "" {
			t.Fatal("the fake guest reported no fingerprint")
		}
		if got := c.instance(id)["tls_fingerprint"]; got != want {
			t.Fatalf("GET /instances/%s tls_fingerprint = %v, the guest reported %q", id, got, want)
		}
		if got := c.must(200, "GET", "/mgmt/instances/"+id, nil)["instance"].(map[string]any)["tls_fingerprint"]; got != want {
			t.Fatalf("GET /mgmt/instances/%s tls_fingerprint = %v, the guest reported %q", id, got, want)
		}
		prints = append(prints, want)
	}
	if prints[0] == prints[1] {
		t.Fatal("two instances show the same fingerprint")
	}
	for _, in := range c.must(200, "GET", "/instances", nil)["instances"].([]any) {
		if _, ok := in.(map[string]any)["tls_fingerprint"]; ok {
			t.Fatal("the list view carries tls_fingerprint; only show does")
		}
	}
}

package api_test

import (
	"testing"
)

// TestTheComputeDriversNetworksAreListedAsNeutronDoes: what the tempest
// plugin calls to turn its shared_network name into an id.
func TestTheComputeDriversNetworksAreListedAsNeutronDoes(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	code, doc := c.raw("GET", "/network/v2.0/networks", "")
	nets, _ := doc["networks"].([]any)
	if code != 200 || len(nets) != 1 {
		t.Fatalf("network list: HTTP %d %v", code, doc)
	}
	n := nets[0].(map[string]any)
	if n["id"] != fakeNetwork.ID || n["name"] != "private" || n["status"] != "ACTIVE" || n["shared"] != true {
		t.Fatalf("network = %v", n)
	}
	if _, doc := c.raw("GET", "/network/v2.0/networks?name=nope", ""); len(doc["networks"].([]any)) != 0 {
		t.Fatalf("filtered by an unknown name: %v", doc)
	}
	if code, doc := c.raw("GET", "/network/v2.0/networks/"+fakeNetwork.ID, ""); code != 200 || doc["network"].(map[string]any)["name"] != "private" {
		t.Fatalf("show: HTTP %d %v", code, doc)
	}
	if code, doc := c.raw("GET", "/network/v2.0/networks/nope", ""); code != 404 || doc["NeutronError"] == nil {
		t.Fatalf("show unknown: HTTP %d %v", code, doc)
	}
	anon := &client{t: t, base: c.base}
	if code, _ := anon.raw("GET", "/network/v2.0/networks", ""); code != 401 {
		t.Fatalf("without a token: HTTP %d", code)
	}
}

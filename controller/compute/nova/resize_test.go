package nova

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"strata/controller/compute"
)

var resized = compute.Server{ID: serverID, Refs: map[string]string{"security_group": sgID}}

// resizeCalls are the resize actions the fake saw, in order.
func (c *cloud) resizeCalls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, x := range c.calls {
		if strings.HasPrefix(x, "resize to ") || x == "confirmResize" || x == "revertResize" {
			out = append(out, x)
		}
	}
	return out
}

// A flavor resize picks Nova's flavor for the new RAM and vCPUs, asks
// Nova to resize, waits for VERIFY_RESIZE and confirms; the server ends
// ACTIVE on it.
func TestResizeServerMovesToTheNovaFlavorAndConfirms(t *testing.T) {
	c, d := newCloud(t)
	c.serverStates = []string{"server_active.json", "server_active.json#RESIZE:ds1G", "server_active.json#VERIFY_RESIZE:m1.small", "server_active.json#ACTIVE:m1.small"}
	if err := d.ResizeServer(context.Background(), resized, compute.Flavor{RAMMB: 2048, VCPUs: 1, RootDiskGB: 2}); err != nil {
		t.Fatal(err)
	}
	if got, want := c.resizeCalls(), []string{"resize to 2", "confirmResize"}; !slices.Equal(got, want) {
		t.Fatalf("resize calls %v, want %v", got, want)
	}
}

// Called again on the flavor it has: nothing is resized; a stopped
// server is started. A resize left in VERIFY_RESIZE on the target (a
// call cut short) is only confirmed; one on another flavor is reverted
// first, then resized.
func TestResizeServerIsIdempotent(t *testing.T) {
	c, d := newCloud(t)
	c.serverStates = []string{"server_active.json#ACTIVE:m1.small"}
	if err := d.ResizeServer(context.Background(), resized, compute.Flavor{RAMMB: 2048, VCPUs: 1}); err != nil {
		t.Fatal(err)
	}
	if got := c.resizeCalls(); len(got) != 0 {
		t.Fatalf("a server on its flavor was resized: %v", got)
	}

	c, d = newCloud(t)
	c.serverStates = []string{"server_active.json#SHUTOFF:m1.small", "server_active.json#ACTIVE:m1.small"}
	if err := d.ResizeServer(context.Background(), resized, compute.Flavor{RAMMB: 2048, VCPUs: 1}); err != nil {
		t.Fatal(err)
	}
	if !c.saw("POST /compute/servers/"+serverID+"/action") || len(c.resizeCalls()) != 0 {
		t.Fatalf("a stopped server on its flavor: calls %v", c.calls)
	}

	c, d = newCloud(t)
	c.serverStates = []string{"server_active.json#VERIFY_RESIZE:m1.small", "server_active.json#ACTIVE:m1.small"}
	if err := d.ResizeServer(context.Background(), resized, compute.Flavor{RAMMB: 2048, VCPUs: 1}); err != nil {
		t.Fatal(err)
	}
	if got, want := c.resizeCalls(), []string{"confirmResize"}; !slices.Equal(got, want) {
		t.Fatalf("a resize waiting on the target: %v, want %v", got, want)
	}

	c, d = newCloud(t)
	c.serverStates = []string{"server_active.json#VERIFY_RESIZE:m1.medium", "server_active.json#ACTIVE:ds1G", "server_active.json#ACTIVE:ds1G",
		"server_active.json#RESIZE:ds1G", "server_active.json#VERIFY_RESIZE:m1.small", "server_active.json#ACTIVE:m1.small"}
	if err := d.ResizeServer(context.Background(), resized, compute.Flavor{RAMMB: 2048, VCPUs: 1}); err != nil {
		t.Fatal(err)
	}
	if got, want := c.resizeCalls(), []string{"revertResize", "resize to 2", "confirmResize"}; !slices.Equal(got, want) {
		t.Fatalf("a resize waiting on another flavor: %v, want %v", got, want)
	}
}

// Nova gives a resize up and leaves the server on its old flavor: the
// error wraps compute.ErrInvalid (the lifecycle puts the old flavor's
// configuration back) and nothing is confirmed.
func TestResizeServerThatNovaGivesUpIsInvalid(t *testing.T) {
	c, d := newCloud(t)
	c.actionStates = []string{"server_actions_attached.json"}
	c.serverStates = []string{"server_active.json", "server_active.json#RESIZE:ds1G", "server_active.json#ACTIVE:ds1G"}
	err := d.ResizeServer(context.Background(), resized, compute.Flavor{RAMMB: 2048, VCPUs: 1})
	if !errors.Is(err, compute.ErrInvalid) || !strings.Contains(err.Error(), "did not resize server "+serverID+" to m1.small") {
		t.Fatalf("err = %v", err)
	}
	if got := c.resizeCalls(); !slices.Equal(got, []string{"resize to 2"}) {
		t.Fatalf("calls %v", got)
	}
}

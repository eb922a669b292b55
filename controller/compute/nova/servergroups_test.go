package nova

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	th "github.com/gophercloud/gophercloud/v2/testhelper"

	"strata/controller/compute"
)

const groupID = "8c1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a"

// serverGroups is Nova's os-server-groups API as Nova 26 answers it at
// microversion 2.56 (policies as a list), over the fake cloud.
type serverGroups struct {
	mu      sync.Mutex
	groups  map[string]map[string]any
	created []map[string]any // create bodies
	deleted []string
}

func addServerGroups(t *testing.T, c *cloud) *serverGroups {
	g := &serverGroups{groups: map[string]map[string]any{}}
	mux := c.fs.Mux
	reply := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /compute/os-server-groups", func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		defer g.mu.Unlock()
		list := []map[string]any{}
		for _, x := range g.groups {
			list = append(list, x)
		}
		reply(w, 200, map[string]any{"server_groups": list})
	})
	mux.HandleFunc("POST /compute/os-server-groups", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		g.mu.Lock()
		defer g.mu.Unlock()
		g.created = append(g.created, body["server_group"])
		// Nova's answer as recorded (testdata/server_group_created.json),
		// with the name and policies asked for.
		x := fixtureJSON(t, "server_group_created.json")["server_group"].(map[string]any)
		x["id"], x["name"], x["policies"], x["members"] = groupID, body["server_group"]["name"], body["server_group"]["policies"], []any{}
		g.groups[groupID] = x
		reply(w, 200, map[string]any{"server_group": x})
	})
	mux.HandleFunc("GET /compute/os-server-groups/{id}", func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		defer g.mu.Unlock()
		x, ok := g.groups[r.PathValue("id")]
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(404)
			w.Write(fixture(t, "server_group_not_found.json"))
			return
		}
		reply(w, 200, map[string]any{"server_group": x})
	})
	mux.HandleFunc("DELETE /compute/os-server-groups/{id}", func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		defer g.mu.Unlock()
		delete(g.groups, r.PathValue("id"))
		g.deleted = append(g.deleted, r.PathValue("id"))
		w.WriteHeader(204)
	})
	return g
}

// setMembers says which servers Nova lists in the group.
func (g *serverGroups) setMembers(members ...any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if members == nil {
		members = []any{}
	}
	g.groups[groupID]["members"] = members
}

func groupedSpec(vol compute.Volume, policy string) compute.ServerSpec {
	spec := serverSpec(vol)
	spec.ServerGroup = &compute.ServerGroup{Key: instanceID, Policy: policy}
	return spec
}

// A source's create founds its server group (named after its instance,
// Nova's policies list), boots into it with the scheduler hint and
// records it; a second create with the same key joins the group; the
// group goes with its last member only.
func TestServerGroupIsFoundedJoinedAndDroppedWithItsLastMember(t *testing.T) {
	c, d := newCloud(t)
	g := addServerGroups(t, c)
	ctx := context.Background()
	vol := compute.Volume{ID: volumeID, SizeGB: 2, GuestDevice: guestDevice(volumeID)}
	c.serverStates = []string{"server_build.json", "server_active.json"}
	srv, err := d.CreateServer(ctx, groupedSpec(vol, compute.LocalityAntiAffinity))
	if err != nil {
		t.Fatal(err)
	}
	if len(g.created) != 1 {
		t.Fatalf("server groups created: %v", g.created)
	}
	th.CheckJSONEquals(t, `{"name": "strata-group-`+instanceID+`", "policies": ["anti-affinity"]}`, g.created[0])
	th.CheckJSONEquals(t, `{"group": "`+groupID+`"}`, c.serverHints)
	if srv.Refs["server_group"] != groupID || srv.Refs["security_group"] != sgID {
		t.Fatalf("refs %v", srv.Refs)
	}
	// Joining (a replica: same key): the group is found, not made again.
	const otherServer = "0e0e0e0e-1111-4222-8333-444455556666"
	c.serverStates = []string{"server_active.json"}
	g.setMembers(serverID, otherServer)
	c.serverHints = nil
	c.serverGone = false
	if _, err := d.CreateServer(ctx, groupedSpec(vol, compute.LocalityAntiAffinity)); err != nil {
		t.Fatal(err)
	}
	if len(g.created) != 1 {
		t.Fatalf("the group was made again: %v", g.created)
	}
	// The same key with another policy is refused.
	if _, err := d.serverGroup(ctx, compute.ServerGroup{Key: instanceID, Policy: compute.LocalityAffinity}); !errors.Is(err, compute.ErrInvalid) ||
		!strings.Contains(err.Error(), "[anti-affinity], not affinity") {
		t.Fatalf("another policy: %v", err)
	}
	// Deleting a server while another is in the group keeps the group.
	if err := d.DeleteServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if len(g.deleted) != 0 {
		t.Fatalf("a group with a member left was deleted: %v", g.deleted)
	}
	// The last one: the group goes, also while Nova still lists the
	// server just deleted as a member (seen on the real tier); deleting
	// again is not an error.
	g.setMembers(otherServer)
	c.serverGone = false
	if err := d.DeleteServer(ctx, compute.Server{ID: otherServer, Refs: map[string]string{"server_group": groupID}}); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if len(g.deleted) != 1 || g.deleted[0] != groupID {
		t.Fatalf("groups deleted %v, want %s", g.deleted, groupID)
	}
	if err := d.DeleteServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
}

// A server Nova puts in ERROR (e.g. anti-affinity with no other host:
// "No valid host was found") is rolled back; its group goes with it when
// no other server is in it, and the error says so.
func TestServerGroupOfAFailedFirstServerIsRolledBack(t *testing.T) {
	c, d := newCloud(t)
	g := addServerGroups(t, c)
	c.serverStates = []string{"server_build.json", "server_error.json"}
	vol := compute.Volume{ID: volumeID, SizeGB: 2, GuestDevice: guestDevice(volumeID)}
	_, err := d.CreateServer(context.Background(), groupedSpec(vol, compute.LocalityAffinity))
	if err == nil || !strings.Contains(err.Error(), "its server group were deleted") {
		t.Fatalf("err = %v", err)
	}
	if len(g.deleted) != 1 {
		t.Fatalf("groups deleted: %v", g.deleted)
	}
}

// CheckLocality takes Nova's two policies only; nothing is asked of Nova.
func TestCheckLocality(t *testing.T) {
	c, d := newCloud(t)
	for _, p := range []string{compute.LocalityAffinity, compute.LocalityAntiAffinity} {
		if err := d.CheckLocality(context.Background(), p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if err := d.CheckLocality(context.Background(), "soft-affinity"); !errors.Is(err, compute.ErrInvalid) {
		t.Errorf("soft-affinity: %v", err)
	}
	if len(c.calls) != 0 {
		t.Errorf("calls %v", c.calls)
	}
}

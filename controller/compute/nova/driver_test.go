package nova

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	th "github.com/gophercloud/gophercloud/v2/testhelper"
	fake "github.com/gophercloud/gophercloud/v2/testhelper/client"

	"strata/controller/compute"
)

// The driver against recorded Nova, Cinder and Neutron answers
// (testdata/), served by gophercloud's testhelper fake server: the three
// services under /compute/, /volume/ and /network/, with just enough state
// (volume and server status sequences) to walk a create, its polling, a
// failure and its rollback.

const (
	instanceID = "6f1c2d3e-0000-4000-8000-000000000001"
	volumeID   = "b6e5d4c3-1a2b-4c5d-8e9f-0a1b2c3d4e5f"
	serverID   = "f5dc173b-6804-445a-a6d8-c705dad5b5eb"
	sgID       = "2f1e3d4c-5b6a-4798-8a9b-0c1d2e3f4a5b"
	imageID    = "70a599e0-31e7-49b7-b260-868f441e862b"
	networkID  = "3c1f2d0e-4b5a-4c6d-9e8f-7a6b5c4d3e2f"
	dbNetID    = "7d6c5b4a-3e2f-4d1c-8b0a-9f8e7d6c5b4a"
	portID     = "e4d3c2b1-a0f9-4e8d-b7c6-5a4b3c2d1e0f"
	busyPortID = "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b"
)

type cloud struct {
	t  *testing.T
	fs th.FakeServer
	mu sync.Mutex
	// calls are "METHOD path" in order.
	calls []string
	// volumeStates and serverStates are the fixtures GET answers with, in
	// turn (the last one repeats); after a DELETE the thing is gone (404).
	volumeStates, serverStates []string
	volumeGone, serverGone     bool
	serverCreate, serverHints  map[string]any
	headers                    map[string]string
	// zone is the availability zone Cinder's volume create must carry
	// (empty: none); zones the fixture Nova lists its zones with.
	zone, zones string
	// actionStates are the server's instance action lists, in turn;
	// createRefusal a fixture Nova's server create answers 400 with;
	// deleteFailures how many server DELETEs Nova answers 500;
	// deletesLost how many it accepts (204) and then fails, leaving the
	// server as it was.
	actionStates   []string
	createRefusal  string
	deleteFailures int
	deletesLost    int
}

func fixture(t *testing.T, name string) []byte {
	base, variant, ok := strings.Cut(name, "#")
	data, err := os.ReadFile(filepath.Join("testdata", base))
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		return serverVariant(t, data, variant)
	}
	return data
}

// serverVariant is a recorded server answer in another state:
// "STATUS:FLAVOR" sets its status (a task state for RESIZE, none
// otherwise) and its embedded flavor to that one of flavors.json. The
// recorder does not resize yet; the shape stays the recorded one.
func serverVariant(t *testing.T, data []byte, variant string) []byte {
	t.Helper()
	status, flavorName, _ := strings.Cut(variant, ":")
	var doc map[string]map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	srv := doc["server"]
	srv["status"] = status
	srv["OS-EXT-STS:task_state"] = nil
	srv["OS-EXT-STS:vm_state"] = strings.ToLower(status)
	switch status {
	case "RESIZE":
		srv["OS-EXT-STS:task_state"], srv["OS-EXT-STS:vm_state"] = "resize_migrating", "active"
	case "VERIFY_RESIZE":
		srv["OS-EXT-STS:vm_state"] = "resized"
	}
	var fl struct {
		Flavors []map[string]any `json:"flavors"`
	}
	if err := json.Unmarshal(fixture(t, "flavors.json"), &fl); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range fl.Flavors {
		if f["name"] == flavorName {
			emb := srv["flavor"].(map[string]any)
			emb["original_name"], emb["ram"], emb["vcpus"], emb["disk"] = f["name"], f["ram"], f["vcpus"], f["disk"]
			found = true
		}
	}
	if !found {
		t.Fatalf("no flavor %q in flavors.json", flavorName)
	}
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fixtureJSON decodes a fixture, for the values a test compares with what
// the driver made of them (the recorder's stand-ins for the tier's).
func fixtureJSON(t *testing.T, name string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(fixture(t, name), &v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

func newCloud(t *testing.T) (*cloud, *Driver) {
	c := &cloud{t: t, fs: th.SetupHTTP(), headers: map[string]string{}, zones: "availability_zones.json"}
	t.Cleanup(c.fs.Teardown)
	mux := c.fs.Mux
	send := func(w http.ResponseWriter, code int, name string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		w.Write(fixture(t, name))
	}
	next := func(states *[]string) string {
		s := (*states)[0]
		if len(*states) > 1 {
			*states = (*states)[1:]
		}
		return s
	}
	record := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			th.TestHeader(t, r, "X-Auth-Token", fake.TokenID)
			c.mu.Lock()
			c.calls = append(c.calls, r.Method+" "+r.URL.Path)
			if v := r.Header.Get("X-OpenStack-Nova-API-Version"); v != "" {
				c.headers["nova"] = v
			}
			if v := r.Header.Get("X-OpenStack-Volume-API-Version"); v != "" {
				c.headers["cinder"] = v
			}
			c.mu.Unlock()
			h(w, r)
		}
	}
	// Cinder.
	mux.HandleFunc("GET /volume/volumes/detail", record(func(w http.ResponseWriter, r *http.Request) {
		th.TestFormValues(t, r, map[string]string{"name": "strata-" + instanceID})
		send(w, 200, "volumes_none.json")
	}))
	mux.HandleFunc("POST /volume/volumes", record(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		zone := ""
		if c.zone != "" {
			zone = `"availability_zone": "` + c.zone + `", `
		}
		c.mu.Unlock()
		th.TestJSONRequest(t, r, `{"volume": {"name": "strata-`+instanceID+`", "size": 2, `+zone+`"description": "strata data volume of instance `+instanceID+`",
			"metadata": {"strata_instance": "`+instanceID+`"}}}`)
		send(w, 202, "volume_creating.json")
	}))
	mux.HandleFunc("GET /volume/volumes/"+volumeID, record(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		gone, state := c.volumeGone, next(&c.volumeStates)
		c.mu.Unlock()
		if gone {
			w.WriteHeader(404)
			return
		}
		send(w, 200, state)
	}))
	mux.HandleFunc("DELETE /volume/volumes/"+volumeID, record(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.volumeGone = true
		c.mu.Unlock()
		w.WriteHeader(202)
	}))
	mux.HandleFunc("GET /volume/messages", record(func(w http.ResponseWriter, r *http.Request) {
		th.TestFormValues(t, r, map[string]string{"resource_uuid": volumeID, "sort": "created_at:asc"})
		send(w, 200, "volume_messages_error.json")
	}))
	mux.HandleFunc("POST /volume/volumes/"+volumeID+"/action", record(func(w http.ResponseWriter, r *http.Request) {
		th.TestJSONRequest(t, r, `{"os-extend": {"new_size": 5}}`)
		w.WriteHeader(202)
	}))
	// Neutron.
	mux.HandleFunc("GET /network/v2.0/security-groups", record(func(w http.ResponseWriter, r *http.Request) {
		send(w, 200, "secgroups_none.json")
	}))
	mux.HandleFunc("POST /network/v2.0/security-groups", record(func(w http.ResponseWriter, r *http.Request) {
		send(w, 201, "secgroup_created.json")
	}))
	mux.HandleFunc("POST /network/v2.0/security-group-rules", record(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Rule map[string]any `json:"security_group_rule"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		if body.Rule["direction"] != "ingress" || body.Rule["protocol"] != "tcp" || body.Rule["port_range_min"] != float64(3306) ||
			body.Rule["port_range_max"] != float64(3306) || body.Rule["security_group_id"] != sgID {
			t.Errorf("security group rule: %v", body.Rule)
		}
		send(w, 201, "secgroup_rule_created.json")
	}))
	mux.HandleFunc("DELETE /network/v2.0/security-groups/"+sgID, record(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(204)
	}))
	mux.HandleFunc("GET /network/v2.0/networks", record(func(w http.ResponseWriter, r *http.Request) {
		send(w, 200, "networks.json")
	}))
	mux.HandleFunc("GET /network/v2.0/networks/{id}", record(func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("id") {
		case dbNetID:
			send(w, 200, "network_show.json")
		case networkID:
			send(w, 200, "network_show.json") // the fixture's body is not read beyond its presence
		default:
			send(w, 404, "not_found.json")
		}
	}))
	mux.HandleFunc("GET /network/v2.0/ports/{id}", record(func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("id") {
		case portID:
			send(w, 200, "port_show.json")
		case busyPortID:
			send(w, 200, "port_in_use.json")
		default:
			send(w, 404, "port_not_found.json")
		}
	}))
	// Nova.
	mux.HandleFunc("GET /compute/os-availability-zone", record(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		zones := c.zones
		c.mu.Unlock()
		send(w, 200, zones)
	}))
	mux.HandleFunc("GET /compute/flavors/detail", record(func(w http.ResponseWriter, r *http.Request) {
		send(w, 200, "flavors.json")
	}))
	mux.HandleFunc("GET /compute/servers/detail", record(func(w http.ResponseWriter, r *http.Request) {
		send(w, 200, "servers_none.json")
	}))
	mux.HandleFunc("POST /compute/servers", record(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		c.mu.Lock()
		c.serverCreate, c.serverHints = body["server"], body["os:scheduler_hints"]
		refusal := c.createRefusal
		c.mu.Unlock()
		if refusal != "" {
			send(w, 400, refusal)
			return
		}
		send(w, 202, "server_created.json")
	}))
	mux.HandleFunc("GET /compute/servers/"+serverID, record(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		gone, state := c.serverGone, next(&c.serverStates)
		c.mu.Unlock()
		if gone {
			w.WriteHeader(404)
			return
		}
		send(w, 200, state)
	}))
	mux.HandleFunc("DELETE /compute/servers/"+serverID, record(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.deleteFailures > 0 {
			c.deleteFailures--
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(500)
			w.Write([]byte(`{"computeFault": {"code": 500, "message": "Unexpected API Error."}}`))
			return
		}
		if c.deletesLost > 0 {
			c.deletesLost--
			w.WriteHeader(204)
			return
		}
		c.serverGone = true
		w.WriteHeader(204)
	}))
	mux.HandleFunc("GET /compute/servers/"+serverID+"/os-instance-actions", record(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		state := next(&c.actionStates)
		c.mu.Unlock()
		send(w, 200, state)
	}))
	mux.HandleFunc("GET /compute/servers/"+serverID+"/os-instance-actions/req-cd738adc-e886-4896-b229-9d873dad76c7", record(func(w http.ResponseWriter, r *http.Request) {
		send(w, 200, "server_action_extend_volume.json")
	}))
	mux.HandleFunc("POST /compute/servers/"+serverID+"/action", record(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		_, console := body["os-getConsoleOutput"]
		_, start := body["os-start"]
		reboot, _ := body["reboot"].(map[string]any)
		resize, _ := body["resize"].(map[string]any)
		_, confirm := body["confirmResize"]
		_, revert := body["revertResize"]
		switch {
		case resize != nil:
			c.mu.Lock()
			c.calls = append(c.calls, fmt.Sprintf("resize to %v", resize["flavorRef"]))
			c.mu.Unlock()
			w.WriteHeader(202)
		case confirm, revert:
			// Nova answers a confirm 204, a revert 202.
			c.mu.Lock()
			c.calls = append(c.calls, map[bool]string{true: "confirmResize", false: "revertResize"}[confirm])
			c.mu.Unlock()
			w.WriteHeader(map[bool]int{true: 204, false: 202}[confirm])
		case console:
			send(w, 200, "console.json")
		case start:
			w.WriteHeader(202)
		case reboot != nil && reboot["type"] == "HARD":
			c.mu.Lock()
			c.calls = append(c.calls, "reboot HARD")
			c.mu.Unlock()
			w.WriteHeader(202)
		default:
			t.Errorf("unexpected server action %v", body)
			w.WriteHeader(400)
		}
	}))

	return c, fakeDriver(t, c.fs)
}

// fakeDriver is a driver talking to fs's /compute/, /volume/ and
// /network/.
func fakeDriver(t *testing.T, fs th.FakeServer) *Driver {
	provider := &gophercloud.ProviderClient{TokenID: fake.TokenID}
	// Types as openstack.NewComputeV2 and friends set them: they choose
	// the microversion headers.
	client := func(path, typ string) *gophercloud.ServiceClient {
		return &gophercloud.ServiceClient{ProviderClient: provider, Endpoint: fs.Endpoint() + path, Type: typ}
	}
	network := client("network/", "network")
	network.ResourceBase = network.Endpoint + "v2.0/"
	d, err := New(client("compute/", "compute"), client("volume/", "block-storage"), network, Config{Network: networkID, Poll: time.Millisecond, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (c *cloud) saw(call string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range c.calls {
		if x == call {
			return true
		}
	}
	return false
}

var bootstrap = []byte(`{"format": 1, "instance_id": "` + instanceID + `", "enrollment_token": "secret"}`)

func serverSpec(vol compute.Volume) compute.ServerSpec {
	return compute.ServerSpec{InstanceID: instanceID, Name: "db1", Image: compute.ImageRef{ID: imageID, Location: imageID, Format: "qcow2"},
		RAMMB: 768, VCPUs: 1, Volume: vol, ConfigDrive: map[string][]byte{"strata/bootstrap.json": bootstrap}, Ports: []int{3306}}
}

// TestCreateThenDelete walks a whole instance: volume (creating →
// available), security group, server (BUILD → ACTIVE) with the bootstrap
// on the config drive, state, console, and deletion of all of it.
func TestCreateThenDelete(t *testing.T) {
	c, d := newCloud(t)
	ctx := context.Background()
	c.volumeStates = []string{"volume_creating.json", "volume_creating.json", "volume_available.json"}
	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: instanceID, Name: "db1", SizeGB: 2})
	if err != nil {
		t.Fatal(err)
	}
	if vol.ID != volumeID || vol.SizeGB != 2 || vol.GuestDevice != "/dev/disk/by-id/virtio-b6e5d4c3-1a2b-4c5d-8" {
		t.Fatalf("volume: %+v", vol)
	}

	c.serverStates = []string{"server_build.json", "server_build.json", "server_active.json"}
	srv, err := d.CreateServer(ctx, serverSpec(vol))
	if err != nil {
		t.Fatal(err)
	}
	// The fixed address Nova gave the server is private, and clients
	// reach the datastore's port there.
	var fixed []string
	for _, list := range fixtureJSON(t, "server_active.json")["server"].(map[string]any)["addresses"].(map[string]any) {
		for _, a := range list.([]any) {
			if m := a.(map[string]any); m["OS-EXT-IPS:type"] == "fixed" {
				fixed = append(fixed, m["addr"].(string))
			}
		}
	}
	if len(fixed) != 1 {
		t.Fatalf("server_active.json: fixed addresses %v, want one", fixed)
	}
	want := compute.Server{ID: serverID,
		Addresses: []compute.Address{{Type: "private", Address: fixed[0]}},
		Endpoints: []compute.Endpoint{{GuestPort: 3306, Host: fixed[0], Port: 3306}},
		Refs:      map[string]string{"security_group": sgID}}
	th.AssertDeepEquals(t, want, srv)

	// What Nova was asked for: the smallest fitting flavor, the image, the
	// network, the group, the volume, and the bootstrap on the config
	// drive as an injected file — never as user_data.
	s := c.serverCreate
	if s["flavorRef"] != "c1" || s["imageRef"] != imageID || s["config_drive"] != true || s["user_data"] != nil {
		t.Errorf("server create: flavor %v image %v config_drive %v user_data %v", s["flavorRef"], s["imageRef"], s["config_drive"], s["user_data"])
	}
	th.CheckJSONEquals(t, `[{"uuid": "`+networkID+`"}]`, s["networks"])
	th.CheckJSONEquals(t, `[{"name": "`+sgID+`"}]`, s["security_groups"])
	th.CheckJSONEquals(t, `[{"path": "/etc/strata/bootstrap.json", "contents": "`+base64.StdEncoding.EncodeToString(bootstrap)+`"}]`, s["personality"])
	th.CheckJSONEquals(t, `[
		{"source_type": "image", "destination_type": "local", "uuid": "`+imageID+`", "boot_index": 0, "delete_on_termination": true},
		{"source_type": "volume", "destination_type": "volume", "uuid": "`+volumeID+`", "boot_index": -1, "delete_on_termination": false}]`,
		s["block_device_mapping_v2"])
	if c.headers["nova"] != "2.56" {
		t.Errorf("compute microversion %q, want 2.56 (the last with personality files)", c.headers["nova"])
	}

	if st, err := d.ServerState(ctx, srv); err != nil || st != compute.StateRunning {
		t.Fatalf("state = %v, %v", st, err)
	}
	if out, err := d.Console(ctx, srv, 29); err != nil || out != "enrolled with the controller\n" {
		t.Fatalf("console = %q, %v", out, err)
	}
	c.serverStates = []string{"server_shutoff.json"}
	if st, err := d.ServerState(ctx, srv); err != nil || st != compute.StateStopped {
		t.Fatalf("state of a SHUTOFF server = %v, %v", st, err)
	}
	if err := d.StartServer(ctx, srv); err != nil || !c.saw("POST /compute/servers/"+serverID+"/action") {
		t.Fatalf("start: %v (calls %v)", err, c.calls)
	}
	// The management API's reboot: a hard reboot (Nova stops and starts
	// the server, whatever state the guest is in).
	var _ compute.Restarter = d
	if err := d.RestartServer(ctx, srv); err != nil || !c.saw("reboot HARD") {
		t.Fatalf("restart: %v (calls %v)", err, c.calls)
	}

	if err := d.DeleteServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if !c.saw("DELETE /compute/servers/"+serverID) || !c.saw("DELETE /network/v2.0/security-groups/"+sgID) {
		t.Fatalf("delete server: calls %v", c.calls)
	}
	if st, err := d.ServerState(ctx, srv); err != nil || st != compute.StateGone {
		t.Fatalf("state after delete = %v, %v", st, err)
	}
	c.volumeStates = []string{"volume_available.json"}
	if err := d.DeleteVolume(ctx, vol); err != nil || !c.saw("DELETE /volume/volumes/"+volumeID) {
		t.Fatalf("delete volume: %v (calls %v)", err, c.calls)
	}
	// Deleting again is not an error.
	if err := d.DeleteVolume(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteServer(ctx, srv); err != nil {
		t.Fatal(err)
	}
}

// TestVolumeErrorIsRolledBack: Cinder puts the volume in error mid-way;
// the driver deletes it and says what happened. No server is made.
func TestVolumeErrorIsRolledBack(t *testing.T) {
	c, d := newCloud(t)
	c.volumeStates = []string{"volume_creating.json", "volume_error.json"}
	_, err := d.CreateVolume(context.Background(), compute.VolumeSpec{InstanceID: instanceID, Name: "db1", SizeGB: 2})
	if err == nil {
		t.Fatal("a volume in error was returned")
	}
	for _, want := range []string{"cinder: volume " + volumeID + ` went to status "error"`, "the volume was deleted"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if !c.saw("DELETE /volume/volumes/" + volumeID) {
		t.Errorf("the failed volume was not deleted: %v", c.calls)
	}
	if c.saw("POST /compute/servers") {
		t.Errorf("a server was created: %v", c.calls)
	}
}

// TestServerErrorIsRolledBack: Nova puts the server in ERROR; the driver
// deletes the server and its security group, keeps the volume (the
// instance's, deleted with it), and passes Nova's fault on.
func TestServerErrorIsRolledBack(t *testing.T) {
	c, d := newCloud(t)
	// Nova's conductor sets ERROR before it records the fault: the
	// driver reads again until the fault is there.
	c.serverStates = []string{"server_build.json", "server_error_no_fault.json", "server_error_no_fault.json", "server_error.json"}
	vol := compute.Volume{ID: volumeID, SizeGB: 2, GuestDevice: guestDevice(volumeID)}
	_, err := d.CreateServer(context.Background(), serverSpec(vol))
	if err == nil {
		t.Fatal("a server in ERROR was returned")
	}
	// Nova's fault as it recorded it, without the space its message ends in.
	fault := fixtureJSON(t, "server_error.json")["server"].(map[string]any)["fault"].(map[string]any)
	said := fmt.Sprintf("went to ERROR: %s (code %v)", strings.TrimSpace(fault["message"].(string)), fault["code"])
	for _, want := range []string{"nova: server " + serverID + " went to ERROR", "No valid host was found", said, "the server and its security group were deleted"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if !c.saw("DELETE /compute/servers/"+serverID) || !c.saw("DELETE /network/v2.0/security-groups/"+sgID) {
		t.Errorf("rollback incomplete: %v", c.calls)
	}
	if c.saw("DELETE /volume/volumes/" + volumeID) {
		t.Errorf("the instance's volume was deleted by a server rollback: %v", c.calls)
	}
}

// A server in ERROR whose fault never comes is given up on after
// faultWait, saying there was none.
func TestServerErrorWithoutAFaultEnds(t *testing.T) {
	c, d := newCloud(t)
	saved := faultWait
	faultWait = 50 * time.Millisecond
	t.Cleanup(func() { faultWait = saved })
	c.serverStates = []string{"server_build.json", "server_error_no_fault.json"}
	vol := compute.Volume{ID: volumeID, SizeGB: 2, GuestDevice: guestDevice(volumeID)}
	_, err := d.CreateServer(context.Background(), serverSpec(vol))
	if err == nil || !strings.Contains(err.Error(), "went to ERROR: (no fault recorded)") {
		t.Fatalf("err = %v", err)
	}
}

// TestExtendVolume grows an attached volume with Cinder's online extend
// (microversion 3.42) and refuses to shrink.
func TestExtendVolume(t *testing.T) {
	c, d := newCloud(t)
	vol := compute.Volume{ID: volumeID, SizeGB: 2}
	c.volumeStates = []string{"volume_in_use.json", "volume_extended.json"}
	c.actionStates = []string{"server_actions_attached.json", "server_actions_extended.json"}
	got, err := d.ExtendVolume(context.Background(), compute.Server{ID: serverID}, vol, 5)
	if err != nil {
		t.Fatal(err)
	}
	if got.SizeGB != 5 || c.headers["cinder"] != "3.42" {
		t.Fatalf("extended: %+v, microversion header %q", got, c.headers["cinder"])
	}
	c.volumeStates = []string{"volume_extended.json"}
	if _, err := d.ExtendVolume(context.Background(), compute.Server{ID: serverID}, vol, 3); err == nil || !strings.Contains(err.Error(), "cannot shrink") {
		t.Fatalf("shrink: %v", err)
	}
}

// TestNICsArePassedToNova: a request's network (with a fixed address) or
// port reaches Nova's networks entry as the request named it, after
// Neutron confirmed it exists.
func TestNICsArePassedToNova(t *testing.T) {
	for name, tc := range map[string]struct {
		nics []compute.NIC
		want string
	}{
		"default":            {nil, `[{"uuid": "` + networkID + `"}]`},
		"net-id":             {[]compute.NIC{{NetworkID: dbNetID}}, `[{"uuid": "` + dbNetID + `"}]`},
		"net-id v4-fixed-ip": {[]compute.NIC{{NetworkID: dbNetID, FixedIP: "10.20.0.40"}}, `[{"uuid": "` + dbNetID + `", "fixed_ip": "10.20.0.40"}]`},
		"port-id":            {[]compute.NIC{{PortID: portID}}, `[{"port": "` + portID + `"}]`},
	} {
		t.Run(name, func(t *testing.T) {
			c, d := newCloud(t)
			ctx := context.Background()
			nics, err := d.ResolveNICs(ctx, tc.nics)
			if err != nil {
				t.Fatal(err)
			}
			if len(tc.nics) > 0 && tc.nics[0].PortID != "" && nics[0].NetworkID != dbNetID {
				t.Fatalf("a port's network is not taken from Neutron: %+v", nics)
			}
			c.serverStates = []string{"server_active.json"}
			spec := serverSpec(compute.Volume{ID: volumeID, SizeGB: 2})
			spec.NICs = nics
			if _, err := d.CreateServer(ctx, spec); err != nil {
				t.Fatal(err)
			}
			th.CheckJSONEquals(t, tc.want, c.serverCreate["networks"])
		})
	}
}

// TestUnknownNetworksArePlainRefusals: nothing Neutron does not have
// reaches Nova, and each refusal names the networks there are.
func TestUnknownNetworksArePlainRefusals(t *testing.T) {
	c, d := newCloud(t)
	ctx := context.Background()
	names := map[string]string{}
	for _, n := range fixtureJSON(t, "networks.json")["networks"].([]any) {
		m := n.(map[string]any)
		names[m["id"].(string)] = m["name"].(string)
	}
	busy := fixtureJSON(t, "port_in_use.json")["port"].(map[string]any)["device_id"].(string)
	nets, err := d.Networks(ctx)
	if err != nil || len(nets) != 2 || nets[0].ID != networkID || !nets[0].Default || nets[1].ID != dbNetID || nets[1].Name != names[dbNetID] {
		t.Fatalf("networks = %+v, %v (the configured one first, as the default)", nets, err)
	}
	for name, tc := range map[string]struct {
		nic  compute.NIC
		want string
	}{
		"unknown network": {compute.NIC{NetworkID: "0b0b0b0b-0000-4000-8000-000000000000"}, "not found in Neutron; the networks are: " + networkID + " (" + names[networkID] + ", the default); " + dbNetID + " (" + names[dbNetID] + ")"},
		"unknown port":    {compute.NIC{PortID: "0c0c0c0c-0000-4000-8000-000000000000"}, "not found in Neutron; the networks are:"},
		"port in use":     {compute.NIC{PortID: busyPortID}, "port " + busyPortID + " is in use by " + busy},
		"port elsewhere":  {compute.NIC{PortID: portID, NetworkID: networkID}, "is on network " + dbNetID},
		"port and ip":     {compute.NIC{PortID: portID, FixedIP: "10.20.0.9"}, "either port-id or v4-fixed-ip"},
		"subnet":          {compute.NIC{SubnetID: "c9d8e7f6-a5b4-4c3d-9e2f-1a0b9c8d7e6f"}, "make a port on the subnet"},
		"bad address":     {compute.NIC{NetworkID: dbNetID, FixedIP: "10.20.0"}, "not an IPv4 address"},
	} {
		_, err := d.ResolveNICs(ctx, []compute.NIC{tc.nic})
		if !errors.Is(err, compute.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalid saying %q", name, err, tc.want)
		}
	}
	if c.saw("POST /compute/servers") {
		t.Fatal("a server was created")
	}
}

// TestAvailabilityZoneReachesNovaAndCinder: a create may name only a zone
// Nova lists as available (the refusal names the available ones); the
// named zone reaches Cinder's volume create and Nova's server create.
func TestAvailabilityZoneReachesNovaAndCinder(t *testing.T) {
	c, d := newCloud(t)
	ctx := context.Background()
	if err := d.CheckAvailabilityZone(ctx, "az-db"); err != nil {
		t.Fatal(err)
	}
	err := d.CheckAvailabilityZone(ctx, "nowhere")
	if !errors.Is(err, compute.ErrInvalid) || !strings.Contains(err.Error(), `"nowhere"`) || !strings.Contains(err.Error(), "(available: az-db)") {
		t.Fatalf("zone nowhere: %v", err)
	}
	// The zone's only compute service disabled: Nova lists it as not
	// available.
	c.zones = "availability_zones_down.json"
	err = d.CheckAvailabilityZone(ctx, "az-db")
	if !errors.Is(err, compute.ErrInvalid) || !strings.Contains(err.Error(), `"az-db" is not an available zone`) || !strings.Contains(err.Error(), "(available: )") {
		t.Fatalf("zone az-db with its host disabled: %v", err)
	}
	c.zones = "availability_zones.json"
	c.zone = "az-db"
	c.volumeStates = []string{"volume_available.json"}
	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: instanceID, Name: "db1", SizeGB: 2, AvailabilityZone: "az-db"})
	if err != nil {
		t.Fatal(err)
	}
	c.serverStates = []string{"server_active.json"}
	spec := serverSpec(vol)
	spec.AvailabilityZone = "az-db"
	if _, err := d.CreateServer(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if got := c.serverCreate["availability_zone"]; got != "az-db" {
		t.Fatalf("server create availability_zone = %v", got)
	}
}

// TestExtendAttachedVolumeWaitsForNova: Cinder says the new size of an
// attached volume before Nova has resized the guest's disk; ExtendVolume
// returns once the extend_volume action that Cinder's volume-extended
// event starts has finished (answers recorded on the compute tier of
// ci/openstack/compute-start.sh).
func TestExtendAttachedVolumeWaitsForNova(t *testing.T) {
	c, d := newCloud(t)
	vol := compute.Volume{ID: volumeID, SizeGB: 2}
	c.volumeStates = []string{"volume_in_use.json", "volume_extended.json"}
	c.actionStates = []string{"server_actions_attached.json", "server_actions_attached.json", "server_actions_attached.json", "server_actions_extended.json"}
	got, err := d.ExtendVolume(context.Background(), compute.Server{ID: serverID}, vol, 5)
	if err != nil {
		t.Fatal(err)
	}
	if got.SizeGB != 5 || !c.saw("GET /compute/servers/"+serverID+"/os-instance-actions/req-cd738adc-e886-4896-b229-9d873dad76c7") {
		t.Fatalf("extended: %+v without reading Nova's extend_volume action; calls %v", got, c.calls)
	}
	c.mu.Lock()
	left := len(c.actionStates)
	c.mu.Unlock()
	if left != 1 {
		t.Errorf("ExtendVolume returned before Nova had an extend_volume action (%d action lists unread)", left)
	}
}

// TestVolumeErrorCarriesCindersMessage: a volume in error has no fault of
// its own; the error says what Cinder told the user about it.
func TestVolumeErrorCarriesCindersMessage(t *testing.T) {
	c, d := newCloud(t)
	c.volumeStates = []string{"volume_creating.json", "volume_error.json"}
	_, err := d.CreateVolume(context.Background(), compute.VolumeSpec{InstanceID: instanceID, Name: "db1", SizeGB: 2})
	want := `cinder: volume ` + volumeID + ` went to status "error": schedule allocate volume:Could not find any available weighted backend. (the volume was deleted)`
	if err == nil || err.Error() != want {
		t.Fatalf("error %v\nwant %s", err, want)
	}
}

// TestNovaRefusalIsInvalid: Nova's 400 on create (a deleted image) and a
// build it aborted (the flavor's disk too small for the image) are
// compute.ErrInvalid — the lifecycle fails the instance instead of
// booting the same request again — and name what was refused.
func TestNovaRefusalIsInvalid(t *testing.T) {
	vol := compute.Volume{ID: volumeID, SizeGB: 2}
	c, d := newCloud(t)
	c.createRefusal = "server_create_image_missing.json"
	_, err := d.CreateServer(context.Background(), serverSpec(vol))
	if !errors.Is(err, compute.ErrInvalid) {
		t.Errorf("a 400 on create is not ErrInvalid: %v", err)
	}
	for _, w := range []string{"from image " + imageID, "HTTP 400: Can not find requested image", "(its security group was deleted)"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v does not say %q", err, w)
		}
	}

	c, d = newCloud(t)
	c.serverStates = []string{"server_build.json", "server_error_aborted.json"}
	_, err = d.CreateServer(context.Background(), serverSpec(vol))
	if !errors.Is(err, compute.ErrInvalid) {
		t.Errorf("an aborted build is not ErrInvalid: %v", err)
	}
	for _, w := range []string{"aborted: Flavor's disk is too small for requested image", "(the server and its security group were deleted; the volume stays for the instance)"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v does not say %q", err, w)
		}
	}

	// "No valid host" may pass on a retry: not ErrInvalid.
	c, d = newCloud(t)
	c.serverStates = []string{"server_build.json", "server_error.json"}
	if _, err = d.CreateServer(context.Background(), serverSpec(vol)); err == nil || errors.Is(err, compute.ErrInvalid) {
		t.Errorf("no valid host: %v", err)
	}
}

// TestServerDeleteAsksAgainAfter500: the real Nova answered a DELETE of an
// ERROR server with 500 ("database is locked"); the driver asks again.
func TestServerDeleteAsksAgainAfter500(t *testing.T) {
	c, d := newCloud(t)
	c.deleteFailures = 2
	c.serverStates = []string{"server_active.json"}
	if err := d.DeleteServer(context.Background(), compute.Server{ID: serverID, Refs: map[string]string{"security_group": sgID}}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.serverGone || c.deleteFailures != 0 {
		t.Fatalf("server gone %v, failures left %d", c.serverGone, c.deleteFailures)
	}
}

// TestFlavorHoldsTheImage: among the flavors with the RAM and vCPUs, the
// smallest whose disk holds the image; none holds it: the smallest.
func TestFlavorHoldsTheImage(t *testing.T) {
	_, d := newCloud(t)
	for _, tc := range []struct {
		need int64
		want string
	}{{0, "c1"}, {10 << 30, "c1"}, {10<<30 + 1, "2"}, {30 << 30, "3"}, {50 << 30, "c1"}} {
		f, err := d.flavor(context.Background(), 768, 1, tc.need)
		if err != nil || f.ID != tc.want {
			t.Errorf("image of %d bytes: flavor %s, %v; want %s", tc.need, f.ID, err, tc.want)
		}
	}
}

// TestServerDeleteAsksAgainWhenNovaFailsIt: the real Nova took a DELETE
// (204) and failed it ("database is locked" in its conductor): the server
// went back to ERROR with no task. The driver deletes it again.
func TestServerDeleteAsksAgainWhenNovaFailsIt(t *testing.T) {
	c, d := newCloud(t)
	c.deletesLost = 1
	c.serverStates = []string{"server_error.json"}
	if err := d.DeleteServer(context.Background(), compute.Server{ID: serverID}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, call := range c.calls {
		if call == "DELETE /compute/servers/"+serverID {
			n++
		}
	}
	if !c.serverGone || n != 2 {
		t.Fatalf("server gone %v after %d DELETEs; want gone after 2", c.serverGone, n)
	}
}

// TestFloatingAddressIsPublic: Nova lists a floating address beside the
// fixed one on the same network; it is public, and clients reach the
// datastore at the fixed one. (The compute tier has no router, so no
// recorded answer carries a floating address: this one is written here.)
func TestFloatingAddressIsPublic(t *testing.T) {
	srv := servers.Server{ID: serverID, Addresses: map[string]any{"private": []any{
		map[string]any{"OS-EXT-IPS:type": "fixed", "addr": "10.0.0.12", "version": 4},
		map[string]any{"OS-EXT-IPS:type": "floating", "addr": "172.24.4.30", "version": 4},
	}}}
	want := compute.Server{ID: serverID,
		Addresses: []compute.Address{{Type: "private", Address: "10.0.0.12"}, {Type: "public", Address: "172.24.4.30"}},
		Endpoints: []compute.Endpoint{{GuestPort: 3306, Host: "10.0.0.12", Port: 3306}}}
	th.AssertDeepEquals(t, want, toServer(srv, []int{3306}))
}

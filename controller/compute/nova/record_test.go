//go:build openstack

package nova

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/aggregates"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servergroups"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/services"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"strata/ci/openstack/ostest"
	"strata/controller/compute"
)

// RecordEnv asks TestRecordFixtures to re-record testdata/ from the
// compute tier (make record-nova-fixtures).
const RecordEnv = "STRATA_RECORD_FIXTURES"

// The fixed ids the recorder puts in place of the tier's own, beside the
// ones at the top of driver_test.go.
const (
	projectID      = "f05784c8b24c420687316e81b672bca9"
	userID         = "ed6385cdc734478685e49666e01ea49b"
	extendActionID = "cd738adc-e886-4896-b229-9d873dad76c7" // the request id of Nova's extend_volume action
	fixedTime      = "2026-12-06T03:00:00"
)

// exchange is one request the recorder saw and its answer.
type exchange struct {
	step, method, path string
	query              url.Values
	status             int
	body               []byte
}

// recorder is an http.RoundTripper on the provider client: every answer
// Nova, Cinder, Neutron (and Glance, Keystone) gave, tagged with the step
// of the recording that asked.
type recorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	step string
	log  []exchange
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return resp, err
	}
	r.mu.Lock()
	r.log = append(r.log, exchange{step: r.step, method: req.Method, path: req.URL.Path, query: req.URL.Query(), status: resp.StatusCode, body: body})
	r.mu.Unlock()
	return resp, nil
}

func (r *recorder) in(step string) {
	r.mu.Lock()
	r.step = step
	r.mu.Unlock()
}

// find is the first answer of step to method on a path matching pathRE
// (anchored at its end) for which want holds (nil: any).
func (r *recorder) find(step, method, pathRE string, want func(status int, body map[string]any) bool) (exchange, bool) {
	re := regexp.MustCompile(pathRE + "$")
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.log {
		if x.step != step || x.method != method || !re.MatchString(x.path) {
			continue
		}
		var body map[string]any
		json.Unmarshal(x.body, &body)
		if want == nil || want(x.status, body) {
			return x, true
		}
	}
	return exchange{}, false
}

// status tells a server's or volume's status in an answer.
func status(kind, want string) func(int, map[string]any) bool {
	return func(_ int, b map[string]any) bool {
		m, _ := b[kind].(map[string]any)
		return m != nil && m["status"] == want
	}
}

// normalizer replaces what differs from one tier to the next — ids,
// timestamps, ports, addresses — with fixed values, so that a re-run
// changes only what the services really answered differently.
type normalizer struct {
	ids      map[string]string // real → fixed, given by the recording
	auto     map[string]string // real → generated, in order of first sight
	ports    map[string]string // 127.0.0.1:PORT → 127.0.0.1:fixed port
	subnets  map[string]string // real prefix "a.b.c." → fixed prefix
	addrs    map[string]string
	nextAddr map[string]int
	macs     int
}

var (
	uuidRE  = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	hex32RE = regexp.MustCompile(`\b[0-9a-f]{32}\b|\b[0-9a-f]{56}\b`)
	timeRE  = regexp.MustCompile(`\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?`)
	macRE   = regexp.MustCompile(`fa:16:3e(:[0-9a-f]{2}){3}`)
	portRE  = regexp.MustCompile(`127\.0\.0\.1:\d+`)
	nameRE  = regexp.MustCompile(`instance-[0-9a-f]{8}`)
	resvRE  = regexp.MustCompile(`"r-[0-9a-z]{8}"`)
	passRE  = regexp.MustCompile(`"adminPass": *"[^"]*"`)
	attrRE  = regexp.MustCompile(`"standard_attr_id": *\d+`)                        // Neutron's row counter
	hyperRE = regexp.MustCompile(`"OS-EXT-SRV-ATTR:hypervisor_hostname": *"[^"]*"`) // the machine's host name
)

func (n *normalizer) id(real, fixed string) {
	if real != "" {
		n.ids[real] = fixed
	}
}

func (n *normalizer) generated(real string) string {
	if f, ok := n.ids[real]; ok {
		return f
	}
	if f, ok := n.auto[real]; ok {
		return f
	}
	var f string
	switch len(real) {
	case 36:
		f = fmt.Sprintf("00000000-0000-4000-8000-%012d", len(n.auto)+1)
	default:
		f = fmt.Sprintf("%0*d", len(real), len(n.auto)+1)
	}
	n.auto[real] = f
	return f
}

func (n *normalizer) addr(prefix, last string) string {
	fixed := n.subnets[prefix]
	if last == "0" || last == "1" || last == "255" {
		return fixed + last
	}
	k := prefix + last
	if a, ok := n.addrs[k]; ok {
		return a
	}
	n.nextAddr[prefix]++
	a := fmt.Sprintf("%s%d", fixed, 9+n.nextAddr[prefix])
	n.addrs[k] = a
	return a
}

// listOrder sorts the lists whose order follows the tier's random ids
// (Neutron answers in the order of its primary keys) by what stays.
var listOrder = map[string][]string{
	"networks":             {"name"},
	"security_group_rules": {"direction", "ethertype", "protocol", "port_range_min"},
	"availabilityZoneInfo": {"zoneName"},
}

func sortLists(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if keys, ok := listOrder[k]; ok {
				if l, ok := x.([]any); ok {
					sort.SliceStable(l, func(i, j int) bool {
						a, _ := l[i].(map[string]any)
						b, _ := l[j].(map[string]any)
						for _, k := range keys {
							if fa, fb := fmt.Sprint(a[k]), fmt.Sprint(b[k]); fa != fb {
								return fa < fb
							}
						}
						return false
					})
				}
			}
			sortLists(x)
		}
	case []any:
		for _, x := range v {
			sortLists(x)
		}
	}
}

func (n *normalizer) normalize(body []byte) ([]byte, error) {
	var parsed any
	d0 := json.NewDecoder(bytes.NewReader(body))
	d0.UseNumber()
	if err := d0.Decode(&parsed); err != nil {
		return nil, err
	}
	sortLists(parsed)
	sorted, err := json.Marshal(parsed)
	if err != nil {
		return nil, err
	}
	s := string(sorted)
	s = uuidRE.ReplaceAllStringFunc(s, n.generated)
	s = hex32RE.ReplaceAllStringFunc(s, n.generated)
	s = timeRE.ReplaceAllStringFunc(s, func(t string) string {
		m := timeRE.FindStringSubmatch(t)
		out := fixedTime
		if m[1] != "" {
			out += "." + strings.Repeat("0", len(m[1])-1)
		}
		return out + m[2]
	})
	s = macRE.ReplaceAllStringFunc(s, func(m string) string {
		if f, ok := n.auto[m]; ok {
			return f
		}
		n.macs++
		f := fmt.Sprintf("fa:16:3e:00:00:%02x", n.macs)
		n.auto[m] = f
		return f
	})
	s = portRE.ReplaceAllStringFunc(s, func(p string) string {
		if f, ok := n.ports[p]; ok {
			return f
		}
		return "127.0.0.1:1"
	})
	for prefix := range n.subnets {
		re := regexp.MustCompile(regexp.QuoteMeta(prefix) + `(\d+)\b`)
		s = re.ReplaceAllStringFunc(s, func(a string) string { return n.addr(prefix, strings.TrimPrefix(a, prefix)) })
	}
	s = nameRE.ReplaceAllString(s, "instance-00000001")
	s = resvRE.ReplaceAllString(s, `"r-00000000"`)
	s = passRE.ReplaceAllString(s, `"adminPass": "recorded0000"`)
	s = attrRE.ReplaceAllString(s, `"standard_attr_id":1`)
	s = hyperRE.ReplaceAllString(s, `"OS-EXT-SRV-ATTR:hypervisor_hostname":"compute-host"`)

	// Re-encoded: keys sorted, four spaces, numbers as they were.
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	e := json.NewEncoder(&out)
	e.SetEscapeHTML(false)
	e.SetIndent("", "    ")
	if err := e.Encode(v); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// recorded is one fixture: where it came from in the recording.
type recorded struct {
	file, step, method, path string
	want                     func(int, map[string]any) bool
}

// derived is a fixture made of a recorded answer without the key drop of
// its object in.
type derived struct {
	file, step, method, path string
	want                     func(int, map[string]any) bool
	in, drop                 string
}

// TestRecordFixtures drives the compute tier (ci/openstack/compute-start.sh)
// through the requests the driver makes, in the situations the unit tests
// replay, and writes each answer to testdata/ with the tier's ids,
// timestamps, ports and addresses replaced by fixed ones. Only with
// STRATA_RECORD_FIXTURES=1 (make record-nova-fixtures); then a tier that
// cannot be started or reached is a failure, not a skip.
func TestRecordFixtures(t *testing.T) {
	if os.Getenv(RecordEnv) != "1" {
		t.Skipf("re-records testdata/ from the compute tier: %s=1 (make record-nova-fixtures)", RecordEnv)
	}
	t.Setenv(ostest.ComputeEnv, "1") // asked for: SharedCompute must not skip
	t0 := time.Now()
	s, tier := ostest.SharedCompute(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	rec := &recorder{next: http.DefaultTransport}
	cl, err := s.ClientsVia(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	pc, cc, nc, ic, vc := cl.Provider, cl.Compute, cl.Network, cl.Image, cl.Volume
	d, err := Connect(pc, "RegionOne", Config{Network: tier.NetworkID, Poll: 100 * time.Millisecond, Timeout: 4 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	norm := &normalizer{ids: map[string]string{}, auto: map[string]string{}, ports: map[string]string{},
		subnets: map[string]string{}, addrs: map[string]string{}, nextAddr: map[string]int{}}
	norm.id(tier.NetworkID, networkID)
	norm.id(tier.SubnetID, "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d")
	norm.subnets[strings.TrimSuffix(tier.GuestCIDR, "0/24")] = "10.213.0."
	for _, ep := range []struct{ url, fixed string }{{cc.Endpoint, "8774"}, {vc.Endpoint, "8776"}, {nc.Endpoint, "9696"}, {ic.Endpoint, "9292"}, {pc.IdentityEndpoint, "5000"}} {
		if u, err := url.Parse(ep.url); err == nil {
			norm.ports[u.Host] = "127.0.0.1:" + ep.fixed
		}
	}
	for _, id := range []string{instanceID, volumeID, serverID, sgID, imageID, networkID, dbNetID, portID, busyPortID, groupID} {
		norm.id(id, id) // a fixed id in a request (a name, metadata) stays
	}
	// Registered first: it runs after every other cleanup, on a failure
	// too. Nothing the recording made may be left behind.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		left, err := ostest.Inventory(ctx, cc, nc, vc)
		if err != nil {
			t.Errorf("inventory: %v", err)
		}
		if len(left) > 0 {
			t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
		}
	})
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	cleanup := func(what string, f func() error) {
		t.Cleanup(func() {
			if err := f(); err != nil && !gophercloud.ResponseCodeIs(err, 404) {
				t.Errorf("cleanup, %s: %v", what, err)
			}
		})
	}
	bg := context.Background()

	// ---- The situation: flavors as the tests know them, an image with
	// no OS, a second network with a free port.
	rec.in("setup")
	for _, f := range []struct {
		id, name         string
		ram, vcpus, disk int
	}{{"1", "m1.tiny", 512, 1, 1}, {"c1", "ds1G", 1024, 1, 10}, {"2", "m1.small", 2048, 1, 20}, {"3", "m1.medium", 4096, 2, 40}} {
		disk := f.disk
		fl, err := flavors.Create(ctx, cc, flavors.CreateOpts{ID: f.id, Name: f.name, RAM: f.ram, VCPUs: f.vcpus, Disk: &disk}).Extract()
		must("flavor "+f.name, err)
		cleanup("flavor "+fl.ID, func() error { return flavors.Delete(bg, cc, fl.ID).ExtractErr() })
	}
	image := func(name, size string) *images.Image {
		p := filepath.Join(t.TempDir(), name+".qcow2")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, size).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v: %s", err, out)
		}
		data, err := os.ReadFile(p)
		must("reading "+p, err)
		img, err := images.Create(ctx, ic, images.CreateOpts{Name: name, DiskFormat: "qcow2", ContainerFormat: "bare"}).Extract()
		must("image "+name, err)
		cleanup("image "+img.ID, func() error { return images.Delete(bg, ic, img.ID).ExtractErr() })
		must("uploading "+name, imagedata.Upload(ctx, ic, img.ID, bytes.NewReader(data)).ExtractErr())
		norm.id(img.ID, imageID)
		return img
	}
	img := image("strata-fixture-empty", "64M")
	var netOut struct {
		Network struct {
			ID string `json:"id"`
		} `json:"network"`
	}
	_, err = nc.Post(ctx, nc.ServiceURL("networks"), map[string]any{"network": map[string]any{"name": "db-net", "shared": true,
		"provider:network_type": "flat", "provider:physical_network": "physnet2"}}, &netOut, nil)
	must("network db-net (physnet2, wired to nothing)", err)
	dbNet := netOut.Network.ID
	cleanup("network db-net", func() error { _, err := nc.Delete(bg, nc.ServiceURL("networks", dbNet), nil); return err })
	norm.id(dbNet, dbNetID)
	norm.subnets["10.20.0."] = "10.20.0."
	var subOut struct {
		Subnet struct {
			ID string `json:"id"`
		} `json:"subnet"`
	}
	_, err = nc.Post(ctx, nc.ServiceURL("subnets"), map[string]any{"subnet": map[string]any{"name": "db-net", "network_id": dbNet, "ip_version": 4,
		"cidr": "10.20.0.0/24", "enable_dhcp": false, "allocation_pools": []map[string]string{{"start": "10.20.0.10", "end": "10.20.0.250"}}}}, &subOut, nil)
	must("subnet of db-net", err)
	norm.id(subOut.Subnet.ID, "c9d8e7f6-a5b4-4c3d-9e2f-1a0b9c8d7e6f")
	port, err := ports.Create(ctx, nc, ports.CreateOpts{NetworkID: dbNet, Name: "db1-port"}).Extract()
	must("port db1-port", err)
	cleanup("port db1-port", func() error { return ports.Delete(bg, nc, port.ID).ExtractErr() })
	norm.id(port.ID, portID)

	// ---- Neutron: the networks, a port, what is not there.
	rec.in("nics")
	_, err = d.Networks(ctx)
	must("Networks", err)
	_, err = d.ResolveNICs(ctx, []compute.NIC{{NetworkID: dbNet}, {PortID: port.ID}})
	must("ResolveNICs", err)
	const unknownNet, unknownPort = "0b0b0b0b-0000-4000-8000-000000000000", "0c0c0c0c-0000-4000-8000-000000000000"
	norm.id(unknownNet, unknownNet)
	norm.id(unknownPort, unknownPort)
	if _, err := d.ResolveNICs(ctx, []compute.NIC{{NetworkID: unknownNet}}); err == nil {
		t.Fatal("an unknown network was resolved")
	}
	if _, err := d.ResolveNICs(ctx, []compute.NIC{{PortID: unknownPort}}); err == nil {
		t.Fatal("an unknown port was resolved")
	}

	// ---- A whole create: volume, security group, server to ACTIVE.
	rec.in("create")
	vol, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: instanceID, Name: "db1", SizeGB: 2})
	must("CreateVolume", err)
	norm.id(vol.ID, volumeID)
	spec := serverSpec(vol)
	spec.Image = compute.ImageRef{ID: img.ID, Location: img.ID, Format: "qcow2"}
	srv, err := d.CreateServer(ctx, spec)
	must("CreateServer", err)
	norm.id(srv.ID, serverID)
	norm.id(srv.Refs["security_group"], sgID)
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			d.DeleteServer(bg, srv)
			d.DeleteVolume(bg, vol)
		}
	})

	// ---- Its port is in use, once the agent has wired it (ACTIVE: the
	// settled state; DOWN before is a matter of timing).
	var pl []ports.Port
	for i := 0; ; i++ {
		pp, err := ports.List(nc, ports.ListOpts{DeviceID: srv.ID}).AllPages(ctx)
		must("the server's ports", err)
		pl, _ = ports.ExtractPorts(pp)
		if len(pl) == 1 && pl[0].Status == "ACTIVE" {
			break
		}
		if i > 600 {
			t.Fatalf("the server's ports: %+v, want one ACTIVE", pl)
		}
		time.Sleep(100 * time.Millisecond)
	}
	rec.in("busy")
	norm.id(pl[0].ID, busyPortID)
	if _, err := d.ResolveNICs(ctx, []compute.NIC{{PortID: pl[0].ID}}); err == nil {
		t.Fatal("a port in use was resolved")
	}

	// ---- The data volume grown online.
	rec.in("extend")
	if _, err := d.ExtendVolume(ctx, srv, vol, 5); err != nil {
		t.Fatalf("ExtendVolume: %v", err)
	}
	if x, ok := rec.find("extend", "GET", `/os-instance-actions/req-`+uuidRE.String(), nil); ok {
		var a struct {
			A struct {
				RequestID string `json:"request_id"`
			} `json:"instanceAction"`
		}
		json.Unmarshal(x.body, &a)
		norm.id(strings.TrimPrefix(a.A.RequestID, "req-"), extendActionID)
	}

	// ---- Stopped (os-stop), then started again by the driver.
	rec.in("stop")
	must("os-stop", servers.Stop(ctx, cc, srv.ID).ExtractErr())
	for i := 0; ; i++ {
		cur, err := servers.Get(ctx, cc, srv.ID).Extract()
		must("server", err)
		if cur.Status == "SHUTOFF" {
			break
		}
		if i > 600 {
			t.Fatalf("server %s not SHUTOFF after os-stop: %s", srv.ID, cur.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	must("StartServer", d.StartServer(ctx, srv))
	rec.in("delete")
	must("DeleteServer", d.DeleteServer(ctx, srv))

	// ---- Nova refuses: an image Glance no longer has; an image larger
	// than every flavor's disk (the build aborted on the compute host).
	rec.in("image-missing")
	gone := image("strata-fixture-gone", "64M")
	must("deleting the image", images.Delete(ctx, ic, gone.ID).ExtractErr())
	spec.Image = compute.ImageRef{ID: gone.ID, Location: gone.ID, Format: "qcow2"}
	if _, err := d.CreateServer(ctx, spec); err == nil {
		t.Fatal("a server from a deleted image was created")
	}
	rec.in("aborted")
	big := image("strata-fixture-big", "50G")
	spec.Image = compute.ImageRef{ID: big.ID, Location: big.ID, Format: "qcow2"}
	if _, err := d.CreateServer(ctx, spec); err == nil {
		t.Fatal("a server from an image larger than every flavor's disk was created")
	}
	if x, ok := rec.find("aborted", "POST", `/servers`, nil); ok {
		var b map[string]map[string]any
		json.Unmarshal(x.body, &b)
		id, _ := b["server"]["id"].(string)
		norm.id(id, serverID)
	}

	// ---- A server group (Trove's locality): made, then found empty and
	// deleted, then gone.
	rec.in("groups")
	gid, err := d.serverGroup(ctx, compute.ServerGroup{Key: instanceID, Policy: compute.LocalityAntiAffinity})
	must("server group", err)
	norm.id(gid, groupID)
	cleanup("server group", func() error { return servergroups.Delete(bg, cc, gid).ExtractErr() })
	if gone, err := d.dropEmptyGroup(ctx, gid); err != nil || !gone {
		t.Fatalf("dropping the empty server group: %v, %v", gone, err)
	}
	if gone, err := d.dropEmptyGroup(ctx, gid); err != nil || !gone {
		t.Fatalf("dropping the server group again: %v, %v", gone, err)
	}

	// ---- Availability zones: the compute host in aggregate az-db, its
	// nova-compute service up; then disabled (the zone is not available,
	// and the scheduler finds no valid host).
	rec.in("zones")
	sc := *cc
	sc.Microversion = "2.53" // services by uuid
	sp, err := services.List(&sc, services.ListOpts{Binary: "nova-compute"}).AllPages(ctx)
	must("nova-compute services", err)
	svcs, _ := services.ExtractServices(sp)
	if len(svcs) != 1 {
		t.Fatalf("%d nova-compute services, want 1", len(svcs))
	}
	ag, err := aggregates.Create(ctx, cc, aggregates.CreateOpts{Name: "az-db", AvailabilityZone: "az-db"}).Extract()
	must("aggregate az-db", err)
	cleanup("aggregate az-db", func() error { return aggregates.Delete(bg, cc, ag.ID).ExtractErr() })
	_, err = aggregates.AddHost(ctx, cc, ag.ID, aggregates.AddHostOpts{Host: svcs[0].Host}).Extract()
	must("the compute host into az-db", err)
	cleanup("the compute host out of az-db", func() error {
		_, err := aggregates.RemoveHost(bg, cc, ag.ID, aggregates.RemoveHostOpts{Host: svcs[0].Host}).Extract()
		return err
	})
	must("zone az-db", d.CheckAvailabilityZone(ctx, "az-db"))
	_, err = services.Update(ctx, &sc, svcs[0].ID, services.UpdateOpts{Status: services.ServiceDisabled}).Extract()
	must("disabling nova-compute", err)
	cleanup("enabling nova-compute", func() error {
		_, err := services.Update(bg, &sc, svcs[0].ID, services.UpdateOpts{Status: services.ServiceEnabled}).Extract()
		return err
	})
	rec.in("zones-down")
	if err := d.CheckAvailabilityZone(ctx, "az-db"); err == nil {
		t.Fatal("zone az-db is available with its only host disabled")
	}
	rec.in("no-host")
	spec.Image = compute.ImageRef{ID: img.ID, Location: img.ID, Format: "qcow2"}
	if _, err := d.CreateServer(ctx, spec); err == nil {
		t.Fatal("a server was created with the only compute service disabled")
	}
	if x, ok := rec.find("no-host", "POST", `/servers`, nil); ok {
		var b map[string]map[string]any
		json.Unmarshal(x.body, &b)
		id, _ := b["server"]["id"].(string)
		norm.id(id, serverID)
	}
	_, err = services.Update(ctx, &sc, svcs[0].ID, services.UpdateOpts{Status: services.ServiceEnabled}).Extract()
	must("enabling nova-compute", err)

	// ---- Cinder: a volume no backend can hold (the share is an 8 GB
	// tmpfs, thin, over-subscription 20×: 160 GB; Cinder's default quota is
	// 1000 GB).
	rec.in("volume-delete")
	must("DeleteVolume", d.DeleteVolume(ctx, vol))
	deleted = true
	rec.in("volume-error")
	if _, err := d.CreateVolume(ctx, compute.VolumeSpec{InstanceID: instanceID, Name: "db1", SizeGB: 200}); err == nil {
		t.Fatal("a 200 GB volume was created")
	} else {
		t.Logf("a volume beyond the backend's capacity: %v", err)
	}
	if x, ok := rec.find("volume-error", "POST", `/volumes`, nil); ok {
		var b map[string]map[string]any
		json.Unmarshal(x.body, &b)
		id, _ := b["volume"]["id"].(string)
		norm.id(id, volumeID)
	}

	// The project and user: from the first server the recording made.
	if x, ok := rec.find("create", "GET", `/servers/`+uuidRE.String(), nil); ok {
		var b map[string]map[string]any
		json.Unmarshal(x.body, &b)
		p, _ := b["server"]["tenant_id"].(string)
		u, _ := b["server"]["user_id"].(string)
		norm.id(p, projectID)
		norm.id(u, userID)
	}

	uuid := uuidRE.String()
	for _, f := range []recorded{
		{"networks.json", "nics", "GET", `/v2.0/networks`, nil},
		{"network_show.json", "nics", "GET", `/v2.0/networks/` + uuid, func(c int, _ map[string]any) bool { return c == 200 }},
		{"port_show.json", "nics", "GET", `/v2.0/ports/` + uuid, func(c int, _ map[string]any) bool { return c == 200 }},
		{"not_found.json", "nics", "GET", `/v2.0/networks/` + uuid, func(c int, _ map[string]any) bool { return c == 404 }},
		{"port_not_found.json", "nics", "GET", `/v2.0/ports/` + uuid, func(c int, _ map[string]any) bool { return c == 404 }},
		{"volumes_none.json", "create", "GET", `/volumes/detail`, nil},
		{"volume_creating.json", "create", "POST", `/volumes`, nil},
		{"volume_available.json", "create", "GET", `/volumes/` + uuid, status("volume", "available")},
		{"servers_none.json", "create", "GET", `/servers/detail`, nil},
		{"secgroups_none.json", "create", "GET", `/v2.0/security-groups`, nil},
		{"secgroup_created.json", "create", "POST", `/v2.0/security-groups`, nil},
		{"secgroup_rule_created.json", "create", "POST", `/v2.0/security-group-rules`, nil},
		{"flavors.json", "create", "GET", `/flavors/detail`, nil},
		{"server_created.json", "create", "POST", `/servers`, nil},
		{"server_build.json", "create", "GET", `/servers/` + uuid, status("server", "BUILD")},
		{"server_active.json", "create", "GET", `/servers/` + uuid, status("server", "ACTIVE")},
		{"port_in_use.json", "busy", "GET", `/v2.0/ports/` + uuid, nil},
		{"volume_in_use.json", "extend", "GET", `/volumes/` + uuid, status("volume", "in-use")},
		{"volume_extended.json", "extend", "GET", `/volumes/` + uuid, func(_ int, b map[string]any) bool {
			m, _ := b["volume"].(map[string]any)
			return m != nil && m["status"] == "in-use" && fmt.Sprint(m["size"]) == "5"
		}},
		{"server_actions_attached.json", "extend", "GET", `/os-instance-actions`, nil},
		{"server_actions_extended.json", "extend", "GET", `/os-instance-actions`, func(_ int, b map[string]any) bool {
			l, _ := b["instanceActions"].([]any)
			for _, a := range l {
				if m, _ := a.(map[string]any); m["action"] == "extend_volume" {
					return true
				}
			}
			return false
		}},
		{"server_action_extend_volume.json", "extend", "GET", `/os-instance-actions/req-` + uuid, func(_ int, b map[string]any) bool {
			m, _ := b["instanceAction"].(map[string]any)
			ev, _ := m["events"].([]any)
			for _, e := range ev {
				if e, _ := e.(map[string]any); e["finish_time"] == nil {
					return false
				}
			}
			return len(ev) > 0
		}},
		{"server_shutoff.json", "stop", "GET", `/servers/` + uuid, status("server", "SHUTOFF")},
		{"server_create_image_missing.json", "image-missing", "POST", `/servers`, func(c int, _ map[string]any) bool { return c == 400 }},
		{"server_error_aborted.json", "aborted", "GET", `/servers/` + uuid, status("server", "ERROR")},
		{"server_group_created.json", "groups", "POST", `/os-server-groups`, nil},
		{"server_group_not_found.json", "groups", "GET", `/os-server-groups/` + uuid, func(c int, _ map[string]any) bool { return c == 404 }},
		{"availability_zones.json", "zones", "GET", `/os-availability-zone`, nil},
		{"availability_zones_down.json", "zones-down", "GET", `/os-availability-zone`, nil},
		{"server_error.json", "no-host", "GET", `/servers/` + uuid, status("server", "ERROR")},
		{"volume_error.json", "volume-error", "GET", `/volumes/` + uuid, status("volume", "error")},
		{"volume_messages_error.json", "volume-error", "GET", `/messages`, nil},
	} {
		x, ok := rec.find(f.step, f.method, f.path, f.want)
		if !ok {
			t.Errorf("%s: no answer to %s %s in step %s", f.file, f.method, f.path, f.step)
			continue
		}
		out, err := norm.normalize(x.body)
		if err != nil {
			t.Errorf("%s: %v", f.file, err)
			continue
		}
		if err := os.WriteFile(filepath.Join("testdata", f.file), out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s %s (%d, step %s)", f.file, f.method, x.path, x.status, f.step)
	}
	// Derived: a recorded answer with one key dropped, for a state the
	// tier shows too briefly to catch by polling.
	for _, f := range []derived{
		// Nova's conductor sets ERROR before it records the fault
		// (milliseconds apart on this tier).
		{"server_error_no_fault.json", "no-host", "GET", `/servers/` + uuid, status("server", "ERROR"), "server", "fault"},
	} {
		x, ok := rec.find(f.step, f.method, f.path, f.want)
		if !ok {
			t.Errorf("%s: no answer to %s %s in step %s", f.file, f.method, f.path, f.step)
			continue
		}
		var body map[string]map[string]any
		if err := json.Unmarshal(x.body, &body); err != nil || body[f.in] == nil {
			t.Errorf("%s: %v (%s)", f.file, err, x.body)
			continue
		}
		delete(body[f.in], f.drop)
		raw, _ := json.Marshal(body)
		out, err := norm.normalize(raw)
		if err != nil {
			t.Errorf("%s: %v", f.file, err)
			continue
		}
		if err := os.WriteFile(filepath.Join("testdata", f.file), out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s %s (%d, step %s) without %s.%s", f.file, f.method, x.path, x.status, f.step, f.in, f.drop)
	}
	t.Logf("recorded in %.1f s (compute tier ready in %.1f s of it)", time.Since(t0).Seconds(), tier.Seconds)
}

//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"strata/ci/openstack/ostest"
)

// TestMariaDBInstanceOnRealNova is issue 20's end to end on the real
// guest image: the MariaDB image `make image` built is published to the
// private OpenStack's Glance (ci/openstack/start.sh) and registered with
// a `strata controller serve` in OpenStack mode on the compute tier
// (compute-start.sh: Nova, Cinder, Neutron): --compute nova on the flat
// network, its agent endpoint on the host's address on that network and
// advertised there. An instance created through the Trove API (the real
// `openstack database instance create`, troveclient) with a database and
// a user boots under Nova (TCG), its agent reads the
// bootstrap and its static address from the config drive and enrols —
// the controller killed (SIGKILL) while Nova builds the server and started
// again resumes the create with no second server or volume — the
// instance goes ACTIVE, the host's mariadb client writes and reads at the
// address the API shows, and delete leaves no server, volume, port or
// security group.
//
// Opt-in like the compute tier's other tests (STRATA_OPENSTACK_COMPUTE=1,
// root, `ci/deps.sh openstack nova`; STRATA_OPENSTACK_STATE reuses a
// running stack); `make e2e-nova` sets it up and runs it.
func TestMariaDBInstanceOnRealNova(t *testing.T) {
	if os.Getenv(ostest.ComputeEnv) != "1" {
		t.Skipf("the compute tier is opt-in: %s=1 (needs root and ci/deps.sh openstack nova; make e2e-nova)", ostest.ComputeEnv)
	}
	// Asked for: what is missing fails the test, before the stack starts.
	for _, tool := range []string{"mariadb", "openstack"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install the test dependencies with `ci/deps.sh test` (or `make e2e-nova`)", tool)
		}
	}
	image := os.Getenv("STRATA_MARIADB_IMAGE")
	if image == "" {
		image = filepath.Join(repo, "out", "mariadb-10.11.qcow2")
	}
	if _, err := os.Stat(image); err != nil {
		t.Fatalf("the MariaDB image is not built (%v): run `make image` first (make e2e-nova does)", err)
	}
	s, c := ostest.SharedCompute(t)
	t.Logf("FIGURE stack started in %.1f s, compute tier in %.1f s (0: already running)", s.Seconds, c.Seconds)
	if c.HostAddress == "" || c.NetworkID == "" || c.GuestCIDR == "" {
		t.Fatalf("compute.env lacks HOST_ADDRESS, NETWORK_ID or GUEST_CIDR: %+v", c)
	}
	guests, err := netip.ParsePrefix(c.GuestCIDR)
	if err != nil {
		t.Fatalf("GUEST_CIDR: %v", err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	cl, err := s.Clients(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Registered first: runs after every other cleanup, on a failure too.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		left, err := cl.Leftovers(ctx)
		if err != nil {
			t.Errorf("inventory: %v", err)
		} else if len(left) > 0 {
			t.Errorf("left behind at the end:\n%s", strings.Join(left, "\n"))
		}
	})

	// The Nova flavor the driver picks for strata.small (1024 MB, one
	// vCPU); its root disk holds the image's 2 GiB.
	disk := 3
	fl, err := flavors.Create(ctx, cl.Compute, flavors.CreateOpts{Name: "strata-e2e-small", RAM: 1024, VCPUs: 1, Disk: &disk}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { flavors.Delete(context.Background(), cl.Compute, fl.ID) })

	// The controller, a real process in OpenStack mode. Its agent
	// endpoint listens only on the host's address on the guests' network,
	// the address the bootstrap tells the agent to dial.
	state := t.TempDir()
	listen := freePort(t)
	agent := freePortOn(t, c.HostAddress)
	logPath := filepath.Join(state, "controller.log")
	var cmd *exec.Cmd
	var done chan struct{}
	startCtl := func() {
		t.Helper()
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(strata, "controller", "serve", "--state-dir", state, "--listen", listen,
			"--agent-listen", agent, "--agent-advertise", agent,
			"--keystone-url", s.KeystoneURL, "--keystone-user", "admin", "--keystone-project", "admin",
			"--image-store", "glance", "--compute", "nova", "--nova-network", c.NetworkID)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "STRATA_KEYSTONE_PASSWORD="+s.Password)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		d, proc := make(chan struct{}), cmd
		done = d
		go func() { proc.Wait(); logf.Close(); close(d) }()
	}
	startCtl()
	ctlLog := func() string { data, _ := os.ReadFile(logPath); return string(data) }
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(90 * time.Second):
			t.Errorf("controller did not stop within 90 s of SIGTERM; killing it")
			cmd.Process.Kill()
			<-done
		}
	})
	url := "http://" + listen
	apiUp := func() {
		t.Helper()
		waitTrue(t, "the controller's API", 60*time.Second, func() bool {
			resp, err := http.Get(url + "/")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil && resp.StatusCode == 200
		})
	}
	apiUp()

	// Publish the image to this Glance and register it with the controller.
	pub := exec.Command(strata, "image", "publish", "images/mariadb-10.11.yaml", "--image", image,
		"--os-cloud", ostest.Cloud, "--controller-url", url)
	pub.Dir = repo
	pub.Env = append(os.Environ(), "OS_CLIENT_CONFIG_FILE="+s.CloudsYAML)
	t0 := time.Now()
	out, err := pub.CombinedOutput()
	if err != nil {
		t.Fatalf("strata image publish: %v\n%s\n--- controller:\n%s", err, out, tail(ctlLog(), 40))
	}
	t.Logf("FIGURE publish (into Glance, registered in the controller): %.1f s\n%s", time.Since(t0).Seconds(), tail(string(out), 12))

	api := &apiClient{base: url, token: cl.Provider.Token(), project: s.ProjectID, http: &http.Client{Timeout: 2 * time.Minute}}

	// The real troveclient (`openstack database ...`) with the Keystone
	// token, pointed at the controller: the catalog's database service is
	// this stack's Trove, so the endpoint is given (admin_token: a token
	// and an endpoint, no catalog).
	osc := &oscRunner{env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"OS_AUTH_TYPE=admin_token", "OS_TOKEN=" + cl.Provider.Token(), "OS_ENDPOINT=" + url + "/v1.0/" + s.ProjectID}}
	created := time.Now()
	var in map[string]any
	osc.json(t, &in, "database", "instance", "create", "nova-db", "--flavor", "strata.small", "--size", "1",
		"--datastore", "mariadb", "--datastore-version", "10.11", "--users", "shopper:shopper-pw-1", "--databases", "shop")
	id, _ := in["id"].(string)
	if id == "" {
		t.Fatalf("openstack database instance create: no id in %v", in)
	}
	deleted := false
	t.Cleanup(func() {
		if deleted {
			return
		}
		// A failed test still deletes its instance, so the inventory
		// judges what delete leaves.
		if code, _ := api.do(t, "DELETE", "/instances/"+id, nil); code == 202 {
			deadline := time.Now().Add(10 * time.Minute)
			for time.Now().Before(deadline) {
				if code, _ := api.do(t, "GET", "/instances/"+id, nil); code == 404 {
					break
				}
				time.Sleep(2 * time.Second)
			}
		}
	})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("--- controller log (tail):\n%s", tail(ctlLog(), 60))
		for _, svc := range []string{"nova-compute", "nova-conductor", "neutron-linuxbridge-agent"} {
			t.Logf("--- %s (tail):\n%s", svc, s.ComputeLog(svc))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		pages, err := servers.List(cl.Compute, servers.ListOpts{AllTenants: true}).AllPages(ctx)
		if err != nil {
			t.Logf("listing servers: %v", err)
			return
		}
		sl, _ := servers.ExtractServers(pages)
		for _, srv := range sl {
			t.Logf("--- server %s %s %s, addresses %v, console (tail):\n%s", srv.ID, srv.Name, srv.Status, srv.Addresses, s.Console(srv.ID))
		}
	})

	// The controller is killed (SIGKILL: no clean-up of its own) while
	// Nova builds the instance's server. The guest goes on booting; the
	// controller started again resumes the create task, finds the server
	// and volume the first one made, and makes no second one.
	named := func() (srvs, vols int) {
		t.Helper()
		sp, err := servers.List(cl.Compute, servers.ListOpts{AllTenants: true}).AllPages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sl, _ := servers.ExtractServers(sp)
		for _, x := range sl {
			if x.Name == "strata-"+id {
				srvs++
			}
		}
		vp, err := volumes.List(cl.Volume, volumes.ListOpts{AllTenants: true}).AllPages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		vl, _ := volumes.ExtractVolumes(vp)
		for _, x := range vl {
			if x.Name == "strata-"+id {
				vols++
			}
		}
		return srvs, vols
	}
	waitTrue(t, "Nova to have the instance's server", 10*time.Minute, func() bool { n, _ := named(); return n > 0 })
	killedAt := time.Since(created)
	if st := api.instance(t, id)["status"]; st != "BUILD" {
		t.Fatalf("the instance is %v when its server appears in Nova; the kill below would test no resume", st)
	}
	cmd.Process.Kill()
	<-done
	startCtl()
	apiUp()
	t.Logf("FIGURE controller killed %.1f s after the create request (its server building in Nova), started again", killedAt.Seconds())

	in = api.waitStatus(t, id, "ACTIVE", 15*time.Minute)
	toActive := time.Since(created)
	t.Logf("FIGURE create→ACTIVE on Nova, across the controller's kill and restart: %.1f s (steps: %s)", toActive.Seconds(), createSteps(ctlLog(), id))
	if srvs, vols := named(); srvs != 1 || vols != 1 {
		t.Fatalf("after the resumed create Nova has %d servers and Cinder %d volumes named strata-%s, want one of each", srvs, vols, id)
	}
	if n := countRows(t, state, "SELECT COUNT(*) FROM agent_keys WHERE instance_id = ?", id); n != 1 {
		t.Fatalf("%d enrolled agent keys, want 1", n)
	}

	// The address the API shows: a fixed address of the flat network, on
	// the datastore's standard port, reached from the host on-link.
	host := ""
	if ips, _ := in["ip"].([]any); len(ips) == 1 {
		host, _ = ips[0].(string)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || !guests.Contains(addr) || in["port"] != 3306.0 {
		t.Fatalf("instance address %q port %v, want the standard port 3306 on an address of %s: %v", host, in["port"], c.GuestCIDR, in)
	}
	db := mariadbClient{endpoint{host: host, port: 3306}}
	db.must(t, "shopper", "shopper-pw-1", "shop", "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(40)); INSERT INTO orders (item) VALUES ('tea'), ('cake')")
	if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT GROUP_CONCAT(item ORDER BY id) FROM orders"); got != "tea,cake" {
		t.Fatalf("read back %q, want tea,cake", got)
	}
	if _, err := db.query("shopper", "wrong-password", "shop", "SELECT 1"); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	t.Logf("the mariadb client wrote and read at %s:3306", host)
	if pid := cmd.Process.Pid; pid > 0 {
		t.Logf("FIGURE controller RSS with one Nova instance: %.1f MiB", rssMiB(t, pid))
	}

	// A flavor resize through the API (troveclient's `instance resize
	// flavor`): Nova resizes the server to its flavor for strata.medium
	// (2048 MB, 2 vCPUs), the guest boots on it and the database runs with
	// that flavor's settings; the data is kept.
	disk2 := 3
	fl2, err := flavors.Create(ctx, cl.Compute, flavors.CreateOpts{Name: "strata-e2e-medium", RAM: 2048, VCPUs: 2, Disk: &disk2}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { flavors.Delete(context.Background(), cl.Compute, fl2.ID) })
	before, _ := in["flavor"].(map[string]any)["id"].(string)
	t2 := time.Now()
	osc.run(t, "database", "instance", "resize", "flavor", id, "strata.medium")
	api.waitStatus(t, id, "RESIZE", time.Minute)
	in = api.waitStatus(t, id, "ACTIVE", 15*time.Minute)
	if after, _ := in["flavor"].(map[string]any)["id"].(string); after == before {
		t.Fatalf("after the resize the instance is still on flavor %s: %v (fault %v)", before, in["flavor"], in["fault"])
	}
	t.Logf("FIGURE flavor resize on Nova (request → ACTIVE on strata.medium): %.1f s", time.Since(t2).Seconds())
	sp, err := servers.List(cl.Compute, servers.ListOpts{Name: "^strata-" + id + "$"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sl, _ := servers.ExtractServers(sp)
	if len(sl) != 1 || sl[0].Flavor["id"] != fl2.ID || sl[0].Status != "ACTIVE" {
		t.Fatalf("Nova's server after the resize: %+v; want one, ACTIVE, on flavor %s", sl, fl2.ID)
	}
	if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT GROUP_CONCAT(item ORDER BY id) FROM orders"); got != "tea,cake" {
		t.Fatalf("after the resize read back %q, want tea,cake", got)
	}

	// A rebuild through the management API (troveclient's `database
	// instance rebuild`) onto the version's image: Nova's own rebuild,
	// the old root disk kept as a Glance snapshot until the new guest has
	// adopted the data volume, then deleted (the inventory at the end
	// finds none). The new agent enrols with a new key; the rows stay.
	ver := api.must(t, 200, "GET", "/datastores/mariadb/versions/10.11", nil)
	imageID, _ := ver["version"].(map[string]any)["image"].(string)
	if imageID == "" {
		t.Fatalf("the version shows no image: %v", ver)
	}
	keyBefore := agentKey(t, state, id, "before the rebuild")
	t3 := time.Now()
	osc.run(t, "database", "instance", "rebuild", id, imageID)
	if st := api.instance(t, id)["status"]; st != "REBUILD" {
		t.Fatalf("status right after the rebuild request: %v, want REBUILD", st)
	}
	down, up := writeOutage(t, "the rebuilt instance on Nova to take writes", db, func() bool {
		in = api.instance(t, id)
		return in["status"] == "ACTIVE"
	})
	t.Logf("FIGURE rebuild on Nova (snapshot of the old root disk, Nova rebuild, new agent adopts the volume): request→ACTIVE %.1f s, writes unavailable %.1f s (steps: %s)",
		time.Since(t3).Seconds(), up.Sub(down).Seconds(), taskSteps(ctlLog(), id, "rebuild"))
	if in["fault"] != nil {
		t.Fatalf("fault after a rebuild that worked: %v", in["fault"])
	}
	if keyAfter := agentKey(t, state, id, "after the rebuild"); keyAfter == keyBefore {
		t.Fatalf("the agent key after the rebuild is the one before (%s): want a new one", keyBefore)
	}
	if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT GROUP_CONCAT(item ORDER BY id) FROM orders WHERE item <> 'probe'"); got != "tea,cake" {
		t.Fatalf("after the rebuild read back %q, want tea,cake", got)
	}
	if srvs, vols := named(); srvs != 1 || vols != 1 {
		t.Fatalf("after the rebuild Nova has %d servers and Cinder %d volumes named strata-%s, want one of each", srvs, vols, id)
	}
	if left, err := cl.Leftovers(ctx); err != nil {
		t.Fatal(err)
	} else {
		for _, l := range left {
			if strings.HasPrefix(l, "image ") {
				t.Fatalf("the rebuild's snapshot of the old root disk is still in Glance: %s", l)
			}
		}
	}

	t1 := time.Now()
	osc.run(t, "database", "instance", "delete", id)
	api.waitGone(t, id, 10*time.Minute)
	deleted = true
	t.Logf("FIGURE delete on Nova (accepted → instance gone): %.1f s", time.Since(t1).Seconds())
	left, err := cl.Leftovers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Fatalf("the instance is gone from the API, but Nova, Cinder or Neutron still hold:\n%s", strings.Join(left, "\n"))
	}
	t.Logf("FIGURE e2e on Nova wall time: %.0f s", time.Since(start).Seconds())
}

// freePortOn returns host:port with a port free on host.
func freePortOn(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("listening on %s (the host's address on the guests' network): %v", host, err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// createSteps lists the seconds of each step of an instance's create task
// from the controller's log ("task step done ... step=volume ...
// step_seconds=2.37").
func createSteps(log, id string) string { return taskSteps(log, id, "create") }

// taskSteps lists how long each step of an instance's tasks of a kind
// took, from the controller's log: from the previous step's "task step
// done" line to its own (a step that waits, polled each second, spans
// many runs), or its own run's step_seconds for a task's first step.
func taskSteps(log, id, kind string) string {
	var steps []string
	var prev time.Time
	for _, line := range strings.Split(log, "\n") {
		done := strings.Contains(line, `msg="task done"`)
		if !done && !strings.Contains(line, `msg="task step done"`) || !strings.Contains(line, "kind="+kind) || !strings.Contains(line, "instance="+id) {
			continue
		}
		var step, secs string
		var at time.Time
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "step="); ok {
				step = v
			} else if v, ok := strings.CutPrefix(f, "step_seconds="); ok {
				secs = v
			} else if v, ok := strings.CutPrefix(f, "time="); ok {
				at, _ = time.Parse(time.RFC3339Nano, v)
			}
		}
		n, err := strconv.ParseFloat(secs, 64)
		if err != nil {
			continue
		}
		if !prev.IsZero() && !at.IsZero() {
			n = at.Sub(prev).Seconds()
		}
		steps = append(steps, fmt.Sprintf("%s %.1f s", step, n))
		prev = at
		if done {
			prev = time.Time{}
			steps = append(steps, "|")
		}
	}
	return strings.Join(steps, ", ")
}

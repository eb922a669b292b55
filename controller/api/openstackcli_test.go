package api_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// osc runs Debian's real `openstack` client (python3-openstackclient with
// python3-troveclient) with the controller's openrc. Its commands run in
// one long-lived process of that client's Python (testdata/osc_driver.py),
// which saves each the ~2 s of CPU the client takes to start;
// STRATA_OSC_EXEC=1 runs each in a process of its own instead.
type osc struct {
	t   *testing.T
	env []string
	drv *oscDriver // started by the first command
	// pace, if set, spaces the commands (of o and of the clients made
	// from it with withUser).
	pace *pacer
}

func newOSC(t *testing.T, r *rig) *osc {
	t.Helper()
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatal("openstack not found: these tests drive the controller with the real client; install python3-openstackclient and python3-troveclient with `ci/deps.sh test` (as root) or `make test`")
	}
	data, err := os.ReadFile(filepath.Join(r.stateDir, "openrc"))
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for _, line := range strings.Split(string(data), "\n") {
		if kv, ok := strings.CutPrefix(line, "export "); ok {
			k, v, _ := strings.Cut(kv, "=")
			env = append(env, k+"="+strings.Trim(v, "'"))
		}
	}
	return &osc{t: t, env: env}
}

// run runs one command and returns its output (stderr and stdout); failing
// is fatal unless fail is expected.
func (o *osc) run(wantFail bool, args ...string) string {
	o.t.Helper()
	out, err := o.command(args)
	if (err != nil) != wantFail {
		o.t.Fatalf("openstack %s: err=%v, want failure %v:\n%s", strings.Join(args, " "), err, wantFail, out)
	}
	return string(out)
}

func (o *osc) json(args ...string) map[string]any {
	o.t.Helper()
	out := o.run(false, append(args, "-f", "json")...)
	var doc map[string]any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		o.t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return doc
}

func (o *osc) list(args ...string) []map[string]any {
	o.t.Helper()
	out := o.run(false, append(args, "-f", "json")...)
	var doc []map[string]any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		o.t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return doc
}

// TestOpenstackDatabaseCommandsDriveTheController runs the real
// `openstack database ...` commands an operator would, against a
// controller whose guests are wire-level fakes (the end-to-end test runs
// a few of them against a real VM).
func TestOpenstackDatabaseCommandsDriveTheController(t *testing.T) {
	// The real client spends seconds of CPU starting up: these tests
	// overlap, each on a controller of its own.
	t.Parallel()
	r := newRig(t, rigOptions{})
	o := newOSC(t, r)

	if fl := o.list("database", "flavor", "list"); len(fl) != 4 || fl[1]["Name"] != "strata.small" {
		t.Fatalf("flavor list = %v", fl)
	}
	// A version's flavors: every flavor until the version has a list,
	// then the list (strata's mgmt route; trove-manage in Trove).
	versionFlavors := func() []map[string]any {
		return o.list("database", "flavor", "list", "--datastore-type", "mariadb", "--datastore-version-id", r.version.ID)
	}
	if fl := versionFlavors(); len(fl) != 4 {
		t.Fatalf("flavor list of the version without a list = %v", fl)
	}
	r.admin().must(200, "POST", "/mgmt/datastore-versions/"+r.version.ID+"/flavors", map[string]any{"flavors": []string{"strata.small", "strata.large"}})
	if fl := versionFlavors(); len(fl) != 2 || fl[0]["Name"] != "strata.small" || fl[1]["Name"] != "strata.large" {
		t.Fatalf("flavor list of the version with a list = %v", fl)
	}
	if ds := o.list("datastore", "version", "list", "mariadb"); len(ds) != 1 || ds[0]["Name"] != "10.11" {
		t.Fatalf("datastore version list = %v", ds)
	}
	params := o.list("database", "configuration", "parameter", "list", "--datastore", "mariadb", "10.11")
	if len(params) != 7 {
		t.Fatalf("parameter list = %v", params)
	}
	cfg := o.json("database", "configuration", "create", "pool", `{"max_connections": 250}`, "--datastore", "mariadb", "--datastore-version", "10.11")
	cfgID := cfg["id"].(string)
	out := o.run(true, "database", "configuration", "create", "bad", `{"max_connections": "lots"}`, "--datastore", "mariadb", "--datastore-version", "10.11")
	if !strings.Contains(out, "HTTP 422") || !strings.Contains(out, "max_connections") {
		t.Fatalf("invalid configuration value: %s", out)
	}

	// The compute driver's networks, as Neutron lists them: what a user
	// looks up to pass --nic net-id=...
	if nets := o.list("network", "list"); len(nets) != 1 || nets[0]["ID"] != fakeNetwork.ID || nets[0]["Name"] != "private" {
		t.Fatalf("network list = %v", nets)
	}
	if out := o.run(true, "database", "instance", "create", "cli-medium", "--flavor", "strata.medium", "--size", "1",
		"--datastore", "mariadb", "--datastore-version", "10.11"); !strings.Contains(out, "HTTP 400") || !strings.Contains(out, "strata.medium") {
		t.Fatalf("create with a flavor outside the version's list: %s", out)
	}
	in := o.json("database", "instance", "create", "cli-db", "--flavor", "strata.small", "--size", "1",
		"--datastore", "mariadb", "--datastore-version", "10.11", "--databases", "app", "--users", "appuser:app-password",
		"--nic", "net-id="+fakeNetwork.ID, "--is-public", "--allowed-cidr", "10.1.0.0/16")
	id := in["id"].(string)
	if in["status"] != "BUILD" {
		t.Fatalf("instance create = %v", in)
	}
	c := r.admin()
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	show := o.json("database", "instance", "show", "cli-db")
	// ip: the private address, then the public one (troveclient joins them).
	srv := r.compute.server(id)
	if show["status"] != "ACTIVE" || len(srv.Addresses) != 2 || show["ip"] != srv.Addresses[0].Address+", "+srv.Addresses[1].Address || show["operating_status"] != "HEALTHY" ||
		show["public"] != true || fmt.Sprint(show["allowed_cidrs"]) != "[10.1.0.0/16]" {
		t.Fatalf("instance show = %v", show)
	}
	if _, ok := r.compute.publication(id); !ok {
		t.Fatalf("a public instance's server is not published")
	}
	// Access, changed the way troveclient sends it.
	o.run(false, "database", "instance", "update", "cli-db", "--is-private")
	if show := o.json("database", "instance", "show", "cli-db"); show["public"] != false || fmt.Sprint(show["allowed_cidrs"]) != "[10.1.0.0/16]" {
		t.Fatalf("after --is-private: %v", show)
	}
	if _, ok := r.compute.publication(id); ok {
		t.Fatalf("a private instance's server is still published")
	}
	o.run(false, "database", "instance", "update", "cli-db", "--is-public", "--allowed-cidr", "10.2.0.0/16", "--allowed-cidr", "192.0.2.9")
	if show := o.json("database", "instance", "show", "cli-db"); show["public"] != true || fmt.Sprint(show["allowed_cidrs"]) != "[10.2.0.0/16 192.0.2.9/32]" {
		t.Fatalf("after --is-public --allowed-cidr: %v", show)
	}
	if a, ok := r.compute.publication(id); !ok || fmt.Sprint(a.AllowedCIDRs) != "[10.2.0.0/16 192.0.2.9/32]" {
		t.Fatalf("published as %+v, %v", a, ok)
	}
	if l := o.list("database", "instance", "list"); len(l) != 1 || l[0]["Status"] != "ACTIVE" || l[0]["Name"] != "cli-db" {
		t.Fatalf("instance list = %v", l)
	}

	o.run(false, "database", "db", "create", id, "reports")
	if dbs := o.list("database", "db", "list", id); len(dbs) != 2 {
		t.Fatalf("db list = %v", dbs)
	}
	o.run(false, "database", "user", "create", id, "analyst", "analyst-pw", "--databases", "reports")
	users := o.list("database", "user", "list", id)
	if len(users) != 2 {
		t.Fatalf("user list = %v", users)
	}
	if u := o.json("database", "user", "show", id, "analyst"); u["name"] != "analyst" {
		t.Fatalf("user show = %v", u)
	}
	o.run(false, "database", "user", "grant", "access", id, "appuser", "reports")
	if acc := o.list("database", "user", "show", "access", id, "appuser"); len(acc) != 2 {
		t.Fatalf("user show access = %v", acc)
	}
	o.run(false, "database", "user", "revoke", "access", id, "appuser", "reports")
	o.run(false, "database", "user", "delete", id, "analyst")
	o.run(false, "database", "db", "delete", id, "reports")
	if root := o.json("database", "root", "enable", id); root["name"] != "root" || root["password"] == "" {
		t.Fatalf("root enable = %v", root)
	}
	if root := o.json("database", "root", "show", id); root["is_root_enabled"] != true {
		t.Fatalf("root show = %v", root)
	}
	o.run(false, "database", "root", "disable", id)
	out = o.run(true, "database", "db", "create", id, "bad`name")
	if !strings.Contains(out, "HTTP 400") {
		t.Fatalf("injection attempt: %s", out)
	}

	// configuration default: the agent's rendered defaults, then with the
	// group over them.
	if def := o.json("database", "configuration", "default", id); def["max_connections"] != 151.0 || def["character_set_server"] != "utf8mb4" {
		t.Fatalf("configuration default without a group = %v", def)
	}
	o.run(false, "database", "configuration", "attach", id, cfgID)
	waitFor(t, "the configuration to be attached", 10*time.Second, func() bool { return c.instance(id)["configuration"] != nil })
	if def := o.json("database", "configuration", "default", id); def["max_connections"] != 250.0 || def["character_set_server"] != "utf8mb4" {
		t.Fatalf("configuration default = %v", def)
	}
	if insts := o.list("database", "configuration", "instances", cfgID); len(insts) != 1 {
		t.Fatalf("configuration instances = %v", insts)
	}
	o.run(false, "database", "configuration", "set", cfgID, `{"performance_schema": true}`)
	c.waitStatus(id, "RESTART_REQUIRED", 10*time.Second)
	o.run(false, "database", "instance", "restart", id)
	c.waitStatus(id, "ACTIVE", 10*time.Second)
	o.run(false, "database", "instance", "resize", "volume", id, "2")
	waitFor(t, "the volume resize", 10*time.Second, func() bool {
		in := c.instance(id)
		return in["status"] == "ACTIVE" && in["volume"].(map[string]any)["size"] == 2.0
	})
	o.run(false, "database", "configuration", "detach", id)
	waitFor(t, "the configuration to be detached", 10*time.Second, func() bool { return c.instance(id)["configuration"] == nil })
	o.run(false, "database", "configuration", "delete", cfgID)
	o.run(false, "database", "instance", "reset", "status", id)
	o.run(false, "database", "instance", "delete", "--force", id)
	c.waitGone(id, 10*time.Second)
	if l := o.list("database", "instance", "list"); len(l) != 0 {
		t.Fatalf("instance list after delete = %v", l)
	}
}

// `openstack database instance promote` (Trove's promote-to-replica-source) switches a
// replication group over; on an instance that is not a replica it fails
// with Trove's 400; `eject` fails over once the source is silent.
func TestOpenstackPromoteToReplicaSource(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	o := newOSC(t, r)
	c := r.admin()
	src := newActive(c, "primary")
	replica := replicaIDs(t, c, src, 1)[0]
	if show := o.json("database", "instance", "show", replica); show["replica_of"] != src {
		t.Fatalf("replica show = %v", show)
	}
	o.run(false, "database", "instance", "promote", replica)
	waitFor(t, "the switchover", 30*time.Second, func() bool {
		show := o.json("database", "instance", "show", src)
		return show["status"] == "ACTIVE" && show["replica_of"] == replica
	})
	if show := o.json("database", "instance", "show", replica); show["replicas"] != src || show["replica_of"] != nil {
		t.Fatalf("new source show = %v", show)
	}
	out := o.run(true, "database", "instance", "promote", replica)
	if !strings.Contains(out, "HTTP 400") || !strings.Contains(out, "is not a replica") {
		t.Fatalf("promote of a source: %s", out)
	}
	// `openstack database instance eject` (eject-replica-source): refused
	// while the source is alive, a failover once it is silent.
	out = o.run(true, "database", "instance", "eject", replica)
	if !strings.Contains(out, "HTTP 400") || !strings.Contains(out, "current heartbeat") {
		t.Fatalf("eject of a live source: %s", out)
	}
	r.compute.guest(replica).halt()
	silence(t, r, replica)
	o.run(false, "database", "instance", "eject", replica)
	waitFor(t, "the failover", 60*time.Second, func() bool {
		show := o.json("database", "instance", "show", src)
		return show["status"] == "ACTIVE" && show["replica_of"] == nil
	})
}

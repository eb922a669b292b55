package api_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"strata/controller/cli"
	"strata/controller/compute"
	"strata/controller/identity"
)

// TestMgmtInstancesSeeAndActOnEveryProject: the admin lists every
// project's instances with server id, address, task, agent status and
// fault, shows one, reboots its server, stops its database and resets a
// stuck task; a member gets 403 for all of it. The real client's
// `instance list --all-projects` and `instance reboot` use these routes.
func TestMgmtInstancesSeeAndActOnEveryProject(t *testing.T) {
	// The real client spends seconds of CPU starting up: these tests
	// overlap, each on a controller of its own.
	t.Parallel()
	r := newRig(t, rigOptions{})
	admin := r.admin()
	ids := &identity.Store{DB: r.ctl.DB, BcryptCost: 4}
	if _, err := ids.CreateProject(context.Background(), "team"); err != nil {
		t.Fatal(err)
	}
	if _, err := ids.CreateUser(context.Background(), "member", "member-pw", "team", false); err != nil {
		t.Fatal(err)
	}
	m := r.login("member", "member-pw")
	id := m.must(200, "POST", "/instances", createBody("member-db", nil))["instance"].(map[string]any)["id"].(string)
	m.waitStatus(id, "ACTIVE", 20*time.Second)
	own := admin.must(200, "POST", "/instances", createBody("admin-db", nil))["instance"].(map[string]any)["id"].(string)
	admin.waitStatus(own, "ACTIVE", 20*time.Second)

	// The list holds both projects' instances, with the management fields.
	list := admin.must(200, "GET", "/mgmt/instances?deleted=False&include_clustered=False", nil)["instances"].([]any)
	if len(list) != 2 {
		t.Fatalf("mgmt list: %v", list)
	}
	byID := map[string]map[string]any{}
	for _, x := range list {
		in := x.(map[string]any)
		byID[in["id"].(string)] = in
	}
	in := byID[id]
	srv := r.compute.server(id)
	if in == nil || in["tenant_id"] != m.project || in["server_id"] != srv.ID || in["host"] != srv.Addresses[0].Address ||
		in["task_status"] != "NONE" || in["service_status"] != "running" || in["deleted"] != false || in["status"] != "ACTIVE" {
		t.Fatalf("mgmt view of the member's instance: %v", in)
	}
	if only := admin.must(200, "GET", "/mgmt/instances?project_id="+m.project, nil)["instances"].([]any); len(only) != 1 {
		t.Fatalf("mgmt list of one project: %v", only)
	}
	if show := admin.must(200, "GET", "/mgmt/instances/"+id, nil)["instance"].(map[string]any); show["server_id"] != srv.ID {
		t.Fatalf("mgmt show: %v", show)
	}

	// reboot restarts the server (not just the database) and comes back.
	path := "/mgmt/instances/" + id + "/action"
	admin.must(202, "POST", path, map[string]any{"reboot": map[string]any{}})
	admin.waitStatus(id, "ACTIVE", 20*time.Second)
	if !strings.Contains(strings.Join(r.compute.callsSnapshot(), ","), "RestartServer "+id) {
		t.Fatalf("reboot did not restart the server: %v", r.compute.callsSnapshot())
	}
	// stop stops the database: the agent reports it SHUTDOWN; restart
	// starts it again.
	admin.must(202, "POST", path, map[string]any{"stop": map[string]any{}})
	admin.waitStatus(id, "SHUTDOWN", 20*time.Second)
	m.must(202, "POST", "/instances/"+id+"/action", map[string]any{"restart": map[string]any{}})
	m.waitStatus(id, "ACTIVE", 20*time.Second)
	// reset-task-status clears a stuck task and keeps the fault.
	if _, err := r.ctl.DB.Exec(context.Background(), `UPDATE instances SET task = 'REBOOTING', fault_message = 'stuck' WHERE id = ?`, id); err != nil {
		t.Fatal(err)
	}
	admin.waitStatus(id, "REBOOT", 5*time.Second)
	admin.must(202, "POST", path, map[string]any{"reset-task-status": map[string]any{}})
	got := admin.waitStatus(id, "ACTIVE", 10*time.Second)
	if got["fault"] == nil {
		t.Fatalf("reset-task-status dropped the fault: %v", got)
	}
	if del := admin.must(200, "GET", "/mgmt/instances?deleted=true", nil)["instances"].([]any); len(del) != 0 {
		t.Fatalf("deleted list: %v", del)
	}

	// A member: 403 for every management route, its own instance included.
	for _, rq := range [][3]string{
		{"GET", "/mgmt/instances", ""}, {"GET", "/mgmt/instances/" + id, ""},
		{"POST", path, `{"reboot":{}}`}, {"POST", path, `{"stop":{}}`}, {"POST", path, `{"reset-task-status":{}}`},
	} {
		if code, doc := m.do(rq[0], rq[1], rq[2]); code != 403 || !strings.Contains(errorMessage(doc), "admin role") {
			t.Errorf("member: %s %s: HTTP %d %v, want 403", rq[0], rq[1], code, doc)
		}
	}

	// The real client: list --all-projects shows both, with server and
	// tenant ids; reboot goes through the management action.
	o := newOSC(t, r)
	rows := o.list("database", "instance", "list", "--all-projects")
	if len(rows) != 2 {
		t.Fatalf("instance list --all-projects: %v", rows)
	}
	for _, row := range rows {
		if row["ID"] == id && (row["Server ID"] != srv.ID || row["Tenant ID"] != m.project) {
			t.Fatalf("instance list --all-projects: %v", rows)
		}
	}
	o.run(false, "database", "instance", "reboot", id)
	admin.waitStatus(id, "ACTIVE", 20*time.Second)

	// Deleted instances appear with ?deleted=true.
	admin.must(202, "DELETE", "/instances/"+own, nil)
	admin.waitGone(own, 20*time.Second)
	del := admin.must(200, "GET", "/mgmt/instances?deleted=true", nil)["instances"].([]any)
	if len(del) != 1 || del[0].(map[string]any)["id"] != own || del[0].(map[string]any)["deleted"] != true {
		t.Fatalf("deleted list: %v", del)
	}
}

// callsSnapshot copies the driver calls made so far.
func (fc *fakeCompute) callsSnapshot() []string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return append([]string(nil), fc.calls...)
}

// strataCLI runs `strata ARGS...` (the controller's commands) in this
// process, against the rig's state directory.
func strataCLI(t *testing.T, r *rig, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "strata", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(cli.Commands()...)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append(args, "--state-dir", r.stateDir))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// TestStrataInstanceCommandsOnTheControllerHost: `strata instance list,
// show, stop, reboot, reset-task-status` read the controller's database
// and queue into it; the running controller carries the actions out.
func TestStrataInstanceCommandsOnTheControllerHost(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("cli-db", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	srv := r.compute.server(id)

	out, err := strataCLI(t, r, "instance", "list")
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, c.project) || !strings.Contains(out, "ACTIVE") || !strings.Contains(out, srv.Addresses[0].Address) {
		t.Fatalf("instance list: %v\n%s", err, out)
	}
	out, err = strataCLI(t, r, "instance", "show", id)
	if err != nil || !strings.Contains(out, "cli-db") || !strings.Contains(out, "running") {
		t.Fatalf("instance show: %v\n%s", err, out)
	}
	if out, err := strataCLI(t, r, "instance", "show", "6f1c2d3e-0000-4000-8000-00000000dead"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("show of no instance: %v\n%s", err, out)
	}

	// stop: delivered by the controller's endpoint, answered here.
	if out, err := strataCLI(t, r, "instance", "stop", id, "--wait", "20s"); err != nil || !strings.Contains(out, "stopped") {
		t.Fatalf("instance stop: %v\n%s", err, out)
	}
	c.waitStatus(id, "SHUTDOWN", 20*time.Second)
	// reboot: queued here, run by the controller's task engine.
	if out, err := strataCLI(t, r, "instance", "reboot", id); err != nil || !strings.Contains(out, "queued") {
		t.Fatalf("instance reboot: %v\n%s", err, out)
	}
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	if !strings.Contains(strings.Join(r.compute.callsSnapshot(), ","), "RestartServer "+id) {
		t.Fatalf("reboot did not restart the server: %v", r.compute.callsSnapshot())
	}
	// reset-task-status clears a stuck task.
	if _, err := r.ctl.DB.Exec(context.Background(), `UPDATE instances SET task = 'RESIZING' WHERE id = ?`, id); err != nil {
		t.Fatal(err)
	}
	if out, err := strataCLI(t, r, "instance", "reset-task-status", id); err != nil {
		t.Fatalf("reset-task-status: %v\n%s", err, out)
	}
	c.waitStatus(id, "ACTIVE", 5*time.Second)
}

// plainDriver is a compute driver with none of the optional interfaces
// (as the Nova driver has no RestartServer).
type plainDriver struct{ compute.Driver }

// TestRebootNeedsADriverThatCanRestartServers: the API refuses the
// reboot at once (422); the CLI's queued reboot ends without touching
// the instance, which keeps its status and shows why as its fault.
func TestRebootNeedsADriverThatCanRestartServers(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{driver: func(fc *fakeCompute) compute.Driver { return plainDriver{fc} }})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("plain", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	if code, doc := c.do("POST", "/mgmt/instances/"+id+"/action", `{"reboot":{}}`); code != 422 || !strings.Contains(errorMessage(doc), "cannot reboot") {
		t.Fatalf("reboot through the API: HTTP %d %v", code, doc)
	}
	if out, err := strataCLI(t, r, "instance", "reboot", id); err != nil {
		t.Fatalf("instance reboot: %v\n%s", err, out)
	}
	waitFor(t, "the refused reboot to show", 10*time.Second, func() bool {
		in := c.instance(id)
		f, _ := in["fault"].(map[string]any)
		return in["status"] == "ACTIVE" && f != nil && strings.Contains(f["message"].(string), "cannot reboot")
	})
	if strings.Contains(strings.Join(r.compute.callsSnapshot(), ","), "RestartServer") {
		t.Fatal("the server was restarted")
	}
}

package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"strata/agent/datastore/redis"
	"strata/agent/datastore/redis/redistest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// managedLines is an instance's ACL LIST without the agent's user and
// replication accounts: what the sync carries.
func managedLines(t *testing.T, inst *redistest.Instance) []string {
	t.Helper()
	var out []string
	for _, l := range do(t, admin(t, inst), "ACL", "LIST").Strings() {
		name := strings.Fields(l)[1]
		if name != redis.AdminUser && !strings.HasPrefix(name, wire.ReplicationAccountPrefix) {
			out = append(out, l)
		}
	}
	return out
}

func hasUser(t *testing.T, inst *redistest.Instance, name string) bool {
	t.Helper()
	return do(t, admin(t, inst), "ACL", "GETUSER", name).Kind != 0
}

// The bug this fixes: a replica has its source's users as of its seed
// only. Users changed on the source afterwards (created, deleted,
// password changed, renamed, root enabled) reach the linked, read-only
// replica through export_users → import_users, and log in there with
// their passwords and rules; the replica's replication accounts and the
// agent's user are untouched; a re-run changes nothing.
func TestUsersChangedOnTheSourceAfterTheSeedReachTheReplica(t *testing.T) {
	ctx := servertest.Context(t, 5*time.Minute)
	p := tcpInstance(t)
	servertest.MustPrepare(t, p.Manager, wire.PrepareArgs{Users: []wire.User{
		{Name: "app", Password: "app-pw"}, {Name: "gone", Password: "gone-pw"}, {Name: "renamed", Password: "ren-pw"},
	}}, time.Minute)
	m := p.Manager
	if _, err := m.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_r1", Password: "repl-pw"}); err != nil {
		t.Fatal(err)
	}
	r := seededReplica(t, ctx, p, "r1")
	if _, err := r.Manager.StartReplication(ctx, wire.StartReplicationArgs{Host: "127.0.0.1", Port: p.Config.Port, Account: "strata_repl_r1", Password: "repl-pw"}); err != nil {
		t.Fatal(err)
	}
	// After the seed, on the source only.
	if _, err := m.CreateReplicationAccount(ctx, wire.ReplicationAccountArgs{Name: "strata_repl_r2", Password: "other"}); err != nil {
		t.Fatal(err)
	}
	if err := m.CreateUsers(ctx, []wire.User{{Name: "late", Password: "late-pw"}}); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteUser(ctx, wire.UserRef{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	if err := m.ChangePasswords(ctx, []wire.User{{Name: "app", Password: "app-pw-2"}}); err != nil {
		t.Fatal(err)
	}
	if err := m.UpdateUser(ctx, wire.UpdateUserArgs{User: wire.UserRef{Name: "renamed"}, NewName: "renamed2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.EnableRoot(ctx, "root-pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, r, "late", "late-pw"); err == nil {
		t.Fatal("the replica had the late user before the sync: Redis replicated ACL users after all?")
	}

	exp, err := m.ExportUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(exp)
	for _, secret := range []string{"app-pw-2", "late-pw", "root-pw", "ren-pw"} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("the export holds a clear password: %s", raw)
		}
	}
	if strings.Contains(string(raw), redis.AdminUser) || strings.Contains(string(raw), wire.ReplicationAccountPrefix) || len(exp.Skipped) != 0 {
		t.Fatalf("the export holds the agent's user or a replication account, or skipped some: %s", raw)
	}
	if !slices.Equal(exp.Users, managedLines(t, p)) {
		t.Fatalf("export %q, want the source's managed ACL LIST lines %q", exp.Users, managedLines(t, p))
	}

	res, err := r.Manager.ImportUsers(ctx, exp.Users)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(res.Changed)
	slices.Sort(res.Deleted)
	if !slices.Equal(res.Changed, []string{"app", "default", "late", "renamed2"}) || !slices.Equal(res.Deleted, []string{"gone", "renamed"}) {
		t.Fatalf("import result %+v", res)
	}
	if got := managedLines(t, r); !slices.Equal(got, exp.Users) {
		t.Fatalf("the replica's users %q, want the source's %q", got, exp.Users)
	}
	for _, u := range [][2]string{{"app", "app-pw-2"}, {"late", "late-pw"}, {"renamed2", "ren-pw"}} {
		c, err := dial(t, r, u[0], u[1])
		if err != nil {
			t.Fatalf("%s cannot log in on the replica: %v", u[0], err)
		}
		do(t, c, "GET", "k")
		if _, err := c.Do(ctx, "ACL", "LIST"); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Fatalf("%s may run admin commands on the replica: %v", u[0], err)
		}
	}
	for _, u := range [][2]string{{"app", "app-pw"}, {"gone", "gone-pw"}, {"renamed", "ren-pw"}} {
		if _, err := dial(t, r, u[0], u[1]); err == nil {
			t.Fatalf("%s logs in on the replica with %s", u[0], u[1])
		}
	}
	root, err := dial(t, r, "", "root-pw")
	if err != nil {
		t.Fatalf("root cannot log in on the replica: %v", err)
	}
	do(t, root, "ACL", "WHOAMI")
	// Untouched: the replica's replication account (from the seed), the
	// agent's user, the link; the source's account made after the seed
	// did not come along.
	if !hasUser(t, r, "strata_repl_r1") || hasUser(t, r, "strata_repl_r2") {
		t.Fatal("the import touched replication accounts")
	}
	admin(t, r)
	if st := replStatus(t, ctx, r); st.Role != wire.RoleReplica || !st.ReadOnly || st.SourcePort != p.Config.Port {
		t.Fatalf("the link after the import: %+v", st)
	}
	waitUntil(t, 30*time.Second, "the replica's link up", func() bool { return replStatus(t, ctx, r).IORunning })

	// A re-run is a no-op: nothing changed, nothing saved.
	before := snapshot(t, r)
	res, err = r.Manager.ImportUsers(ctx, exp.Users)
	if err != nil || len(res.Changed)+len(res.Deleted) != 0 {
		t.Fatalf("re-run: %+v %v", res, err)
	}
	assertUnchanged(t, r, before)

	// Saved: a restart keeps them.
	if err := r.Manager.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, r, "late", "late-pw"); err != nil {
		t.Fatalf("the imported user is gone after a restart: %v", err)
	}

	// Root disabled and a user deleted on the source: both follow.
	if err := m.DisableRoot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteUser(ctx, wire.UserRef{Name: "late"}); err != nil {
		t.Fatal(err)
	}
	exp, err = m.ExportUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Manager.ImportUsers(ctx, exp.Users); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, r, "", "root-pw"); err == nil {
		t.Fatal("root still logs in on the replica after it was disabled on the source")
	}
	if hasUser(t, r, "late") || !slices.Equal(managedLines(t, r), exp.Users) {
		t.Fatalf("the replica's users %q, want %q", managedLines(t, r), exp.Users)
	}
}

// Figure: export and import of N users between two servers.
func TestExportAndImportOfManyUsersTakes(t *testing.T) {
	ctx := servertest.Context(t, 5*time.Minute)
	src, _ := redistest.PreparedT(t, wire.PrepareArgs{})
	dst, _ := redistest.PreparedT(t, wire.PrepareArgs{})
	const n = 500
	for b := 0; b < n; b += wire.MaxItemsPerOp {
		var us []wire.User
		for i := b; i < b+wire.MaxItemsPerOp; i++ {
			us = append(us, wire.User{Name: fmt.Sprintf("u%04d", i), Password: fmt.Sprintf("pw-%d", i)})
		}
		if err := src.Manager.CreateUsers(ctx, us); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	exp, err := src.Manager.ExportUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exported := time.Since(start)
	start = time.Now()
	res, err := dst.Manager.ImportUsers(ctx, exp.Users)
	if err != nil {
		t.Fatal(err)
	}
	imported := time.Since(start)
	start = time.Now()
	again, err := dst.Manager.ImportUsers(ctx, exp.Users)
	if err != nil || len(again.Changed)+len(again.Deleted) != 0 {
		t.Fatalf("re-run: %+v %v", again, err)
	}
	rerun := time.Since(start)
	if len(exp.Users) != n+1 || len(res.Changed) != n { // root is off on both already
		t.Fatalf("exported %d, changed %d; want %d users (and root exported)", len(exp.Users), len(res.Changed), n)
	}
	if _, err := dial(t, dst, "u0499", "pw-499"); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE user sync of %d users and root: export %s, import %s (%d bytes of lines), re-run import %s",
		n, exported.Round(time.Microsecond), imported.Round(time.Microsecond), len(strings.Join(exp.Users, "\n")), rerun.Round(time.Microsecond))
}

// Every line is checked before anything changes: a line with another
// rule, a clear password, a second line inside it, a name the API
// refuses, a reserved user — refused with invalid_argument naming the
// line, and the server's users, configuration and files unchanged, a good
// line before the bad one included.
func TestBadUserLinesAreRefusedAndChangeNothing(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if err := m.CreateUsers(ctx, []wire.User{{Name: "keeper", Password: "keeper-pw"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.DeleteUser(ctx, wire.UserRef{Name: "keeper"}) })
	exp, err := m.ExportUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := "#" + strings.Repeat("ab", 32)
	good := "user newbie on sanitize-payload " + h + " ~* &* +@all -@admin"
	before := snapshot(t, inst)
	for name, line := range map[string]string{
		"nopass on a user":        "user evil on nopass ~* &* +@all -@admin",
		"admin commands":          "user evil on " + h + " ~* &* +@all",
		"a rule added":            "user evil on " + h + " ~* &* +@all -@admin +@admin",
		"a rule before":           "user evil on " + h + " +config ~* &* +@all -@admin",
		"a clear password":        "user evil on >secret ~* &* +@all -@admin",
		"a short hash":            "user evil on #abc ~* &* +@all -@admin",
		"a second line":           good + "\nuser evil on nopass ~* &* +@all",
		"a carriage return":       good + "\r",
		"a key pattern":           "user evil on " + h + " ~secret:* &* +@all -@admin",
		"a selector":              "user evil on " + h + " (~* +@all) ~* &* +@all -@admin",
		"a trailing space":        good + " ",
		"two spaces":              "user evil on  " + h + " ~* &* +@all -@admin",
		"no on or off":            "user evil " + h + " ~* &* +@all -@admin",
		"on and off":              "user evil on off " + h + " ~* &* +@all -@admin",
		"resetpass":               "user evil on resetpass " + h + " ~* &* +@all -@admin",
		"the agent's user":        "user os_admin on " + h + " ~* &* +@all",
		"a replication account":   "user strata_repl_x on " + h + " ~* &* +@all -@admin",
		"a bad name":              "user ev%il on " + h + " ~* &* +@all -@admin",
		"a name starting with -":  "user -evil on " + h + " ~* &* +@all -@admin",
		"root named root":         "user root on " + h + " ~* &* +@all",
		"root with nopass, on":    "user default on nopass ~* &* +@all",
		"root with API rules":     "user default on " + h + " ~* &* +@all -@admin",
		"not a user line":         "acl evil on " + h + " ~* &* +@all -@admin",
		"no rules":                "user evil",
		"sanitize-payload twice":  "user evil on sanitize-payload sanitize-payload " + h + " ~* &* +@all -@admin",
		"the same hash twice":     "user evil on " + h + " " + h + " ~* &* +@all -@admin",
		"root nopass with a hash": "user default off nopass " + h + " ~* &* +@all",
	} {
		t.Run(name, func(t *testing.T) {
			users := append(slices.Clone(exp.Users), good, line)
			_, err := m.ImportUsers(ctx, users)
			wantCode(t, err, wire.CodeInvalidArgument)
			want := fmt.Sprintf("line %d refused", len(users))
			if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), strings.Repeat("ab", 32)) {
				t.Fatalf("error %q: want %q and no secret", err, want)
			}
		})
	}
	_, err = m.ImportUsers(ctx, append(slices.Clone(exp.Users), good, good))
	wantCode(t, err, wire.CodeInvalidArgument)
	_, err = m.ImportUsers(ctx, nil)
	wantCode(t, err, wire.CodeInvalidArgument)
	assertUnchanged(t, inst, before)
	if !hasUser(t, inst, "keeper") || hasUser(t, inst, "newbie") {
		t.Fatal("users changed")
	}
}

// A failure after the changes reached the server (here: before the ACL
// SAVE) puts every user back as it was, created ones removed and deleted
// ones restored with their rules and hashes.
func TestAFailedImportPutsTheUsersBack(t *testing.T) {
	ctx := servertest.Context(t, time.Minute)
	src, _ := redistest.PreparedT(t, wire.PrepareArgs{Users: []wire.User{{Name: "a", Password: "a-new"}, {Name: "b", Password: "b-pw"}}, EnableRoot: true})
	dst, _ := redistest.PreparedT(t, wire.PrepareArgs{Users: []wire.User{{Name: "a", Password: "a-old"}, {Name: "c", Password: "c-pw"}}})
	exp, err := src.Manager.ExportUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dst)
	defer redis.SetFault(func(step string) error {
		if step == "import_users.applied" {
			return errors.New("injected failure before the save")
		}
		return nil
	})()
	if _, err := dst.Manager.ImportUsers(ctx, exp.Users); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("import: %v, want the injected failure", err)
	}
	assertUnchanged(t, dst, before)
	if _, err := dial(t, dst, "a", "a-old"); err != nil {
		t.Fatalf("a lost its password: %v", err)
	}
	if _, err := dial(t, dst, "c", "c-pw"); err != nil {
		t.Fatalf("c was not put back: %v", err)
	}
}

// Users root made with other rules are not the API's: the export leaves
// them out and names them, so every replica's import still succeeds.
func TestExportLeavesOutUsersTheAPIDidNotMake(t *testing.T) {
	inst, _ := redistest.PreparedT(t, wire.PrepareArgs{Users: []wire.User{{Name: "app", Password: "app-pw"}}})
	ctx := ctxT(t)
	do(t, admin(t, inst), "ACL", "SETUSER", "byhand", "on", ">x", "~cache:*", "+get")
	exp, err := inst.Manager.ExportUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(exp.Skipped, []string{"byhand"}) || len(exp.Users) != 2 {
		t.Fatalf("export %+v: want app and root, byhand skipped", exp)
	}
	if _, err := inst.Manager.ImportUsers(context.Background(), exp.Users); err != nil {
		t.Fatal(err)
	}
}

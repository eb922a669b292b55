package redis_test

import (
	"slices"
	"strings"
	"testing"

	"strata/agent/wire"
)

func TestUsers(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	users := []wire.User{
		{Name: "alice", Password: `pa"ss\word'; ACL SETUSER alice nopass; --`},
		{Name: "bob.b", Host: "%", Password: "bobpw"},
	}
	if err := m.CreateUsers(ctx, users); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.DeleteUser(ctx, wire.UserRef{Name: "alice"})
		m.DeleteUser(ctx, wire.UserRef{Name: "bob.b"})
	})
	list, err := m.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range list {
		names = append(names, u.Name+"@"+u.Host)
	}
	if !slices.Equal(names, []string{"alice@%", "bob.b@%"}) {
		t.Fatalf("users = %v (default and the agent's user must not be listed)", names)
	}
	alice, err := dial(t, inst, "alice", users[0].Password)
	if err != nil {
		t.Fatalf("alice cannot log in: %v", err)
	}
	do(t, alice, "SET", "a", "1")
	do(t, alice, "SELECT", "3")
	if _, err := alice.Do(ctx, "ACL", "LIST"); err == nil {
		t.Fatal("a user may list ACLs")
	}
	if _, err := alice.Do(ctx, "SHUTDOWN"); err == nil {
		t.Fatal("a user may shut the server down")
	}
	// Users survive a restart: they are saved to the ACL file.
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, inst, "bob.b", "bobpw"); err != nil {
		t.Fatalf("bob lost by a restart: %v", err)
	}
	if err := m.DeleteUser(ctx, wire.UserRef{Name: "bob.b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, inst, "bob.b", "bobpw"); err == nil {
		t.Fatal("a deleted user logs in")
	}
	wantCode(t, m.DeleteUser(ctx, wire.UserRef{Name: "bob.b"}), wire.CodeNotFound, "does not exist")
}

func TestNotSupportedOperationsSayWhy(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	before := snapshot(t, inst)
	_, err := m.ListDatabases(ctx)
	wantCode(t, err, wire.CodeNotSupported, "no named databases")
	wantCode(t, m.CreateDatabases(ctx, []wire.Database{{Name: "x"}}), wire.CodeNotSupported, "no named databases")
	wantCode(t, m.DeleteDatabase(ctx, "0"), wire.CodeNotSupported, "no named databases")
	wantCode(t, m.GrantAccess(ctx, wire.UserRef{Name: "u"}, []string{"0"}), wire.CodeNotSupported, "cannot be limited to a database")
	wantCode(t, m.RevokeAccess(ctx, wire.UserRef{Name: "u"}, "0"), wire.CodeNotSupported, "cannot be limited to a database")
	_, err = m.ListAccess(ctx, wire.UserRef{Name: "u"})
	wantCode(t, err, wire.CodeNotSupported, "cannot be limited to a database")
	assertUnchanged(t, inst, before)
}

func TestBadUserInputIsRejectedAndChangesNothing(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if err := m.CreateUsers(ctx, []wire.User{{Name: "existing", Password: "pw"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.DeleteUser(ctx, wire.UserRef{Name: "existing"}) })
	before := snapshot(t, inst)
	create := []struct {
		name  string
		users []wire.User
		code  wire.ErrorCode
		want  string
	}{
		{"rules in name", []wire.User{{Name: "x nopass on +@all", Password: "p"}}, wire.CodeInvalidArgument, "user name"},
		{"quote name", []wire.User{{Name: `a"b`, Password: "p"}}, wire.CodeInvalidArgument, "user name"},
		{"NUL name", []wire.User{{Name: "a\x00", Password: "p"}}, wire.CodeInvalidArgument, "user name"},
		{"too long", []wire.User{{Name: strings.Repeat("u", 65), Password: "p"}}, wire.CodeInvalidArgument, "65 bytes"},
		{"empty", []wire.User{{Name: "", Password: "p"}}, wire.CodeInvalidArgument, "empty"},
		{"default", []wire.User{{Name: "default", Password: "p"}}, wire.CodeInvalidArgument, "reserved"},
		{"agent", []wire.User{{Name: "os_admin", Password: "p"}}, wire.CodeInvalidArgument, "reserved"},
		{"host", []wire.User{{Name: "u1", Host: "10.0.0.1", Password: "p"}}, wire.CodeInvalidArgument, "no host part"},
		{"empty password", []wire.User{{Name: "u1"}}, wire.CodeInvalidArgument, "password is empty"},
		{"NUL password", []wire.User{{Name: "u1", Password: "a\x00b"}}, wire.CodeInvalidArgument, "NUL"},
		{"invalid UTF-8 password", []wire.User{{Name: "u1", Password: "a\xffb"}}, wire.CodeInvalidArgument, "UTF-8"},
		{"long password", []wire.User{{Name: "u1", Password: strings.Repeat("p", 257)}}, wire.CodeInvalidArgument, "257 bytes"},
		{"databases", []wire.User{{Name: "u1", Password: "p", Databases: []string{"1"}}}, wire.CodeNotSupported, "database"},
		{"twice", []wire.User{{Name: "u1", Password: "p"}, {Name: "u1", Password: "q"}}, wire.CodeInvalidArgument, "twice"},
		{"good then existing", []wire.User{{Name: "u1", Password: "p"}, {Name: "existing", Password: "q"}}, wire.CodeAlreadyExists, "existing"},
		{"no users", nil, wire.CodeInvalidArgument, "no users"},
	}
	for _, tc := range create {
		t.Run("create/"+tc.name, func(t *testing.T) {
			wantCode(t, m.CreateUsers(ctx, tc.users), tc.code, tc.want)
			assertUnchanged(t, inst, before)
		})
	}
	for _, ref := range []wire.UserRef{{Name: "default"}, {Name: "os_admin"}, {Name: "existing x"}, {Name: "existing", Host: "localhost"}, {Name: "ghost"}} {
		if err := m.DeleteUser(ctx, ref); err == nil {
			t.Fatalf("delete %+v accepted", ref)
		}
		assertUnchanged(t, inst, before)
	}
	wantCode(t, m.DeleteUser(ctx, wire.UserRef{Name: "ghost"}), wire.CodeNotFound, "ghost")
}

func TestRootEnableDisable(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	t.Cleanup(func() { m.DisableRoot(ctx) })
	if on, err := m.IsRootEnabled(ctx); err != nil || on {
		t.Fatalf("root enabled on a fresh server: %v %v", on, err)
	}
	creds, err := m.EnableRoot(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if on, _ := m.IsRootEnabled(ctx); !on {
		t.Fatal("root not enabled")
	}
	root, err := dial(t, inst, "", creds.Password)
	if err != nil {
		t.Fatalf("AUTH with the root password: %v", err)
	}
	if _, err := m.EnableRoot(ctx, "chosen pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, inst, "", creds.Password); err == nil {
		t.Fatal("the old root password still works")
	}
	if _, err := dial(t, inst, "default", "chosen pw"); err != nil {
		t.Fatal(err)
	}
	if err := m.DisableRoot(ctx); err != nil {
		t.Fatal(err)
	}
	if on, _ := m.IsRootEnabled(ctx); on {
		t.Fatal("root still enabled")
	}
	if _, err := dial(t, inst, "", "chosen pw"); err == nil {
		t.Fatal("root logs in after disable")
	}
	if _, err := root.Do(ctx, "PING"); err == nil {
		t.Fatal("a root session survived disable")
	}
	// The agent's own connection is untouched by all this.
	if st := m.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("status = %+v", st)
	}
	before := snapshot(t, inst)
	for _, pw := range []string{"a\x00b", strings.Repeat("x", 300), "\xff"} {
		_, err := m.EnableRoot(ctx, pw)
		wantCode(t, err, wire.CodeInvalidArgument, "password")
		assertUnchanged(t, inst, before)
	}
}

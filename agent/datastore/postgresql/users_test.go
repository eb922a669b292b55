package postgresql_test

import (
	"slices"
	"strings"
	"testing"

	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

func TestUsersAndAccess(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if err := m.CreateDatabases(ctx, []wire.Database{{Name: "a_b"}, {Name: "aXb"}, {Name: "other"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range []string{"a_b", "aXb", "other"} {
			m.DeleteDatabase(ctx, n)
		}
	})
	users := []wire.User{
		{Name: "alice", Password: `pa"ss\word'; DROP ROLE postgres; --`, Databases: []string{"a_b"}},
		{Name: "Bob.B", Host: "%", Password: "bobpw"},
	}
	if err := m.CreateUsers(ctx, users); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.DeleteUser(ctx, wire.UserRef{Name: "alice"})
		m.DeleteUser(ctx, wire.UserRef{Name: "Bob.B"})
	})

	list, err := m.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range list {
		names = append(names, u.Name+"@"+u.Host+":"+strings.Join(u.Databases, ","))
		if u.Password != "" {
			t.Fatal("listing returned a password")
		}
	}
	if !slices.Equal(names, []string{"Bob.B@%:", "alice@%:a_b"}) {
		t.Fatalf("users = %v (system roles must not be listed)", names)
	}

	// The odd password is the password, byte for byte.
	alice, err := connect(t, inst, "alice", users[0].Password, "a_b")
	if err != nil {
		t.Fatalf("alice cannot log in: %v", err)
	}
	if _, err := alice.Exec("CREATE TABLE t (i int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(t, inst, "alice", users[0].Password, "aXb"); err == nil {
		t.Fatal("alice reaches a database she was not given")
	}

	bob := wire.UserRef{Name: "Bob.B"}
	if err := m.GrantAccess(ctx, bob, []string{"other", "aXb"}); err != nil {
		t.Fatal(err)
	}
	access, err := m.ListAccess(ctx, bob)
	if err != nil || !slices.Equal(access, []string{"aXb", "other"}) {
		t.Fatalf("access = %v, %v", access, err)
	}
	bobDB, err := connect(t, inst, "Bob.B", "bobpw", "other")
	if err != nil {
		t.Fatalf("bob cannot reach a granted database: %v", err)
	}
	if _, err := bobDB.Exec("CREATE TABLE bobs (i int)"); err != nil {
		t.Fatalf("bob cannot create tables in a granted database: %v", err)
	}
	bobDB.Close()
	if err := m.RevokeAccess(ctx, bob, "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(t, inst, "Bob.B", "bobpw", "other"); err == nil {
		t.Fatal("bob still reaches a revoked database")
	}
	wantCode(t, m.RevokeAccess(ctx, bob, "other"), wire.CodeNotFound, "no access")
	access, _ = m.ListAccess(ctx, bob)
	if !slices.Equal(access, []string{"aXb"}) {
		t.Fatalf("access after revoke = %v", access)
	}

	// A user that owns tables and holds grants can still be deleted; what
	// it owned goes to the admin role.
	if err := m.DeleteUser(ctx, bob); err != nil {
		t.Fatal(err)
	}
	adm := admin(t, inst, "other")
	if owner := servertest.QueryStrings(t, adm, "SELECT tableowner FROM pg_tables WHERE tablename = 'bobs'"); !slices.Equal(owner, []string{"postgres"}) {
		t.Fatalf("owner of bob's table after delete = %v", owner)
	}
	wantCode(t, m.DeleteUser(ctx, bob), wire.CodeNotFound, "does not exist")
	_, err = m.ListAccess(ctx, bob)
	wantCode(t, err, wire.CodeNotFound, "does not exist")
}

func TestBadUserInputIsRejectedAndChangesNothing(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if err := m.CreateDatabases(ctx, []wire.Database{{Name: "udb"}}); err != nil {
		t.Fatal(err)
	}
	if err := m.CreateUsers(ctx, []wire.User{{Name: "existing", Password: "pw", Databases: []string{"udb"}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.DeleteUser(ctx, wire.UserRef{Name: "existing"})
		m.DeleteDatabase(ctx, "udb")
	})
	before := snapshot(t, inst)

	create := []struct {
		name  string
		users []wire.User
		code  wire.ErrorCode
		want  string
	}{
		{"injection name", []wire.User{{Name: "x'; DROP ROLE postgres; --", Password: "p"}}, wire.CodeInvalidArgument, "user name"},
		{"quote name", []wire.User{{Name: `a"b`, Password: "p"}}, wire.CodeInvalidArgument, "user name"},
		{"NUL name", []wire.User{{Name: "a\x00", Password: "p"}}, wire.CodeInvalidArgument, "user name"},
		{"too long", []wire.User{{Name: strings.Repeat("u", 64), Password: "p"}}, wire.CodeInvalidArgument, "64 bytes"},
		{"empty", []wire.User{{Name: "", Password: "p"}}, wire.CodeInvalidArgument, "empty"},
		{"admin", []wire.User{{Name: "postgres", Password: "p"}}, wire.CodeInvalidArgument, "reserved"},
		{"root", []wire.User{{Name: "ROOT", Password: "p"}}, wire.CodeInvalidArgument, "reserved"},
		{"pg_ prefix", []wire.User{{Name: "pg_monitor2", Password: "p"}}, wire.CodeInvalidArgument, "reserved"},
		{"public", []wire.User{{Name: "public", Password: "p"}}, wire.CodeInvalidArgument, "reserved"},
		{"host", []wire.User{{Name: "u1", Host: "10.0.0.1", Password: "p"}}, wire.CodeInvalidArgument, "no host part"},
		{"empty password", []wire.User{{Name: "u1"}}, wire.CodeInvalidArgument, "password is empty"},
		{"NUL password", []wire.User{{Name: "u1", Password: "a\x00b"}}, wire.CodeInvalidArgument, "printable ASCII"},
		{"newline password", []wire.User{{Name: "u1", Password: "a\nb"}}, wire.CodeInvalidArgument, "printable ASCII"},
		{"long password", []wire.User{{Name: "u1", Password: strings.Repeat("p", 257)}}, wire.CodeInvalidArgument, "257 bytes"},
		{"bad database", []wire.User{{Name: "u1", Password: "p", Databases: []string{"x'y"}}}, wire.CodeInvalidArgument, "database name"},
		{"missing database", []wire.User{{Name: "u1", Password: "p", Databases: []string{"nope"}}}, wire.CodeNotFound, "nope"},
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
	refs := []struct {
		name string
		ref  wire.UserRef
		code wire.ErrorCode
	}{
		{"injection", wire.UserRef{Name: "existing'; --"}, wire.CodeInvalidArgument},
		{"admin", wire.UserRef{Name: "postgres"}, wire.CodeInvalidArgument},
		{"root", wire.UserRef{Name: "root"}, wire.CodeInvalidArgument},
		{"host", wire.UserRef{Name: "existing", Host: "localhost"}, wire.CodeInvalidArgument},
		{"missing", wire.UserRef{Name: "ghost"}, wire.CodeNotFound},
	}
	for _, tc := range refs {
		t.Run("refs/"+tc.name, func(t *testing.T) {
			wantCode(t, m.DeleteUser(ctx, tc.ref), tc.code)
			wantCode(t, m.GrantAccess(ctx, tc.ref, []string{"udb"}), tc.code)
			wantCode(t, m.RevokeAccess(ctx, tc.ref, "udb"), tc.code)
			_, err := m.ListAccess(ctx, tc.ref)
			wantCode(t, err, tc.code)
			assertUnchanged(t, inst, before)
		})
	}
	existing := wire.UserRef{Name: "existing"}
	wantCode(t, m.GrantAccess(ctx, existing, []string{"udb", "x'; DROP DATABASE udb; --"}), wire.CodeInvalidArgument, "database name")
	wantCode(t, m.GrantAccess(ctx, existing, []string{"missing"}), wire.CodeNotFound, "missing")
	wantCode(t, m.GrantAccess(ctx, existing, []string{"postgres"}), wire.CodeInvalidArgument, "system database")
	wantCode(t, m.GrantAccess(ctx, existing, nil), wire.CodeInvalidArgument, "give 1")
	wantCode(t, m.RevokeAccess(ctx, existing, "template1"), wire.CodeInvalidArgument, "system database")
	assertUnchanged(t, inst, before)
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
	if _, err := connect(t, inst, "root", creds.Password, "postgres"); err != nil {
		t.Fatalf("root cannot log in: %v", err)
	}
	// A chosen password replaces the generated one.
	if _, err := m.EnableRoot(ctx, "chosen pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(t, inst, "root", creds.Password, "postgres"); err == nil {
		t.Fatal("the old root password still works")
	}
	if _, err := connect(t, inst, "root", "chosen pw", "postgres"); err != nil {
		t.Fatal(err)
	}
	if err := m.DisableRoot(ctx); err != nil {
		t.Fatal(err)
	}
	if on, _ := m.IsRootEnabled(ctx); on {
		t.Fatal("root still enabled")
	}
	if _, err := connect(t, inst, "root", "chosen pw", "postgres"); err == nil {
		t.Fatal("root logs in after disable")
	}
	before := snapshot(t, inst)
	for _, pw := range []string{"a\x00b", strings.Repeat("x", 300), "naïve"} {
		_, err := m.EnableRoot(ctx, pw)
		wantCode(t, err, wire.CodeInvalidArgument, "password")
		assertUnchanged(t, inst, before)
	}
}

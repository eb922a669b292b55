package mariadb_test

import (
	"errors"
	"slices"
	"testing"

	"strata/agent/datastore/mariadb"
	"strata/agent/wire"
)

func TestUpdateUserRenamesMovesGrantsAndSetsPassword(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if err := m.CreateDatabases(ctx, []wire.Database{{Name: "upd"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.DeleteDatabase(ctx, "upd") })
	if err := m.CreateUsers(ctx, []wire.User{{Name: "carol", Password: "old'pw", Databases: []string{"upd"}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.DeleteUser(ctx, wire.UserRef{Name: "carol"})
		m.DeleteUser(ctx, wire.UserRef{Name: "carol2", Host: "localhost"})
	})

	// Password only.
	if err := m.UpdateUser(ctx, wire.UpdateUserArgs{User: wire.UserRef{Name: "carol"}, NewPassword: "new pw 1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := login(t, inst, "carol", "old'pw", "upd"); err == nil {
		t.Fatal("the old password still works after the change")
	}
	if _, err := login(t, inst, "carol", "new pw 1", "upd"); err != nil {
		t.Fatalf("the new password does not work: %v", err)
	}

	// Name, host and password at once; the grant moves with the account.
	if err := m.UpdateUser(ctx, wire.UpdateUserArgs{User: wire.UserRef{Name: "carol", Host: "%"},
		NewName: "carol2", NewHost: "localhost", NewPassword: "new pw 2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := login(t, inst, "carol", "new pw 1", "upd"); err == nil {
		t.Fatal("the old name still logs in after the rename")
	}
	db, err := login(t, inst, "carol2", "new pw 2", "upd")
	if err != nil {
		t.Fatalf("the renamed account cannot log in with its new password: %v", err)
	}
	if _, err := db.Exec("CREATE TABLE t (i INT)"); err != nil {
		t.Fatalf("the renamed account lost its grant: %v", err)
	}
	access, err := m.ListAccess(ctx, wire.UserRef{Name: "carol2", Host: "localhost"})
	if err != nil || !slices.Equal(access, []string{"upd"}) {
		t.Fatalf("access after rename = %v %v", access, err)
	}
}

func TestUpdateUserFailuresLeaveTheOldAccountWorking(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if err := m.CreateUsers(ctx, []wire.User{{Name: "dave", Password: "davepw"}, {Name: "erin", Password: "erinpw"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range []string{"dave", "erin", "dave2", "dave3"} {
			m.DeleteUser(ctx, wire.UserRef{Name: n})
		}
	})
	before := snapshot(t, inst)
	for _, c := range []struct {
		name string
		args wire.UpdateUserArgs
		code wire.ErrorCode
	}{
		{"target exists", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewName: "erin", NewPassword: "x"}, wire.CodeAlreadyExists},
		{"invalid host", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewHost: "a'b", NewPassword: "x"}, wire.CodeInvalidArgument},
		{"injection in new name", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewName: "x'@'%'; DROP USER erin; --"}, wire.CodeInvalidArgument},
		{"reserved new name", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewName: "root"}, wire.CodeInvalidArgument},
		{"nothing to change", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}}, wire.CodeInvalidArgument},
		{"no such user", wire.UpdateUserArgs{User: wire.UserRef{Name: "nobody"}, NewName: "dave3"}, wire.CodeNotFound},
		{"password with NUL", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewPassword: "a\x00b"}, wire.CodeInvalidArgument},
	} {
		t.Run(c.name, func(t *testing.T) { wantCode(t, m.UpdateUser(ctx, c.args), c.code) })
	}
	assertUnchanged(t, inst, before)

	// A server error after the rename: the account is renamed back and
	// keeps its old password.
	restore := mariadb.SetFault(func(step string) error {
		if step == "update_user.renamed" {
			return errors.New("injected failure after the rename")
		}
		return nil
	})
	err := m.UpdateUser(ctx, wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewName: "dave2", NewPassword: "newdave"})
	restore()
	if err == nil {
		t.Fatal("the update with an injected failure succeeded")
	}
	if _, err := login(t, inst, "dave", "davepw", ""); err != nil {
		t.Fatalf("after the failed rename the old account does not log in with its old password: %v", err)
	}
	for _, pw := range []string{"davepw", "newdave"} {
		if _, err := login(t, inst, "dave2", pw, ""); err == nil {
			t.Fatal("the new name exists after the failed rename")
		}
	}
	assertUnchanged(t, inst, before)
}

func TestChangePasswordsAllOrNothing(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if err := m.CreateUsers(ctx, []wire.User{{Name: "fay", Password: "faypw"}, {Name: "gus", Host: "localhost", Password: "guspw"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.DeleteUser(ctx, wire.UserRef{Name: "fay"})
		m.DeleteUser(ctx, wire.UserRef{Name: "gus", Host: "localhost"})
	})
	before := snapshot(t, inst)
	wantCode(t, m.ChangePasswords(ctx, []wire.User{{Name: "fay", Password: "x"}, {Name: "nobody", Password: "y"}}), wire.CodeNotFound)
	wantCode(t, m.ChangePasswords(ctx, []wire.User{{Name: "fay", Password: ""}}), wire.CodeInvalidArgument)
	wantCode(t, m.ChangePasswords(ctx, []wire.User{{Name: "fay", Password: "a"}, {Name: "fay", Password: "b"}}), wire.CodeInvalidArgument)
	wantCode(t, m.ChangePasswords(ctx, []wire.User{{Name: "fay", Password: "a", Databases: []string{"x"}}}), wire.CodeInvalidArgument)
	wantCode(t, m.ChangePasswords(ctx, nil), wire.CodeInvalidArgument)

	// The second change fails on the server side: the first is undone.
	restore := mariadb.SetFault(func(step string) error {
		if step == "change_passwords.gus" {
			return errors.New("injected failure at the second user")
		}
		return nil
	})
	err := m.ChangePasswords(ctx, []wire.User{{Name: "fay", Password: "fay-new"}, {Name: "gus", Host: "localhost", Password: "gus-new"}})
	restore()
	if err == nil {
		t.Fatal("the change with an injected failure succeeded")
	}
	if _, err := login(t, inst, "fay", "faypw", ""); err != nil {
		t.Fatalf("fay's old password was not restored: %v", err)
	}
	if _, err := login(t, inst, "fay", "fay-new", ""); err == nil {
		t.Fatal("fay's new password works after the failed change")
	}
	assertUnchanged(t, inst, before)

	if err := m.ChangePasswords(ctx, []wire.User{{Name: "fay", Password: "fay-new"}, {Name: "gus", Host: "localhost", Password: "gus-new"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][3]string{{"fay", "faypw", "fay-new"}, {"gus", "guspw", "gus-new"}} {
		if _, err := login(t, inst, c[0], c[1], ""); err == nil {
			t.Fatalf("%s's old password still works", c[0])
		}
		if _, err := login(t, inst, c[0], c[2], ""); err != nil {
			t.Fatalf("%s's new password does not work: %v", c[0], err)
		}
	}
}

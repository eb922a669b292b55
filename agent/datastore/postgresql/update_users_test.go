package postgresql_test

import (
	"errors"
	"slices"
	"testing"

	"strata/agent/datastore/postgresql"
	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/wire"
)

func TestUpdateUserRenamesKeepsGrantsAndSetsPassword(t *testing.T) {
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
		m.DeleteUser(ctx, wire.UserRef{Name: "carol2"})
	})

	if err := m.UpdateUser(ctx, wire.UpdateUserArgs{User: wire.UserRef{Name: "carol"}, NewPassword: "new pw 1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(t, inst, "carol", "old'pw", "upd"); err == nil {
		t.Fatal("the old password still works after the change")
	}
	if _, err := connect(t, inst, "carol", "new pw 1", "upd"); err != nil {
		t.Fatalf("the new password does not work: %v", err)
	}

	if err := m.UpdateUser(ctx, wire.UpdateUserArgs{User: wire.UserRef{Name: "carol", Host: "%"}, NewName: "carol2", NewPassword: "new pw 2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(t, inst, "carol", "new pw 1", "upd"); err == nil {
		t.Fatal("the old name still logs in after the rename")
	}
	db, err := connect(t, inst, "carol2", "new pw 2", "upd")
	if err != nil {
		t.Fatalf("the renamed role cannot log in with its new password: %v", err)
	}
	if _, err := db.Exec("CREATE TABLE t (i int)"); err != nil {
		t.Fatalf("the renamed role lost its grant: %v", err)
	}
	access, err := m.ListAccess(ctx, wire.UserRef{Name: "carol2"})
	if err != nil || !slices.Equal(access, []string{"upd"}) {
		t.Fatalf("access after rename = %v %v", access, err)
	}
	// A rename alone keeps the password (SCRAM verifiers do not depend on
	// the role's name).
	if err := m.UpdateUser(ctx, wire.UpdateUserArgs{User: wire.UserRef{Name: "carol2"}, NewName: "carol"}); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(t, inst, "carol", "new pw 2", "upd"); err != nil {
		t.Fatalf("the password did not survive a rename: %v", err)
	}
}

func TestUpdateUserFailuresLeaveTheOldRoleWorking(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if err := m.CreateUsers(ctx, []wire.User{{Name: "dave", Password: "davepw"}, {Name: "erin", Password: "erinpw"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range []string{"dave", "erin", "dave2"} {
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
		{"target is a system role", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewName: "pg_monitor"}, wire.CodeInvalidArgument},
		{"a host", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewHost: "10.0.0.1", NewPassword: "x"}, wire.CodeInvalidArgument},
		{"injection in new name", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewName: `x"; DROP ROLE erin; --`}, wire.CodeInvalidArgument},
		{"nothing to change", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}}, wire.CodeInvalidArgument},
		{"no such user", wire.UpdateUserArgs{User: wire.UserRef{Name: "nobody"}, NewName: "dave2"}, wire.CodeNotFound},
		{"non-ASCII password", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewPassword: "pässwort"}, wire.CodeInvalidArgument},
	} {
		t.Run(c.name, func(t *testing.T) { wantCode(t, m.UpdateUser(ctx, c.args), c.code) })
	}
	assertUnchanged(t, inst, before)

	// A server error after the rename: the transaction rolls both back.
	restore := postgresql.SetFault(func(step string) error {
		if step == "update_user.1" {
			return errors.New("injected failure after the rename")
		}
		return nil
	})
	err := m.UpdateUser(ctx, wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewName: "dave2", NewPassword: "newdave"})
	restore()
	if err == nil {
		t.Fatal("the update with an injected failure succeeded")
	}
	if _, err := connect(t, inst, "dave", "davepw", "postgres"); err != nil {
		t.Fatalf("after the failed rename the old role does not log in with its old password: %v", err)
	}
	if _, err := connect(t, inst, "dave2", "newdave", "postgres"); err == nil {
		t.Fatal("the new name exists after the failed rename")
	}
	assertUnchanged(t, inst, before)
}

func TestChangePasswordsAllOrNothing(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if err := m.CreateUsers(ctx, []wire.User{{Name: "fay", Password: "faypw"}, {Name: "gus", Password: "guspw"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.DeleteUser(ctx, wire.UserRef{Name: "fay"})
		m.DeleteUser(ctx, wire.UserRef{Name: "gus"})
	})
	before := snapshot(t, inst)
	wantCode(t, m.ChangePasswords(ctx, []wire.User{{Name: "fay", Password: "x"}, {Name: "nobody", Password: "y"}}), wire.CodeNotFound)
	wantCode(t, m.ChangePasswords(ctx, []wire.User{{Name: "fay", Password: ""}}), wire.CodeInvalidArgument)
	wantCode(t, m.ChangePasswords(ctx, []wire.User{{Name: "fay", Password: "a"}, {Name: "fay", Password: "b"}}), wire.CodeInvalidArgument)
	wantCode(t, m.ChangePasswords(ctx, []wire.User{{Name: "fay", Host: "localhost", Password: "a"}}), wire.CodeInvalidArgument)
	assertUnchanged(t, inst, before)

	restore := postgresql.SetFault(func(step string) error {
		if step == "change_passwords.1" {
			return errors.New("injected failure at the second user")
		}
		return nil
	})
	err := m.ChangePasswords(ctx, []wire.User{{Name: "fay", Password: "fay-new"}, {Name: "gus", Password: "gus-new"}})
	restore()
	if err == nil {
		t.Fatal("the change with an injected failure succeeded")
	}
	if _, err := connect(t, inst, "fay", "faypw", "postgres"); err != nil {
		t.Fatalf("fay's old password does not work after the failed change: %v", err)
	}
	assertUnchanged(t, inst, before)

	if err := m.ChangePasswords(ctx, []wire.User{{Name: "fay", Password: "fay-new"}, {Name: "gus", Password: "gus-new"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][3]string{{"fay", "faypw", "fay-new"}, {"gus", "guspw", "gus-new"}} {
		if _, err := connect(t, inst, c[0], c[1], "postgres"); err == nil {
			t.Fatalf("%s's old password still works", c[0])
		}
		if _, err := connect(t, inst, c[0], c[2], "postgres"); err != nil {
			t.Fatalf("%s's new password does not work: %v", c[0], err)
		}
	}
}

// root_on_create: prepare sets the password the controller chose (and
// handed out in the create response) and does not echo it back.
func TestPrepareEnablesRootWithTheGivenPassword(t *testing.T) {
	const pw = "given-by-the-controller-0123456789"
	inst, res := postgresqltest.PreparedT(t, wire.PrepareArgs{EnableRoot: true, RootPassword: pw})
	if res.Root != nil {
		t.Fatalf("prepare echoed the given root password: %+v", res.Root)
	}
	if _, err := connect(t, inst, "root", pw, "postgres"); err != nil {
		t.Fatalf("root cannot log in with the given password: %v", err)
	}
	if _, err := connect(t, inst, "root", pw+"x", "postgres"); err == nil {
		t.Fatal("root logs in with a wrong password")
	}
	on, err := inst.Manager.IsRootEnabled(ctxT(t))
	if err != nil || !on {
		t.Fatalf("root enabled = %v %v", on, err)
	}
}

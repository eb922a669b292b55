package redis_test

import (
	"errors"
	"testing"

	"strata/agent/datastore/redis"
	"strata/agent/wire"
)

func TestUpdateUserRenamesAndSetsPassword(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if err := m.CreateUsers(ctx, []wire.User{{Name: "carol", Password: "old pw"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.DeleteUser(ctx, wire.UserRef{Name: "carol"})
		m.DeleteUser(ctx, wire.UserRef{Name: "carol2"})
	})
	if err := m.UpdateUser(ctx, wire.UpdateUserArgs{User: wire.UserRef{Name: "carol"}, NewPassword: "new pw 1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, inst, "carol", "old pw"); err == nil {
		t.Fatal("the old password still works")
	}
	if _, err := dial(t, inst, "carol", "new pw 1"); err != nil {
		t.Fatalf("the new password does not work: %v", err)
	}
	// A rename alone keeps the password.
	if err := m.UpdateUser(ctx, wire.UpdateUserArgs{User: wire.UserRef{Name: "carol", Host: "%"}, NewName: "carol2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, inst, "carol", "new pw 1"); err == nil {
		t.Fatal("the old name still logs in")
	}
	c, err := dial(t, inst, "carol2", "new pw 1")
	if err != nil {
		t.Fatalf("the renamed user cannot log in with its password: %v", err)
	}
	do(t, c, "SET", "k", "v")
	if _, err := c.Do(ctx, "ACL", "LIST"); err == nil {
		t.Fatal("the renamed user may run admin commands")
	}
	// Survives a restart (saved to the ACL file).
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, inst, "carol2", "new pw 1"); err != nil {
		t.Fatalf("the rename was lost by a restart: %v", err)
	}
}

func TestUpdateUserFailuresLeaveTheOldUserWorking(t *testing.T) {
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
		{"target exists", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewName: "erin"}, wire.CodeAlreadyExists},
		{"target is the default user", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewName: "default"}, wire.CodeInvalidArgument},
		{"a host", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewHost: "10.0.0.1", NewPassword: "x"}, wire.CodeInvalidArgument},
		{"rules in the new name", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewName: "x nopass +@all"}, wire.CodeInvalidArgument},
		{"nothing to change", wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}}, wire.CodeInvalidArgument},
		{"no such user", wire.UpdateUserArgs{User: wire.UserRef{Name: "nobody"}, NewName: "dave2"}, wire.CodeNotFound},
	} {
		t.Run(c.name, func(t *testing.T) { wantCode(t, m.UpdateUser(ctx, c.args), c.code) })
	}
	assertUnchanged(t, inst, before)

	restore := redis.SetFault(func(step string) error {
		if step == "update_user.applied" {
			return errors.New("injected failure before the save")
		}
		return nil
	})
	err := m.UpdateUser(ctx, wire.UpdateUserArgs{User: wire.UserRef{Name: "dave"}, NewName: "dave2", NewPassword: "newdave"})
	restore()
	if err == nil {
		t.Fatal("the update with an injected failure succeeded")
	}
	if _, err := dial(t, inst, "dave", "davepw"); err != nil {
		t.Fatalf("after the failed rename the old user does not log in with its old password: %v", err)
	}
	if _, err := dial(t, inst, "dave2", "newdave"); err == nil {
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
	assertUnchanged(t, inst, before)

	restore := redis.SetFault(func(step string) error {
		if step == "change_passwords.applied" {
			return errors.New("injected failure before the save")
		}
		return nil
	})
	err := m.ChangePasswords(ctx, []wire.User{{Name: "fay", Password: "fay-new"}, {Name: "gus", Password: "gus-new"}})
	restore()
	if err == nil {
		t.Fatal("the change with an injected failure succeeded")
	}
	assertUnchanged(t, inst, before)

	if err := m.ChangePasswords(ctx, []wire.User{{Name: "fay", Password: "fay-new"}, {Name: "gus", Password: "gus-new"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][3]string{{"fay", "faypw", "fay-new"}, {"gus", "guspw", "gus-new"}} {
		if _, err := dial(t, inst, c[0], c[1]); err == nil {
			t.Fatalf("%s's old password still works", c[0])
		}
		if _, err := dial(t, inst, c[0], c[2]); err != nil {
			t.Fatalf("%s's new password does not work: %v", c[0], err)
		}
	}
}

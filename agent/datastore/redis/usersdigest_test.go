package redis_test

import (
	"fmt"
	"os"
	"testing"

	"strata/agent/datastore/redis"
	"strata/agent/datastore/redis/redistest"
	"strata/agent/wire"
)

// The heartbeat's users digest is the export's (so a replica's compares
// with its source's), the same on a server given those users by an
// import, unchanged by data writes, and changed by every change of a
// user: a password, a new user, root, a deletion, and a rule changed by
// hand without ACL SAVE (the ACL file unchanged: seen within
// UsersDigestEvery heartbeats).
func TestUsersDigestChangesWithTheUsersAndNotWithTheData(t *testing.T) {
	inst, _ := redistest.PreparedT(t, wire.PrepareArgs{Users: []wire.User{{Name: "app", Password: "app-pw"}}})
	m, ctx := inst.Manager, ctxT(t)
	digest := func() string {
		t.Helper()
		d, err := m.UsersDigest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	d0 := digest()
	exp, err := m.ExportUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d0 != wire.UsersDigest(exp.Users) {
		t.Fatalf("digest %s is not the export's %s", d0, wire.UsersDigest(exp.Users))
	}
	other, _ := redistest.PreparedT(t, wire.PrepareArgs{})
	if d, _ := other.Manager.UsersDigest(ctx); d == d0 {
		t.Fatal("a server without app has app's server's digest")
	}
	if _, err := other.Manager.ImportUsers(ctx, exp.Users); err != nil {
		t.Fatal(err)
	}
	if d, err := other.Manager.UsersDigest(ctx); err != nil || d != d0 {
		t.Fatalf("a server given the same users by an import: digest %s (%v), want %s", d, err, d0)
	}

	c := admin(t, inst)
	for i := range 100 {
		do(t, c, "SET", fmt.Sprintf("k%d", i), "v")
	}
	do(t, c, "SAVE")
	for i := 0; i <= redis.UsersDigestEvery; i++ { // past the cache's reuse: read again
		if d := digest(); d != d0 {
			t.Fatalf("heartbeat %d after data writes: digest %s, want %s", i, d, d0)
		}
	}

	changes := []struct {
		what string
		do   func() error
	}{
		{"a new password", func() error { return m.ChangePasswords(ctx, []wire.User{{Name: "app", Password: "app-pw-2"}}) }},
		{"a new user", func() error { return m.CreateUsers(ctx, []wire.User{{Name: "more", Password: "more-pw"}}) }},
		{"root enabled", func() error { _, err := m.EnableRoot(ctx, "root-pw"); return err }},
		{"a deletion", func() error { return m.DeleteUser(ctx, wire.UserRef{Name: "more"}) }},
	}
	prev := d0
	for _, ch := range changes {
		if err := ch.do(); err != nil {
			t.Fatalf("%s: %v", ch.what, err)
		}
		if d := digest(); d == prev {
			t.Fatalf("%s: the digest did not change", ch.what)
		} else {
			prev = d
		}
	}

	// By hand, no ACL SAVE: the file is as it was, the digest follows
	// within UsersDigestEvery heartbeats.
	before, err := os.Stat(inst.Config.ACLFile)
	if err != nil {
		t.Fatal(err)
	}
	do(t, c, "ACL", "SETUSER", "app", "-@all", "+get")
	changed := false
	for i := 0; i <= redis.UsersDigestEvery && !changed; i++ {
		changed = digest() != prev
	}
	after, err := os.Stat(inst.Config.ACLFile)
	if err != nil {
		t.Fatal(err)
	}
	if !after.ModTime().Equal(before.ModTime()) || after.Size() != before.Size() {
		t.Fatal("the ACL file changed: the rule change was saved, the test proves nothing about the reuse bound")
	}
	if !changed {
		t.Fatalf("a rule changed by hand: the digest did not change within %d heartbeats", redis.UsersDigestEvery+1)
	}
}

// Figure: the digest's cost per heartbeat with N users, when the ACL
// file is unchanged (the cached digest) and when it is read again (the
// export of every user, hashed).
func BenchmarkUsersDigest(b *testing.B) {
	for _, n := range []int{10, 500} {
		inst, _ := redistest.PreparedT(b, wire.PrepareArgs{})
		ctx := b.Context()
		for s := 0; s < n; s += wire.MaxItemsPerOp {
			var us []wire.User
			for i := s; i < min(n, s+wire.MaxItemsPerOp); i++ {
				us = append(us, wire.User{Name: fmt.Sprintf("u%04d", i), Password: fmt.Sprintf("pw-%d", i)})
			}
			if err := inst.Manager.CreateUsers(ctx, us); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("users=%d/unchanged", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := inst.Manager.UsersDigest(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("users=%d/read", n), func(b *testing.B) {
			for b.Loop() {
				inst.Manager.ForgetUsersDigest()
				if _, err := inst.Manager.UsersDigest(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

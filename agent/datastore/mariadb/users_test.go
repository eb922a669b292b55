package mariadb_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

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
		{Name: "alice", Password: `pa"ss\word'; DROP USER root; --`, Databases: []string{"a_b"}},
		{Name: "bob", Host: "localhost", Password: "bobpw"},
	}
	if err := m.CreateUsers(ctx, users); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.DeleteUser(ctx, wire.UserRef{Name: "alice"})
		m.DeleteUser(ctx, wire.UserRef{Name: "bob", Host: "localhost"})
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
	if !slices.Equal(names, []string{"alice@%:a_b", "bob@localhost:"}) {
		t.Fatalf("users = %v (system accounts must not be listed)", names)
	}

	// The odd password is the password, byte for byte.
	alice, err := login(t, inst, "alice", users[0].Password, "a_b")
	if err != nil {
		t.Fatalf("alice cannot log in: %v", err)
	}
	if _, err := alice.Exec("CREATE TABLE t (i INT)"); err != nil {
		t.Fatal(err)
	}
	// A grant on a_b must not open aXb (underscore is a GRANT wildcard).
	if _, err := alice.Exec("CREATE TABLE aXb.t (i INT)"); err == nil {
		t.Fatal("grant on a_b also opened aXb")
	}

	if err := m.GrantAccess(ctx, wire.UserRef{Name: "bob", Host: "localhost"}, []string{"other", "aXb"}); err != nil {
		t.Fatal(err)
	}
	access, err := m.ListAccess(ctx, wire.UserRef{Name: "bob", Host: "localhost"})
	if err != nil || !slices.Equal(access, []string{"aXb", "other"}) {
		t.Fatalf("bob's access = %v %v", access, err)
	}
	bob, err := login(t, inst, "bob", "bobpw", "other")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Exec("CREATE TABLE t (i INT)"); err != nil {
		t.Fatal(err)
	}
	if err := m.RevokeAccess(ctx, wire.UserRef{Name: "bob", Host: "localhost"}, "other"); err != nil {
		t.Fatal(err)
	}
	access, _ = m.ListAccess(ctx, wire.UserRef{Name: "bob", Host: "localhost"})
	if !slices.Equal(access, []string{"aXb"}) {
		t.Fatalf("after revoke: %v", access)
	}
	wantCode(t, m.RevokeAccess(ctx, wire.UserRef{Name: "bob", Host: "localhost"}, "other"), wire.CodeNotFound, "no access")

	wantCode(t, m.CreateUsers(ctx, []wire.User{{Name: "alice", Password: "x"}}), wire.CodeAlreadyExists, "alice")
	if err := m.DeleteUser(ctx, wire.UserRef{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := login(t, inst, "alice", users[0].Password, ""); err == nil {
		t.Fatal("deleted user can still log in")
	}
	wantCode(t, m.DeleteUser(ctx, wire.UserRef{Name: "alice"}), wire.CodeNotFound, "alice")
}

func TestBadUserInputIsRejectedAndChangesNothing(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if err := m.CreateDatabases(ctx, []wire.Database{{Name: "udb"}}); err != nil {
		t.Fatal(err)
	}
	if err := m.CreateUsers(ctx, []wire.User{{Name: "carol", Password: "pw", Databases: []string{"udb"}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.DeleteUser(ctx, wire.UserRef{Name: "carol"})
		m.DeleteDatabase(ctx, "udb")
	})
	before := snapshot(t, inst)
	u := func(name, host, pw string, dbs ...string) []wire.User {
		return []wire.User{{Name: name, Host: host, Password: pw, Databases: dbs}}
	}
	cases := []struct {
		name  string
		users []wire.User
		code  wire.ErrorCode
		want  string
	}{
		{"injection name", u("x'; DROP DATABASE mysql; --", "", "pw"), wire.CodeInvalidArgument, "user name"},
		{"backtick name", u("a`b", "", "pw"), wire.CodeInvalidArgument, "user name"},
		{"NUL name", u("a\x00b", "", "pw"), wire.CodeInvalidArgument, "user name"},
		{"long name", u(strings.Repeat("u", 81), "", "pw"), wire.CodeInvalidArgument, "81 characters"},
		{"quote host", u("dave", "%'; DROP USER carol; --", "pw"), wire.CodeInvalidArgument, "host"},
		{"space host", u("dave", "evil host", "pw"), wire.CodeInvalidArgument, "host"},
		{"long host", u("dave", strings.Repeat("h", 256), "pw"), wire.CodeInvalidArgument, "256 characters"},
		{"NUL password", u("dave", "", "p\x00w"), wire.CodeInvalidArgument, "NUL"},
		{"empty password", u("dave", "", ""), wire.CodeInvalidArgument, "password is empty"},
		{"long password", u("dave", "", strings.Repeat("p", 257)), wire.CodeInvalidArgument, "257 bytes"},
		{"bad utf8 password", u("dave", "", "\xff\xfe"), wire.CodeInvalidArgument, "UTF-8"},
		{"reserved root", u("root", "%", "pw"), wire.CodeInvalidArgument, "reserved"},
		{"reserved mariadb.sys", u("mariadb.sys", "", "pw"), wire.CodeInvalidArgument, "reserved"},
		{"admin account", u(inst.Config.AdminUser, "", "pw"), wire.CodeInvalidArgument, "reserved"},
		{"bad db name", u("dave", "", "pw", "x'y"), wire.CodeInvalidArgument, "database name"},
		{"missing db", u("dave", "", "pw", "nope"), wire.CodeNotFound, "nope"},
		{"existing", u("carol", "%", "pw"), wire.CodeAlreadyExists, "carol"},
		{"good then bad", append(u("dave", "", "pw"), u("eve'", "", "pw")...), wire.CodeInvalidArgument, "eve'"},
		{"good then existing", append(u("dave", "", "pw"), u("carol", "", "pw")...), wire.CodeAlreadyExists, "carol"},
		{"listed twice", append(u("dave", "", "pw"), u("dave", "%", "pw2")...), wire.CodeInvalidArgument, "twice"},
	}
	for _, tc := range cases {
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
		{"injection", wire.UserRef{Name: "carol'; DROP USER carol; --"}, wire.CodeInvalidArgument},
		{"host injection", wire.UserRef{Name: "carol", Host: "%' OR '1'='1"}, wire.CodeInvalidArgument},
		{"missing", wire.UserRef{Name: "nobody"}, wire.CodeNotFound},
		{"root", wire.UserRef{Name: "root", Host: "localhost"}, wire.CodeInvalidArgument},
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
	carol := wire.UserRef{Name: "carol"}
	wantCode(t, m.GrantAccess(ctx, carol, []string{"udb", "x`; DROP DATABASE udb; --"}), wire.CodeInvalidArgument, "database name")
	wantCode(t, m.GrantAccess(ctx, carol, []string{"udb", "mysql"}), wire.CodeInvalidArgument, "system database")
	wantCode(t, m.GrantAccess(ctx, carol, []string{"nope"}), wire.CodeNotFound, "nope")
	wantCode(t, m.GrantAccess(ctx, carol, nil), wire.CodeInvalidArgument)
	wantCode(t, m.RevokeAccess(ctx, carol, "udb'"), wire.CodeInvalidArgument)
	assertUnchanged(t, inst, before)
}

func TestRootEnableDisable(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if on, err := m.IsRootEnabled(ctx); err != nil || on {
		t.Fatalf("root enabled on a fresh server: %v %v", on, err)
	}
	creds, err := m.EnableRoot(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.DisableRoot(ctx) })
	if creds.Name != "root" || len(creds.Password) < 32 {
		t.Fatalf("credentials %+v", creds)
	}
	creds2, _ := m.EnableRoot(ctx, "")
	if creds2.Password == creds.Password {
		t.Fatal("two generated root passwords are equal")
	}
	if on, _ := m.IsRootEnabled(ctx); !on {
		t.Fatal("root not enabled")
	}
	// A chosen password; the stored hash matches it.
	if _, err := m.EnableRoot(ctx, "Chosen-pw"); err != nil {
		t.Fatal(err)
	}
	var match int
	admin(t, inst).QueryRow("SELECT COUNT(*) FROM mysql.user WHERE User='root' AND Host='%' AND authentication_string = PASSWORD('Chosen-pw')").Scan(&match)
	if match != 1 {
		t.Fatal("root@% does not have the chosen password")
	}
	before := snapshot(t, inst)
	_, err = m.EnableRoot(ctx, "bad\x00pw")
	wantCode(t, err, wire.CodeInvalidArgument, "NUL")
	assertUnchanged(t, inst, before)

	if err := m.DisableRoot(ctx); err != nil {
		t.Fatal(err)
	}
	if on, _ := m.IsRootEnabled(ctx); on {
		t.Fatal("root still enabled")
	}
}

// secure_file_priv fences the FILE privilege: root (once enabled) reads
// and writes files only in the server's own secure_file_priv directory,
// never another file the server's OS user could reach.
func TestRootCannotReadOrWriteFilesOutsideSecureFileDir(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	creds, err := m.EnableRoot(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.DisableRoot(ctx) })
	root, err := login(t, inst, creds.Name, creds.Password, "")
	if err != nil {
		t.Fatal(err)
	}
	var dir string
	if err := root.QueryRow("SELECT @@secure_file_priv").Scan(&dir); err != nil || dir == "" {
		t.Fatalf("secure_file_priv = %q, %v: want a directory", dir, err)
	}
	if want := filepath.Join(inst.Dir, "files"); strings.TrimSuffix(dir, "/") != want {
		t.Fatalf("secure_file_priv = %q, want %q", dir, want)
	}
	// A file of the test's own that the server's OS user can read.
	outside := t.TempDir()
	os.Chmod(outside, 0o755)
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("not for the database\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var got sql.NullString
	if err := root.QueryRow("SELECT LOAD_FILE(?)", secret).Scan(&got); err != nil || got.Valid {
		t.Fatalf("LOAD_FILE of a file outside secure_file_priv = %q (%v), %v: want NULL", got.String, got.Valid, err)
	}
	out := filepath.Join(outside, "written")
	if _, err := root.Exec("SELECT 'x' INTO OUTFILE '" + out + "'"); err == nil || !strings.Contains(err.Error(), "secure-file-priv") {
		t.Fatalf("SELECT INTO OUTFILE outside secure_file_priv: %v, want refused", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("root wrote a file outside secure_file_priv")
	}
	// Inside it, root still can (dumps, imports).
	inside := filepath.Join(strings.TrimSuffix(dir, "/"), "dump-"+strconv.Itoa(os.Getpid()))
	if _, err := root.Exec("SELECT 'x' INTO OUTFILE '" + inside + "'"); err != nil {
		t.Fatalf("SELECT INTO OUTFILE inside secure_file_priv: %v", err)
	}
	os.Remove(inside)
}

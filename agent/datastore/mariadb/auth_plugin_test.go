package mariadb_test

import (
	"database/sql"
	"strings"
	"testing"

	"strata/agent/datastore/mariadb"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/wire"
)

// accountAuth reads an account's plugin and stored credentials.
func accountAuth(t *testing.T, db *sql.DB, name, host string) (plugin, auth string) {
	t.Helper()
	if err := db.QueryRow("SELECT plugin, authentication_string FROM mysql.user WHERE User = ? AND Host = ?", name, host).Scan(&plugin, &auth); err != nil {
		t.Fatalf("%s@%s: %v", name, host, err)
	}
	return plugin, auth
}

// A version with auth_plugin ed25519: prepare installs the plugin, the
// initial user, root and later users get it, a real client (the Go
// driver's client_ed25519) logs in with each password and not with a
// wrong one, the stored key is the one the server itself computes for the
// same password, and a password change or an update keeps the plugin. An
// account made with mysql_native_password before keeps that plugin when
// its password changes. A restarted agent still gives new accounts
// ed25519.
func TestEd25519AccountsLogInAndKeepTheirPlugin(t *testing.T) {
	const appPW = `s3cret pass'word "x"`
	inst, res := mariadbtest.PreparedT(t, wire.PrepareArgs{
		AuthPlugin: wire.AuthPluginEd25519,
		Databases:  []wire.Database{{Name: "shop"}},
		Users:      []wire.User{{Name: "app", Password: appPW, Databases: []string{"shop"}}},
		EnableRoot: true,
	})
	m, ctx, adm := inst.Manager, ctxT(t), admin(t, inst)
	for _, acct := range [][2]string{{"app", "%"}, {"root", "%"}} {
		plugin, auth := accountAuth(t, adm, acct[0], acct[1])
		if plugin != "ed25519" || len(auth) != 43 {
			t.Fatalf("%s@%s: plugin %q, authentication_string %q; want ed25519 and a 43-character key", acct[0], acct[1], plugin, auth)
		}
	}
	if _, auth := accountAuth(t, adm, "root", "%"); strings.Contains(auth, res.Root.Password) {
		t.Fatal("root's stored credentials hold its password")
	}
	if _, err := login(t, inst, "app", appPW, "shop"); err != nil {
		t.Fatalf("app cannot log in with ed25519: %v", err)
	}
	if _, err := login(t, inst, "app", "wrong", "shop"); err == nil {
		t.Fatal("ed25519: a wrong password was accepted")
	}

	// The key the agent sends is the one the server derives itself.
	if _, err := adm.Exec("CREATE USER 'bysrv'@'localhost' IDENTIFIED VIA ed25519 USING PASSWORD('" + strings.ReplaceAll(appPW, "'", "''") + "')"); err != nil {
		t.Fatal(err)
	}
	_, server := accountAuth(t, adm, "bysrv", "localhost")
	_, agent := accountAuth(t, adm, "app", "%")
	if server != agent {
		t.Fatalf("the agent stored %q for the password, the server computes %q", agent, server)
	}

	if err := m.CreateUsers(ctx, []wire.User{{Name: "later", Password: "later pw"}}); err != nil {
		t.Fatal(err)
	}
	if plugin, _ := accountAuth(t, adm, "later", "%"); plugin != "ed25519" {
		t.Fatalf("a user created after prepare got %q, want ed25519", plugin)
	}
	if err := m.UpdateUser(ctx, wire.UpdateUserArgs{User: wire.UserRef{Name: "later"}, NewName: "later2", NewPassword: "later pw 2"}); err != nil {
		t.Fatal(err)
	}
	if plugin, _ := accountAuth(t, adm, "later2", "%"); plugin != "ed25519" {
		t.Fatalf("update_user changed the plugin to %q", plugin)
	}
	if _, err := login(t, inst, "later2", "later pw 2", ""); err != nil {
		t.Fatalf("the updated ed25519 password does not work: %v", err)
	}

	// An older native account keeps its plugin through a change.
	if _, err := adm.Exec("CREATE USER 'legacy'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('old')"); err != nil {
		t.Fatal(err)
	}
	if err := m.ChangePasswords(ctx, []wire.User{{Name: "app", Password: "app pw 2"}, {Name: "legacy", Password: "legacy pw 2"}}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"app": "ed25519", "legacy": "mysql_native_password"} {
		if plugin, _ := accountAuth(t, adm, name, "%"); plugin != want {
			t.Fatalf("change_passwords turned %s's plugin into %q, want %q", name, plugin, want)
		}
	}
	if _, err := login(t, inst, "app", "app pw 2", "shop"); err != nil {
		t.Fatalf("app's changed ed25519 password does not work: %v", err)
	}
	if _, err := login(t, inst, "legacy", "legacy pw 2", ""); err != nil {
		t.Fatalf("legacy's changed native password does not work: %v", err)
	}

	// The choice survives an agent restart (it is in the state file).
	m.Close()
	m2, err := mariadb.New(inst.Config)
	if err != nil {
		t.Fatal(err)
	}
	inst.Manager = m2
	if err := m2.CreateUsers(ctx, []wire.User{{Name: "afterrestart", Password: "pw"}}); err != nil {
		t.Fatal(err)
	}
	if plugin, _ := accountAuth(t, adm, "afterrestart", "%"); plugin != "ed25519" {
		t.Fatalf("after an agent restart a new user got %q, want ed25519", plugin)
	}
}

// Without auth_plugin, accounts use mysql_native_password; a client logs
// in, and a password change keeps the plugin.
func TestAccountsUseNativePasswordByDefault(t *testing.T) {
	inst := sharedServer(t)
	m, ctx, adm := inst.Manager, ctxT(t), admin(t, inst)
	if err := m.CreateUsers(ctx, []wire.User{{Name: "nat", Password: "nat pw"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.DeleteUser(ctx, wire.UserRef{Name: "nat"}) })
	plugin, auth := accountAuth(t, adm, "nat", "%")
	if plugin != "mysql_native_password" || len(auth) != 41 || auth[0] != '*' {
		t.Fatalf("plugin %q, authentication_string %q; want mysql_native_password and a *-prefixed SHA-1 hash", plugin, auth)
	}
	if _, err := login(t, inst, "nat", "nat pw", ""); err != nil {
		t.Fatal(err)
	}
	if err := m.UpdateUser(ctx, wire.UpdateUserArgs{User: wire.UserRef{Name: "nat"}, NewPassword: "nat pw 2"}); err != nil {
		t.Fatal(err)
	}
	if plugin, _ := accountAuth(t, adm, "nat", "%"); plugin != "mysql_native_password" {
		t.Fatalf("a password change made the plugin %q", plugin)
	}
	if _, err := login(t, inst, "nat", "nat pw 2", ""); err != nil {
		t.Fatal(err)
	}
}

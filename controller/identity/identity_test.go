package identity_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"strata/controller/auth"
	"strata/controller/identity"
	"strata/controller/store"
	"strata/controller/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

func TestBootstrapIssueAuthenticateRevoke(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		now := time.Now()
		s := &identity.Store{DB: db, BcryptCost: 4, TokenTTL: time.Hour, Now: func() time.Time { return now }}
		pw, err := s.Bootstrap(ctx)
		if err != nil || len(pw) < 16 {
			t.Fatalf("bootstrap: %q, %v", pw, err)
		}
		if again, err := s.Bootstrap(ctx); err != nil || again != "" {
			t.Fatalf("second bootstrap: %q, %v", again, err)
		}
		tok, p, err := s.Issue(ctx, identity.Credentials{UserName: "admin", UserDomain: "Default", Password: pw, ProjectName: "admin", ProjectDomain: "Default"})
		if err != nil || !p.IsAdmin() || p.ProjectName != "admin" {
			t.Fatalf("issue: %+v, %v", p, err)
		}
		if n := storetest.Count(t, db, "SELECT COUNT(*) FROM tokens WHERE hash = ?", tok); n != 0 {
			t.Fatal("the token is stored in clear")
		}
		got, err := s.Authenticate(ctx, tok)
		if err != nil || got.UserID != p.UserID || got.ProjectID != p.ProjectID {
			t.Fatalf("authenticate: %+v, %v", got, err)
		}
		for name, c := range map[string]identity.Credentials{
			"wrong password":  {UserName: "admin", Password: pw + "x"},
			"unknown user":    {UserName: "nobody", Password: pw},
			"other domain":    {UserName: "admin", UserDomain: "corp", Password: pw},
			"foreign project": {UserName: "admin", Password: pw, ProjectName: "demo"},
		} {
			if _, _, err := s.Issue(ctx, c); !errors.Is(err, auth.ErrUnauthorized) {
				t.Errorf("%s: %v", name, err)
			}
		}
		now = now.Add(2 * time.Hour)
		if _, err := s.Authenticate(ctx, tok); !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatalf("expired token: %v", err)
		}
		now = now.Add(-2 * time.Hour)
		if err := s.Revoke(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(ctx, tok); !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatalf("revoked token: %v", err)
		}
	})
}

func TestProjectsAndUsers(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s := &identity.Store{DB: db, BcryptCost: 4}
		p, err := s.CreateProject(ctx, "demo")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateProject(ctx, "demo"); !errors.Is(err, identity.ErrExists) {
			t.Fatalf("duplicate project: %v", err)
		}
		if _, err := s.CreateProject(ctx, "bad name'"); !errors.Is(err, identity.ErrInvalid) {
			t.Fatalf("bad project name: %v", err)
		}
		if _, err := s.CreateUser(ctx, "alice", "short", "demo", false); !errors.Is(err, identity.ErrInvalid) {
			t.Fatalf("short password: %v", err)
		}
		if _, err := s.CreateUser(ctx, "alice", "long-enough-pw", "nope", false); !errors.Is(err, identity.ErrNotFound) {
			t.Fatalf("unknown project: %v", err)
		}
		u, err := s.CreateUser(ctx, "alice", "long-enough-pw", "demo", false)
		if err != nil || u.ProjectID != p.ID {
			t.Fatalf("user = %+v, %v", u, err)
		}
		_, pr, err := s.Issue(ctx, identity.Credentials{UserID: u.ID, Password: "long-enough-pw", ProjectID: p.ID})
		if err != nil || pr.IsAdmin() || pr.ProjectID != p.ID {
			t.Fatalf("issue by ids: %+v, %v", pr, err)
		}
	})
}

// TestRolesAreAssignedPerProjectAsInKeystone is the model tempest's dynamic
// credentials use: a user made with no project, given roles on one.
func TestRolesAreAssignedPerProjectAsInKeystone(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s := &identity.Store{DB: db, BcryptCost: 4}
		p, err := s.CreateProjectWith(ctx, identity.Project{Name: "tempest-1", Description: "per test class"})
		if err != nil {
			t.Fatal(err)
		}
		other, _ := s.CreateProject(ctx, "other")
		u, err := s.AddUser(ctx, "tempest-1-user", "pass-word-1", "")
		if err != nil || u.ProjectID != "" {
			t.Fatalf("add user = %+v, %v", u, err)
		}
		creds := identity.Credentials{UserID: u.ID, Password: "pass-word-1", ProjectID: p.ID}
		if _, _, err := s.Issue(ctx, creds); !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatalf("a token for a project the user has no role on: %v", err)
		}
		if err := s.AssignRole(ctx, p.ID, u.ID, identity.RoleMember); err != nil {
			t.Fatal(err)
		}
		if err := s.AssignRole(ctx, p.ID, u.ID, identity.RoleMember); err != nil {
			t.Fatalf("assigning twice: %v", err)
		}
		tok, pr, err := s.Issue(ctx, creds)
		if err != nil || pr.IsAdmin() || !slices.Equal(pr.Roles, []string{"member", "reader"}) {
			t.Fatalf("member token: %+v, %v", pr, err)
		}
		if _, _, err := s.Issue(ctx, identity.Credentials{UserID: u.ID, Password: "pass-word-1", ProjectID: other.ID}); !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatalf("scoped to a project without a role: %v", err)
		}
		if _, _, err := s.Issue(ctx, identity.Credentials{UserID: u.ID, Password: "pass-word-1"}); !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatalf("unscoped without a default project: %v", err)
		}
		if err := s.AssignRole(ctx, p.ID, u.ID, identity.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Authenticate(ctx, tok); err != nil || !got.IsAdmin() {
			t.Fatalf("an existing token gains a role assigned later: %+v, %v", got, err)
		}
		if got, _ := s.AssignedRoles(ctx, p.ID, u.ID); !slices.Equal(got, []string{"admin", "member"}) {
			t.Fatalf("assigned roles = %v", got)
		}
		for name, err := range map[string]error{
			"unknown role":    s.AssignRole(ctx, p.ID, u.ID, "superuser"),
			"unknown project": s.AssignRole(ctx, "nope", u.ID, identity.RoleMember),
			"unknown user":    s.AssignRole(ctx, p.ID, "nope", identity.RoleMember),
			"not assigned":    s.UnassignRole(ctx, other.ID, u.ID, identity.RoleMember),
		} {
			if !errors.Is(err, identity.ErrNotFound) {
				t.Errorf("%s: %v, want not found", name, err)
			}
		}
		if err := s.UnassignRole(ctx, p.ID, u.ID, identity.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		if err := s.UnassignRole(ctx, p.ID, u.ID, identity.RoleMember); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(ctx, tok); !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatalf("a token whose user lost every role on its project: %v", err)
		}
	})
}

// TestDeletingUsersAndProjectsLeavesNothingBehind: what tempest's class
// cleanup relies on.
func TestDeletingUsersAndProjectsLeavesNothingBehind(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s := &identity.Store{DB: db, BcryptCost: 4}
		p, _ := s.CreateProject(ctx, "class")
		u, err := s.AddUser(ctx, "class-user", "pass-word-1", p.ID)
		if err != nil || u.ProjectID != p.ID {
			t.Fatalf("user with a default project: %+v, %v", u, err)
		}
		s.AssignRole(ctx, p.ID, u.ID, identity.RoleMember)
		tok, _, err := s.Issue(ctx, identity.Credentials{UserName: "class-user", Password: "pass-word-1"})
		if err != nil {
			t.Fatalf("unscoped token from the default project: %v", err)
		}
		keeper, _ := s.CreateUser(ctx, "keeper", "pass-word-2", "class", false)
		if err := s.DeleteUser(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteUser(ctx, u.ID); !errors.Is(err, identity.ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
		if _, err := s.Authenticate(ctx, tok); !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatalf("a deleted user's token: %v", err)
		}
		if err := s.DeleteProject(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteProject(ctx, p.ID); !errors.Is(err, identity.ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
		for table, n := range map[string]int{
			"SELECT COUNT(*) FROM role_assignments": 0, "SELECT COUNT(*) FROM tokens": 0,
			"SELECT COUNT(*) FROM users WHERE default_project_id IS NOT NULL": 0, "SELECT COUNT(*) FROM users": 1,
		} {
			if got := storetest.Count(t, db, table); got != n {
				t.Errorf("%s = %d, want %d", table, got, n)
			}
		}
		if k, err := s.User(ctx, keeper.ID); err != nil || k.ProjectID != "" {
			t.Fatalf("a user of the deleted project stays, without a default project: %+v, %v", k, err)
		}
	})
}

// TestMigrationKeepsUsersTheirProjectAndTokens: users made by the first
// schema (one project, an admin flag) keep their access and tokens.
func TestMigrationKeepsUsersTheirProjectAndTokens(t *testing.T) {
	storetest.EachAt(t, 1, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		hash, _ := bcrypt.GenerateFromPassword([]byte("old-password"), 4)
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := db.Exec(ctx, q, args...); err != nil {
				t.Fatal(err)
			}
		}
		exec(`INSERT INTO projects (id, name, domain_id, created_at) VALUES ('p1', 'admin', 'default', 1), ('p2', 'demo', 'default', 1)`)
		exec(`INSERT INTO users (id, name, domain_id, password_hash, project_id, admin, created_at) VALUES (?, 'admin', 'default', ?, 'p1', 1, 1), (?, 'alice', 'default', ?, 'p2', 0, 1)`,
			"u1", string(hash), "u2", string(hash))
		s := &identity.Store{DB: db, BcryptCost: 4}
		sum := sha256.Sum256([]byte("old-token"))
		exec(`INSERT INTO tokens (hash, user_id, project_id, issued_at, expires_at) VALUES (?, 'u2', 'p2', 1, ?)`,
			hex.EncodeToString(sum[:]), store.Millis(time.Now().Add(time.Hour)))
		if err := db.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if p, err := s.Authenticate(ctx, "old-token"); err != nil || p.UserName != "alice" || p.ProjectID != "p2" || p.IsAdmin() {
			t.Fatalf("a token from before: %+v, %v", p, err)
		}
		_, p, err := s.Issue(ctx, identity.Credentials{UserName: "admin", Password: "old-password"})
		if err != nil || !p.IsAdmin() || p.ProjectID != "p1" {
			t.Fatalf("the admin after the migration: %+v, %v", p, err)
		}
		if err := s.DeleteUser(ctx, "u2"); err != nil {
			t.Fatal(err)
		}
		if n := storetest.Count(t, db, "SELECT COUNT(*) FROM tokens WHERE user_id = 'u2'"); n != 0 {
			t.Fatalf("tokens still reference the rebuilt users table: %d left after deleting their user", n)
		}
	})
}

// Disabling a user and changing its password each revoke the tokens it
// holds at once; a disabled user cannot log in, re-enabled it can.
func TestDisableAndSetPasswordRevokeTheUsersTokens(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s := &identity.Store{DB: db, BcryptCost: 4}
		if _, err := s.CreateProject(ctx, "shop"); err != nil {
			t.Fatal(err)
		}
		u, err := s.CreateUser(ctx, "alice", "alice-pw-1", "shop", false)
		if err != nil {
			t.Fatal(err)
		}
		other, err := s.CreateUser(ctx, "bob", "bob-pw-123", "shop", false)
		if err != nil {
			t.Fatal(err)
		}
		login := func(name, pw string) (string, error) {
			tok, _, err := s.Issue(ctx, identity.Credentials{UserName: name, Password: pw})
			return tok, err
		}
		tok1, err := login("alice", "alice-pw-1")
		if err != nil {
			t.Fatal(err)
		}
		bobTok, _ := login("bob", "bob-pw-123")

		if err := s.SetEnabled(ctx, u.ID, false); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(ctx, tok1); !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatalf("a disabled user's token still authenticates: %v", err)
		}
		if _, err := login("alice", "alice-pw-1"); !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatalf("a disabled user logged in: %v", err)
		}
		if got, _ := s.User(ctx, u.ID); !got.Disabled {
			t.Fatal("User does not say disabled")
		}
		if _, err := s.Authenticate(ctx, bobTok); err != nil {
			t.Fatalf("another user's token was revoked too: %v", err)
		}
		if err := s.SetEnabled(ctx, u.ID, true); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(ctx, tok1); !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatal("re-enabling brought a revoked token back")
		}
		tok2, err := login("alice", "alice-pw-1")
		if err != nil {
			t.Fatalf("re-enabled user cannot log in: %v", err)
		}

		if err := s.SetPassword(ctx, u.ID, "short"); !errors.Is(err, identity.ErrInvalid) {
			t.Fatalf("a 5-byte password: %v", err)
		}
		if err := s.SetPassword(ctx, u.ID, "alice-pw-2"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(ctx, tok2); !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatal("a token from before the password change still authenticates")
		}
		if _, err := login("alice", "alice-pw-1"); !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatal("the old password still logs in")
		}
		if _, err := login("alice", "alice-pw-2"); err != nil {
			t.Fatalf("the new password: %v", err)
		}
		for _, f := range []func() error{
			func() error { return s.SetEnabled(ctx, "no-such-user", false) },
			func() error { return s.SetPassword(ctx, "no-such-user", "long-enough-pw") },
		} {
			if err := f(); !errors.Is(err, identity.ErrNotFound) {
				t.Errorf("unknown user: %v", err)
			}
		}
		if got, err := s.UserByName(ctx, "bob"); err != nil || got.ID != other.ID {
			t.Fatalf("UserByName(bob) = %+v, %v", got, err)
		}
	})
}

package identity_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

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

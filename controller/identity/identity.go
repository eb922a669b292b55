// Package identity keeps the embedded mode's users, projects and tokens:
// what the controller's small Keystone v3 (api/keystone) authenticates
// against, and the auth.Authenticator the Trove API uses in that mode.
// Passwords are stored as bcrypt hashes and tokens as SHA-256 hashes with
// an expiry, so a copy of the database yields no usable credential.
//
// There is one domain, "default" (Keystone's). identity does not know
// about any other resource.
package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"time"

	"golang.org/x/crypto/bcrypt"

	"strata/controller/auth"
	"strata/controller/store"
)

// DefaultDomainID and DefaultDomainName are Keystone's default domain.
const (
	DefaultDomainID   = "default"
	DefaultDomainName = "Default"
)

// Errors.
var (
	ErrExists   = errors.New("already exists")
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid")
)

// Store is the identity store.
type Store struct {
	DB *store.DB
	// TokenTTL is how long an issued token lives (default 8h).
	TokenTTL time.Duration
	Now      func() time.Time
	// BcryptCost defaults to bcrypt.DefaultCost.
	BcryptCost int
}

var _ auth.Authenticator = (*Store)(nil)

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Project is a tenant.
type Project struct {
	ID, Name, DomainID string
}

// User is an account; it belongs to one project.
type User struct {
	ID, Name, DomainID, ProjectID string
	Admin                         bool
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// CreateProject makes a project.
func (s *Store) CreateProject(ctx context.Context, name string) (Project, error) {
	if !namePattern.MatchString(name) {
		return Project{}, fmt.Errorf("%w: project name %q: use 1-64 characters of A-Z a-z 0-9 . _ @ -", ErrInvalid, name)
	}
	p := Project{ID: newHexID(), Name: name, DomainID: DefaultDomainID}
	_, err := s.DB.Exec(ctx, `INSERT INTO projects (id, name, domain_id, created_at) VALUES (?, ?, ?, ?)`,
		p.ID, p.Name, p.DomainID, store.Millis(s.now()))
	if store.IsUniqueViolation(err) {
		return Project{}, fmt.Errorf("project %s: %w", name, ErrExists)
	}
	return p, err
}

// CreateUser makes a user in project (id or name).
func (s *Store) CreateUser(ctx context.Context, name, password, project string, admin bool) (User, error) {
	if !namePattern.MatchString(name) {
		return User{}, fmt.Errorf("%w: user name %q: use 1-64 characters of A-Z a-z 0-9 . _ @ -", ErrInvalid, name)
	}
	if len(password) < 8 || len(password) > 72 {
		return User{}, fmt.Errorf("%w: password must be 8 to 72 bytes", ErrInvalid)
	}
	p, err := s.Project(ctx, project)
	if err != nil {
		return User{}, err
	}
	cost := s.BcryptCost
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return User{}, err
	}
	u := User{ID: newHexID(), Name: name, DomainID: DefaultDomainID, ProjectID: p.ID, Admin: admin}
	_, err = s.DB.Exec(ctx, `INSERT INTO users (id, name, domain_id, password_hash, project_id, admin, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		u.ID, u.Name, u.DomainID, string(hash), u.ProjectID, store.Bool(admin), store.Millis(s.now()))
	if store.IsUniqueViolation(err) {
		return User{}, fmt.Errorf("user %s: %w", name, ErrExists)
	}
	return u, err
}

// Project finds a project by id or name.
func (s *Store) Project(ctx context.Context, idOrName string) (Project, error) {
	var p Project
	err := s.DB.QueryRow(ctx, `SELECT id, name, domain_id FROM projects WHERE id = ? OR name = ?
		ORDER BY CASE WHEN id = ? THEN 0 ELSE 1 END LIMIT 1`, idOrName, idOrName, idOrName).Scan(&p.ID, &p.Name, &p.DomainID)
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("project %q: %w", idOrName, ErrNotFound)
	}
	return p, err
}

// Bootstrap creates the admin project and an admin user with a random
// password if there is no user at all. It reports the password it set
// (empty when there were users already).
func (s *Store) Bootstrap(ctx context.Context) (password string, err error) {
	var n int
	if err := s.DB.QueryRow(ctx, `SELECT COUNT(*) FROM users`).Scan(&n); err != nil || n > 0 {
		return "", err
	}
	p, err := s.CreateProject(ctx, "admin")
	if err != nil && !errors.Is(err, ErrExists) {
		return "", err
	}
	if errors.Is(err, ErrExists) {
		if p, err = s.Project(ctx, "admin"); err != nil {
			return "", err
		}
	}
	password = randomString(18)
	if _, err := s.CreateUser(ctx, "admin", password, p.ID, true); err != nil {
		return "", err
	}
	return password, nil
}

// Credentials are what a password authentication names.
type Credentials struct {
	UserID, UserName, UserDomain string
	Password                     string
	// Project scope, by id or by name (+ domain). Empty: the user's own.
	ProjectID, ProjectName, ProjectDomain string
}

// Issue checks a password and returns a new token and what it stands for.
func (s *Store) Issue(ctx context.Context, c Credentials) (string, auth.Principal, error) {
	var u User
	var hash string
	var admin int
	var err error
	if c.UserID != "" {
		err = s.DB.QueryRow(ctx, `SELECT id, name, domain_id, project_id, admin, password_hash FROM users WHERE id = ?`, c.UserID).
			Scan(&u.ID, &u.Name, &u.DomainID, &u.ProjectID, &admin, &hash)
	} else {
		if !isDefaultDomain(c.UserDomain) {
			return "", auth.Principal{}, auth.ErrUnauthorized
		}
		err = s.DB.QueryRow(ctx, `SELECT id, name, domain_id, project_id, admin, password_hash FROM users WHERE name = ? AND domain_id = ?`,
			c.UserName, DefaultDomainID).Scan(&u.ID, &u.Name, &u.DomainID, &u.ProjectID, &admin, &hash)
	}
	if errors.Is(err, sql.ErrNoRows) {
		// Spend the same time as a wrong password would.
		bcrypt.CompareHashAndPassword([]byte("$2a$10$0000000000000000000000000000000000000000000000000000."), []byte(c.Password))
		return "", auth.Principal{}, auth.ErrUnauthorized
	}
	if err != nil {
		return "", auth.Principal{}, err
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(c.Password)) != nil {
		return "", auth.Principal{}, auth.ErrUnauthorized
	}
	u.Admin = admin != 0
	// Each user belongs to one project; a scope naming another is refused
	// (admins included: cross-project access is not part of this API).
	proj, err := s.Project(ctx, u.ProjectID)
	if err != nil {
		return "", auth.Principal{}, err
	}
	if (c.ProjectID != "" && c.ProjectID != proj.ID) || (c.ProjectID == "" && c.ProjectName != "" &&
		(c.ProjectName != proj.Name || !isDefaultDomain(c.ProjectDomain))) {
		return "", auth.Principal{}, auth.ErrUnauthorized
	}
	token := randomString(32)
	now := s.now()
	ttl := s.TokenTTL
	if ttl == 0 {
		ttl = 8 * time.Hour
	}
	p := auth.Principal{UserID: u.ID, UserName: u.Name, DomainID: u.DomainID, ProjectID: proj.ID, ProjectName: proj.Name,
		Roles: roles(u.Admin), ExpiresAt: now.Add(ttl).UTC().Truncate(time.Second)}
	if _, err := s.DB.Exec(ctx, `INSERT INTO tokens (hash, user_id, project_id, issued_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
		hashToken(token), u.ID, proj.ID, store.Millis(now), store.Millis(p.ExpiresAt)); err != nil {
		return "", auth.Principal{}, err
	}
	// Expired tokens are of no use to anyone: drop them now and then.
	if now.UnixNano()%16 == 0 {
		s.DB.Exec(ctx, `DELETE FROM tokens WHERE expires_at < ?`, store.Millis(now))
	}
	return token, p, nil
}

// Authenticate implements auth.Authenticator.
func (s *Store) Authenticate(ctx context.Context, token string) (auth.Principal, error) {
	if token == "" || len(token) > 512 {
		return auth.Principal{}, auth.ErrUnauthorized
	}
	var p auth.Principal
	var admin int
	var expires int64
	err := s.DB.QueryRow(ctx, `SELECT u.id, u.name, u.domain_id, p.id, p.name, u.admin, t.expires_at
		FROM tokens t JOIN users u ON u.id = t.user_id JOIN projects p ON p.id = t.project_id
		WHERE t.hash = ?`, hashToken(token)).Scan(&p.UserID, &p.UserName, &p.DomainID, &p.ProjectID, &p.ProjectName, &admin, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return p, auth.ErrUnauthorized
	}
	if err != nil {
		return p, err
	}
	p.ExpiresAt = store.FromMillis(expires)
	if !s.now().Before(p.ExpiresAt) {
		return auth.Principal{}, auth.ErrUnauthorized
	}
	p.Roles = roles(admin != 0)
	return p, nil
}

// Revoke invalidates a token.
func (s *Store) Revoke(ctx context.Context, token string) error {
	_, err := s.DB.Exec(ctx, `DELETE FROM tokens WHERE hash = ?`, hashToken(token))
	return err
}

func roles(admin bool) []string {
	if admin {
		return []string{"admin", "member", "reader"}
	}
	return []string{"member", "reader"}
}

func isDefaultDomain(d string) bool {
	return d == "" || d == DefaultDomainID || d == DefaultDomainName
}

func hashToken(t string) string {
	h := sha256.Sum256([]byte(t))
	return hex.EncodeToString(h[:])
}

// newHexID makes a Keystone-style id (32 hex digits).
func newHexID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

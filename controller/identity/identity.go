// Package identity keeps the embedded mode's projects, users, role
// assignments and tokens: what the controller's small Keystone v3
// (api/keystone) authenticates against and manages, and the
// auth.Authenticator the Trove API uses in that mode. Passwords are stored
// as bcrypt hashes and tokens as SHA-256 hashes with an expiry, so a copy
// of the database yields no usable credential.
//
// As in Keystone, a user belongs to a domain, not a project: what it may
// do in a project is the roles assigned to it there (admin, member,
// reader — fixed, each implying the next). There is one domain, "default"
// (Keystone's). identity does not know about any other resource.
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

// Roles are Keystone's three default roles, the only ones there are. A
// role implies the ones after it (admin ⇒ member ⇒ reader), as Keystone's
// default implied roles do; tokens list the implied ones too.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
	RoleReader = "reader"
)

// Roles returns the roles, strongest first.
func Roles() []string { return []string{RoleAdmin, RoleMember, RoleReader} }

func isRole(r string) bool {
	for _, x := range Roles() {
		if x == r {
			return true
		}
	}
	return false
}

// Project is a tenant.
type Project struct {
	ID, Name, DomainID, Description string
}

// User is an account of the default domain. ProjectID is its default
// project ("" when it has none): the scope of a token that names none.
// What a user may do in a project is its role assignments there.
type User struct {
	ID, Name, DomainID, ProjectID string
	// Disabled users cannot log in and hold no token.
	Disabled bool
}

// Names are plain characters; as long as Keystone allows: 64 for a
// project, 255 for a user (tempest's dynamic users run to 70 and more).
var (
	namePattern     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)
	userNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,254}$`)
)

// CreateProject makes a project.
func (s *Store) CreateProject(ctx context.Context, name string) (Project, error) {
	return s.CreateProjectWith(ctx, Project{Name: name})
}

// CreateProjectWith makes a project from p's name and description.
func (s *Store) CreateProjectWith(ctx context.Context, p Project) (Project, error) {
	if !namePattern.MatchString(p.Name) {
		return Project{}, fmt.Errorf("%w: project name %q: use 1-64 characters of A-Z a-z 0-9 . _ @ -", ErrInvalid, p.Name)
	}
	if len(p.Description) > 255 {
		return Project{}, fmt.Errorf("%w: a project description is at most 255 bytes", ErrInvalid)
	}
	p.ID, p.DomainID = newHexID(), DefaultDomainID
	_, err := s.DB.Exec(ctx, `INSERT INTO projects (id, name, domain_id, description, created_at) VALUES (?, ?, ?, ?, ?)`,
		p.ID, p.Name, p.DomainID, p.Description, store.Millis(s.now()))
	if store.IsUniqueViolation(err) {
		return Project{}, fmt.Errorf("project %s: %w", p.Name, ErrExists)
	}
	return p, err
}

// CreateUser makes a user whose default project is project (id or name),
// with the member role there, and the admin role too if admin is set:
// what `strata controller user create` makes.
func (s *Store) CreateUser(ctx context.Context, name, password, project string, admin bool) (User, error) {
	p, err := s.Project(ctx, project)
	if err != nil {
		return User{}, err
	}
	var u User
	err = s.DB.InTx(ctx, func(tx *store.Tx) error {
		var err error
		if u, err = s.addUser(ctx, tx, name, password, p.ID); err != nil {
			return err
		}
		roles := []string{RoleMember}
		if admin {
			roles = append(roles, RoleAdmin)
		}
		for _, r := range roles {
			if err := s.assign(ctx, tx, p.ID, u.ID, r); err != nil {
				return err
			}
		}
		return nil
	})
	return u, err
}

// AddUser makes a user with no role anywhere (Keystone's POST /v3/users);
// defaultProject (id, optional) becomes the scope of its unscoped tokens
// once it has a role there.
func (s *Store) AddUser(ctx context.Context, name, password, defaultProject string) (User, error) {
	if defaultProject != "" {
		p, err := s.ProjectByID(ctx, defaultProject)
		if err != nil {
			return User{}, err
		}
		defaultProject = p.ID
	}
	return s.addUser(ctx, s.DB, name, password, defaultProject)
}

func (s *Store) addUser(ctx context.Context, q store.Querier, name, password, project string) (User, error) {
	if !userNamePattern.MatchString(name) {
		return User{}, fmt.Errorf("%w: user name %q: use 1-255 characters of A-Z a-z 0-9 . _ @ -", ErrInvalid, name)
	}
	hash, err := s.hashPassword(password)
	if err != nil {
		return User{}, err
	}
	u := User{ID: newHexID(), Name: name, DomainID: DefaultDomainID, ProjectID: project}
	_, err = q.Exec(ctx, `INSERT INTO users (id, name, domain_id, password_hash, default_project_id, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		u.ID, u.Name, u.DomainID, hash, nullable(project), store.Millis(s.now()))
	if store.IsUniqueViolation(err) {
		return User{}, fmt.Errorf("user %s: %w", name, ErrExists)
	}
	return u, err
}

// hashPassword checks a password's length (bcrypt reads 72 bytes) and
// hashes it.
func (s *Store) hashPassword(password string) (string, error) {
	if len(password) < 8 || len(password) > 72 {
		return "", fmt.Errorf("%w: password must be 8 to 72 bytes", ErrInvalid)
	}
	cost := s.BcryptCost
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	return string(hash), err
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Project finds a project by id or name.
func (s *Store) Project(ctx context.Context, idOrName string) (Project, error) {
	var p Project
	err := s.DB.QueryRow(ctx, `SELECT id, name, domain_id, description FROM projects WHERE id = ? OR name = ?
		ORDER BY CASE WHEN id = ? THEN 0 ELSE 1 END LIMIT 1`, idOrName, idOrName, idOrName).Scan(&p.ID, &p.Name, &p.DomainID, &p.Description)
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("project %q: %w", idOrName, ErrNotFound)
	}
	return p, err
}

// ProjectByID finds a project by id only (Keystone's API names projects
// by id).
func (s *Store) ProjectByID(ctx context.Context, id string) (Project, error) {
	var p Project
	err := s.DB.QueryRow(ctx, `SELECT id, name, domain_id, description FROM projects WHERE id = ?`, id).
		Scan(&p.ID, &p.Name, &p.DomainID, &p.Description)
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("project %q: %w", id, ErrNotFound)
	}
	return p, err
}

// Projects lists projects by name; name filters ("" for all).
func (s *Store) Projects(ctx context.Context, name string) ([]Project, error) {
	q := `SELECT id, name, domain_id, description FROM projects`
	var args []any
	if name != "" {
		q += ` WHERE name = ?`
		args = append(args, name)
	}
	return store.All(ctx, s.DB, func(sc store.Scanner) (Project, error) {
		var p Project
		return p, sc.Scan(&p.ID, &p.Name, &p.DomainID, &p.Description)
	}, q+` ORDER BY name`, args...)
}

// DeleteProject removes a project with its role assignments and tokens;
// users whose default project it was keep no default.
func (s *Store) DeleteProject(ctx context.Context, id string) error {
	res, err := s.DB.Exec(ctx, `DELETE FROM projects WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("project %q: %w", id, ErrNotFound)
	}
	return nil
}

// User finds a user by id.
func (s *Store) User(ctx context.Context, id string) (User, error) {
	var u User
	var project sql.NullString
	var enabled int
	err := s.DB.QueryRow(ctx, `SELECT id, name, domain_id, default_project_id, enabled FROM users WHERE id = ?`, id).
		Scan(&u.ID, &u.Name, &u.DomainID, &project, &enabled)
	if errors.Is(err, sql.ErrNoRows) {
		return u, fmt.Errorf("user %q: %w", id, ErrNotFound)
	}
	u.ProjectID, u.Disabled = project.String, enabled == 0
	return u, err
}

// Users lists users by name; name filters ("" for all).
func (s *Store) Users(ctx context.Context, name string) ([]User, error) {
	q := `SELECT id, name, domain_id, default_project_id, enabled FROM users`
	var args []any
	if name != "" {
		q += ` WHERE name = ?`
		args = append(args, name)
	}
	return store.All(ctx, s.DB, func(sc store.Scanner) (User, error) {
		var u User
		var project sql.NullString
		var enabled int
		err := sc.Scan(&u.ID, &u.Name, &u.DomainID, &project, &enabled)
		u.ProjectID, u.Disabled = project.String, enabled == 0
		return u, err
	}, q+` ORDER BY name`, args...)
}

// DeleteUser removes a user with its role assignments and tokens.
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	res, err := s.DB.Exec(ctx, `DELETE FROM users WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("user %q: %w", id, ErrNotFound)
	}
	return nil
}

// UserByName finds a user of the default domain by id or name.
func (s *Store) UserByName(ctx context.Context, idOrName string) (User, error) {
	if u, err := s.User(ctx, idOrName); err == nil || !errors.Is(err, ErrNotFound) {
		return u, err
	}
	list, err := s.Users(ctx, idOrName)
	if err != nil {
		return User{}, err
	}
	if len(list) == 0 {
		return User{}, fmt.Errorf("user %q: %w", idOrName, ErrNotFound)
	}
	return list[0], nil
}

// SetEnabled enables or disables a user. Disabling revokes every token
// the user holds, in the same transaction: no request authenticates as a
// disabled user after this returns.
func (s *Store) SetEnabled(ctx context.Context, id string, enabled bool) error {
	return s.DB.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE users SET enabled = ? WHERE id = ?`, boolInt(enabled), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("user %q: %w", id, ErrNotFound)
		}
		if !enabled {
			_, err = tx.Exec(ctx, `DELETE FROM tokens WHERE user_id = ?`, id)
		}
		return err
	})
}

// SetPassword changes a user's password and revokes every token it holds
// (whoever had the old password may hold one), in one transaction.
func (s *Store) SetPassword(ctx context.Context, id, password string) error {
	hash, err := s.hashPassword(password)
	if err != nil {
		return err
	}
	return s.DB.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE users SET password_hash = ? WHERE id = ?`, hash, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("user %q: %w", id, ErrNotFound)
		}
		_, err = tx.Exec(ctx, `DELETE FROM tokens WHERE user_id = ?`, id)
		return err
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// AssignRole gives a user a role on a project (assigning it twice is not
// an error).
func (s *Store) AssignRole(ctx context.Context, projectID, userID, role string) error {
	if err := s.checkAssignment(ctx, projectID, userID, role); err != nil {
		return err
	}
	return s.assign(ctx, s.DB, projectID, userID, role)
}

func (s *Store) assign(ctx context.Context, q store.Querier, projectID, userID, role string) error {
	_, err := q.Exec(ctx, `INSERT INTO role_assignments (user_id, project_id, role, created_at) VALUES (?, ?, ?, ?)`,
		userID, projectID, role, store.Millis(s.now()))
	if store.IsUniqueViolation(err) {
		return nil
	}
	return err
}

// UnassignRole takes a role away; a role the user does not have is
// ErrNotFound. Tokens scoped to the project lose it at once.
func (s *Store) UnassignRole(ctx context.Context, projectID, userID, role string) error {
	if err := s.checkAssignment(ctx, projectID, userID, role); err != nil {
		return err
	}
	res, err := s.DB.Exec(ctx, `DELETE FROM role_assignments WHERE user_id = ? AND project_id = ? AND role = ?`, userID, projectID, role)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("role %s of user %s on project %s: %w", role, userID, projectID, ErrNotFound)
	}
	return nil
}

func (s *Store) checkAssignment(ctx context.Context, projectID, userID, role string) error {
	if !isRole(role) {
		return fmt.Errorf("role %q: %w", role, ErrNotFound)
	}
	if _, err := s.ProjectByID(ctx, projectID); err != nil {
		return err
	}
	_, err := s.User(ctx, userID)
	return err
}

// AssignedRoles lists the roles given to a user on a project (not the
// implied ones), strongest first.
func (s *Store) AssignedRoles(ctx context.Context, projectID, userID string) ([]string, error) {
	got, err := store.All(ctx, s.DB, store.ScanString, `SELECT role FROM role_assignments WHERE user_id = ? AND project_id = ?`,
		userID, projectID)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range Roles() {
		for _, g := range got {
			if g == r {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// effectiveRoles is what a token scoped to the project carries: the
// assigned roles with the ones they imply; none means no access.
func (s *Store) effectiveRoles(ctx context.Context, projectID, userID string) ([]string, error) {
	assigned, err := s.AssignedRoles(ctx, projectID, userID)
	if err != nil || len(assigned) == 0 {
		return nil, err
	}
	all := Roles()
	for i, r := range all {
		if r == assigned[0] {
			return all[i:], nil
		}
	}
	return nil, nil
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

// Issue checks a password and returns a new token and what it stands
// for: the project named (by id, or by name in the default domain), or
// the user's default project; the user needs a role there.
func (s *Store) Issue(ctx context.Context, c Credentials) (string, auth.Principal, error) {
	var u User
	var hash string
	var project sql.NullString
	var err error
	if c.UserID != "" {
		err = s.DB.QueryRow(ctx, `SELECT id, name, domain_id, default_project_id, password_hash FROM users WHERE id = ? AND enabled = 1`, c.UserID).
			Scan(&u.ID, &u.Name, &u.DomainID, &project, &hash)
	} else {
		if !isDefaultDomain(c.UserDomain) {
			return "", auth.Principal{}, auth.ErrUnauthorized
		}
		err = s.DB.QueryRow(ctx, `SELECT id, name, domain_id, default_project_id, password_hash FROM users WHERE name = ? AND domain_id = ? AND enabled = 1`,
			c.UserName, DefaultDomainID).Scan(&u.ID, &u.Name, &u.DomainID, &project, &hash)
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
	var proj Project
	switch {
	case c.ProjectID != "":
		proj, err = s.ProjectByID(ctx, c.ProjectID)
	case c.ProjectName != "":
		if !isDefaultDomain(c.ProjectDomain) {
			return "", auth.Principal{}, auth.ErrUnauthorized
		}
		var all []Project
		if all, err = s.Projects(ctx, c.ProjectName); err == nil && len(all) == 0 {
			err = ErrNotFound
		} else if err == nil {
			proj = all[0]
		}
	case project.Valid:
		proj, err = s.ProjectByID(ctx, project.String)
	default:
		// Keystone would give an unscoped token; every route here needs a
		// project.
		return "", auth.Principal{}, auth.ErrUnauthorized
	}
	if errors.Is(err, ErrNotFound) {
		return "", auth.Principal{}, auth.ErrUnauthorized
	}
	if err != nil {
		return "", auth.Principal{}, err
	}
	roles, err := s.effectiveRoles(ctx, proj.ID, u.ID)
	if err != nil {
		return "", auth.Principal{}, err
	}
	if len(roles) == 0 {
		return "", auth.Principal{}, auth.ErrUnauthorized // no role on that project
	}
	token := randomString(32)
	now := s.now()
	ttl := s.TokenTTL
	if ttl == 0 {
		ttl = 8 * time.Hour
	}
	p := auth.Principal{UserID: u.ID, UserName: u.Name, DomainID: u.DomainID, ProjectID: proj.ID, ProjectName: proj.Name,
		Roles: roles, ExpiresAt: now.Add(ttl).UTC().Truncate(time.Second)}
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

// Authenticate implements auth.Authenticator. The roles are the user's
// assignments on the token's project now: one taken away counts at once,
// and a token whose user lost every role there is no longer valid.
func (s *Store) Authenticate(ctx context.Context, token string) (auth.Principal, error) {
	if token == "" || len(token) > 512 {
		return auth.Principal{}, auth.ErrUnauthorized
	}
	var p auth.Principal
	var expires int64
	err := s.DB.QueryRow(ctx, `SELECT u.id, u.name, u.domain_id, p.id, p.name, t.expires_at
		FROM tokens t JOIN users u ON u.id = t.user_id JOIN projects p ON p.id = t.project_id
		WHERE t.hash = ? AND u.enabled = 1`, hashToken(token)).Scan(&p.UserID, &p.UserName, &p.DomainID, &p.ProjectID, &p.ProjectName, &expires)
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
	if p.Roles, err = s.effectiveRoles(ctx, p.ProjectID, p.UserID); err != nil {
		return auth.Principal{}, err
	}
	if len(p.Roles) == 0 {
		return auth.Principal{}, auth.ErrUnauthorized
	}
	return p, nil
}

// Revoke invalidates a token.
func (s *Store) Revoke(ctx context.Context, token string) error {
	_, err := s.DB.Exec(ctx, `DELETE FROM tokens WHERE hash = ?`, hashToken(token))
	return err
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

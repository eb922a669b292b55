// Package registry keeps what instances can be made of: datastores, their
// versions (manager, image, packages, port, boot timeout, active, the
// datastore's default) with each version's validation rules, and flavors.
// It is what trove-manage edited; `strata datastore ...` and the API's
// read-only datastore routes use it.
//
// It records references only: it does not check that an image exists
// (the caller asks the image store) and does not validate configuration
// values (configurations/ does, with the rules kept here).
package registry

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"strata/agent/wire"
	"strata/controller/store"
)

// ErrNotFound is wrapped by lookups that find nothing.
var ErrNotFound = errors.New("not found")

// ErrInvalid is wrapped by errors about bad input.
var ErrInvalid = errors.New("invalid")

// Registry reads and writes the registry tables.
type Registry struct {
	DB  *store.DB
	Now func() time.Time
}

func (r *Registry) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Datastore is a kind of database (mariadb, postgresql, redis).
type Datastore struct {
	ID               string
	Name             string
	DefaultVersionID string
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// Version is one datastore version: what image to boot and which agent
// manager runs it.
type Version struct {
	ID            string
	DatastoreID   string
	DatastoreName string
	Name          string
	Manager       string
	ImageID       string
	Packages      []string
	Active        bool
	// Port is the database's TCP port in the guest.
	Port int
	// BootTimeout is how long a new instance may take to be ready before
	// it ends in ERROR.
	BootTimeout time.Duration
	// RootOnCreate: a new instance gets its remote root account at create
	// and the create response carries the password (Trove's
	// root_on_create).
	RootOnCreate bool
	// AuthPlugin is the MariaDB authentication plugin the version's
	// accounts get (wire.AuthPluginNative or wire.AuthPluginEd25519);
	// empty is the agent's default, mysql_native_password.
	AuthPlugin string
	// Rules are the validation rules (nil until loaded).
	Rules         []wire.ParameterRule
	RulesSource   string
	RulesLoadedAt time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// Rule returns the rule for a parameter name.
func (v *Version) Rule(name string) (wire.ParameterRule, bool) {
	for _, r := range v.Rules {
		if r.Name == name {
			return r, true
		}
	}
	return wire.ParameterRule{}, false
}

// Flavor is a machine size.
type Flavor struct {
	ID        string
	Name      string
	RAMMB     int
	VCPUs     int
	DiskGB    int
	CreatedAt time.Time
}

var (
	datastoreNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	versionNamePattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	managerPattern       = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
	flavorNamePattern    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	packagePattern       = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]{0,127}$`)
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// UpdateDatastore creates the datastore if it does not exist and, when
// defaultVersion is not empty, makes that version (by name or id) its
// default: trove-manage's datastore_update.
func (r *Registry) UpdateDatastore(ctx context.Context, name, defaultVersion string) (Datastore, error) {
	if !datastoreNamePattern.MatchString(name) {
		return Datastore{}, invalid("datastore name %q: use 1-64 characters of a-z 0-9 . _ - starting with a letter or digit", trunc(name))
	}
	var out Datastore
	err := r.DB.InTx(ctx, func(tx *store.Tx) error {
		now := store.Millis(r.now())
		_, err := tx.Exec(ctx, `INSERT INTO datastores (id, name, created_at, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (name) DO NOTHING`, store.NewID(), name, now, now)
		if err != nil {
			return err
		}
		ds, err := getDatastore(ctx, tx, name)
		if err != nil {
			return err
		}
		if defaultVersion != "" {
			v, err := findVersion(ctx, tx, ds.ID, defaultVersion)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE datastores SET default_version_id = ?, updated_at = ? WHERE id = ?`, v.ID, now, ds.ID); err != nil {
				return err
			}
			ds.DefaultVersionID = v.ID
		}
		out = ds
		return nil
	})
	return out, err
}

// VersionSpec is what `strata datastore version update` sets.
type VersionSpec struct {
	Datastore   string // name or id
	Name        string
	Manager     string
	ImageID     string
	Packages    []string
	Active      bool
	Port        int
	BootTimeout time.Duration
	// RootOnCreate is Trove's root_on_create for this version.
	RootOnCreate bool
	// AuthPlugin is Version.AuthPlugin; only the MariaDB managers take one.
	AuthPlugin string
}

// authPluginManagers are the managers whose agent takes an auth_plugin.
var authPluginManagers = map[string]bool{"mariadb": true, "mysql": true}

func (s VersionSpec) validate() error {
	var errs []string
	if !versionNamePattern.MatchString(s.Name) {
		errs = append(errs, fmt.Sprintf("version name %q: use 1-64 characters of A-Z a-z 0-9 . _ -", trunc(s.Name)))
	}
	if !managerPattern.MatchString(s.Manager) {
		errs = append(errs, fmt.Sprintf("manager %q: use 1-32 characters of a-z 0-9 _ - starting with a letter", trunc(s.Manager)))
	}
	if s.ImageID == "" {
		errs = append(errs, "image: required")
	}
	for _, p := range s.Packages {
		if !packagePattern.MatchString(p) {
			errs = append(errs, fmt.Sprintf("package %q is not a Debian package name", trunc(p)))
		}
	}
	if s.Port < 1 || s.Port > 65535 {
		errs = append(errs, fmt.Sprintf("port %d: want 1-65535", s.Port))
	}
	if s.BootTimeout < 5*time.Second || s.BootTimeout > 24*time.Hour {
		errs = append(errs, fmt.Sprintf("boot timeout %s: want 5s to 24h", s.BootTimeout))
	}
	switch {
	case !wire.ValidAuthPlugin(s.AuthPlugin):
		errs = append(errs, fmt.Sprintf("auth plugin %q: use %s or %s", trunc(s.AuthPlugin), wire.AuthPluginNative, wire.AuthPluginEd25519))
	case s.AuthPlugin != "" && !authPluginManagers[s.Manager]:
		errs = append(errs, fmt.Sprintf("auth plugin %s: only MariaDB versions choose one, not manager %q", s.AuthPlugin, trunc(s.Manager)))
	}
	if len(errs) > 0 {
		return invalid("%s", strings.Join(errs, "; "))
	}
	return nil
}

// UpdateVersion creates or updates a datastore version (trove-manage's
// datastore_version_update). The datastore must exist. A datastore
// without a default version gets this one.
func (r *Registry) UpdateVersion(ctx context.Context, spec VersionSpec) (Version, error) {
	if err := spec.validate(); err != nil {
		return Version{}, err
	}
	var id string
	err := r.DB.InTx(ctx, func(tx *store.Tx) error {
		ds, err := getDatastore(ctx, tx, spec.Datastore)
		if err != nil {
			return err
		}
		now := store.Millis(r.now())
		id = store.NewID()
		_, err = tx.Exec(ctx, `INSERT INTO datastore_versions
			(id, datastore_id, name, manager, image_id, packages, active, port, boot_timeout_s, root_on_create, auth_plugin, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (datastore_id, name) DO UPDATE SET manager = excluded.manager, image_id = excluded.image_id,
				packages = excluded.packages, active = excluded.active, port = excluded.port,
				boot_timeout_s = excluded.boot_timeout_s, root_on_create = excluded.root_on_create,
				auth_plugin = excluded.auth_plugin, updated_at = excluded.updated_at`,
			id, ds.ID, spec.Name, spec.Manager, spec.ImageID, strings.Join(spec.Packages, ","), store.Bool(spec.Active),
			spec.Port, int(spec.BootTimeout/time.Second), store.Bool(spec.RootOnCreate), spec.AuthPlugin, now, now)
		if err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT id FROM datastore_versions WHERE datastore_id = ? AND name = ?`, ds.ID, spec.Name).Scan(&id); err != nil {
			return err
		}
		if ds.DefaultVersionID == "" {
			_, err = tx.Exec(ctx, `UPDATE datastores SET default_version_id = ?, updated_at = ? WHERE id = ?`, id, now, ds.ID)
		}
		return err
	})
	if err != nil {
		return Version{}, err
	}
	return r.Version(ctx, id)
}

// LoadRules parses a validation-rules file (wire.ParseRules) and stores it
// as the version's rules, replacing earlier ones: trove-manage's
// db_load_datastore_config_parameters.
func (r *Registry) LoadRules(ctx context.Context, datastore, version string, data []byte, source string) (Version, error) {
	rules, err := wire.ParseRules(data)
	if err != nil {
		return Version{}, fmt.Errorf("%w: %s: %v", ErrInvalid, source, err)
	}
	enc, err := json.Marshal(rules)
	if err != nil {
		return Version{}, err
	}
	v, err := r.FindVersion(ctx, datastore, version)
	if err != nil {
		return Version{}, err
	}
	now := store.Millis(r.now())
	if _, err := r.DB.Exec(ctx, `UPDATE datastore_versions SET rules = ?, rules_source = ?, rules_loaded_at = ?, updated_at = ? WHERE id = ?`,
		string(enc), source, now, now, v.ID); err != nil {
		return Version{}, err
	}
	return r.Version(ctx, v.ID)
}

// Datastores lists every datastore by name.
func (r *Registry) Datastores(ctx context.Context) ([]Datastore, error) {
	return store.All(ctx, r.DB, scanDatastore, `SELECT id, name, default_version_id, created_at, updated_at FROM datastores ORDER BY name`)
}

// Datastore finds a datastore by id or name.
func (r *Registry) Datastore(ctx context.Context, idOrName string) (Datastore, error) {
	return getDatastore(ctx, r.DB, idOrName)
}

func getDatastore(ctx context.Context, q store.Querier, idOrName string) (Datastore, error) {
	d, err := scanDatastore(q.QueryRow(ctx, `SELECT id, name, default_version_id, created_at, updated_at FROM datastores
		WHERE id = ? OR name = ? ORDER BY CASE WHEN id = ? THEN 0 ELSE 1 END LIMIT 1`, idOrName, idOrName, idOrName))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("datastore %q: %w", trunc(idOrName), ErrNotFound)
	}
	return d, err
}

func scanDatastore(s store.Scanner) (Datastore, error) {
	var d Datastore
	var def sql.NullString
	var created, updated int64
	if err := s.Scan(&d.ID, &d.Name, &def, &created, &updated); err != nil {
		return d, err
	}
	d.DefaultVersionID = def.String
	d.CreatedAt, d.UpdatedAt = store.FromMillis(created), store.FromMillis(updated)
	return d, nil
}

const versionColumns = `v.id, v.datastore_id, d.name, v.name, v.manager, v.image_id, v.packages, v.active, v.port,
	v.boot_timeout_s, v.root_on_create, v.auth_plugin, v.rules, v.rules_source, v.rules_loaded_at, v.created_at, v.updated_at`

func scanVersion(s store.Scanner) (Version, error) {
	var v Version
	var packages string
	var active, timeout, rootOnCreate int
	var rules, source sql.NullString
	var loaded sql.NullInt64
	var created, updated int64
	if err := s.Scan(&v.ID, &v.DatastoreID, &v.DatastoreName, &v.Name, &v.Manager, &v.ImageID, &packages, &active,
		&v.Port, &timeout, &rootOnCreate, &v.AuthPlugin, &rules, &source, &loaded, &created, &updated); err != nil {
		return v, err
	}
	if packages != "" {
		v.Packages = strings.Split(packages, ",")
	}
	v.Active = active != 0
	v.RootOnCreate = rootOnCreate != 0
	v.BootTimeout = time.Duration(timeout) * time.Second
	if rules.Valid {
		if err := json.Unmarshal([]byte(rules.String), &v.Rules); err != nil {
			return v, fmt.Errorf("version %s: stored rules: %w", v.ID, err)
		}
	}
	v.RulesSource = source.String
	v.RulesLoadedAt = store.NullMillis(loaded)
	v.CreatedAt, v.UpdatedAt = store.FromMillis(created), store.FromMillis(updated)
	return v, nil
}

// Versions lists a datastore's versions by name.
func (r *Registry) Versions(ctx context.Context, datastoreID string) ([]Version, error) {
	return store.All(ctx, r.DB, scanVersion, `SELECT `+versionColumns+` FROM datastore_versions v JOIN datastores d ON d.id = v.datastore_id
		WHERE v.datastore_id = ? ORDER BY v.name`, datastoreID)
}

// Version finds a version by id.
func (r *Registry) Version(ctx context.Context, id string) (Version, error) {
	v, err := scanVersion(r.DB.QueryRow(ctx, `SELECT `+versionColumns+` FROM datastore_versions v JOIN datastores d ON d.id = v.datastore_id
		WHERE v.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return v, fmt.Errorf("datastore version %q: %w", trunc(id), ErrNotFound)
	}
	return v, err
}

// FindVersion finds a version of a datastore (each by id or name); an
// empty version means the datastore's default.
func (r *Registry) FindVersion(ctx context.Context, datastore, version string) (Version, error) {
	ds, err := getDatastore(ctx, r.DB, datastore)
	if err != nil {
		return Version{}, err
	}
	if version == "" {
		if ds.DefaultVersionID == "" {
			return Version{}, fmt.Errorf("datastore %s has no default version: %w", ds.Name, ErrNotFound)
		}
		return r.Version(ctx, ds.DefaultVersionID)
	}
	return findVersion(ctx, r.DB, ds.ID, version)
}

func findVersion(ctx context.Context, q store.Querier, datastoreID, idOrName string) (Version, error) {
	v, err := scanVersion(q.QueryRow(ctx, `SELECT `+versionColumns+` FROM datastore_versions v JOIN datastores d ON d.id = v.datastore_id
		WHERE v.datastore_id = ? AND (v.id = ? OR v.name = ?) ORDER BY CASE WHEN v.id = ? THEN 0 ELSE 1 END LIMIT 1`,
		datastoreID, idOrName, idOrName, idOrName))
	if errors.Is(err, sql.ErrNoRows) {
		return v, fmt.Errorf("datastore version %q: %w", trunc(idOrName), ErrNotFound)
	}
	return v, err
}

// VersionsUsingImage lists the versions that boot imageID.
func (r *Registry) VersionsUsingImage(ctx context.Context, imageID string) ([]Version, error) {
	return store.All(ctx, r.DB, scanVersion, `SELECT `+versionColumns+` FROM datastore_versions v JOIN datastores d ON d.id = v.datastore_id
		WHERE v.image_id = ? ORDER BY d.name, v.name`, imageID)
}

// CreateFlavor adds a flavor; an existing name is updated.
func (r *Registry) CreateFlavor(ctx context.Context, f Flavor) (Flavor, error) {
	if !flavorNamePattern.MatchString(f.Name) {
		return f, invalid("flavor name %q: use 1-64 characters of A-Z a-z 0-9 . _ -", trunc(f.Name))
	}
	if f.RAMMB < 256 || f.RAMMB > 1<<20 || f.VCPUs < 1 || f.VCPUs > 256 || f.DiskGB < 0 || f.DiskGB > 1<<16 {
		return f, invalid("flavor %s: RAM %d MB (256-1048576), %d vCPUs (1-256), disk %d GB (0-65536)", f.Name, f.RAMMB, f.VCPUs, f.DiskGB)
	}
	if f.ID == "" {
		f.ID = store.NewID()
	}
	_, err := r.DB.Exec(ctx, `INSERT INTO flavors (id, name, ram_mb, vcpus, disk_gb, created_at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET ram_mb = excluded.ram_mb, vcpus = excluded.vcpus, disk_gb = excluded.disk_gb`,
		f.ID, f.Name, f.RAMMB, f.VCPUs, f.DiskGB, store.Millis(r.now()))
	if err != nil {
		return f, err
	}
	return r.Flavor(ctx, f.Name)
}

// DefaultFlavors are created on a controller's first start.
var DefaultFlavors = []Flavor{
	{Name: "strata.tiny", RAMMB: 768, VCPUs: 1},
	{Name: "strata.small", RAMMB: 1024, VCPUs: 1},
	{Name: "strata.medium", RAMMB: 2048, VCPUs: 2},
	{Name: "strata.large", RAMMB: 4096, VCPUs: 2},
}

// EnsureDefaultFlavors creates the default flavors if there are none.
func (r *Registry) EnsureDefaultFlavors(ctx context.Context) error {
	var n int
	if err := r.DB.QueryRow(ctx, `SELECT COUNT(*) FROM flavors`).Scan(&n); err != nil || n > 0 {
		return err
	}
	for _, f := range DefaultFlavors {
		if _, err := r.CreateFlavor(ctx, f); err != nil {
			return err
		}
	}
	return nil
}

// Flavors lists the flavors by RAM, then name.
func (r *Registry) Flavors(ctx context.Context) ([]Flavor, error) {
	return store.All(ctx, r.DB, scanFlavor, `SELECT id, name, ram_mb, vcpus, disk_gb, created_at FROM flavors ORDER BY ram_mb, name`)
}

// Flavor finds a flavor by id or name.
func (r *Registry) Flavor(ctx context.Context, idOrName string) (Flavor, error) {
	f, err := scanFlavor(r.DB.QueryRow(ctx, `SELECT id, name, ram_mb, vcpus, disk_gb, created_at FROM flavors
		WHERE id = ? OR name = ? ORDER BY CASE WHEN id = ? THEN 0 ELSE 1 END LIMIT 1`, idOrName, idOrName, idOrName))
	if errors.Is(err, sql.ErrNoRows) {
		return f, fmt.Errorf("flavor %q: %w", trunc(idOrName), ErrNotFound)
	}
	return f, err
}

func scanFlavor(s store.Scanner) (Flavor, error) {
	var f Flavor
	var created int64
	err := s.Scan(&f.ID, &f.Name, &f.RAMMB, &f.VCPUs, &f.DiskGB, &created)
	f.CreatedAt = store.FromMillis(created)
	return f, err
}

func trunc(s string) string {
	if len(s) > 70 {
		return s[:70] + "..."
	}
	return s
}

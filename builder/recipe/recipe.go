// Package recipe reads image recipes (images/*.yaml): which elements make an
// image, with which variables, size and formats, and what registering it as
// a datastore version needs. A recipe is decoded and validated once, here;
// errors name the file, the key and what was expected.
//
// It only parses; building and registering happen elsewhere.
package recipe

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Recipe is one image recipe.
type Recipe struct {
	// Path is the file the recipe was read from.
	Path string `yaml:"-"`
	// Name is the image's base file name (e.g. mariadb-10.11).
	Name string `yaml:"name"`
	// Description says what the image is for.
	Description string   `yaml:"description"`
	Elements    []string `yaml:"elements"`
	// SkipBase leaves out the default base element (like -n).
	SkipBase bool `yaml:"skip_base"`
	// Env are variables for every hook; the caller's environment wins.
	Env map[string]string `yaml:"env"`
	// Files are variables naming host files, relative to the recipe's
	// directory; they are made absolute and set like Env.
	Files map[string]string `yaml:"files"`
	// Size is the disk size ("3GiB", "2G", "2048M"); empty for automatic.
	Size string `yaml:"size"`
	// Formats to write (qcow2, raw, tar); default qcow2.
	Formats []string `yaml:"formats"`
	// Packages are extra packages, as with -p.
	Packages []string `yaml:"packages"`
	// Datastore describes the datastore version the image provides.
	Datastore *Datastore `yaml:"datastore"`
}

// Datastore is what registering the image needs.
type Datastore struct {
	// Name is the datastore (mariadb, postgresql, redis).
	Name string `yaml:"name"`
	// Version is the datastore version name (10.11, 15, 7).
	Version string `yaml:"version"`
	// Manager is the agent's datastore manager (mariadb, postgresql, redis).
	Manager string `yaml:"manager"`
	// Rules is the validation-rules file, relative to the recipe.
	Rules string `yaml:"rules"`
	// ConfigTemplate is the default configuration template, relative to
	// the recipe.
	ConfigTemplate string `yaml:"config_template"`
	// Port is the database's TCP port.
	Port int `yaml:"port"`
	// Packages installed for the datastore (informational, as trove-manage).
	Packages []string `yaml:"packages"`
	// BootTimeout is how long an instance may take to report ready, in
	// seconds.
	BootTimeout int `yaml:"boot_timeout"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Load reads and validates a recipe file.
func Load(path string) (*Recipe, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("recipe: %w", err)
	}
	r, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("recipe %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	r.Path = abs
	dir := filepath.Dir(abs)
	for k, v := range r.Files {
		if !filepath.IsAbs(v) {
			r.Files[k] = filepath.Join(dir, v)
		}
	}
	if d := r.Datastore; d != nil {
		if d.Rules != "" && !filepath.IsAbs(d.Rules) {
			d.Rules = filepath.Join(dir, d.Rules)
		}
		if d.ConfigTemplate != "" && !filepath.IsAbs(d.ConfigTemplate) {
			d.ConfigTemplate = filepath.Join(dir, d.ConfigTemplate)
		}
	}
	return r, nil
}

// Parse decodes and validates recipe YAML.
func Parse(data []byte) (*Recipe, error) {
	var r Recipe
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("malformed recipe: %w", err)
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

func (r *Recipe) validate() error {
	var errs []error
	if !nameRE.MatchString(r.Name) {
		errs = append(errs, fmt.Errorf("key name: %q is not a file name (letters, digits, . _ -)", r.Name))
	}
	if len(r.Elements) == 0 {
		errs = append(errs, errors.New("key elements: at least one element is needed"))
	}
	for _, e := range r.Elements {
		if e == "" || strings.ContainsAny(e, "/ \t") {
			errs = append(errs, fmt.Errorf("key elements: %q is not an element name", e))
		}
	}
	for k := range r.Env {
		if !envName(k) {
			errs = append(errs, fmt.Errorf("key env: %q is not a variable name", k))
		}
	}
	for k, v := range r.Files {
		if !envName(k) {
			errs = append(errs, fmt.Errorf("key files: %q is not a variable name", k))
		}
		if v == "" {
			errs = append(errs, fmt.Errorf("key files: %s: empty path", k))
		}
		if _, dup := r.Env[k]; dup {
			errs = append(errs, fmt.Errorf("key files: %s is also set under env", k))
		}
	}
	if _, inEnv := r.Env[ConfigTemplateVar]; inEnv || r.Files[ConfigTemplateVar] != "" {
		errs = append(errs, fmt.Errorf("key files: %s is set from datastore.config_template; name the template there, not under env or files", ConfigTemplateVar))
	}
	if r.Size != "" {
		if _, err := ParseSize(r.Size); err != nil {
			errs = append(errs, fmt.Errorf("key size: %w", err))
		}
	}
	if d := r.Datastore; d != nil {
		if d.Name == "" || d.Version == "" || d.Manager == "" {
			errs = append(errs, errors.New("key datastore: name, version and manager are required"))
		}
		if d.Port < 0 || d.Port > 65535 {
			errs = append(errs, fmt.Errorf("key datastore.port: %d is not a TCP port", d.Port))
		}
		if d.BootTimeout < 0 {
			errs = append(errs, fmt.Errorf("key datastore.boot_timeout: %d is negative", d.BootTimeout))
		}
	}
	return errors.Join(errs...)
}

func envName(s string) bool {
	return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(s)
}

// ConfigTemplateVar names the recipe's datastore.config_template for the
// strata-agent element, which installs it in the image for the agent to
// render (the defaults every instance starts with).
const ConfigTemplateVar = "DIB_STRATA_CONFIG_TEMPLATE"

// Vars returns the recipe's variables: Env plus the absolute Files, plus
// ConfigTemplateVar naming datastore.config_template when there is one.
func (r *Recipe) Vars() map[string]string {
	out := map[string]string{}
	for k, v := range r.Env {
		out[k] = v
	}
	for k, v := range r.Files {
		out[k] = v
	}
	if r.Datastore != nil && r.Datastore.ConfigTemplate != "" {
		out[ConfigTemplateVar] = r.Datastore.ConfigTemplate
	}
	return out
}

var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B?|B)?$`)

// ParseSize reads a disk size: a number with an optional unit (K, M, G, T,
// with or without "i" and "B": all powers of 1024). A bare number is GiB,
// as diskimage-builder's --image-size takes gigabytes.
func ParseSize(s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%q is not a size (examples: 3GiB, 2G, 2048M, 2.5)", s)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, err
	}
	mult := float64(1 << 30)
	switch strings.TrimSuffix(strings.TrimSuffix(m[2], "B"), "i") {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	case "T":
		mult = 1 << 40
	case "":
		if m[2] == "B" {
			mult = 1
		}
	}
	v := int64(n * mult)
	if v <= 0 {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	if v > 16<<40 {
		return 0, fmt.Errorf("%q is more than 16 TiB", s)
	}
	return v, nil
}

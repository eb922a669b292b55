package redis

import (
	"bytes"
	_ "embed"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"

	"strata/agent/datastore"
)

//go:embed redis.conf.tmpl
var redisConfText string

var redisConf = template.Must(template.New("redis.conf").Option("missingkey=error").Parse(redisConfText))

type confValues struct {
	DataDir, Socket, PidFile, LogFile, ACLFile, OverridesFile, BindAddress string
	DefaultsFile, ReplicationFile                                          string
	Port                                                                   int
	MaxMemoryBytes                                                         int64
}

var (
	confPathPattern = regexp.MustCompile(`^/[A-Za-z0-9_./+-]*$`)
	bindPattern     = regexp.MustCompile(`^[0-9a-fA-F.:* -]*$`)
)

// renderConfig renders redis.conf for a flavor with memoryMB of RAM: half
// of it for data (the rest covers the copy-on-write fork of a snapshot and
// the system), with noeviction, so a full instance refuses writes instead
// of losing keys or being killed. 0 leaves memory unbounded.
func renderConfig(cfg Config, memoryMB int) ([]byte, error) {
	v := confValues{
		DataDir: cfg.DataDir, Socket: cfg.Socket, PidFile: cfg.PidFile, LogFile: cfg.LogFile,
		ACLFile: cfg.ACLFile, OverridesFile: cfg.OverridesFile, BindAddress: cfg.BindAddress, Port: cfg.Port,
		DefaultsFile: defaultsFile(cfg), ReplicationFile: replicationFile(cfg),
	}
	if memoryMB > 0 {
		v.MaxMemoryBytes = int64(memoryMB) << 20 / 2
	}
	for name, p := range map[string]string{"dir": v.DataDir, "unixsocket": v.Socket, "pidfile": v.PidFile,
		"logfile": v.LogFile, "aclfile": v.ACLFile, "include": v.OverridesFile, "include (defaults)": v.DefaultsFile, "include (replication)": v.ReplicationFile} {
		if !confPathPattern.MatchString(p) {
			return nil, fmt.Errorf("redis config: %s %q is not a plain absolute path", name, p)
		}
	}
	if !bindPattern.MatchString(v.BindAddress) {
		return nil, fmt.Errorf("redis config: bind %q is not a list of addresses", v.BindAddress)
	}
	var buf bytes.Buffer
	if err := redisConf.Execute(&buf, v); err != nil {
		return nil, fmt.Errorf("redis config: %w", err)
	}
	return buf.Bytes(), nil
}

// renderACL returns the ACL file with the agent's user (re)written for a
// new password and every other line kept: on a rebuilt instance the users
// survive. A fresh file gets the default user switched off, with no
// password: unauthenticated connections can do nothing until root is
// enabled.
func renderACL(existing []byte, adminPassword string) []byte {
	var b strings.Builder
	hasDefault := false
	for _, line := range strings.Split(string(existing), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "user" && f[1] == AdminUser {
			continue
		}
		if len(f) >= 2 && f[0] == "user" && f[1] == RootUser {
			hasDefault = true
		}
		if strings.TrimSpace(line) != "" {
			b.WriteString(line + "\n")
		}
	}
	if !hasDefault {
		b.WriteString("user " + RootUser + " off resetchannels ~* &* +@all\n")
	}
	b.WriteString("user " + AdminUser + " on " + passwordHash(adminPassword) + " ~* &* +@all\n")
	return []byte(b.String())
}

// defaultsFile holds the defaults layer (the image's default
// configuration template rendered for the flavor), included by redis.conf
// before the group. Redis refuses to start on a missing include: without
// a template the file is there and empty.
func defaultsFile(cfg Config) string {
	return filepath.Join(filepath.Dir(cfg.OverridesFile), "strata-defaults.conf")
}

// renderDefaultsLayer renders the image's template for memoryMB into the
// defaults layer's file (no template: no settings) and drops the lines of
// redis.conf (conf) that the layer sets.
func renderDefaultsLayer(cfg Config, memoryMB int, conf []byte) (layer, base []byte, err error) {
	settings, err := datastore.RenderDefaults(cfg.ConfigTemplate, memoryMB, nil)
	if err != nil {
		return nil, conf, err
	}
	base = datastore.OmitDefaults(conf, settings, func(line string) string {
		k, _, _ := strings.Cut(line, " ")
		return k
	})
	return renderLayer("# Written by strata-agent: the image's default configuration template rendered for the flavor\n"+
		"# (prepare, apply_flavor). Included after the base configuration, before the group.\n", settings, false), base, nil
}

// renderOverrides renders a configuration group. Setting.Text is canonical
// and safe (digits, yes/no, strings without quotes, backslashes or #),
// see datastore.Setting; strings are double-quoted so one with spaces
// stays one argument.
func renderOverrides(settings []datastore.Setting) []byte {
	return renderLayer("# Written by strata-agent: the instance's configuration group. Replaced as a whole on every change.\n", settings, true)
}

// renderLayer writes settings as redis.conf directives. save lines read
// from files add up (only the first one read replaces Redis's default),
// so the group's save starts with save "": it replaces the defaults
// layer's instead of adding to it.
func renderLayer(header string, settings []datastore.Setting, resetSave bool) []byte {
	var b strings.Builder
	b.WriteString(header)
	for _, s := range settings {
		v := configValue(s)
		if s.Type == "string" {
			v = `"` + v + `"`
		}
		if s.Name == "save" && resetSave {
			b.WriteString("save \"\"\n")
		}
		fmt.Fprintf(&b, "%s %s\n", s.Name, v)
	}
	return []byte(b.String())
}

// configValue is a setting as CONFIG SET wants it: booleans are yes/no.
func configValue(s datastore.Setting) string {
	if s.Type == "boolean" {
		if s.Bool {
			return "yes"
		}
		return "no"
	}
	return s.Text
}

// parseOverrides reads back a file renderOverrides wrote: name → value
// (quotes removed).
func parseOverrides(data []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, " "); ok {
			out[k] = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return out
}

package postgresql

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

var (
	//go:embed postgresql.conf.tmpl
	postgresqlConfText string
	//go:embed pg_hba.conf.tmpl
	hbaConfText string
	//go:embed pg_ident.conf.tmpl
	identConfText string

	postgresqlConf = template.Must(template.New("postgresql.conf").Option("missingkey=error").Parse(postgresqlConfText))
	hbaConf        = template.Must(template.New("pg_hba.conf").Option("missingkey=error").Parse(hbaConfText))
	identConf      = template.Must(template.New("pg_ident.conf").Option("missingkey=error").Parse(identConfText))
)

type confValues struct {
	DataDir, HBAFile, IdentFile, PidFile, OverridesFile, SocketDir string
	LogSettingsFile, DefaultsFile, ReplicationFile                 string
	SSLCertFile, SSLKeyFile                                        string
	ClusterName, ListenAddresses                                   string
	Port, MaxConnections                                           int
	SharedBuffersMB, EffectiveCacheMB, MaintenanceWorkMemMB        int
	AdminRole, ReplicationGroup                                    string
	AdminOSUsers                                                   []string
}

var (
	confPathPattern   = regexp.MustCompile(`^/[A-Za-z0-9_./+-]*$`)
	listenPattern     = regexp.MustCompile(`^([*]|[0-9a-fA-F.:, ]*)$`)
	osUserPattern     = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	clusterNamePatern = regexp.MustCompile(`^[A-Za-z0-9_./-]{0,63}$`)
)

// renderConfig renders postgresql.conf, pg_hba.conf and pg_ident.conf for
// a flavor with memoryMB of RAM (0: sized for 512 MiB).
func renderConfig(cfg Config, memoryMB int, cert datastore.Certificate) (conf, hba, ident []byte, err error) {
	if memoryMB <= 0 {
		memoryMB = 512
	}
	v := confValues{
		DataDir: cfg.DataDir, HBAFile: cfg.HBAFile, IdentFile: cfg.IdentFile, PidFile: cfg.PidFile,
		OverridesFile: cfg.OverridesFile, LogSettingsFile: logSettingsFile(cfg), DefaultsFile: defaultsFile(cfg), SocketDir: cfg.SocketDir, ClusterName: cfg.ClusterName,
		ListenAddresses: cfg.ListenAddresses, Port: cfg.Port, MaxConnections: 100,
		// A quarter of the RAM for shared buffers and three quarters as
		// the planner's cache estimate, as PostgreSQL's tuning guide
		// suggests; maintenance memory a sixteenth, within bounds.
		SharedBuffersMB:      max(memoryMB/4, 32),
		EffectiveCacheMB:     max(memoryMB*3/4, 128),
		MaintenanceWorkMemMB: min(max(memoryMB/16, 16), 2048),
		AdminRole:            AdminRole,
		ReplicationGroup:     ReplicationGroup,
		ReplicationFile:      replicationFile(cfg),
		SSLCertFile:          cert.CertFile, SSLKeyFile: cert.KeyFile,
		AdminOSUsers: []string{cfg.AgentOSUser},
	}
	if cfg.OSUser != cfg.AgentOSUser {
		v.AdminOSUsers = append(v.AdminOSUsers, cfg.OSUser)
	}
	for name, p := range map[string]string{"data directory": v.DataDir, "hba file": v.HBAFile, "ident file": v.IdentFile,
		"pid file": v.PidFile, "overrides file": v.OverridesFile, "log settings file": v.LogSettingsFile, "defaults file": v.DefaultsFile, "replication file": v.ReplicationFile, "socket directory": v.SocketDir,
		"ssl_cert_file": v.SSLCertFile, "ssl_key_file": v.SSLKeyFile} {
		if !confPathPattern.MatchString(p) {
			return nil, nil, nil, fmt.Errorf("postgresql config: %s %q is not a plain absolute path", name, p)
		}
	}
	if !listenPattern.MatchString(v.ListenAddresses) {
		return nil, nil, nil, fmt.Errorf("postgresql config: listen addresses %q are not addresses", v.ListenAddresses)
	}
	if !clusterNamePatern.MatchString(v.ClusterName) {
		return nil, nil, nil, fmt.Errorf("postgresql config: cluster name %q", v.ClusterName)
	}
	for _, u := range v.AdminOSUsers {
		if !osUserPattern.MatchString(u) {
			return nil, nil, nil, fmt.Errorf("postgresql config: OS user %q is not a plain user name", u)
		}
	}
	var out [3]bytes.Buffer
	for i, t := range []*template.Template{postgresqlConf, hbaConf, identConf} {
		if err := t.Execute(&out[i], v); err != nil {
			return nil, nil, nil, fmt.Errorf("postgresql config: %w", err)
		}
	}
	return out[0].Bytes(), out[1].Bytes(), out[2].Bytes(), nil
}

// renderHBA renders pg_hba.conf alone, as renderConfig does: the
// replication kinds bring an instance prepared before its replication
// rules up to date.
func renderHBA() ([]byte, error) {
	var out bytes.Buffer
	if err := hbaConf.Execute(&out, confValues{AdminRole: AdminRole, ReplicationGroup: ReplicationGroup}); err != nil {
		return nil, fmt.Errorf("postgresql config: %w", err)
	}
	return out.Bytes(), nil
}

// defaultsFile holds the defaults layer (the image's default
// configuration template rendered for the flavor), included by
// postgresql.conf before the log switches and the group.
func defaultsFile(cfg Config) string {
	return filepath.Join(filepath.Dir(cfg.OverridesFile), "strata-defaults.conf")
}

// renderDefaultsLayer renders the image's template for memoryMB into the
// defaults layer's file (nil without a template) and drops the lines of
// postgresql.conf (conf) that the layer sets.
func renderDefaultsLayer(cfg Config, memoryMB int, conf []byte) (layer, base []byte, err error) {
	settings, err := datastore.RenderDefaults(cfg.ConfigTemplate, memoryMB, nil)
	if err != nil || settings == nil {
		return nil, conf, err
	}
	base = datastore.OmitDefaults(conf, settings, func(line string) string {
		k, _, _ := strings.Cut(line, "=")
		return strings.TrimSpace(k)
	})
	return renderLayer("# Written by strata-agent: the image's default configuration template rendered for the flavor\n"+
		"# (prepare, apply_flavor). Included after the base configuration, before the log switches and the group.\n", settings), base, nil
}

// renderOverrides renders a configuration group. Setting.Text is canonical
// and safe (digits, ON/OFF, strings without quotes or backslashes), see
// datastore.Setting; strings are single-quoted as postgresql.conf wants.
func renderOverrides(settings []datastore.Setting) []byte {
	return renderLayer("# Written by strata-agent: the instance's configuration group. Replaced as a whole on every change.\n", settings)
}

func renderLayer(header string, settings []datastore.Setting) []byte {
	var b strings.Builder
	b.WriteString(header)
	for _, s := range settings {
		fmt.Fprintf(&b, "%s = %s\n", s.Name, confValue(s))
	}
	return []byte(b.String())
}

func confValue(s datastore.Setting) string {
	switch s.Type {
	case "boolean":
		return strings.ToLower(s.Text)
	case "string":
		return "'" + s.Text + "'"
	}
	return s.Text
}

// parseOverrides reads back a file renderOverrides wrote: name → value as
// written (quotes kept).
func parseOverrides(data []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

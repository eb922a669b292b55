package mariadb

import (
	"bytes"
	_ "embed"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/template"

	"strata/agent/datastore"
)

//go:embed strata.cnf.tmpl
var baseConfigTemplate string

var baseConfig = template.Must(template.New("strata.cnf").Option("missingkey=error").Parse(baseConfigTemplate))

type baseConfigValues struct {
	DataDir, Socket, PidFile, ErrorLog, SlowQueryLog, OverridesFile, TmpDir, SecureFileDir string
	SSLCert, SSLKey                                                                        string
	Port                                                                                   int
	BindAddress                                                                            string
	SkipNetworking                                                                         bool
	BufferPoolMB, MaxConnections                                                           int
}

var cnfPathPattern = regexp.MustCompile(`^/[A-Za-z0-9_./+-]*$`)

// renderBaseConfig renders the server configuration for a flavor with
// memoryMB of RAM (0: server defaults sized for 256 MiB).
func renderBaseConfig(cfg Config, memoryMB int) ([]byte, error) {
	v := baseConfigValues{
		DataDir: cfg.DataDir, Socket: cfg.Socket, PidFile: cfg.PidFile,
		ErrorLog: cfg.ErrorLog, SlowQueryLog: cfg.SlowQueryLog, OverridesFile: cfg.OverridesFile, TmpDir: cfg.TmpDir,
		SecureFileDir: secureFileDir(cfg),
		SSLCert:       filepath.Join(tlsDir(cfg), "cert.pem"), SSLKey: filepath.Join(tlsDir(cfg), "key.pem"),
		Port: cfg.Port, BindAddress: cfg.BindAddress, SkipNetworking: cfg.SkipNetworking,
		BufferPoolMB: 128, MaxConnections: 151,
	}
	if memoryMB > 0 {
		// Half the RAM for InnoDB, as Trove's templates do; connections
		// grow with memory within sane bounds.
		v.BufferPoolMB = max(memoryMB/2, 128)
		v.MaxConnections = min(max(memoryMB/8, 100), 2000)
	}
	for name, p := range map[string]string{"datadir": v.DataDir, "socket": v.Socket, "pid-file": v.PidFile,
		"log_error": v.ErrorLog, "slow_query_log_file": v.SlowQueryLog, "tmpdir": v.TmpDir, "secure_file_priv": v.SecureFileDir,
		"ssl_cert": v.SSLCert, "ssl_key": v.SSLKey} {
		if p == "" && name == "tmpdir" {
			continue
		}
		if !cnfPathPattern.MatchString(p) {
			return nil, fmt.Errorf("mariadb config: %s %q is not a plain absolute path", name, p)
		}
	}
	if !v.SkipNetworking && !regexp.MustCompile(`^[0-9a-fA-F.:]+$`).MatchString(v.BindAddress) {
		return nil, fmt.Errorf("mariadb config: bind-address %q is not an IP address", v.BindAddress)
	}
	var buf bytes.Buffer
	if err := baseConfig.Execute(&buf, v); err != nil {
		return nil, fmt.Errorf("mariadb config: %w", err)
	}
	return buf.Bytes(), nil
}

// defaultsFile holds the defaults layer, beside the group's file and
// before it in the server's reading order (90 base, 91 defaults, 92 log
// switches, 95 group).
func (m *Manager) defaultsFile() string {
	return filepath.Join(filepath.Dir(m.cfg.OverridesFile), "91-strata-defaults.cnf")
}

// writeBaseConfig writes the configuration derived from the flavor: the
// structural base file and the defaults layer rendered from the image's
// template (no template: no layer, the base file's built-in sizing
// stays). changed says whether either file's content changed.
func (m *Manager) writeBaseConfig(memoryMB int) (changed bool, err error) {
	cnf, err := renderBaseConfig(m.cfg, memoryMB)
	if err != nil {
		return false, err
	}
	defaults, err := datastore.RenderDefaults(m.cfg.ConfigTemplate, memoryMB, paramPattern.MatchString)
	if err != nil {
		return false, err
	}
	var layer []byte
	if defaults != nil {
		layer = renderDefaults(defaults)
		cnf = datastore.OmitDefaults(cnf, defaults, cnfKey)
	}
	changed, err = datastore.WriteLayer(m.cfg.ConfigFile, cnf, 0o644)
	if err != nil {
		return changed, err
	}
	layerChanged, err := datastore.WriteLayer(m.defaultsFile(), layer, 0o644)
	return changed || layerChanged, err
}

// cnfKey is the option a line of the base file sets, dashes as
// underscores.
func cnfKey(line string) string {
	k, _, _ := strings.Cut(line, "=")
	return strings.ReplaceAll(strings.TrimSpace(k), "-", "_")
}

// secureFileDir is cfg.SecureFileDir or its default, "files" beside the
// data directory (on the data volume, outside the data directory: a
// directory inside it would be a database).
func secureFileDir(cfg Config) string {
	if cfg.SecureFileDir != "" {
		return cfg.SecureFileDir
	}
	return filepath.Join(filepath.Dir(cfg.DataDir), "files")
}

// tlsDir holds the instance's TLS certificate and key: "tls" beside the
// data directory, on the data volume, so a rebuilt instance keeps the
// certificate its clients pinned.
func tlsDir(cfg Config) string {
	return filepath.Join(filepath.Dir(cfg.DataDir), "tls")
}

// ensureCertificate makes (or finds) the instance's certificate, owned by
// the server's OS user.
func (m *Manager) ensureCertificate() (datastore.Certificate, error) {
	osUser, err := datastore.LookupOSUser(m.cfg.OSUser)
	if err != nil {
		return datastore.Certificate{}, err
	}
	return datastore.EnsureCertificate(m.log, tlsDir(m.cfg), osUser)
}

// renderOverrides renders a configuration group. Setting.Text is canonical
// and safe (digits, ON/OFF, restricted strings), see datastore.Setting.
func renderOverrides(settings []datastore.Setting) []byte {
	return renderLayer("# Written by strata-agent: the instance's configuration group. Replaced as a whole on every change.\n", settings)
}

// renderDefaults renders the defaults layer: the image's default
// configuration template rendered for the flavor.
func renderDefaults(settings []datastore.Setting) []byte {
	return renderLayer("# Written by strata-agent: the image's default configuration template rendered for the flavor\n"+
		"# (prepare, apply_flavor). Read after the base configuration, before the log switches and the group.\n", settings)
}

func renderLayer(header string, settings []datastore.Setting) []byte {
	var b strings.Builder
	b.WriteString(header + "[mysqld]\n")
	for _, s := range settings {
		fmt.Fprintf(&b, "%s = %s\n", s.Name, s.Text)
	}
	return []byte(b.String())
}

// parseOverrides reads back a file renderOverrides wrote.
func parseOverrides(data []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

// parseBaseConfig reads the [mysqld] section of a rendered base
// configuration: option names with dashes as underscores (the server
// takes both), sizes with a K, M or G suffix in bytes.
func parseBaseConfig(data []byte) map[string]string {
	out := map[string]string{}
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			section = strings.Trim(line, "[]")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section != "mysqld" {
			continue
		}
		v = strings.TrimSpace(v)
		if m := sizePattern.FindStringSubmatch(v); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			v = strconv.FormatInt(n<<map[string]uint{"K": 10, "M": 20, "G": 30}[strings.ToUpper(m[2])], 10)
		}
		out[strings.ReplaceAll(strings.TrimSpace(k), "-", "_")] = v
	}
	return out
}

var sizePattern = regexp.MustCompile(`^([0-9]{1,12})([KMGkmg])$`)

package wire

import (
	"fmt"
	"net"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// BootstrapFormat is the only bootstrap format version this agent reads.
const BootstrapFormat = 1

// MaxBootstrapSize bounds the bootstrap document.
const MaxBootstrapSize = 64 << 10

// DefaultHeartbeatSeconds applies when the bootstrap leaves
// heartbeat_seconds out.
const DefaultHeartbeatSeconds = 10

// Bootstrap is the per-instance document the controller writes onto the
// instance's config drive. The agent refuses to start unless it parses and
// validates.
type Bootstrap struct {
	Format     int    `json:"format"`
	InstanceID string `json:"instance_id"`
	// Controllers are "host:port" addresses of the controller's agent
	// endpoint, tried in order.
	Controllers []string `json:"controllers"`
	// ControllerHostKey is the controller's SSH host key as one
	// authorized_keys line ("ssh-ed25519 AAAA... comment").
	ControllerHostKey string `json:"controller_host_key"`
	// EnrollmentToken is the one-time secret that binds the agent's key to
	// this instance on first contact.
	EnrollmentToken  string       `json:"enrollment_token"`
	Datastore        DatastoreRef `json:"datastore"`
	HeartbeatSeconds int          `json:"heartbeat_seconds,omitempty"`
	// DataDevice is the block device of the data volume, formatted by
	// prepare if it has no filesystem yet. Empty: no separate volume.
	DataDevice string `json:"data_device,omitempty"`
	// MountPoint is where the data volume is mounted; empty means the
	// datastore manager's default.
	MountPoint string `json:"mount_point,omitempty"`
}

// DatastoreRef names the datastore the image carries.
type DatastoreRef struct {
	Manager string `json:"manager"`
	Version string `json:"version"`
}

// Managers the protocol knows. An agent build may implement fewer; it says
// so at start.
var knownManagers = []string{"mariadb", "postgresql", "redis"}

var (
	instanceIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	tokenPattern      = regexp.MustCompile(`^[A-Za-z0-9._~+/=-]{20,256}$`)
	versionPattern    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)
	devicePattern     = regexp.MustCompile(`^/dev/[A-Za-z0-9][A-Za-z0-9/._-]{0,126}$`)
)

// BootstrapError lists every problem found in a bootstrap document, each
// naming the field.
type BootstrapError struct {
	Source   string
	Problems []string
}

func (e *BootstrapError) Error() string {
	where := "bootstrap"
	if e.Source != "" {
		where = "bootstrap " + e.Source
	}
	if len(e.Problems) == 1 {
		return where + ": " + e.Problems[0]
	}
	return fmt.Sprintf("%s: %d problems:\n  - %s", where, len(e.Problems), strings.Join(e.Problems, "\n  - "))
}

// ParseBootstrap decodes and validates a bootstrap document. source names
// where it came from, for the error message.
func ParseBootstrap(data []byte, source string) (Bootstrap, error) {
	var b Bootstrap
	if len(data) > MaxBootstrapSize {
		return b, &BootstrapError{Source: source, Problems: []string{fmt.Sprintf("document is %d bytes, more than the %d allowed", len(data), MaxBootstrapSize)}}
	}
	if err := decodeStrict(data, &b); err != nil {
		return Bootstrap{}, &BootstrapError{Source: source, Problems: []string{"not a valid bootstrap JSON document: " + err.Error()}}
	}
	if err := b.Validate(); err != nil {
		err.(*BootstrapError).Source = source
		return Bootstrap{}, err
	}
	return b, nil
}

// Validate checks every field and reports all problems at once. The error,
// if any, is a *BootstrapError.
func (b Bootstrap) Validate() error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	if b.Format != BootstrapFormat {
		add("format: is %d, this agent reads format %d", b.Format, BootstrapFormat)
	}
	if b.InstanceID == "" {
		add("instance_id: missing")
	} else if !instanceIDPattern.MatchString(b.InstanceID) {
		add("instance_id: %q is not 1-64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit", truncate(b.InstanceID, 70))
	}
	if len(b.Controllers) == 0 {
		add("controllers: missing (want at least one \"host:port\")")
	} else if len(b.Controllers) > 8 {
		add("controllers: %d entries, at most 8 allowed", len(b.Controllers))
	} else {
		seen := map[string]bool{}
		for i, c := range b.Controllers {
			if err := checkHostPort(c); err != nil {
				add("controllers[%d]: %v", i, err)
			} else if seen[c] {
				add("controllers[%d]: %q listed twice", i, c)
			}
			seen[c] = true
		}
	}
	if b.ControllerHostKey == "" {
		add("controller_host_key: missing (want one authorized_keys line)")
	} else if _, err := ParseHostKey(b.ControllerHostKey); err != nil {
		add("controller_host_key: %v", err)
	}
	if b.EnrollmentToken == "" {
		add("enrollment_token: missing")
	} else if !tokenPattern.MatchString(b.EnrollmentToken) {
		add("enrollment_token: want 20-256 characters of A-Z a-z 0-9 . _ ~ + / = -")
	}
	switch {
	case b.Datastore.Manager == "":
		add("datastore.manager: missing (one of %s)", strings.Join(knownManagers, ", "))
	case !slices.Contains(knownManagers, b.Datastore.Manager):
		add("datastore.manager: %q is not one of %s", truncate(b.Datastore.Manager, 40), strings.Join(knownManagers, ", "))
	}
	if b.Datastore.Version == "" {
		add("datastore.version: missing")
	} else if !versionPattern.MatchString(b.Datastore.Version) {
		add("datastore.version: %q is not 1-32 characters of A-Z a-z 0-9 . _ -", truncate(b.Datastore.Version, 40))
	}
	if b.HeartbeatSeconds < 0 || b.HeartbeatSeconds > 3600 {
		add("heartbeat_seconds: %d is outside 1..3600 (0 or absent means %d)", b.HeartbeatSeconds, DefaultHeartbeatSeconds)
	}
	if b.DataDevice != "" {
		if !devicePattern.MatchString(b.DataDevice) || strings.Contains(b.DataDevice, "..") {
			add("data_device: %q is not a device path under /dev/", truncate(b.DataDevice, 140))
		}
	}
	if b.MountPoint != "" {
		switch {
		case !path.IsAbs(b.MountPoint) || path.Clean(b.MountPoint) != b.MountPoint:
			add("mount_point: %q is not a clean absolute path", truncate(b.MountPoint, 140))
		case b.MountPoint == "/" || len(b.MountPoint) > 200 || strings.ContainsAny(b.MountPoint, " \t\n\\'\"\x00"):
			add("mount_point: %q cannot be used as a mount point", truncate(b.MountPoint, 140))
		}
	}
	if len(p) > 0 {
		return &BootstrapError{Problems: p}
	}
	return nil
}

// HeartbeatInterval is the configured interval or the default.
func (b Bootstrap) HeartbeatInterval() time.Duration {
	if b.HeartbeatSeconds <= 0 {
		return DefaultHeartbeatSeconds * time.Second
	}
	return time.Duration(b.HeartbeatSeconds) * time.Second
}

// HostKey parses ControllerHostKey.
func (b Bootstrap) HostKey() (ssh.PublicKey, error) { return ParseHostKey(b.ControllerHostKey) }

// ParseHostKey parses one authorized_keys line holding a host key of a type
// we accept (ed25519, ECDSA, or RSA of at least 2048 bits).
func ParseHostKey(line string) (ssh.PublicKey, error) {
	if strings.ContainsAny(line, "\n\r") {
		return nil, fmt.Errorf("must be a single line")
	}
	key, _, options, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, fmt.Errorf("not an authorized_keys line: %v", err)
	}
	if len(options) > 0 || len(rest) > 0 {
		return nil, fmt.Errorf("must be exactly one key without options")
	}
	switch key.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
	case ssh.KeyAlgoRSA:
		if ck, ok := key.(ssh.CryptoPublicKey); ok {
			if rk, ok := ck.CryptoPublicKey().(interface{ Size() int }); ok && rk.Size()*8 < 2048 {
				return nil, fmt.Errorf("RSA key of %d bits is too small (want at least 2048)", rk.Size()*8)
			}
		}
	default:
		return nil, fmt.Errorf("key type %s is not accepted (want ed25519, ecdsa or rsa)", key.Type())
	}
	return key, nil
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not \"host:port\": %v", truncate(s, 100), err)
	}
	if host == "" || len(host) > 253 || strings.ContainsAny(host, " \t\n\x00/@") {
		return fmt.Errorf("%q: bad host", truncate(s, 100))
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port must be 1-65535", truncate(s, 100))
	}
	return nil
}

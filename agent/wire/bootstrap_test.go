package wire

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func goodBootstrap(t *testing.T) map[string]any {
	return map[string]any{
		"format":              1,
		"instance_id":         "6f1c2d3e-0000-4000-8000-000000000001",
		"controllers":         []string{"10.0.2.2:2222", "[fd00::1]:2222"},
		"controller_host_key": strings.TrimSpace(string(ssh.MarshalAuthorizedKey(newSigner(t).PublicKey()))),
		"enrollment_token":    NewEnrollmentToken(),
		"datastore":           map[string]any{"manager": "mariadb", "version": "10.11"},
		"heartbeat_seconds":   15,
		"data_device":         "/dev/vdb",
		"mount_point":         "/var/lib/mysql",
	}
}

func encode(t *testing.T, m map[string]any) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGoodBootstrapParses(t *testing.T) {
	m := goodBootstrap(t)
	m["controller_host_key"] = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(newSigner(t).PublicKey()))) + " controller@example"
	b, err := ParseBootstrap(encode(t, m), "test")
	if err != nil {
		t.Fatal(err)
	}
	if b.HeartbeatInterval() != 15*time.Second || b.Datastore.Manager != "mariadb" || len(b.Controllers) != 2 {
		t.Fatalf("parsed %+v", b)
	}
	if _, err := b.HostKey(); err != nil {
		t.Fatal(err)
	}
	delete(m, "heartbeat_seconds")
	delete(m, "data_device")
	delete(m, "mount_point")
	b, err = ParseBootstrap(encode(t, m), "test")
	if err != nil || b.HeartbeatInterval() != DefaultHeartbeatSeconds*time.Second {
		t.Fatalf("optional fields: %v %v", err, b.HeartbeatInterval())
	}
}

func TestBadBootstrapNamesEachProblem(t *testing.T) {
	hostKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(newSigner(t).PublicKey())))
	cases := []struct {
		name string
		edit func(m map[string]any)
		want string
	}{
		{"format", func(m map[string]any) { m["format"] = 2 }, "format: is 2"},
		{"no instance", func(m map[string]any) { delete(m, "instance_id") }, "instance_id: missing"},
		{"quote instance", func(m map[string]any) { m["instance_id"] = "x'; DROP DATABASE mysql; --" }, "instance_id:"},
		{"no controllers", func(m map[string]any) { m["controllers"] = []string{} }, "controllers: missing"},
		{"bad controller", func(m map[string]any) { m["controllers"] = []string{"10.0.2.2"} }, "controllers[0]:"},
		{"bad port", func(m map[string]any) { m["controllers"] = []string{"h:0"} }, "port must be"},
		{"dup controller", func(m map[string]any) { m["controllers"] = []string{"h:1", "h:1"} }, "listed twice"},
		{"no host key", func(m map[string]any) { delete(m, "controller_host_key") }, "controller_host_key: missing"},
		{"garbled host key", func(m map[string]any) { m["controller_host_key"] = "ssh-ed25519 AAAAnotbase64!!" }, "controller_host_key: not an authorized_keys line"},
		{"two host keys", func(m map[string]any) { m["controller_host_key"] = hostKey + "\n" + hostKey }, "single line"},
		{"host key options", func(m map[string]any) { m["controller_host_key"] = `command="x" ` + hostKey }, "without options"},
		{"short token", func(m map[string]any) { m["enrollment_token"] = "abc" }, "enrollment_token: want"},
		{"NUL token", func(m map[string]any) { m["enrollment_token"] = strings.Repeat("a", 30) + "\x00" }, "enrollment_token: want"},
		{"no manager", func(m map[string]any) { m["datastore"] = map[string]any{"version": "1"} }, "datastore.manager: missing"},
		{"bad manager", func(m map[string]any) { m["datastore"] = map[string]any{"manager": "oracle", "version": "1"} }, `datastore.manager: "oracle" is not one of`},
		{"no version", func(m map[string]any) { m["datastore"] = map[string]any{"manager": "redis"} }, "datastore.version: missing"},
		{"heartbeat range", func(m map[string]any) { m["heartbeat_seconds"] = 86400 }, "heartbeat_seconds: 86400 is outside"},
		{"device", func(m map[string]any) { m["data_device"] = "/etc/passwd" }, "data_device:"},
		{"device dotdot", func(m map[string]any) { m["data_device"] = "/dev/../etc/shadow" }, "data_device:"},
		{"mount root", func(m map[string]any) { m["mount_point"] = "/" }, "mount_point:"},
		{"mount relative", func(m map[string]any) { m["mount_point"] = "var/lib" }, "mount_point:"},
		{"unknown field", func(m map[string]any) { m["admin_password"] = "x" }, `unknown field "admin_password"`},
		{"wrong type", func(m map[string]any) { m["controllers"] = "10.0.2.2:22" }, "not a valid bootstrap JSON document"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := goodBootstrap(t)
			m["controller_host_key"] = hostKey
			tc.edit(m)
			_, err := ParseBootstrap(encode(t, m), "/run/x.json")
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "/run/x.json") {
				t.Fatalf("error %q does not say %q and where", err, tc.want)
			}
		})
	}
}

func TestBootstrapReportsAllProblemsAtOnce(t *testing.T) {
	_, err := ParseBootstrap([]byte(`{"format":1}`), "")
	be, ok := err.(*BootstrapError)
	if !ok {
		t.Fatalf("err = %T %v", err, err)
	}
	for _, field := range []string{"instance_id", "controllers", "controller_host_key", "enrollment_token", "datastore.manager", "datastore.version"} {
		found := false
		for _, p := range be.Problems {
			found = found || strings.HasPrefix(p, field+":")
		}
		if !found {
			t.Errorf("no problem reported for %s in %v", field, be.Problems)
		}
	}
}

func TestOversizedAndTrailingBootstrapRejected(t *testing.T) {
	if _, err := ParseBootstrap(make([]byte, MaxBootstrapSize+1), ""); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Fatalf("oversized: %v", err)
	}
	m := goodBootstrap(t)
	m["controller_host_key"] = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(newSigner(t).PublicKey())))
	if _, err := ParseBootstrap(append(encode(t, m), []byte(" {}")...), ""); err == nil || !strings.Contains(err.Error(), "trailing") {
		t.Fatalf("trailing: %v", err)
	}
}

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

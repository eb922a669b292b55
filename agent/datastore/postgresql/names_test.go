package postgresql

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"strata/agent/datastore"
	"strata/agent/wire"
)

func TestQuoting(t *testing.T) {
	if got := quoteIdent(`a"b`); got != `"a""b"` {
		t.Fatal(got)
	}
	if got, err := quoteLiteral("it's"); err != nil || got != "'it''s'" {
		t.Fatal(got, err)
	}
	for _, bad := range []string{`a\`, "a\x00"} {
		if _, err := quoteLiteral(bad); err == nil {
			t.Fatalf("quoteLiteral(%q) accepted", bad)
		}
	}
}

func TestSCRAMVerifier(t *testing.T) {
	// Computed independently (RFC 7677 construction, PBKDF2-HMAC-SHA-256).
	want := "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$nQpbZ77WudtqufPwikHXGRt6g2QJ4zns8bZLw273DRM=:jn2amWP1q1h+jgjy0YTO14S6/F02SV7taipOeB7ef20="
	if got := scramVerifierWithSalt("pencil", []byte("0123456789abcdef"), 4096); got != want {
		t.Fatalf("verifier = %s", got)
	}
	a, b := scramVerifier("x' OR 1=1; --"), scramVerifier("x' OR 1=1; --")
	if a == b {
		t.Fatal("two verifiers share a salt")
	}
	if strings.ContainsAny(a, `'"\`) || !strings.HasPrefix(a, "SCRAM-SHA-256$4096:") {
		t.Fatalf("verifier %q is not safe in a literal", a)
	}
}

func TestOverridesRoundTrip(t *testing.T) {
	settings := []datastore.Setting{
		{Name: "work_mem", Type: "integer", Text: "4096"},
		{Name: "autovacuum", Type: "boolean", Text: "OFF"},
		{Name: "search_path", Type: "string", Text: "app, public"},
		{Name: "random_page_cost", Type: "float", Text: "1.1"},
	}
	data := renderOverrides(settings)
	got := parseOverrides(data)
	want := map[string]string{"work_mem": "4096", "autovacuum": "off", "search_path": "'app, public'", "random_page_cost": "1.1"}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s = %q, want %q in\n%s", k, got[k], v, data)
		}
	}
}

func TestUserRefHasNoHost(t *testing.T) {
	for _, host := range []string{"", "%"} {
		u := wire.UserRef{Name: "app", Host: host}
		if err := checkUserRef(&u); err != nil || u.Host != "%" {
			t.Fatalf("host %q: %v %q", host, err, u.Host)
		}
	}
	u := wire.UserRef{Name: "app", Host: "localhost"}
	if err := checkUserRef(&u); wire.ErrorCodeOf(err) != wire.CodeInvalidArgument {
		t.Fatal(err)
	}
}

func TestRenderConfigRefusesOddPaths(t *testing.T) {
	cfg := Config{DataDir: "/d", HBAFile: "/h", IdentFile: "/i", PidFile: "/p", OverridesFile: "/o", SocketDir: "/s",
		OSUser: "postgres", AgentOSUser: "root", Port: 5432, ListenAddresses: "*"}
	cert := datastore.Certificate{CertFile: "/t/cert.pem", KeyFile: "/t/key.pem"}
	if _, _, _, err := renderConfig(cfg, 0, cert); err != nil {
		t.Fatal(err)
	}
	bad := cfg
	bad.DataDir = "/d'\ninclude '/etc/x"
	if _, _, _, err := renderConfig(bad, 0, cert); err == nil {
		t.Fatal("path with a quote rendered")
	}
	if _, _, _, err := renderConfig(cfg, 0, datastore.Certificate{CertFile: "/t/c'\nssl = off", KeyFile: "/k"}); err == nil {
		t.Fatal("certificate path with a quote rendered")
	}
	bad = cfg
	bad.AgentOSUser = "root postgres\nstrata x"
	if _, _, _, err := renderConfig(bad, 0, cert); err == nil {
		t.Fatal("odd OS user rendered")
	}
}

// No rule may name a parameter the agent manages: the configuration group
// would be refused whatever its value.
func TestRulesLeaveManagedParametersAlone(t *testing.T) {
	files, err := filepath.Glob("../../../validation-rules/postgresql-*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no validation-rules/postgresql-*.json: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rules, err := wire.ParseRules(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, r := range rules {
			if !parameters.NameOK(r.Name) {
				t.Errorf("%s: rule %s names a parameter the agent manages (or an invalid name)", f, r.Name)
			}
		}
	}
}

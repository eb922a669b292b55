package recipe

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	cases := map[string]int64{
		"3GiB": 3 << 30, "2G": 2 << 30, "2048M": 2 << 30, "2.5": 5 << 29, "512MiB": 512 << 20,
		"1T": 1 << 40, "4096B": 4096, "10K": 10 << 10,
	}
	for in, want := range cases {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "abc", "-1G", "0", "3 XB", "99999T"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func TestLoadResolvesPathsAgainstRecipeDir(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "images", "db.yaml")
	os.MkdirAll(filepath.Dir(p), 0o755)
	os.WriteFile(p, []byte(`
name: db-1
elements: [vm, debian-minimal]
env: {DIB_RELEASE: bookworm}
files: {DIB_STRATA_AGENT_BINARY: ../bin/strata-agent}
size: 3GiB
datastore: {name: mariadb, version: "10.11", manager: mariadb, rules: ../validation-rules/x.json, config_template: t/x.json.tmpl, port: 3306}
`), 0o644)
	r, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Vars()["DIB_STRATA_AGENT_BINARY"]; got != filepath.Join(dir, "bin/strata-agent") {
		t.Errorf("files path = %s", got)
	}
	if r.Datastore.Rules != filepath.Join(dir, "validation-rules/x.json") {
		t.Errorf("rules path = %s", r.Datastore.Rules)
	}
	// The template reaches the strata-agent element as its input.
	if got := r.Vars()[ConfigTemplateVar]; got != filepath.Join(dir, "images/t/x.json.tmpl") {
		t.Errorf("%s = %q", ConfigTemplateVar, got)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	cases := map[string]string{
		"name: x\nelements: [a]\nelemnts: [b]\n":         "elemnts",
		"name: x\n":                                      "key elements",
		"name: 'a/b'\nelements: [a]\n":                   "key name",
		"name: x\nelements: [a]\nsize: big\n":            "key size",
		"name: x\nelements: [a]\ndatastore: {name: m}\n": "key datastore",
		"name: x\nelements: [a]\nenv: {'1X': y}\n":       "key env",
		"name: x\nelements: [a]\ndatastore: {name: m, version: '1', manager: m, port: 70000}\n": "datastore.port",
		"name: x\nelements: [a\n": "malformed",
		"name: x\nelements: [a]\nfiles: {DIB_STRATA_CONFIG_TEMPLATE: t.tmpl}\n": "datastore.config_template",
	}
	for in, want := range cases {
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error mentioning %q", in, err, want)
		}
	}
}

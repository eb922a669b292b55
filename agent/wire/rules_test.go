package wire

import (
	"encoding/json"
	"strings"
	"testing"
)

const troveStyle = `{
  "configuration-parameters": [
    {"name": "max_connections", "restart_required": false, "max": 100000, "min": 1, "type": "integer"},
    {"name": "innodb_buffer_pool_size", "restart_required": true, "max": 18446744073709551615, "min": 5242880, "type": "integer"},
    {"name": "long_query_time", "restart_required": false, "min": 0, "type": "float"},
    {"name": "autocommit", "restart_required": false, "type": "boolean"},
    {"name": "character_set_server", "restart_required": false, "type": "string", "allowed_values": ["utf8mb4", "latin1"]},
    {"name": "maxmemory-policy", "restart_required": false, "type": "string", "apply": "live"},
    {"name": "save", "restart_required": false, "type": "string", "allow_empty": true},
    {"name": "shared_buffers", "restart_required": true, "type": "string", "apply": "restart"},
    {"name": "work_mem", "restart_required": false, "type": "integer", "apply": "reload", "min": 64}
  ]
}`

func TestParseRulesTroveFormatWithExtensions(t *testing.T) {
	rules, err := ParseRules([]byte(troveStyle))
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]ParameterRule{}
	for _, r := range rules {
		by[r.Name] = r
	}
	if len(by) != 9 {
		t.Fatalf("parsed %d rules", len(by))
	}
	if !by["save"].AllowEmpty || by["maxmemory-policy"].AllowEmpty {
		t.Errorf("allow_empty: save %v, maxmemory-policy %v", by["save"].AllowEmpty, by["maxmemory-policy"].AllowEmpty)
	}
	if by["innodb_buffer_pool_size"].Max.String() != "18446744073709551615" {
		t.Errorf("64-bit max lost: %s", by["innodb_buffer_pool_size"].Max)
	}
	for name, want := range map[string]string{"max_connections": ApplyLive, "innodb_buffer_pool_size": ApplyRestart, "work_mem": ApplyReload} {
		if got := by[name].ApplyMethod(); got != want {
			t.Errorf("%s apply = %s, want %s", name, got, want)
		}
	}
}

func TestParseRulesNamesEntryAndKey(t *testing.T) {
	cases := map[string]string{
		`{"configuration-parameters":[{"name":"x","type":"integr"}]}`:                              `[0] (x): type "integr"`,
		`{"configuration-parameters":[{"name":"x","type":"integer","min":5,"max":1}]}`:             "min 5 is above max 1",
		`{"configuration-parameters":[{"name":"x","type":"integer","min":1.5}]}`:                   `min "1.5" is not an integer`,
		`{"configuration-parameters":[{"name":"x","type":"string","max":3}]}`:                      "min and max apply to integer and float only",
		`{"configuration-parameters":[{"name":"x","type":"string"},{"name":"x","type":"string"}]}`: "[1] (x): name given twice",
		`{"configuration-parameters":[{"name":"X;drop","type":"string"}]}`:                         "is not a parameter name",
		`{"configuration-parameters":[{"name":"x","type":"string","apply":"now"}]}`:                `apply "now"`,
		`{"configuration-parameters":[{"name":"x","type":"string","apply":"restart"}]}`:            "needs restart_required",
		`{"configuration-parameters":[{"name":"x","type":"string","colour":"red"}]}`:               "unknown field",
		`{"configuration-parameters":[{"name":"x","type":"boolean","allow_empty":true}]}`:          "allow_empty applies to string only",
		`{"configuration-parameters":[{"name":"x","type":"integer","allow_empty":true}]}`:          "allow_empty applies to string only",
		`{"configuration-parameters":[]}`:                                                          "empty",
		`{"configuration-parameters":[{"name":"x","type":"string"}]} {}`:                           "after the JSON",
		`not json`: "malformed",
	}
	for in, want := range cases {
		_, err := ParseRules([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRules(%s) = %v, want %q", in, err, want)
		}
	}
}

func TestRuleCheck(t *testing.T) {
	rules, err := ParseRules([]byte(troveStyle))
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]ParameterRule{}
	for _, r := range rules {
		by[r.Name] = r
	}
	ok := map[string]string{
		"max_connections=1": "1", "max_connections=100000": "100000",
		"innodb_buffer_pool_size=18446744073709551615": "18446744073709551615",
		"long_query_time=0.5":                          "0.5", "autocommit=true": "ON", `autocommit="OFF"`: "OFF",
		`character_set_server="UTF8MB4"`: "UTF8MB4",
		`save=""`:                        "", `save="3600 1 300 100"`: "3600 1 300 100",
	}
	for in, want := range ok {
		name, val, _ := strings.Cut(in, "=")
		v, err := by[name].Check(json.RawMessage(val))
		if err != nil || v.Text != want {
			t.Errorf("%s: %q, %v; want %q", in, v.Text, err, want)
		}
	}
	bad := []string{
		"max_connections=0", "max_connections=100001", `max_connections="5"`, "max_connections=1.5",
		"innodb_buffer_pool_size=18446744073709551616", "long_query_time=-1", "autocommit=2",
		`character_set_server="koi8r"`, `character_set_server="x'; DROP DATABASE mysql; --"`,
		"work_mem=63", `maxmemory-policy=""`, `character_set_server=""`, `save=" "`, `save="\"\""`,
	}
	for _, in := range bad {
		name, val, _ := strings.Cut(in, "=")
		if _, err := by[name].Check(json.RawMessage(val)); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
}

package configurations_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"strata/agent/wire"
	"strata/controller/configurations"
)

func rules(t *testing.T) []wire.ParameterRule {
	data, err := os.ReadFile("../testdata/validation-rules/mariadb-10.11.json")
	if err != nil {
		t.Fatal(err)
	}
	r, err := wire.ParseRules(data)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestValidationNamesTheParameterAndSaysWhy(t *testing.T) {
	r := rules(t)
	cases := []struct {
		values    string
		parameter string
		reason    string
	}{
		{`{"max_connections": 200, "autocommit": true, "character_set_server": "utf8mb4", "long_query_time": 1.5}`, "", ""},
		{`{"no_such_thing": 1}`, "no_such_thing", "not a configurable parameter"},
		{`{"max_connections": "many"}`, "max_connections", "want an integer"},
		{`{"max_connections": 1.5}`, "max_connections", "want an integer"},
		{`{"max_connections": 0}`, "max_connections", "below the minimum 1"},
		{`{"max_connections": 100001}`, "max_connections", "above the maximum 100000"},
		{`{"autocommit": "perhaps"}`, "autocommit", "want true or false"},
		{`{"character_set_server": "ebcdic"}`, "character_set_server", "not one of"},
		{`{"character_set_server": "utf8mb4; DROP TABLE x"}`, "character_set_server", "want 1-1024 characters"},
		{`{"long_query_time": 4000}`, "long_query_time", "above the maximum"},
		// Several problems: the first by name is reported.
		{`{"zz_unknown": 1, "autocommit": 7}`, "autocommit", "want true or false"},
	}
	for _, c := range cases {
		var values map[string]json.RawMessage
		if err := json.Unmarshal([]byte(c.values), &values); err != nil {
			t.Fatal(err)
		}
		err := configurations.Validate(r, values)
		if c.parameter == "" {
			if err != nil {
				t.Errorf("%s: %v", c.values, err)
			}
			continue
		}
		var ve *configurations.ValidationError
		if !errors.As(err, &ve) || ve.Parameter != c.parameter || !strings.Contains(ve.Reason, c.reason) {
			t.Errorf("%s: %v, want parameter %s: %s", c.values, err, c.parameter, c.reason)
		}
	}
	var ve *configurations.ValidationError
	if err := configurations.Validate(nil, map[string]json.RawMessage{"x": json.RawMessage("1")}); !errors.As(err, &ve) || !strings.Contains(ve.Reason, "no validation rules") {
		t.Errorf("no rules: %v", err)
	}
}

func TestRestartRequired(t *testing.T) {
	r := rules(t)
	live := map[string]json.RawMessage{"max_connections": json.RawMessage("10")}
	restart := map[string]json.RawMessage{"max_connections": json.RawMessage("10"), "performance_schema": json.RawMessage("true")}
	if configurations.RestartRequired(r, live) || !configurations.RestartRequired(r, restart) {
		t.Fatal("RestartRequired wrong")
	}
}

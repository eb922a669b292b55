package datastore

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"strata/agent/wire"
)

func TestDatabaseNamesCheck(t *testing.T) {
	names := DatabaseNames{Engine: "Engine", Max: 8, Pattern: regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`), System: map[string]bool{"sys": true}}
	for _, tc := range []struct{ name, want string }{
		{"orders", ""},
		{"", "empty"},
		{"ordersxyz", `"ordersxyz" is 9 characters long; Engine allows 8`},
		{"or'ders", "use only"},
		{"ördrs", "use only"}, // not "is 6 characters long": the pattern comes first
		{"SYS", "system database"},
		{"x\x00", "use only"},
	} {
		err := names.Check(tc.name)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want one saying %q", tc.name, err, tc.want)
		case err != nil && wire.ErrorCodeOf(err) != wire.CodeInvalidArgument:
			t.Errorf("%q: code %s", tc.name, wire.ErrorCodeOf(err))
		}
	}
}

func TestParametersRefuseManagedNamesBeforeAnythingElse(t *testing.T) {
	p := Parameters{Pattern: regexp.MustCompile(`^[a-z_]+$`), Managed: map[string]bool{"data_dir": true}}
	args := wire.ConfigurationArgs{
		Rules:  []wire.ParameterRule{{Name: "data_dir", Type: "string"}, {Name: "work_mem", Type: "integer"}},
		Values: map[string]json.RawMessage{"data_dir": json.RawMessage(`"/etc"`), "work_mem": json.RawMessage(`4`)},
	}
	if _, err := p.Check(args); err == nil || !strings.Contains(err.Error(), "parameter data_dir is managed by the agent") {
		t.Fatalf("managed parameter: %v", err)
	}
	delete(args.Values, "data_dir")
	args.Rules = args.Rules[1:] // a rule may not name it either
	got, err := p.Check(args)
	if err != nil || len(got) != 1 || got[0].Name+"="+got[0].Text != "work_mem=4" {
		t.Fatalf("Check = %v, %v", got, err)
	}
	if p.NameOK("data_dir") || p.NameOK("Work-Mem") || !p.NameOK("work_mem") {
		t.Fatal("NameOK disagrees with the pattern or the managed list")
	}
}

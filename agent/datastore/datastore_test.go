package datastore

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"strata/agent/wire"
)

func TestCheckConfigurationRendersCanonicalValues(t *testing.T) {
	n := func(s string) *json.Number { v := json.Number(s); return &v }
	args := wire.ConfigurationArgs{
		Rules: []wire.ParameterRule{
			{Name: "a_int", Type: "integer", Min: n("-5"), Max: n("18446744073709551615")},
			{Name: "b_float", Type: "float", Max: n("10")},
			{Name: "c_bool", Type: "boolean"},
			{Name: "d_str", Type: "string", AllowedValues: []string{"ROW", "Mixed"}},
		},
		Values: map[string]json.RawMessage{
			"d_str": json.RawMessage(`"mixed"`), "c_bool": json.RawMessage(`"off"`),
			"b_float": json.RawMessage(`1e-3`), "a_int": json.RawMessage(`18446744073709551615`),
		},
	}
	got, err := CheckConfiguration(args, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a_int=18446744073709551615", "b_float=0.001", "c_bool=OFF", "d_str=mixed"}
	for i, s := range got {
		if s.Name+"="+s.Text != want[i] {
			t.Fatalf("setting %d = %s=%s, want %s", i, s.Name, s.Text, want[i])
		}
	}
	args.Values["a_int"] = json.RawMessage(`-6`)
	if _, err := CheckConfiguration(args, nil); err == nil || !strings.Contains(err.Error(), "a_int: -6 is below the minimum -5") {
		t.Fatalf("min: %v", err)
	}
	args.Values["a_int"] = json.RawMessage(`1`)
	args.Values["b_float"] = json.RawMessage(`NaN`)
	if _, err := CheckConfiguration(args, nil); err == nil {
		t.Fatal("NaN accepted")
	}
}

func TestTailFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	var b strings.Builder
	for i := range 100 {
		b.WriteString(strings.Repeat("x", i%7) + "line\n")
	}
	os.WriteFile(path, []byte(b.String()), 0o644)
	tail, err := TailFile("l", path, 5, 1<<20)
	if err != nil || len(tail.Lines) != 5 || tail.Lines[4] != strings.Repeat("x", 99%7)+"line" || tail.Truncated {
		t.Fatalf("%+v %v", tail, err)
	}
	tail, _ = TailFile("l", path, 1000, 50)
	if !tail.Truncated || len(strings.Join(tail.Lines, "\n")) > 50 {
		t.Fatalf("byte cap: %+v", tail)
	}
	_, err = TailFile("l", path+".missing", 5, 100)
	if wire.ErrorCodeOf(err) != wire.CodeNotFound {
		t.Fatalf("missing: %v", err)
	}
}

func TestGeneratedPasswordsAreLongAndDistinct(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		p := GeneratePassword()
		if len(p) != 52 || seen[p] {
			t.Fatalf("password %q", p)
		}
		seen[p] = true
	}
}

package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
)

// Apply methods: how a changed parameter takes effect.
const (
	// ApplyLive: set on the running server (SET GLOBAL, CONFIG SET).
	ApplyLive = "live"
	// ApplyReload: the server re-reads its configuration on a signal
	// (PostgreSQL's sighup parameters).
	ApplyReload = "reload"
	// ApplyRestart: only a restart reads it.
	ApplyRestart = "restart"
)

// Value is a configuration value that passed its rule, in canonical form:
// an integer in decimal, a float in plain decimal notation, "ON"/"OFF" for
// booleans, a string as is (restricted to characters safe in a config file
// or a statement).
type Value struct {
	Text string
	Bool bool
}

// stringValuePattern admits what server options plausibly need (lists,
// paths, modes, memory units), nothing that could end a line, open a
// comment or a quote.
var stringValuePattern = regexp.MustCompile(`^[A-Za-z0-9_.,:/+=@%*-]([A-Za-z0-9_.,:/+=@%* -]*[A-Za-z0-9_.,:/+=@%*-])?$`)

// Check validates a JSON value against the rule. The error says what was
// expected and never echoes more than a short prefix of the input.
func (r ParameterRule) Check(raw json.RawMessage) (Value, error) {
	var v Value
	raw = bytes.TrimSpace(raw)
	switch r.Type {
	case "integer":
		if len(raw) == 0 || raw[0] == '"' {
			return v, fmt.Errorf("want an integer, got %q", truncRule(string(raw)))
		}
		n, ok := new(big.Int).SetString(string(raw), 10)
		if !ok {
			return v, fmt.Errorf("want an integer, got %q", truncRule(string(raw)))
		}
		if err := r.checkRange(new(big.Float).SetInt(n)); err != nil {
			return v, err
		}
		v.Text = n.String()
	case "float":
		if len(raw) == 0 || raw[0] == '"' {
			return v, fmt.Errorf("want a number, got %q", truncRule(string(raw)))
		}
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return v, fmt.Errorf("want a number, got %q", truncRule(string(raw)))
		}
		if err := r.checkRange(big.NewFloat(f)); err != nil {
			return v, err
		}
		v.Text = strconv.FormatFloat(f, 'f', -1, 64)
	case "boolean":
		switch string(raw) {
		case "true", "1", `"ON"`, `"on"`, `"true"`, `"1"`:
			v.Bool = true
		case "false", "0", `"OFF"`, `"off"`, `"false"`, `"0"`:
		default:
			return v, fmt.Errorf("want true or false, got %q", truncRule(string(raw)))
		}
		v.Text = map[bool]string{true: "ON", false: "OFF"}[v.Bool]
	case "string":
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return v, fmt.Errorf("want a string, got %q", truncRule(string(raw)))
		}
		if s == "" && r.AllowEmpty {
			v.Text = s
			return v, nil // an allowed_values list need not name it
		}
		if len(s) > 1024 || !stringValuePattern.MatchString(s) {
			return v, fmt.Errorf("value %q: want 1-1024 characters of A-Z a-z 0-9 _ . , : / + = @ %% * - and inner spaces", truncRule(s))
		}
		v.Text = s
	default:
		return v, fmt.Errorf("rule has unknown type %q", truncRule(r.Type))
	}
	if len(r.AllowedValues) > 0 {
		ok := false
		for _, a := range r.AllowedValues {
			ok = ok || strings.EqualFold(a, v.Text)
		}
		if !ok {
			return v, fmt.Errorf("value %q is not one of %s", truncRule(v.Text), strings.Join(r.AllowedValues, ", "))
		}
	}
	return v, nil
}

func (r ParameterRule) checkRange(v *big.Float) error {
	if r.Min != nil {
		min, ok := new(big.Float).SetPrec(256).SetString(r.Min.String())
		if !ok {
			return fmt.Errorf("rule has a bad min %q", r.Min.String())
		}
		if v.Cmp(min) < 0 {
			return fmt.Errorf("%s is below the minimum %s", v.Text('f', -1), r.Min.String())
		}
	}
	if r.Max != nil {
		max, ok := new(big.Float).SetPrec(256).SetString(r.Max.String())
		if !ok {
			return fmt.Errorf("rule has a bad max %q", r.Max.String())
		}
		if v.Cmp(max) > 0 {
			return fmt.Errorf("%s is above the maximum %s", v.Text('f', -1), r.Max.String())
		}
	}
	return nil
}

// ApplyMethod is the rule's apply method, defaulting from restart_required
// when the file does not say.
func (r ParameterRule) ApplyMethod() string {
	if r.Apply != "" {
		return r.Apply
	}
	if r.RestartRequired {
		return ApplyRestart
	}
	return ApplyLive
}

func truncRule(s string) string {
	if len(s) > 70 {
		return s[:70] + "..."
	}
	return s
}

// RulesFile is a validation-rules file: Trove's validation-rules.json
// format ({"configuration-parameters": [...]}, each entry with name, type,
// min, max, restart_required), extended with allowed_values and apply.
type RulesFile struct {
	Parameters []ParameterRule `json:"configuration-parameters"`
}

var ruleNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)

// ParseRules decodes and validates a validation-rules file. Every problem
// is reported with the entry's index and name and the key at fault.
func ParseRules(data []byte) ([]ParameterRule, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	var f RulesFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("malformed validation rules: %w", err)
	}
	if dec.More() {
		return nil, errors.New("malformed validation rules: data after the JSON object")
	}
	if len(f.Parameters) == 0 {
		return nil, errors.New(`validation rules: "configuration-parameters" is empty or missing`)
	}
	var errs []error
	seen := map[string]bool{}
	for i, r := range f.Parameters {
		where := fmt.Sprintf("configuration-parameters[%d] (%s)", i, r.Name)
		if !ruleNamePattern.MatchString(r.Name) {
			errs = append(errs, fmt.Errorf("%s: name %q is not a parameter name", where, truncRule(r.Name)))
		}
		if seen[r.Name] {
			errs = append(errs, fmt.Errorf("%s: name given twice", where))
		}
		seen[r.Name] = true
		switch r.Type {
		case "integer", "float":
			for _, b := range []struct {
				key string
				n   *json.Number
			}{{"min", r.Min}, {"max", r.Max}} {
				if b.n == nil {
					continue
				}
				if _, ok := new(big.Float).SetString(b.n.String()); !ok || (r.Type == "integer" && strings.ContainsAny(b.n.String(), ".eE")) {
					errs = append(errs, fmt.Errorf("%s: %s %q is not an %s", where, b.key, b.n.String(), r.Type))
				}
			}
			if r.AllowEmpty {
				errs = append(errs, fmt.Errorf("%s: allow_empty applies to string only", where))
			}
			if r.Min != nil && r.Max != nil {
				lo, _ := new(big.Float).SetString(r.Min.String())
				hi, _ := new(big.Float).SetString(r.Max.String())
				if lo != nil && hi != nil && lo.Cmp(hi) > 0 {
					errs = append(errs, fmt.Errorf("%s: min %s is above max %s", where, r.Min, r.Max))
				}
			}
		case "string", "boolean":
			if r.Min != nil || r.Max != nil {
				errs = append(errs, fmt.Errorf("%s: min and max apply to integer and float only", where))
			}
			if r.AllowEmpty && r.Type != "string" {
				errs = append(errs, fmt.Errorf("%s: allow_empty applies to string only", where))
			}
		default:
			errs = append(errs, fmt.Errorf("%s: type %q is not integer, float, string or boolean", where, truncRule(r.Type)))
		}
		switch r.Apply {
		case "", ApplyLive, ApplyReload:
			if r.Apply != "" && r.RestartRequired {
				errs = append(errs, fmt.Errorf("%s: apply %q contradicts restart_required true", where, r.Apply))
			}
		case ApplyRestart:
			if !r.RestartRequired {
				errs = append(errs, fmt.Errorf("%s: apply restart needs restart_required true", where))
			}
		default:
			errs = append(errs, fmt.Errorf("%s: apply %q is not live, reload or restart", where, truncRule(r.Apply)))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return f.Parameters, nil
}

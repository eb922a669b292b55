package datastore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"strata/agent/wire"
)

// Setting is one configuration value that passed its rule: typed, range
// checked, and rendered in a canonical form that is safe to write into a
// configuration file or an SQL statement (digits, ON/OFF, or a string of
// plain characters).
type Setting struct {
	Name string
	Rule wire.ParameterRule
	// Type is the rule's type.
	Type string
	// Text is the canonical rendering: an integer in decimal, a float in
	// plain decimal notation, "ON"/"OFF" for booleans, the string itself.
	Text string
	Bool bool
}

// MaxSettings bounds one configuration operation.
const MaxSettings = 256

var (
	paramNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)
	// Strings may hold what server options plausibly need (lists, paths,
	// modes), nothing that could end a line, open a comment or a quote.
	stringValuePattern = regexp.MustCompile(`^[A-Za-z0-9_.,:/+=@%*-]([A-Za-z0-9_.,:/+=@%* -]*[A-Za-z0-9_.,:/+=@%*-])?$`)
)

// CheckConfiguration validates args against their own rules and returns the
// settings sorted by name. Every problem is an invalid_argument error naming
// the parameter; nothing is applied by this function, so a caller that
// checks first changes nothing on bad input. nameOK is the datastore's own
// rule for parameter names (nil: the generic one only).
func CheckConfiguration(args wire.ConfigurationArgs, nameOK func(string) bool) ([]Setting, error) {
	if len(args.Values) > MaxSettings {
		return nil, wire.Errorf(wire.CodeInvalidArgument, "%d parameters given, at most %d allowed", len(args.Values), MaxSettings)
	}
	if len(args.Rules) > 4*MaxSettings {
		return nil, wire.Errorf(wire.CodeInvalidArgument, "%d rules given, at most %d allowed", len(args.Rules), 4*MaxSettings)
	}
	rules := map[string]wire.ParameterRule{}
	for _, r := range args.Rules {
		if !paramNamePattern.MatchString(r.Name) || (nameOK != nil && !nameOK(r.Name)) {
			return nil, wire.Errorf(wire.CodeInvalidArgument, "rule for %q: not a valid parameter name", trunc(r.Name))
		}
		switch r.Type {
		case "integer", "float", "string", "boolean":
		default:
			return nil, wire.Errorf(wire.CodeInvalidArgument, "rule for %s: unknown type %q (want integer, float, string or boolean)", r.Name, trunc(r.Type))
		}
		rules[r.Name] = r
	}
	names := make([]string, 0, len(args.Values))
	for name := range args.Values {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make([]Setting, 0, len(names))
	for _, name := range names {
		if !paramNamePattern.MatchString(name) || (nameOK != nil && !nameOK(name)) {
			return nil, wire.Errorf(wire.CodeInvalidArgument, "parameter %q: not a valid parameter name", trunc(name))
		}
		rule, ok := rules[name]
		if !ok {
			return nil, wire.Errorf(wire.CodeInvalidArgument, "parameter %s: unknown parameter (no validation rule for it)", name)
		}
		s, err := checkValue(rule, args.Values[name])
		if err != nil {
			return nil, wire.Errorf(wire.CodeInvalidArgument, "parameter %s: %v", name, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func checkValue(rule wire.ParameterRule, raw json.RawMessage) (Setting, error) {
	s := Setting{Name: rule.Name, Rule: rule, Type: rule.Type}
	raw = bytes.TrimSpace(raw)
	switch rule.Type {
	case "integer":
		if len(raw) == 0 || raw[0] == '"' {
			return s, fmt.Errorf("want an integer, got %q", trunc(string(raw)))
		}
		n, ok := new(big.Int).SetString(string(raw), 10)
		if !ok {
			return s, fmt.Errorf("want an integer, got %q", trunc(string(raw)))
		}
		if err := checkRange(new(big.Float).SetInt(n), rule); err != nil {
			return s, err
		}
		s.Text = n.String()
	case "float":
		if len(raw) == 0 || raw[0] == '"' {
			return s, fmt.Errorf("want a number, got %q", trunc(string(raw)))
		}
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return s, fmt.Errorf("want a number, got %q", trunc(string(raw)))
		}
		if err := checkRange(big.NewFloat(f), rule); err != nil {
			return s, err
		}
		s.Text = strconv.FormatFloat(f, 'f', -1, 64)
	case "boolean":
		var b bool
		switch string(raw) {
		case "true", "1", `"ON"`, `"on"`, `"true"`, `"1"`:
			b = true
		case "false", "0", `"OFF"`, `"off"`, `"false"`, `"0"`:
		default:
			return s, fmt.Errorf("want true or false, got %q", trunc(string(raw)))
		}
		s.Bool = b
		s.Text = map[bool]string{true: "ON", false: "OFF"}[b]
	case "string":
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return s, fmt.Errorf("want a string, got %q", trunc(string(raw)))
		}
		if len(v) > 1024 || !stringValuePattern.MatchString(v) {
			return s, fmt.Errorf("value %q: want 1-1024 characters of A-Z a-z 0-9 _ . , : / + = @ %% * - and inner spaces", trunc(v))
		}
		s.Text = v
	}
	if len(rule.AllowedValues) > 0 {
		ok := false
		for _, a := range rule.AllowedValues {
			ok = ok || strings.EqualFold(a, s.Text)
		}
		if !ok {
			return s, fmt.Errorf("value %q is not one of %s", trunc(s.Text), strings.Join(rule.AllowedValues, ", "))
		}
	}
	return s, nil
}

func checkRange(v *big.Float, rule wire.ParameterRule) error {
	if rule.Min != nil {
		min, ok := new(big.Float).SetPrec(256).SetString(rule.Min.String())
		if !ok {
			return fmt.Errorf("rule has a bad min %q", rule.Min.String())
		}
		if v.Cmp(min) < 0 {
			return fmt.Errorf("%s is below the minimum %s", v.Text('f', -1), rule.Min.String())
		}
	}
	if rule.Max != nil {
		max, ok := new(big.Float).SetPrec(256).SetString(rule.Max.String())
		if !ok {
			return fmt.Errorf("rule has a bad max %q", rule.Max.String())
		}
		if v.Cmp(max) > 0 {
			return fmt.Errorf("%s is above the maximum %s", v.Text('f', -1), rule.Max.String())
		}
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 70 {
		return s[:70] + "..."
	}
	return s
}

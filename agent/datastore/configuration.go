package datastore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
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

// Dropped lists, sorted, the parameters of the previous group (prev, as
// read back from the override file) that settings no longer set: they go
// back to their defaults, at the latest on the next restart.
func Dropped(prev map[string]string, settings []Setting) []string {
	return dropped(prev, settings)
}

// Resets splits the parameters dropped from the set (Dropped) into those
// a datastore can put back live — the arguments carry their rule and it
// is dynamic (the controller sends the rules of every parameter of the
// version, not only of the values) — and those that wait for a restart.
func Resets(args wire.ConfigurationArgs, prev map[string]string, settings []Setting) (live, restart []string) {
	dynamic := map[string]bool{}
	for _, r := range args.Rules {
		dynamic[r.Name] = !r.RestartRequired
	}
	for _, name := range dropped(prev, settings) {
		if dynamic[name] {
			live = append(live, name)
		} else {
			restart = append(restart, name)
		}
	}
	return live, restart
}

func dropped(prev map[string]string, settings []Setting) []string {
	set := map[string]bool{}
	for _, s := range settings {
		set[s.Name] = true
	}
	var out []string
	for name := range prev {
		if !set[name] {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func checkValue(rule wire.ParameterRule, raw json.RawMessage) (Setting, error) {
	v, err := rule.Check(raw)
	if err != nil {
		return Setting{}, err
	}
	return Setting{Name: rule.Name, Rule: rule, Type: rule.Type, Text: v.Text, Bool: v.Bool}, nil
}

func trunc(s string) string {
	if len(s) > 70 {
		return s[:70] + "..."
	}
	return s
}

// EffectiveValues merges configuration layers read from a datastore's
// files (name → value as written), later layers winning, and types each
// value for the API: a plain integer or decimal number becomes a JSON
// number, anything else a JSON string without its surrounding quotes.
func EffectiveValues(layers ...map[string]string) map[string]json.RawMessage {
	merged := map[string]string{}
	for _, l := range layers {
		for k, v := range l {
			merged[k] = v
		}
	}
	out := make(map[string]json.RawMessage, len(merged))
	for k, v := range merged {
		out[k] = TypedValue(v)
	}
	return out
}

var numberPattern = regexp.MustCompile(`^-?(0|[1-9][0-9]{0,19})(\.[0-9]{1,17})?$`)

// TypedValue is one file value as JSON: a number where the value is a
// plain decimal number (no unit, no leading zeros, no exponent, at most
// 20 integer digits: any 64-bit server value), else a
// string with one pair of surrounding single or double quotes removed.
func TypedValue(v string) json.RawMessage {
	v = strings.TrimSpace(v)
	if numberPattern.MatchString(v) {
		return json.RawMessage(v)
	}
	if len(v) >= 2 && (v[0] == '\'' || v[0] == '"') && v[len(v)-1] == v[0] {
		v = v[1 : len(v)-1]
	}
	b, _ := json.Marshal(v)
	return b
}

// ReadLayers reads a datastore's configuration files in the order the
// server reads them, each through parse. The first is the base
// configuration prepare renders: the answer is failed_precondition before
// prepare. The others (log switches, the group) may be missing.
func ReadLayers(lc *Lifecycle, parse func([]byte) map[string]string, base string, others ...string) ([]map[string]string, error) {
	if err := lc.RequirePrepared(); err != nil {
		return nil, err
	}
	var layers []map[string]string
	for i, p := range append([]string{base}, others...) {
		data, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) && i > 0 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read configuration: %w", err)
		}
		layers = append(layers, parse(data))
	}
	return layers, nil
}

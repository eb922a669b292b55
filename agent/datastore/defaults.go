package datastore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"strata/agent/wire"
)

// GuestConfigTemplate is where the strata-agent element installs the image
// recipe's default configuration template (datastore.config_template):
// the tunable defaults every instance of the image starts with.
const GuestConfigTemplate = "/etc/strata/config-template.json.tmpl"

// RenderDefaults renders the image's default configuration template at
// path for a flavor with memoryMB of RAM (wire.RenderConfigTemplate) and
// returns its values as checked settings, sorted by name, for the
// manager's defaults layer: between its structural base configuration and
// the configuration group. Each value is typed from its JSON (number,
// true/false, string) and rendered canonically like a group's value, so
// it is as safe to write into a file or statement. No path, or no file
// there (an image built without a template, agent tests): nil, and the
// manager keeps its built-in defaults. A template that does not render is
// an error naming the file: the image is broken.
func RenderDefaults(path string, memoryMB int, nameOK func(string) bool) ([]Setting, error) {
	if path == "" {
		return nil, nil
	}
	text, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("default configuration template: %w", err)
	}
	values, err := wire.RenderConfigTemplate(text, wire.ConfigTemplateData{MemoryMB: max(memoryMB, 0)})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	rules := make([]wire.ParameterRule, 0, len(values))
	for name, raw := range values {
		rules = append(rules, wire.ParameterRule{Name: name, Type: jsonKind(raw)})
	}
	sort.Slice(rules, func(i, j int) bool { return rules[i].Name < rules[j].Name })
	settings, err := CheckConfiguration(wire.ConfigurationArgs{Values: values, Rules: rules}, nameOK)
	if err != nil {
		return nil, fmt.Errorf("%s rendered for %d MiB: %w", path, memoryMB, err)
	}
	return settings, nil
}

// jsonKind is the rule type of a rendered template value.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0:
		return "string"
	case raw[0] == '"':
		return "string"
	case string(raw) == "true" || string(raw) == "false":
		return "boolean"
	case bytes.ContainsAny(raw, ".eE"):
		return "float"
	}
	return "integer"
}

// WriteLayer makes the file at path hold data (WriteConfigFile), or
// removes it for nil data (no template: no defaults layer). changed says
// whether the file changed.
func WriteLayer(path string, data []byte, mode os.FileMode) (changed bool, err error) {
	if data == nil {
		if err := os.Remove(path); err == nil {
			return true, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("remove %s: %w", path, err)
		}
		return false, nil
	}
	if SameFileContent(path, data) {
		return false, nil
	}
	return true, WriteConfigFile(path, data, mode)
}

// OmitDefaults drops from a rendered base configuration the lines that
// set a parameter the defaults layer sets (key returns a line's parameter
// name, "" for none), leaving a comment in their place, so the files hold
// one value per parameter: the image's template's.
func OmitDefaults(conf []byte, defaults []Setting, key func(line string) string) []byte {
	if len(defaults) == 0 {
		return conf
	}
	set := map[string]bool{}
	for _, s := range defaults {
		set[s.Name] = true
	}
	lines := strings.Split(string(conf), "\n")
	for i, line := range lines {
		t := strings.TrimSpace(line)
		if t == "" || t[0] == '#' || t[0] == '[' {
			continue
		}
		if name := key(t); name != "" && set[name] {
			lines[i] = "# " + name + ": set by the image's default configuration (the defaults layer)"
		}
	}
	return []byte(strings.Join(lines, "\n"))
}

package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"text/template"
)

// ConfigTemplateData is what a default configuration template sees: the
// flavor the instance runs on.
type ConfigTemplateData struct {
	// MemoryMB is the flavor's RAM in MiB.
	MemoryMB int
	// VCPUs is the flavor's CPU count (0 when unknown).
	VCPUs int
}

// configTemplateFuncs are integer helpers; there is deliberately nothing
// that reads files, the environment or the clock, so a template renders
// the same everywhere.
var configTemplateFuncs = template.FuncMap{
	"mul": func(a, b int) int { return a * b },
	"div": func(a, b int) (int, error) {
		if b == 0 {
			return 0, errors.New("division by zero")
		}
		return a / b, nil
	},
	"add":   func(a, b int) int { return a + b },
	"sub":   func(a, b int) int { return a - b },
	"min":   func(a, b int) int { return min(a, b) },
	"max":   func(a, b int) int { return max(a, b) },
	"clamp": func(v, lo, hi int) int { return min(max(v, lo), hi) },
}

// RenderConfigTemplate renders a datastore version's default configuration
// template (an image recipe's datastore.config_template): Go text/template
// text that, given the flavor, yields one JSON object of parameter values,
// the same shape as ConfigurationArgs.Values. It only renders and decodes;
// the values still have to pass the version's rules (ParameterRule.Check).
//
//	{
//	  "max_connections": {{clamp (div .MemoryMB 4) 100 2000}},
//	  "character_set_server": "utf8mb4"
//	}
func RenderConfigTemplate(text []byte, data ConfigTemplateData) (map[string]json.RawMessage, error) {
	t, err := template.New("config").Option("missingkey=error").Funcs(configTemplateFuncs).Parse(string(text))
	if err != nil {
		return nil, fmt.Errorf("configuration template: %w", err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("configuration template: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(buf.Bytes()))
	dec.UseNumber()
	var values map[string]json.RawMessage
	if err := dec.Decode(&values); err != nil {
		return nil, fmt.Errorf("configuration template: the rendered text is not a JSON object: %w", err)
	}
	if dec.More() {
		return nil, errors.New("configuration template: data after the JSON object")
	}
	if values == nil {
		return nil, errors.New("configuration template: renders null, want an object")
	}
	return values, nil
}

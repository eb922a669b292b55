package wire

import (
	"strings"
	"testing"
)

func TestRenderConfigTemplate(t *testing.T) {
	tmpl := []byte(`{
  "max_connections": {{clamp (div .MemoryMB 4) 100 2000}},
  "pool": {{mul (max (div .MemoryMB 2) 128) 1048576}},
  "name": "utf8mb4",
  "on": true
}`)
	for mem, want := range map[int]string{0: "100|134217728", 512: "128|268435456", 65536: "2000|34359738368"} {
		v, err := RenderConfigTemplate(tmpl, ConfigTemplateData{MemoryMB: mem})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(v["max_connections"]) + "|" + string(v["pool"]); got != want || string(v["name"]) != `"utf8mb4"` || string(v["on"]) != "true" {
			t.Fatalf("memory %d: %s, %v", mem, got, v)
		}
	}
	for _, bad := range []string{`{"a": {{div .MemoryMB 0}}}`, `{"a": {{.Nope}}}`, `[1]`, `{"a": 1} {}`, `null`, `{"a": {{`, `{{env "HOME"}}`} {
		if _, err := RenderConfigTemplate([]byte(bad), ConfigTemplateData{MemoryMB: 1}); err == nil || !strings.Contains(err.Error(), "configuration template") {
			t.Fatalf("%s: %v", bad, err)
		}
	}
}

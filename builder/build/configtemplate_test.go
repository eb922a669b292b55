package build

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"strata/builder/element"
	"strata/builder/recipe"
)

// The recipe's datastore.config_template reaches the strata-agent element
// as its DIB_STRATA_CONFIG_TEMPLATE input (copied into the hooks tree and
// hashed into the cache key); a recipe without one builds without it; one
// naming a missing file fails before anything runs, naming it.
func TestRecipeConfigTemplateIsTheAgentElementsInput(t *testing.T) {
	el, err := element.Load("strata-agent", filepath.Join(strataElements(t), "strata-agent"))
	if err != nil {
		t.Fatal(err)
	}
	set := &element.Set{Elements: []*element.Element{el}}
	rec, err := recipe.Load("../../images/mariadb-10.11.yaml")
	if err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(t.TempDir(), "strata-agent")
	os.WriteFile(agent, []byte("\x7fELF"), 0o755)
	env := rec.Vars()
	env["DIB_STRATA_AGENT_BINARY"] = agent

	in, err := readInputs(set, env)
	if err != nil {
		t.Fatal(err)
	}
	got := in[recipe.ConfigTemplateVar]
	if got.Path != rec.Datastore.ConfigTemplate || !strings.HasSuffix(got.Path, "images/config-templates/mariadb-10.11.json.tmpl") || got.SHA256 == "" {
		t.Fatalf("input %s = %+v, want the recipe's template %s", recipe.ConfigTemplateVar, got, rec.Datastore.ConfigTemplate)
	}
	hooks := t.TempDir()
	if err := copyInputs(hooks, in); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(rec.Datastore.ConfigTemplate)
	if copied, err := os.ReadFile(filepath.Join(hooks, inputsDir, recipe.ConfigTemplateVar)); err != nil || string(copied) != string(want) {
		t.Fatalf("template in the hooks tree: %v, %d bytes, want %d", err, len(copied), len(want))
	}

	// A custom recipe without a template.
	delete(env, recipe.ConfigTemplateVar)
	if in, err := readInputs(set, env); err != nil || len(in) != 1 {
		t.Fatalf("without a template: %v, %v", in, err)
	}

	// Named but missing.
	missing := filepath.Join(t.TempDir(), "gone.json.tmpl")
	env[recipe.ConfigTemplateVar] = missing
	if _, err := readInputs(set, env); err == nil || !strings.Contains(err.Error(), recipe.ConfigTemplateVar) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("missing template: %v; want an error naming %s and %s", err, recipe.ConfigTemplateVar, missing)
	}
}

// A template that does not render fails RecipeConfig, naming the recipe
// key and the file, instead of every instance's prepare in the image.
func TestRecipeConfigRefusesATemplateThatDoesNotRender(t *testing.T) {
	rec, err := recipe.Load("../../images/mariadb-10.11.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := RecipeConfig(rec); err != nil {
		t.Fatalf("the repository's recipe: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.json.tmpl")
	os.WriteFile(bad, []byte(`{"max_connections": {{.NoSuchField}}}`), 0o644)
	rec.Datastore.ConfigTemplate = bad
	if _, err := RecipeConfig(rec); err == nil || !strings.Contains(err.Error(), "datastore.config_template") || !strings.Contains(err.Error(), bad) {
		t.Fatalf("broken template: %v", err)
	}
}

package postgresql_test

import (
	"database/sql"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// freeStrings are values the server must accept for the string rules that
// list no allowed values.
var freeStrings = map[string]string{
	"timezone":                   "Europe/Berlin",
	"datestyle":                  "ISO, DMY",
	"log_line_prefix":            "%m %p %q%u@%d",
	"default_text_search_config": "pg_catalog.simple",
}

// TestRulesAgreeWithTheServer checks every rule of
// validation-rules/postgresql-<major>.json against a real PostgreSQL of
// that version (the host's 15; trixie's 17 under make verify-rules-trixie): the
// parameter exists in pg_settings and is settable, its vartype matches
// the rule (enums are strings with allowed values within enumvals),
// restart_required is exactly "context is postmaster" and the apply method
// says restart or reload accordingly, the bounds lie within min_val and
// max_val, min and max pass our validation and min-1 / max+1 do not, and
// the server's own checks (ALTER SYSTEM, which validates any context
// without applying) accept min, max and every allowed value.
func TestRulesAgreeWithTheServer(t *testing.T) {
	rules := servertest.LoadRules(t, rulesFile(t))
	inst := sharedServer(t)
	db := admin(t, inst, "postgres")
	defer func() {
		if _, err := db.Exec("ALTER SYSTEM RESET ALL"); err != nil {
			t.Error(err)
		}
	}()
	areas := map[string]bool{}
	for _, r := range rules {
		t.Run(r.Name, func(t *testing.T) {
			if r.AllowEmpty {
				t.Fatal("allow_empty: this test does not yet check the empty value against PostgreSQL")
			}
			var vartype, context string
			var min, max, enums sql.NullString
			err := db.QueryRow(`SELECT vartype, context, min_val, max_val, array_to_string(enumvals, ',')
				FROM pg_settings WHERE lower(name) = $1`, r.Name).Scan(&vartype, &context, &min, &max, &enums)
			if err == sql.ErrNoRows {
				t.Fatalf("PostgreSQL has no parameter %s", r.Name)
			}
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"integer": "integer", "real": "float", "bool": "boolean", "string": "string", "enum": "string"}[vartype]
			if want != r.Type {
				t.Fatalf("rule type %s, server vartype %s", r.Type, vartype)
			}
			if context == "internal" {
				t.Fatal("an internal parameter cannot be set")
			}
			if (context == "postmaster") != r.RestartRequired {
				t.Fatalf("restart_required %v, but the server's context is %s", r.RestartRequired, context)
			}
			if wantApply := map[bool]string{true: wire.ApplyRestart, false: wire.ApplyReload}[r.RestartRequired]; r.ApplyMethod() != wantApply {
				t.Fatalf("apply %s, want %s", r.ApplyMethod(), wantApply)
			}
			var tries []string
			switch r.Type {
			case "integer", "float":
				if !min.Valid || !max.Valid {
					t.Fatal("the server declares no bounds for a numeric parameter")
				}
				servertest.CheckRuleBounds(t, r, min.String, max.String)
				tries = []string{r.Min.String(), r.Max.String()}
			case "boolean":
				tries = []string{"on", "off"}
			case "string":
				if vartype == "enum" {
					if len(r.AllowedValues) == 0 {
						t.Fatal("an enum parameter's rule lists its allowed values")
					}
					for _, a := range r.AllowedValues {
						if !slices.Contains(strings.Split(enums.String, ","), a) {
							t.Fatalf("allowed value %q is not among the server's %s", a, enums.String)
						}
					}
					tries = r.AllowedValues
				} else {
					v, ok := freeStrings[r.Name]
					if !ok {
						t.Fatal("a free-form string rule needs a sample value in freeStrings")
					}
					if _, err := r.Check(json.RawMessage(`"` + v + `"`)); err != nil {
						t.Fatalf("our validation refuses the sample %q: %v", v, err)
					}
					tries = []string{v}
				}
			}
			for _, v := range tries {
				if _, err := db.Exec("ALTER SYSTEM SET " + r.Name + " = '" + v + "'"); err != nil {
					t.Fatalf("the server refuses %s = %s: %v", r.Name, v, err)
				}
			}
			if _, err := db.Exec("ALTER SYSTEM RESET " + r.Name); err != nil {
				t.Fatal(err)
			}
		})
		for _, area := range []string{"mem", "connections", "wal", "log_", "autovacuum"} {
			if strings.Contains(r.Name, area) {
				areas[area] = true
			}
		}
	}
	if len(areas) != 5 {
		t.Fatalf("the rules cover %v; want memory, connections, WAL, logging and autovacuum", areas)
	}
}

// TestRecipeTemplateAppliesCleanly reads what images/postgresql-<major>.yaml
// registers (its rules and default configuration template), renders the
// template for flavors from none to 256 GiB, checks every value against
// the rules, and has a real server prepared with it: the default group
// applies without a restart.
func TestRecipeTemplateAppliesCleanly(t *testing.T) {
	rules, flavor512 := servertest.CheckRecipeTemplate(t, recipeFile(t), "postgresql")
	inst, _ := postgresqltest.PreparedT(t, wire.PrepareArgs{MemoryMB: 512, Configuration: &wire.ConfigurationArgs{Values: flavor512, Rules: rules}})
	if st := inst.Manager.Status(ctxT(t)); st.Status != wire.StatusRunning {
		t.Fatalf("status = %+v", st)
	}
	if got := setting(t, inst, "random_page_cost"); got != "1.1" {
		t.Fatalf("random_page_cost = %s, want 1.1 from the template", got)
	}
}

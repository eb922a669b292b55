package mariadb_test

import (
	"database/sql"
	"encoding/json"
	"math/big"
	"os"
	"slices"
	"strings"
	"testing"

	"strata/agent/datastore"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/wire"
	"strata/builder/recipe"
)

const rulesFile = "../../../validation-rules/mariadb-10.11.json"

func loadRules(t *testing.T) []wire.ParameterRule {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := wire.ParseRules(data)
	if err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rules
}

// allocating parameters size memory or files the moment they are set
// (the buffer pool, the redo log, the key cache): their bounds are checked
// against the server's own declared limits only, never set to a
// terabyte on a test machine.
var allocating = map[string]bool{"innodb_buffer_pool_size": true, "innodb_log_file_size": true, "key_buffer_size": true}

// serverTypes maps information_schema.SYSTEM_VARIABLES.VARIABLE_TYPE to
// rule types.
func serverType(varType string) string {
	switch {
	case strings.Contains(varType, "INT"):
		return "integer"
	case varType == "DOUBLE":
		return "float"
	case varType == "BOOLEAN":
		return "boolean"
	}
	return "string"
}

// TestRulesAgreeWithTheServer checks every rule of
// validation-rules/mariadb-10.11.json against a real MariaDB: the variable
// exists, its type and dynamic/read-only nature match the rule, the rule's
// bounds lie within the server's, min and max pass our validation and
// min-1 / max+1 do not, and on a dynamic variable SET GLOBAL takes min,
// max and every allowed value exactly (the server neither clamps nor
// refuses them).
func TestRulesAgreeWithTheServer(t *testing.T) {
	rules := loadRules(t)
	if len(rules) < 35 {
		t.Fatalf("%d rules; the MariaDB file covers at least Trove's list", len(rules))
	}
	inst := sharedServer(t)
	db := admin(t, inst)
	db.SetMaxOpenConns(1)
	for _, r := range rules {
		t.Run(r.Name, func(t *testing.T) {
			var varType, readOnly string
			var min, max, enum, global sql.NullString
			err := db.QueryRow(`SELECT VARIABLE_TYPE, NUMERIC_MIN_VALUE, NUMERIC_MAX_VALUE, READ_ONLY, ENUM_VALUE_LIST, GLOBAL_VALUE
				FROM information_schema.SYSTEM_VARIABLES WHERE VARIABLE_NAME = ?`, strings.ToUpper(r.Name)).Scan(&varType, &min, &max, &readOnly, &enum, &global)
			if err == sql.ErrNoRows {
				t.Fatalf("MariaDB has no variable %s", r.Name)
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := serverType(varType); got != r.Type {
				t.Fatalf("rule type %s, server type %s (%s)", r.Type, varType, got)
			}
			if (readOnly == "YES") != r.RestartRequired {
				t.Fatalf("restart_required %v, but the server says READ_ONLY=%s", r.RestartRequired, readOnly)
			}
			if want := map[bool]string{true: wire.ApplyRestart, false: wire.ApplyLive}[r.RestartRequired]; r.ApplyMethod() != want {
				t.Fatalf("apply %s, want %s", r.ApplyMethod(), want)
			}
			checkRuleBounds(t, r, min.String, max.String)
			if r.Type == "string" {
				if len(r.AllowedValues) == 0 {
					t.Fatal("a MariaDB string rule lists its allowed values")
				}
				if enum.Valid {
					for _, a := range r.AllowedValues {
						if !slices.ContainsFunc(strings.Split(enum.String, ","), func(e string) bool { return strings.EqualFold(e, a) }) {
							t.Fatalf("allowed value %s is not among the server's %s", a, enum.String)
						}
					}
				}
			}
			if r.RestartRequired {
				if _, err := db.Exec("SET GLOBAL " + r.Name + " = DEFAULT"); err == nil || !strings.Contains(err.Error(), "read only") {
					t.Fatalf("SET GLOBAL on a restart-required variable: %v", err)
				}
				return
			}
			// Live: the server takes the bounds and allowed values exactly.
			defer func() {
				if _, err := db.Exec("SET GLOBAL "+r.Name+" = ?", global.String); err != nil {
					// Numbers want a typed literal.
					db.Exec("SET GLOBAL " + r.Name + " = " + global.String)
				}
			}()
			var tries []string
			switch {
			case r.Type == "boolean":
				tries = []string{"ON", "OFF"}
			case r.Type == "string":
				tries = r.AllowedValues
			case allocating[r.Name]:
				tries = []string{r.Min.String()}
			default:
				tries = []string{r.Min.String(), r.Max.String()}
			}
			for _, v := range tries {
				stmt := "SET GLOBAL " + r.Name + " = " + v
				if r.Type == "string" {
					stmt = "SET GLOBAL " + r.Name + " = '" + v + "'"
				}
				if _, err := db.Exec(stmt); err != nil {
					t.Fatalf("%s: %v", stmt, err)
				}
				var got string
				db.QueryRow("SELECT GLOBAL_VALUE FROM information_schema.SYSTEM_VARIABLES WHERE VARIABLE_NAME = ?", strings.ToUpper(r.Name)).Scan(&got)
				if !sameValue(r.Type, v, got) {
					t.Fatalf("%s: the server holds %s (clamped or rounded)", stmt, got)
				}
			}
		})
	}
}

// checkRuleBounds checks a numeric rule's bounds against the server's and
// against our own validation: min and max pass, min-1 and max+1 do not.
func checkRuleBounds(t *testing.T, r wire.ParameterRule, serverMin, serverMax string) {
	t.Helper()
	if r.Type != "integer" && r.Type != "float" {
		if r.Min != nil || r.Max != nil {
			t.Fatal("bounds on a non-numeric rule")
		}
		return
	}
	if r.Min == nil || r.Max == nil {
		t.Fatal("a numeric rule needs min and max")
	}
	lo, hi := bigf(t, r.Min.String()), bigf(t, r.Max.String())
	if serverMin != "" && lo.Cmp(bigf(t, serverMin)) < 0 {
		t.Fatalf("rule min %s is below the server's %s", r.Min, serverMin)
	}
	if serverMax != "" && hi.Cmp(bigf(t, serverMax)) > 0 {
		t.Fatalf("rule max %s is above the server's %s", r.Max, serverMax)
	}
	checkOurValidation(t, r)
}

// checkOurValidation: the rule's min and max pass wire's checks, one
// below and one above do not.
func checkOurValidation(t *testing.T, r wire.ParameterRule) {
	t.Helper()
	one := big.NewFloat(1)
	lo, hi := bigf(t, r.Min.String()), bigf(t, r.Max.String())
	for _, v := range []string{r.Min.String(), r.Max.String()} {
		if _, err := r.Check(json.RawMessage(v)); err != nil {
			t.Fatalf("our validation refuses the rule's own bound %s: %v", v, err)
		}
	}
	for _, v := range []*big.Float{new(big.Float).Sub(lo, one), new(big.Float).Add(hi, one)} {
		text := v.Text('f', -1)
		if _, err := r.Check(json.RawMessage(text)); err == nil {
			t.Fatalf("our validation accepts %s, outside %s..%s", text, r.Min, r.Max)
		}
	}
}

func bigf(t *testing.T, s string) *big.Float {
	t.Helper()
	f, ok := new(big.Float).SetPrec(256).SetString(s)
	if !ok {
		t.Fatalf("not a number: %q", s)
	}
	return f
}

// sameValue compares a value set with what the server reports.
func sameValue(typ, set, got string) bool {
	switch typ {
	case "integer", "float":
		a, ok1 := new(big.Float).SetString(set)
		b, ok2 := new(big.Float).SetString(got)
		return ok1 && ok2 && a.Cmp(b) == 0
	}
	return strings.EqualFold(set, got)
}

// TestRecipeTemplateAppliesCleanly reads what images/mariadb-10.11.yaml
// registers (its rules and default configuration template), renders the
// template for flavors from none to 256 GiB, checks every value against
// the rules, and has a real server prepared with it: the default group
// applies without a restart.
func TestRecipeTemplateAppliesCleanly(t *testing.T) {
	rec, err := recipe.Load("../../../images/mariadb-10.11.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := rec.Datastore
	if d == nil || d.Manager != "mariadb" || d.Rules == "" || d.ConfigTemplate == "" {
		t.Fatalf("recipe datastore = %+v", d)
	}
	data, err := os.ReadFile(d.Rules)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := wire.ParseRules(data)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := os.ReadFile(d.ConfigTemplate)
	if err != nil {
		t.Fatal(err)
	}
	var flavor512 map[string]json.RawMessage
	for _, mem := range []int{0, 512, 2048, 16384, 262144} {
		values, err := wire.RenderConfigTemplate(tmpl, wire.ConfigTemplateData{MemoryMB: mem})
		if err != nil {
			t.Fatalf("%d MiB: %v", mem, err)
		}
		if _, err := datastore.CheckConfiguration(wire.ConfigurationArgs{Values: values, Rules: rules}, nil); err != nil {
			t.Fatalf("%d MiB: the template's values break the rules: %v", mem, err)
		}
		if mem == 512 {
			flavor512 = values
		}
	}
	inst, _ := mariadbtest.PreparedT(t, wire.PrepareArgs{MemoryMB: 512, Configuration: &wire.ConfigurationArgs{Values: flavor512, Rules: rules}})
	if st := inst.Manager.Status(ctxT(t)); st.Status != wire.StatusRunning {
		t.Fatalf("status = %+v", st)
	}
	if got := globalVar(t, inst, "max_connections"); got != "100" {
		t.Fatalf("max_connections = %s, want 100 from the template", got)
	}
}

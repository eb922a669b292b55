package mariadb_test

import (
	"database/sql"
	"math/big"
	"slices"
	"strings"
	"testing"

	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

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
// validation-rules/mariadb-<version>.json against a real MariaDB of that
// version (the host's 10.11; trixie's under make verify-rules-trixie): the variable
// exists, its type and dynamic/read-only nature match the rule, the rule's
// bounds lie within the server's, min and max pass our validation and
// min-1 / max+1 do not, and on a dynamic variable SET GLOBAL takes min,
// max and every allowed value exactly (the server neither clamps nor
// refuses them).
func TestRulesAgreeWithTheServer(t *testing.T) {
	rules := servertest.LoadRules(t, rulesFile(t))
	if len(rules) < 35 {
		t.Fatalf("%d rules; the MariaDB file covers at least Trove's list", len(rules))
	}
	inst := sharedServer(t)
	db := admin(t, inst)
	db.SetMaxOpenConns(1)
	for _, r := range rules {
		t.Run(r.Name, func(t *testing.T) {
			if r.AllowEmpty {
				t.Fatal("allow_empty: this test does not yet check the empty value against MariaDB")
			}
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
			if r.Type == "integer" || r.Type == "float" {
				servertest.CheckRuleBounds(t, r, min.String, max.String)
			} else if r.Min != nil || r.Max != nil {
				t.Fatal("bounds on a non-numeric rule")
			}
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

// TestRecipeTemplateAppliesCleanly reads what images/mariadb-<version>.yaml
// registers (its rules and default configuration template), renders the
// template for flavors from none to 256 GiB, checks every value against
// the rules, and has a real server prepared with it: the default group
// applies without a restart.
func TestRecipeTemplateAppliesCleanly(t *testing.T) {
	rules, flavor512 := servertest.CheckRecipeTemplate(t, recipeFile(t), "mariadb")
	inst, _ := mariadbtest.PreparedT(t, wire.PrepareArgs{MemoryMB: 512, Configuration: &wire.ConfigurationArgs{Values: flavor512, Rules: rules}})
	if st := inst.Manager.Status(ctxT(t)); st.Status != wire.StatusRunning {
		t.Fatalf("status = %+v", st)
	}
	if got := globalVar(t, inst, "max_connections"); got != "100" {
		t.Fatalf("max_connections = %s, want 100 from the template", got)
	}
}

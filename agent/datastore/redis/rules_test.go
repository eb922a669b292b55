package redis_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"strata/agent/datastore/redis/redistest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// freeStrings are values the server must accept for the string rules that
// list no allowed values.
var freeStrings = map[string]string{
	"save":                       "900 1 300 10 60 10000",
	"notify-keyspace-events":     "KEA",
	"client-output-buffer-limit": "normal 0 0 0 replica 268435456 67108864 60 pubsub 33554432 8388608 60",
}

// TestRulesAgreeWithTheServer checks every rule of
// validation-rules/redis-<major>.json against a real Redis of that version
// (the host's 7; trixie's 8 under make verify-rules-trixie): CONFIG GET knows
// the parameter, its current value has the rule's type, restart_required
// is exactly "CONFIG SET answers can't set immutable config", min and max
// pass our validation and min-1 / max+1 do not, and a live parameter takes
// min, max and every allowed value through CONFIG SET and reads them back
// unchanged.
func TestRulesAgreeWithTheServer(t *testing.T) {
	rules := servertest.LoadRules(t, rulesFile(t))
	inst := sharedServer(t)
	c := admin(t, inst)
	ctx := context.Background()
	names := map[string]bool{}
	for _, r := range rules {
		names[r.Name] = true
		t.Run(r.Name, func(t *testing.T) {
			got := do(t, c, "CONFIG", "GET", r.Name).Strings()
			if len(got) != 2 || got[0] != r.Name {
				t.Fatalf("CONFIG GET %s = %q", r.Name, got)
			}
			current := got[1]
			switch r.Type {
			case "boolean":
				if current != "yes" && current != "no" {
					t.Fatalf("boolean rule, but the value is %q", current)
				}
			case "integer":
				if _, err := strconv.ParseInt(current, 10, 64); err != nil {
					t.Fatalf("integer rule, but the value is %q", current)
				}
				servertest.CheckRuleBounds(t, r, "", "") // Redis declares no bounds
			case "string":
				if current == "yes" || current == "no" {
					t.Fatalf("string rule, but the value %q is a boolean", current)
				}
			default:
				t.Fatalf("type %s is not used for Redis", r.Type)
			}
			_, err := c.Do(ctx, "CONFIG", "SET", r.Name, current)
			immutable := err != nil && strings.Contains(err.Error(), "can't set immutable config")
			if err != nil && !immutable {
				t.Fatalf("CONFIG SET %s to its own value: %v", r.Name, err)
			}
			if immutable != r.RestartRequired {
				t.Fatalf("restart_required %v, but CONFIG SET says %v", r.RestartRequired, err)
			}
			if want := map[bool]string{true: wire.ApplyRestart, false: wire.ApplyLive}[r.RestartRequired]; r.ApplyMethod() != want {
				t.Fatalf("apply %s, want %s", r.ApplyMethod(), want)
			}
			if immutable {
				return
			}
			defer do(t, c, "CONFIG", "SET", r.Name, current)
			var tries []string
			switch {
			case r.Type == "boolean":
				tries = []string{"yes", "no"}
			case r.Type == "integer":
				tries = []string{r.Min.String(), r.Max.String()}
			case len(r.AllowedValues) > 0:
				tries = r.AllowedValues
			default:
				v, ok := freeStrings[r.Name]
				if !ok {
					t.Fatal("a free-form string rule needs a sample value in freeStrings")
				}
				if _, err := r.Check(json.RawMessage(`"` + v + `"`)); err != nil {
					t.Fatalf("our validation refuses the sample %q: %v", v, err)
				}
				tries = []string{v}
			}
			if r.AllowEmpty {
				// The server must take the empty value (save "" turns
				// snapshots off) and keep it.
				if r.Type != "string" {
					t.Fatalf("allow_empty on a %s rule", r.Type)
				}
				if _, err := c.Do(ctx, "CONFIG", "SET", r.Name, ""); err != nil {
					t.Fatalf("allow_empty, but CONFIG SET %s \"\": %v", r.Name, err)
				}
				if back := do(t, c, "CONFIG", "GET", r.Name).Strings()[1]; back != "" {
					t.Fatalf("CONFIG SET %s \"\" reads back %q", r.Name, back)
				}
			}
			for _, v := range tries {
				if _, err := c.Do(ctx, "CONFIG", "SET", r.Name, v); err != nil {
					t.Fatalf("CONFIG SET %s %s: %v", r.Name, v, err)
				}
				back := do(t, c, "CONFIG", "GET", r.Name).Strings()[1]
				if r.Type != "string" || len(r.AllowedValues) > 0 {
					if back != v {
						t.Fatalf("CONFIG SET %s %s reads back %q (clamped or rounded)", r.Name, v, back)
					}
				}
			}
		})
	}
	for _, must := range []string{"maxmemory", "maxmemory-policy", "timeout", "appendonly", "save"} {
		if !names[must] {
			t.Errorf("no rule for %s", must)
		}
	}
}

// TestRecipeTemplateAppliesCleanly reads what images/redis-<major>.yaml
// registers (its rules and default configuration template), renders the
// template for flavors from none to 256 GiB, checks every value against
// the rules, and has a real server prepared with it: the default group
// applies without a restart.
func TestRecipeTemplateAppliesCleanly(t *testing.T) {
	rules, flavor512 := servertest.CheckRecipeTemplate(t, recipeFile(t), "redis")
	inst, _ := redistest.PreparedT(t, wire.PrepareArgs{MemoryMB: 512, Configuration: &wire.ConfigurationArgs{Values: flavor512, Rules: rules}})
	if st := inst.Manager.Status(ctxT(t)); st.Status != wire.StatusRunning {
		t.Fatalf("status = %+v", st)
	}
	if got := configValue(t, inst, "appendonly"); got != "yes" {
		t.Fatalf("appendonly = %s, want yes from the template", got)
	}
}

package servertest

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"strata/agent/datastore"
	"strata/agent/wire"
	"strata/builder/recipe"
)

// Context is a context for one test, cancelled when it ends or after
// timeout.
func Context(t testing.TB, timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// Num is a rule bound.
func Num(s string) *json.Number { n := json.Number(s); return &n }

// Values makes a configuration group from name, JSON value pairs.
func Values(kv ...string) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i]] = json.RawMessage(kv[i+1])
	}
	return out
}

// WantCode asserts err is a *wire.OpError with code and a message
// containing each of parts.
func WantCode(t testing.TB, err error, code wire.ErrorCode, parts ...string) {
	t.Helper()
	var oe *wire.OpError
	if !errors.As(err, &oe) {
		t.Fatalf("err = %v (%T), want a %s error", err, err, code)
	}
	if oe.Code != code {
		t.Fatalf("code = %s (%s), want %s", oe.Code, oe.Message, code)
	}
	for _, p := range parts {
		if !strings.Contains(oe.Message, p) {
			t.Fatalf("message %q does not contain %q", oe.Message, p)
		}
	}
}

// QueryStrings runs q and returns each row's columns joined by "|" (NULL
// as "").
func QueryStrings(t testing.TB, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, v := range vals {
			parts = append(parts, v.String)
		}
		out = append(out, strings.Join(parts, "|"))
	}
	return out
}

// Files renders files for a snapshot: each path, then its content (empty
// when it does not exist).
func Files(paths ...string) string {
	var b strings.Builder
	for _, f := range paths {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "%s\n%s\n", f, data)
	}
	return b.String()
}

// AssertUnchanged fails t when a snapshot taken after a rejected
// operation differs from the one taken before, showing the lines that
// differ.
func AssertUnchanged(t testing.TB, before, after string) {
	t.Helper()
	if after != before {
		t.Fatalf("server changed by a rejected operation:\n%s", diff(before, after))
	}
}

func diff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	inA := map[string]bool{}
	for _, l := range al {
		inA[l] = true
	}
	inB := map[string]bool{}
	for _, l := range bl {
		inB[l] = true
	}
	var out []string
	for _, l := range al {
		if !inB[l] {
			out = append(out, "- "+l)
		}
	}
	for _, l := range bl {
		if !inA[l] {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// CheckBlockedThenCrashed checks the status of a running server that
// stops answering: blocked while its process (named in pidFile) is frozen
// by SIGSTOP, crashed once server kills it (the pid file stays behind).
func CheckBlockedThenCrashed(t testing.TB, ctx context.Context, m datastore.Manager, pidFile string, server interface{ Kill() error }) {
	t.Helper()
	pid, err := datastore.ReadPidFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(pid, syscall.SIGSTOP)
	waitState(t, pid, 'T') // the stop lands asynchronously
	st := m.Status(ctx)
	syscall.Kill(pid, syscall.SIGCONT)
	if st.Status != wire.StatusBlocked {
		t.Fatalf("stopped process: %+v", st)
	}
	server.Kill()
	if st := m.Status(ctx); st.Status != wire.StatusCrashed {
		t.Fatalf("after SIGKILL: %+v", st)
	}
}

func waitState(t testing.TB, pid int, state byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if i := strings.LastIndexByte(string(data), ')'); i > 0 && i+2 < len(data) && data[i+2] == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d never reached state %c", pid, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Manager is a datastore manager a test opens and closes.
type Manager interface {
	datastore.Manager
	Close() error
}

// CheckFailedPrepareSticks prepares a manager from open whose server
// cannot start: prepare fails and the status says so, a second prepare
// is refused, and the verdict survives an agent restart (a second
// manager from open).
func CheckFailedPrepareSticks(t testing.TB, ctx context.Context, open func() (Manager, error)) {
	t.Helper()
	m, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err = m.Prepare(ctx, wire.PrepareArgs{}); err == nil {
		t.Fatal("prepare succeeded with a server that cannot start")
	}
	st := m.Status(ctx)
	if st.Status != wire.StatusFailed || !strings.Contains(st.Detail, "prepare failed") {
		t.Fatalf("status = %+v", st)
	}
	_, err = m.Prepare(ctx, wire.PrepareArgs{})
	WantCode(t, err, wire.CodeFailedPrecondition, "rebuild the instance")
	m2, _ := open()
	defer m2.Close()
	if st := m2.Status(context.Background()); st.Status != wire.StatusFailed {
		t.Fatalf("status after restart = %+v", st)
	}
}

// CheckLifecycle walks an unprepared manager through its lifecycle and
// checks its status and operations at each step: new, operations refused
// as not prepared; prepare, running; stop, shutdown by request and
// operations unavailable; restart, running. op is an operation that needs
// the server.
func CheckLifecycle(t testing.TB, ctx context.Context, m datastore.Manager, op func() error) {
	t.Helper()
	if st := m.Status(ctx); st.Status != wire.StatusNew {
		t.Fatalf("before prepare: %+v", st)
	}
	WantCode(t, op(), wire.CodeFailedPrecondition, "not prepared")
	WantCode(t, m.Restart(ctx), wire.CodeFailedPrecondition, "not prepared")
	WantCode(t, m.Stop(ctx), wire.CodeFailedPrecondition, "not prepared")

	if _, err := m.Prepare(ctx, wire.PrepareArgs{}); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("after prepare: %+v", st)
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(ctx); st.Status != wire.StatusShutdown || st.Detail != "stopped by request" {
		t.Fatalf("after stop: %+v", st)
	}
	WantCode(t, op(), wire.CodeUnavailable, "does not answer")
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("after restart: %+v", st)
	}
}

// CheckRestartRequired checks that m reports restart_required, that a
// new manager from open (an agent restart) still does, and that m's
// Restart succeeds.
func CheckRestartRequired(t testing.TB, ctx context.Context, m datastore.Manager, open func() (Manager, error)) {
	t.Helper()
	if st := m.Status(ctx); st.Status != wire.StatusRestartRequired {
		t.Fatalf("status = %+v", st)
	}
	m2, _ := open()
	if st := m2.Status(ctx); st.Status != wire.StatusRestartRequired {
		t.Fatalf("status from a new manager = %+v", st)
	}
	m2.Close()
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
}

// CheckTailRefusals checks that TailLog refuses a log the manager does not
// list and line counts outside 1..wire.MaxTailLines (log is one it lists).
func CheckTailRefusals(t testing.TB, ctx context.Context, m datastore.Manager, log string) {
	t.Helper()
	_, err := m.TailLog(ctx, "../../etc/shadow", 10)
	WantCode(t, err, wire.CodeNotFound, "no log named")
	_, err = m.TailLog(ctx, log, 0)
	WantCode(t, err, wire.CodeInvalidArgument, "lines")
	_, err = m.TailLog(ctx, log, wire.MaxTailLines+1)
	WantCode(t, err, wire.CodeInvalidArgument, "lines")
}

// CheckNothingPrepared checks what rejected prepares leave behind:
// nothing at paths, no server running, status still new; and a good
// prepare still works afterwards.
func CheckNothingPrepared(t testing.TB, ctx context.Context, m datastore.Manager, server interface{ Running() bool }, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s exists after rejected prepares", p)
		}
	}
	if server.Running() {
		t.Fatal("server started by a rejected prepare")
	}
	if st := m.Status(ctx); st.Status != wire.StatusNew {
		t.Fatalf("status = %+v", st)
	}
	if _, err := m.Prepare(ctx, wire.PrepareArgs{}); err != nil {
		t.Fatal(err)
	}
}

// LoadRules reads and parses a validation-rules file.
func LoadRules(t testing.TB, path string) []wire.ParameterRule {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := wire.ParseRules(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rules
}

// CheckRuleBounds checks a numeric rule's bounds against the server's own
// ("" where it declares none) and against our validation: min and max
// pass, min-1 and max+1 do not.
func CheckRuleBounds(t testing.TB, r wire.ParameterRule, serverMin, serverMax string) {
	t.Helper()
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
	for _, v := range []string{r.Min.String(), r.Max.String()} {
		if _, err := r.Check(json.RawMessage(v)); err != nil {
			t.Fatalf("our validation refuses the rule's own bound %s: %v", v, err)
		}
	}
	one := big.NewFloat(1)
	for _, v := range []*big.Float{new(big.Float).Sub(lo, one), new(big.Float).Add(hi, one)} {
		text := v.Text('f', -1)
		if _, err := r.Check(json.RawMessage(text)); err == nil {
			t.Fatalf("our validation accepts %s, outside %s..%s", text, r.Min, r.Max)
		}
	}
}

func bigf(t testing.TB, s string) *big.Float {
	t.Helper()
	f, ok := new(big.Float).SetPrec(256).SetString(s)
	if !ok {
		t.Fatalf("not a number: %q", s)
	}
	return f
}

// CheckRecipeTemplate reads what the image recipe at path registers for
// manager (its rules and default configuration template), renders the
// template for flavors from none to 256 GiB and checks every rendering
// against the rules. It returns the rules and the 512 MiB rendering, for
// a real server to be prepared with.
func CheckRecipeTemplate(t testing.TB, path, manager string) ([]wire.ParameterRule, map[string]json.RawMessage) {
	t.Helper()
	rec, err := recipe.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d := rec.Datastore
	if d == nil || d.Manager != manager || d.Rules == "" || d.ConfigTemplate == "" {
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
	return rules, flavor512
}

// RecipeTemplate copies the default configuration template the image
// recipe at path names into a temporary file — what the strata-agent
// element installs in the image — and returns the copy's path and a
// function rendering the template for a flavor's memory (what the
// server must then run with).
func RecipeTemplate(t testing.TB, path string) (string, func(memoryMB int) map[string]json.RawMessage) {
	t.Helper()
	rec, err := recipe.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Datastore == nil || rec.Datastore.ConfigTemplate == "" {
		t.Fatalf("recipe %s names no config_template", path)
	}
	text, err := os.ReadFile(rec.Datastore.ConfigTemplate)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "config-template.json.tmpl")
	if err := os.WriteFile(copyPath, text, 0o600); err != nil {
		t.Fatal(err)
	}
	return copyPath, func(memoryMB int) map[string]json.RawMessage {
		t.Helper()
		v, err := wire.RenderConfigTemplate(text, wire.ConfigTemplateData{MemoryMB: memoryMB})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// CheckOneValuePerParameter fails the test if the base configuration file
// at path still sets a parameter of the defaults layer (defaults): the
// template's value must be the only one in the files.
func CheckOneValuePerParameter(t testing.TB, path string, defaults map[string]json.RawMessage) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		name := strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '=' || r == '\t' })[0]
		if _, ok := defaults[strings.ReplaceAll(name, "-", "_")]; ok {
			t.Errorf("%s still sets %s (%q), which the defaults layer sets", path, name, line)
		} else if _, ok := defaults[name]; ok {
			t.Errorf("%s still sets %s (%q), which the defaults layer sets", path, name, line)
		}
	}
}

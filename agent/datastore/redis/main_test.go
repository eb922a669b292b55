package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"strata/agent/datastore/redis"
	"strata/agent/datastore/redis/redistest"
	"strata/agent/wire"
)

// One prepared server serves the tests that only need a running Redis;
// tests that stop, kill or re-prepare a server start their own.
var (
	sharedOnce sync.Once
	shared     *redistest.Instance
	sharedErr  error
	sharedDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Close()
	}
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
	os.Exit(code)
}

func sharedServer(t *testing.T) *redistest.Instance {
	t.Helper()
	sharedOnce.Do(func() {
		sharedDir, sharedErr = os.MkdirTemp("", "strata-redis-")
		if sharedErr != nil {
			return
		}
		shared, sharedErr = redistest.New(sharedDir, redistest.Logger())
		if sharedErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, sharedErr = shared.Manager.Prepare(ctx, wire.PrepareArgs{})
	})
	if sharedErr != nil {
		t.Fatalf("shared Redis: %v", sharedErr)
	}
	return shared
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func num(s string) *json.Number { n := json.Number(s); return &n }

func values(kv ...string) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i]] = json.RawMessage(kv[i+1])
	}
	return out
}

// dial opens a connection on the instance's socket; with a user it
// authenticates (AUTH user password), with an empty user it sends AUTH
// password (the default user), with neither it stays unauthenticated.
func dial(t *testing.T, inst *redistest.Instance, user, password string) (*redis.Conn, error) {
	t.Helper()
	c, err := redis.Dial(context.Background(), inst.Config.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	switch {
	case user != "":
		_, err = c.Do(context.Background(), "AUTH", user, password)
	case password != "":
		_, err = c.Do(context.Background(), "AUTH", password)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// admin is the test's own connection as the agent's user, reading the
// password from the manager's secret file.
func admin(t *testing.T, inst *redistest.Instance) *redis.Conn {
	t.Helper()
	secret, err := os.ReadFile(inst.Config.SecretFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dial(t, inst, redis.AdminUser, strings.TrimSpace(string(secret)))
	if err != nil {
		t.Fatalf("admin connection: %v", err)
	}
	return c
}

func do(t *testing.T, c *redis.Conn, args ...string) redis.Reply {
	t.Helper()
	r, err := c.Do(context.Background(), args...)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return r
}

func configValue(t *testing.T, inst *redistest.Instance, name string) string {
	t.Helper()
	r := do(t, admin(t, inst), "CONFIG", "GET", name)
	if len(r.Array) != 2 {
		t.Fatalf("CONFIG GET %s = %+v", name, r)
	}
	return r.Array[1].Str
}

// snapshot captures everything a bad operation could have changed: users
// with their rules and password hashes, every parameter, and the
// manager's files.
func snapshot(t *testing.T, inst *redistest.Instance) string {
	t.Helper()
	c := admin(t, inst)
	var b strings.Builder
	acl := do(t, c, "ACL", "LIST").Strings()
	fmt.Fprintf(&b, "ACL LIST\n%s\n", strings.Join(acl, "\n"))
	cfg := do(t, c, "CONFIG", "GET", "*").Strings()
	var pairs []string
	for i := 0; i+1 < len(cfg); i += 2 {
		pairs = append(pairs, cfg[i]+"="+cfg[i+1])
	}
	sort.Strings(pairs)
	fmt.Fprintf(&b, "CONFIG\n%s\n", strings.Join(pairs, "\n"))
	for _, f := range []string{inst.Config.OverridesFile, inst.Config.ConfigFile, inst.Config.ACLFile, inst.Config.StateFile} {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "%s\n%s\n", f, data)
	}
	return b.String()
}

func assertUnchanged(t *testing.T, inst *redistest.Instance, before string) {
	t.Helper()
	if after := snapshot(t, inst); after != before {
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

// wantCode asserts err is a *wire.OpError with code and a message
// containing each of parts.
func wantCode(t *testing.T, err error, code wire.ErrorCode, parts ...string) {
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

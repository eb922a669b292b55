package redis_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"strata/agent/datastore/redis"
	"strata/agent/datastore/redis/redistest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

// One prepared server serves the tests that only need a running Redis;
// tests that stop, kill or re-prepare a server start their own.
var shared servertest.Shared[*redistest.Instance]

func TestMain(m *testing.M) { os.Exit(shared.Run(m)) }

func sharedServer(t *testing.T) *redistest.Instance {
	t.Helper()
	return shared.Get(t, "Redis", "strata-redis-", func(dir string) (*redistest.Instance, error) {
		inst, _, err := redistest.Prepared(dir, wire.PrepareArgs{})
		return inst, err
	})
}

// serverVersion is the major version of the Redis the tests run: the
// host's, or the Debian root's the tests run in (ci/test-in-root.sh). The recipe and
// validation rules the tests check are that version's.
func serverVersion(t *testing.T) string {
	t.Helper()
	info := do(t, admin(t, sharedServer(t)), "INFO", "server").Str
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			t.Logf("Redis %s", v)
			major, _, _ := strings.Cut(v, ".")
			return major
		}
	}
	t.Fatalf("INFO server has no redis_version: %q", info)
	return ""
}

// recipeFile and rulesFile are the image recipe and validation rules of
// the Redis version under test.
func recipeFile(t *testing.T) string {
	return "../../../images/redis-" + serverVersion(t) + ".yaml"
}

func rulesFile(t *testing.T) string {
	return "../../../validation-rules/redis-" + serverVersion(t) + ".json"
}

func ctxT(t *testing.T) context.Context { return servertest.Context(t, time.Minute) }

// Shorthands used throughout the tests.
var (
	wantCode = servertest.WantCode
	num      = servertest.Num
	values   = servertest.Values
)

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
	b.WriteString(servertest.Files(inst.Config.OverridesFile, inst.Config.ConfigFile, inst.Config.ACLFile, inst.Config.StateFile))
	return b.String()
}

func assertUnchanged(t *testing.T, inst *redistest.Instance, before string) {
	t.Helper()
	servertest.AssertUnchanged(t, before, snapshot(t, inst))
}

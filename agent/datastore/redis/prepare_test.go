package redis_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/agent/datastore/redis"
	"strata/agent/datastore/redis/redistest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
)

func TestPrepareStartsLockedDownAndCreatesInitialUsers(t *testing.T) {
	inst, res := redistest.PreparedT(t, wire.PrepareArgs{
		MemoryMB:   256,
		Users:      []wire.User{{Name: "app", Password: "s3cret pass'word\"\\ with spaces"}},
		EnableRoot: true,
		Configuration: &wire.ConfigurationArgs{
			Values: values("maxmemory-policy", `"allkeys-lru"`, "databases", `4`),
			Rules: []wire.ParameterRule{
				{Name: "maxmemory-policy", Type: "string"},
				{Name: "databases", Type: "integer", Min: num("1"), Max: num("1000"), RestartRequired: true},
			},
		},
	})
	ctx := ctxT(t)
	m := inst.Manager
	if !res.Initialized || res.Formatted {
		t.Fatalf("result = %+v, want initialized, not formatted (no device)", res)
	}
	if st := m.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("status = %+v (a restart-required initial configuration is applied by restarting during prepare)", st)
	}
	// An unauthenticated connection can do nothing.
	anon, _ := dial(t, inst, "", "")
	if _, err := anon.Do(ctx, "GET", "x"); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("unauthenticated GET: %v", err)
	}
	// The user logs in with its password and may use data commands, not
	// administrative ones.
	app, err := dial(t, inst, "app", "s3cret pass'word\"\\ with spaces")
	if err != nil {
		t.Fatalf("app cannot log in: %v", err)
	}
	do(t, app, "SET", "k", "v")
	if _, err := app.Do(ctx, "CONFIG", "SET", "maxmemory", "1"); err == nil {
		t.Fatal("a user may run CONFIG SET")
	}
	if _, err := dial(t, inst, "app", "wrong"); err == nil {
		t.Fatal("wrong password accepted")
	}
	// Root: the default user, with a generated password.
	if res.Root == nil || res.Root.Name != "default" || len(res.Root.Password) < 32 {
		t.Fatalf("root credentials = %+v", res.Root)
	}
	root, err := dial(t, inst, "", res.Root.Password)
	if err != nil {
		t.Fatalf("AUTH with the root password: %v", err)
	}
	do(t, root, "CONFIG", "GET", "maxmemory")
	// Neither the ACL file nor the server hold a password in clear.
	acl, _ := os.ReadFile(inst.Config.ACLFile)
	secret, _ := os.ReadFile(inst.Config.SecretFile)
	for _, pw := range []string{res.Root.Password, "s3cret", strings.TrimSpace(string(secret))} {
		if strings.Contains(string(acl), pw) {
			t.Fatalf("ACL file holds a password in clear:\n%s", acl)
		}
	}
	if st, _ := os.Stat(inst.Config.SecretFile); st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v", st.Mode())
	}
	if got := configValue(t, inst, "maxmemory"); got != "134217728" {
		t.Fatalf("maxmemory = %s, want half of 256 MiB", got)
	}
	if got := configValue(t, inst, "databases"); got != "4" {
		t.Fatalf("databases = %s, want 4 from the initial configuration", got)
	}
	if got := configValue(t, inst, "maxmemory-policy"); got != "allkeys-lru" {
		t.Fatalf("maxmemory-policy = %s", got)
	}
	if _, err := m.Prepare(ctx, wire.PrepareArgs{}); err == nil {
		t.Fatal("second prepare accepted")
	} else {
		wantCode(t, err, wire.CodeFailedPrecondition, "prepared already")
	}
}

func TestPrepareKeepsUsersAndDataOfARebuiltInstance(t *testing.T) {
	inst, _ := redistest.PreparedT(t, wire.PrepareArgs{Users: []wire.User{{Name: "keeper", Password: "pw1"}}})
	ctx := ctxT(t)
	keeper, err := dial(t, inst, "keeper", "pw1")
	if err != nil {
		t.Fatal(err)
	}
	do(t, keeper, "SET", "kept", "yes")
	if err := inst.Manager.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	inst.Manager.Close()
	oldSecret, _ := os.ReadFile(inst.Config.SecretFile)
	// A rebuild: new root disk (no agent state, no configuration), old
	// data volume.
	os.RemoveAll(filepath.Dir(inst.Config.StateFile))
	os.RemoveAll(filepath.Dir(inst.Config.ConfigFile))
	m2, err := redis.New(inst.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if st := m2.Status(ctx); st.Status != wire.StatusNew {
		t.Fatalf("status before prepare = %+v", st)
	}
	res, err := m2.Prepare(ctx, wire.PrepareArgs{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Initialized {
		t.Fatal("prepare started over on a volume that has users")
	}
	newSecret, _ := os.ReadFile(inst.Config.SecretFile)
	if string(newSecret) == string(oldSecret) {
		t.Fatal("the agent's password was not renewed")
	}
	keeper, err = dial(t, inst, "keeper", "pw1")
	if err != nil {
		t.Fatalf("user lost in the rebuild: %v", err)
	}
	if v := do(t, keeper, "GET", "kept"); v.Str != "yes" {
		t.Fatalf("data lost in the rebuild: %+v", v)
	}
	users, _ := m2.ListUsers(ctx)
	if len(users) != 1 || users[0].Name != "keeper" {
		t.Fatalf("users = %+v", users)
	}
}

func TestPrepareRejectsBadArgumentsBeforeTouchingAnything(t *testing.T) {
	inst := redistest.NewT(t)
	ctx := ctxT(t)
	bad := []struct {
		name string
		args wire.PrepareArgs
		code wire.ErrorCode
		want string
	}{
		{"databases", wire.PrepareArgs{Databases: []wire.Database{{Name: "db"}}}, wire.CodeNotSupported, "no named databases"},
		{"user with databases", wire.PrepareArgs{Users: []wire.User{{Name: "u", Password: "p", Databases: []string{"0"}}}}, wire.CodeNotSupported, "cannot be limited"},
		{"injection user", wire.PrepareArgs{Users: []wire.User{{Name: "u on nopass +@all", Password: "p"}}}, wire.CodeInvalidArgument, "user name"},
		{"memory", wire.PrepareArgs{MemoryMB: -1}, wire.CodeInvalidArgument, "memory_mb"},
		{"unknown parameter", wire.PrepareArgs{Configuration: &wire.ConfigurationArgs{Values: values("foo", `1`)}}, wire.CodeInvalidArgument, "unknown parameter"},
		{"managed parameter", wire.PrepareArgs{Configuration: &wire.ConfigurationArgs{Values: values("dir", `"/etc"`),
			Rules: []wire.ParameterRule{{Name: "dir", Type: "string"}}}}, wire.CodeInvalidArgument, "managed by the agent"},
	}
	for _, tc := range bad {
		_, err := inst.Manager.Prepare(ctx, tc.args)
		wantCode(t, err, tc.code, tc.want)
	}
	servertest.CheckNothingPrepared(t, ctx, inst.Manager, inst.Process, inst.Config.DataDir, inst.Config.ConfigFile, inst.Config.StateFile, inst.Config.SecretFile)
}

func TestFailedPrepareReportsFailedAndIsNotRetried(t *testing.T) {
	inst := redistest.NewT(t)
	ctx := ctxT(t)
	inst.Process.ConfigFile = filepath.Join(inst.Dir, "missing.conf")
	inst.Config.StartTimeout = 2 * time.Second
	servertest.CheckFailedPrepareSticks(t, ctx, func() (servertest.Manager, error) { return redis.New(inst.Config) })
}

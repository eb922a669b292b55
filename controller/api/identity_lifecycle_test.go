package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"strata/controller/api/keystone"
)

// withUser is o as another user of a project, with a driver process of
// its own (the client reads the credentials from its process's
// environment).
func (o *osc) withUser(name, password, project string) *osc {
	var env []string
	for _, kv := range o.env {
		if k, _, _ := strings.Cut(kv, "="); k == "OS_USERNAME" || k == "OS_PASSWORD" || k == "OS_PROJECT_NAME" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "OS_USERNAME="+name, "OS_PASSWORD="+password, "OS_PROJECT_NAME="+project)
	return &osc{t: o.t, env: env, pace: o.pace}
}

// A user's lifecycle through the real `openstack` client: disabling it and
// changing its password each end the sessions it had (its tokens are
// refused at once), a disabled user cannot log in, and a project that owns
// an instance cannot be deleted.
func TestIdentityLifecycleThroughTheOpenstackClient(t *testing.T) {
	// The real client spends seconds of CPU starting up: these tests
	// overlap, each on a controller of its own.
	t.Parallel()
	r := newRig(t, rigOptions{})
	admin := newOSC(t, r)
	// This test fails logins on purpose, and after a failure the
	// controller checks the passwords of logins from that address (all
	// of these, each command logs in) at most SuspectRate a second,
	// answering 429 to the rest. Commands in processes of their own
	// were that far apart (each spends ~2 s starting); through the
	// driver they are spaced to be.
	admin.pace = &pacer{gap: time.Second/keystone.SuspectRate + 100*time.Millisecond}
	c := r.admin() // logged in before the failures below
	admin.run(false, "project", "create", "shop")
	admin.run(false, "user", "create", "--project", "shop", "--password", "alice-pw-1", "alice")
	admin.run(false, "role", "add", "--user", "alice", "--project", "shop", "member")
	alice := admin.withUser("alice", "alice-pw-1", "shop")
	tok := alice.json("token", "issue")
	token, project := tok["id"].(string), tok["project_id"].(string)
	authed := func() int {
		req, _ := http.NewRequest("GET", r.ctl.APIURL+"/v1.0/"+project+"/instances", nil)
		req.Header.Set("X-Auth-Token", token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := authed(); code != 200 {
		t.Fatalf("alice's token: HTTP %d", code)
	}

	admin.run(false, "user", "set", "--disable", "alice")
	if code := authed(); code != 401 {
		t.Fatalf("a disabled user's token: HTTP %d, want 401", code)
	}
	if out := alice.run(true, "token", "issue"); !strings.Contains(out, "401") && !strings.Contains(strings.ToLower(out), "authenticate") {
		t.Fatalf("a disabled user logging in: %s", out)
	}
	var shown map[string]any
	json.Unmarshal([]byte(admin.run(false, "user", "show", "alice", "-f", "json")), &shown)
	if shown["enabled"] != false {
		t.Fatalf("user show after --disable: %v", shown)
	}

	admin.run(false, "user", "set", "--enable", "alice")
	tok = alice.json("token", "issue")
	token = tok["id"].(string)
	if code := authed(); code != 200 {
		t.Fatalf("re-enabled alice's new token: HTTP %d", code)
	}
	admin.run(false, "user", "set", "--password", "alice-pw-2", "alice")
	if code := authed(); code != 401 {
		t.Fatalf("a token from before the password change: HTTP %d, want 401", code)
	}
	alice.run(true, "token", "issue")
	admin.withUser("alice", "alice-pw-2", "shop").json("token", "issue")
	if out := admin.run(true, "user", "set", "--name", "alice2", "alice"); !strings.Contains(out, "renaming") {
		t.Fatalf("rename: %s", out)
	}

	// A project that owns an instance is kept, with what it owns named.
	c.must(200, "POST", "/instances", createBody("kept", nil))
	if out := admin.run(true, "project", "delete", "admin"); !strings.Contains(out, "instance") {
		t.Fatalf("deleting a project with an instance: %s", out)
	}
	admin.run(false, "user", "delete", "alice")
	admin.run(false, "project", "delete", "shop")
}

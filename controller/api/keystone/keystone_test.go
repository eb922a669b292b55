package keystone_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strata/controller/api/keystone"
	"strata/controller/auth"
	"strata/controller/identity"
	"strata/controller/ratelimit"
	"strata/controller/store/storetest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

type rig struct {
	srv *httptest.Server
	h   *keystone.Handler
	ids *identity.Store
	pw  string
}

func newRig(t *testing.T) *rig { return newRigWith(t, nil) }

func (r *rig) token(t *testing.T, user, pw, project string) string {
	t.Helper()
	resp, doc := r.do(t, "POST", "/v3/auth/tokens", passwordBody(user, pw, project), nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("login %s: %d %v", user, resp.StatusCode, doc)
	}
	return resp.Header.Get("X-Subject-Token")
}

// count is the number of rows of each identity table.
func (r *rig) count(t *testing.T) map[string]int {
	out := map[string]int{}
	for _, table := range []string{"projects", "users", "role_assignments"} {
		out[table] = storetest.Count(t, r.ids.DB, "SELECT COUNT(*) FROM "+table)
	}
	return out
}

func (r *rig) do(t *testing.T, method, path, body string, hdr map[string]string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, r.srv.URL+path, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var doc map[string]any
	json.Unmarshal(data, &doc)
	return resp, doc
}

func passwordBody(user, pw, project string) string {
	return `{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"` + user + `","domain":{"name":"Default"},"password":"` + pw +
		`"}}},"scope":{"project":{"name":"` + project + `","domain":{"name":"Default"}}}}}`
}

func TestPasswordAuthReturnsATokenAndACatalogWithTheDatabaseService(t *testing.T) {
	r := newRig(t)
	resp, doc := r.do(t, "POST", "/v3/auth/tokens", passwordBody("admin", r.pw, "admin"), nil)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Subject-Token") == "" {
		t.Fatalf("status %d, token %q: %v", resp.StatusCode, resp.Header.Get("X-Subject-Token"), doc)
	}
	tok := doc["token"].(map[string]any)
	proj := tok["project"].(map[string]any)
	var dbURL string
	for _, s := range tok["catalog"].([]any) {
		svc := s.(map[string]any)
		if svc["type"] == "database" {
			for _, e := range svc["endpoints"].([]any) {
				ep := e.(map[string]any)
				if ep["interface"] == "public" {
					dbURL = ep["url"].(string)
				}
			}
		}
	}
	if want := r.srv.URL + "/v1.0/" + proj["id"].(string); dbURL != want {
		t.Fatalf("database endpoint %q, want %q", dbURL, want)
	}
	resp, doc = r.do(t, "GET", "/v3", "", nil)
	if resp.StatusCode != 200 || doc["version"].(map[string]any)["id"] != "v3.14" {
		t.Fatalf("version document: %d %v", resp.StatusCode, doc)
	}
}

func TestBadAuthRequestsGetKeystoneErrors(t *testing.T) {
	r := newRig(t)
	cases := map[string]struct {
		body string
		code int
	}{
		"malformed json":  {`{"auth":`, 400},
		"wrong type":      {`{"auth":{"identity":"password"}}`, 400},
		"no identity":     {`{"auth":{}}`, 400},
		"token method":    {`{"auth":{"identity":{"methods":["token"],"token":{"id":"x"}}}}`, 400},
		"wrong password":  {passwordBody("admin", "nope-nope", "admin"), 401},
		"foreign project": {passwordBody("admin", r.pw, "someone-else"), 401},
		"domain scope":    {`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","password":"x"}}},"scope":{"domain":{"id":"default"}}}}`, 400},
	}
	for name, c := range cases {
		resp, doc := r.do(t, "POST", "/v3/auth/tokens", c.body, nil)
		e, _ := doc["error"].(map[string]any)
		if resp.StatusCode != c.code || e == nil || e["message"] == "" {
			t.Errorf("%s: status %d body %v, want %d with an error message", name, resp.StatusCode, doc, c.code)
		}
	}
}

// TestKeystoneAuthenticatorValidatesAgainstAKeystoneAPI runs the OpenStack
// mode's validator against this package's Keystone API (the same v3 calls
// a real Keystone answers): a service user's token checks a caller's.
func TestKeystoneAuthenticatorValidatesAgainstAKeystoneAPI(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if _, err := r.ids.CreateProject(ctx, "service"); err != nil {
		t.Fatal(err)
	}
	// A service validates callers' tokens with the admin role, as in a
	// real deployment (openstack role add --user trove --project service admin).
	if _, err := r.ids.CreateUser(ctx, "trove", "service-password", "service", true); err != nil {
		t.Fatal(err)
	}
	demo, _ := r.ids.CreateProject(ctx, "demo")
	r.ids.CreateUser(ctx, "alice", "alice-password", "demo", false)
	tok, _, err := r.ids.Issue(ctx, identity.Credentials{UserName: "alice", Password: "alice-password"})
	if err != nil {
		t.Fatal(err)
	}
	k := &auth.Keystone{URL: r.srv.URL + "/v3", Username: "trove", Password: "service-password", Project: "service", CacheTTL: -1}
	p, err := k.Authenticate(ctx, tok)
	if err != nil || p.ProjectID != demo.ID || p.UserName != "alice" || p.IsAdmin() {
		t.Fatalf("principal = %+v, %v", p, err)
	}
	if _, err := k.Authenticate(ctx, "not-a-token"); !errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("garbage token: %v", err)
	}
	r.ids.Revoke(ctx, tok)
	if _, err := k.Authenticate(ctx, tok); !errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("revoked token: %v", err)
	}
	bad := &auth.Keystone{URL: r.srv.URL + "/v3", Username: "trove", Password: "wrong", Project: "service"}
	if _, err := bad.Authenticate(ctx, tok); err == nil || errors.Is(err, auth.ErrUnauthorized) || !strings.Contains(err.Error(), "service user") {
		t.Fatalf("service user with a wrong password: %v (must be a configuration error, not a 401 for the caller)", err)
	}
}

// TestDynamicCredentialsLifecycle makes the calls tempest's
// DynamicCredentialProvider makes for one test class (domain lookup,
// project, user, role list, assignment; then a token for the new user;
// then user and project deletion) and checks nothing is left behind.
func TestDynamicCredentialsLifecycle(t *testing.T) {
	r := newRig(t)
	inUse := map[string]string{}
	r.h.ProjectInUse = func(ctx context.Context, id string) (string, error) { return inUse[id], nil }
	admin := r.token(t, "admin", r.pw, "admin")
	call := func(method, path, body string, want int) map[string]any {
		t.Helper()
		resp, doc := r.do(t, method, path, body, map[string]string{"X-Auth-Token": admin, "Content-Type": "application/json"})
		if resp.StatusCode != want {
			t.Fatalf("%s %s: HTTP %d, want %d: %v", method, path, resp.StatusCode, want, doc)
		}
		return doc
	}
	before := r.count(t)
	doms := call("GET", "/v3/domains?name=Default", "", 200)["domains"].([]any)
	if len(doms) != 1 || doms[0].(map[string]any)["id"] != "default" {
		t.Fatalf("domains = %v", doms)
	}
	proj := call("POST", "/v3/projects", `{"project":{"name":"tempest-TestX-1","description":"tempest-TestX-1-desc","domain_id":"default"}}`, 201)["project"].(map[string]any)
	pid := proj["id"].(string)
	call("POST", "/v3/projects", `{"project":{"name":"tempest-TestX-1","domain_id":"default"}}`, 409)
	// tempest's user names: the project's and a suffix, over 64 characters.
	user := call("POST", "/v3/users", `{"user":{"name":"tempest-TestInstanceUpdateAccessPostgreSQL-262298042-project-admin","password":"rand-pass-word","domain_id":"default"}}`, 201)["user"].(map[string]any)
	uid := user["id"].(string)
	var member string
	for _, x := range call("GET", "/v3/roles", "", 200)["roles"].([]any) {
		if x.(map[string]any)["name"] == "member" {
			member = x.(map[string]any)["id"].(string)
		}
	}
	call("POST", "/v3/roles", `{"role":{"name":"member"}}`, 409) // tempest ignores the conflict
	call("PUT", "/v3/projects/"+pid+"/users/"+uid+"/roles/"+member, "", 204)
	call("HEAD", "/v3/projects/"+pid+"/users/"+uid+"/roles/"+member, "", 204)
	call("HEAD", "/v3/projects/"+pid+"/users/"+uid+"/roles/admin", "", 404)
	if roles := call("GET", "/v3/projects/"+pid+"/users/"+uid+"/roles", "", 200)["roles"].([]any); len(roles) != 1 {
		t.Fatalf("assigned roles = %v", roles)
	}

	// The new user logs in (by id, scoped by project id, as tempest does)
	// and is no admin.
	body := `{"auth":{"identity":{"methods":["password"],"password":{"user":{"id":"` + uid + `","password":"rand-pass-word"}}},"scope":{"project":{"id":"` + pid + `"}}}}`
	resp, doc := r.do(t, "POST", "/v3/auth/tokens", body, nil)
	if resp.StatusCode != 201 {
		t.Fatalf("the dynamic user's login: %d %v", resp.StatusCode, doc)
	}
	userTok := resp.Header.Get("X-Subject-Token")
	if resp, _ := r.do(t, "GET", "/v3/projects", "", map[string]string{"X-Auth-Token": userTok}); resp.StatusCode != 403 {
		t.Fatalf("a member lists projects: HTTP %d, want 403", resp.StatusCode)
	}

	inUse[pid] = "1 instance(s)"
	doc = call("DELETE", "/v3/projects/"+pid, "", 409)
	if msg := doc["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "1 instance(s)") {
		t.Fatalf("refusal does not say what is left: %q", msg)
	}
	delete(inUse, pid)
	call("DELETE", "/v3/users/"+uid, "", 204)
	call("DELETE", "/v3/users/"+uid, "", 404)
	call("DELETE", "/v3/projects/"+pid, "", 204)
	call("GET", "/v3/projects/"+pid, "", 404)
	if resp, _ := r.do(t, "GET", "/v3/auth/tokens", "", map[string]string{"X-Auth-Token": admin, "X-Subject-Token": userTok}); resp.StatusCode != 404 {
		t.Fatalf("the deleted user's token: HTTP %d, want 404", resp.StatusCode)
	}
	if after := r.count(t); !maps.Equal(after, before) {
		t.Fatalf("rows before %v, after %v: the class left something behind", before, after)
	}
}

func TestIdentityAdministrationRefusesBadInput(t *testing.T) {
	r := newRig(t)
	admin := r.token(t, "admin", r.pw, "admin")
	ctx := context.Background()
	r.ids.CreateProject(ctx, "demo")
	r.ids.CreateUser(ctx, "alice", "alice-password", "demo", false)
	alice := r.token(t, "alice", "alice-password", "demo")
	cases := []struct {
		name, tok, method, path, body string
		code                          int
	}{
		{"no token", "", "GET", "/v3/projects", "", 401},
		{"member creates a project", alice, "POST", "/v3/projects", `{"project":{"name":"x"}}`, 403},
		{"member creates a user", alice, "POST", "/v3/users", `{"user":{"name":"x","password":"pass-word-1"}}`, 403},
		{"member assigns admin to itself", alice, "PUT", "/v3/projects/x/users/y/roles/admin", "", 403},
		{"malformed", admin, "POST", "/v3/projects", `{"project":`, 400},
		{"unknown field", admin, "POST", "/v3/projects", `{"project":{"name":"x","colour":"red"}}`, 400},
		{"no name", admin, "POST", "/v3/projects", `{"project":{"description":"d"}}`, 400},
		{"bad name", admin, "POST", "/v3/projects", `{"project":{"name":"x'; drop table projects;--"}}`, 400},
		{"long project name", admin, "POST", "/v3/projects", `{"project":{"name":"` + strings.Repeat("p", 65) + `"}}`, 400},
		{"long user name", admin, "POST", "/v3/users", `{"user":{"name":"` + strings.Repeat("u", 256) + `","password":"pass-word-1"}}`, 400},
		{"other domain", admin, "POST", "/v3/projects", `{"project":{"name":"x","domain_id":"corp"}}`, 400},
		{"disabled", admin, "POST", "/v3/projects", `{"project":{"name":"x","enabled":false}}`, 400},
		{"user without password", admin, "POST", "/v3/users", `{"user":{"name":"x"}}`, 400},
		{"short password", admin, "POST", "/v3/users", `{"user":{"name":"x","password":"short"}}`, 400},
		{"duplicate user", admin, "POST", "/v3/users", `{"user":{"name":"alice","password":"pass-word-1"}}`, 409},
		{"unknown default project", admin, "POST", "/v3/users", `{"user":{"name":"x","password":"pass-word-1","default_project_id":"nope"}}`, 400},
		{"new role", admin, "POST", "/v3/roles", `{"role":{"name":"superuser"}}`, 403},
		{"new domain", admin, "POST", "/v3/domains", `{"domain":{"name":"corp"}}`, 403},
		{"unknown role", admin, "PUT", "/v3/projects/x/users/y/roles/superuser", "", 404},
		{"unknown project", admin, "DELETE", "/v3/projects/nope", "", 404},
		{"unknown user", admin, "GET", "/v3/users/nope", "", 404},
		{"unknown domain", admin, "GET", "/v3/domains/corp", "", 404},
	}
	for _, c := range cases {
		hdr := map[string]string{"Content-Type": "application/json"}
		if c.tok != "" {
			hdr["X-Auth-Token"] = c.tok
		}
		resp, doc := r.do(t, c.method, c.path, c.body, hdr)
		e, _ := doc["error"].(map[string]any)
		if resp.StatusCode != c.code || e == nil || e["message"] == "" {
			t.Errorf("%s: HTTP %d %v, want %d with a Keystone error", c.name, resp.StatusCode, doc, c.code)
		}
	}
	if n, _ := r.ids.Projects(ctx, ""); len(n) != 2 {
		t.Fatalf("bad input changed the projects: %v", n)
	}
}

func newRigWith(t *testing.T, configure func(*keystone.Handler)) *rig {
	ids := &identity.Store{DB: storetest.SQLite(t), BcryptCost: 4}
	pw, err := ids.Bootstrap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h := &keystone.Handler{Identity: ids}
	if configure != nil {
		configure(h)
	}
	h.Register(mux)
	srv := httptest.NewServer(mux)
	h.PublicURL = srv.URL
	t.Cleanup(srv.Close)
	return &rig{srv: srv, h: h, ids: ids, pw: pw}
}

// Only a token's owner or an admin may inspect or revoke it, as Keystone's
// identity:validate_token and revoke_token policies say.
func TestOnlyTheOwnerOrAnAdminInspectsOrRevokesAToken(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.ids.CreateProject(ctx, "demo")
	r.ids.CreateUser(ctx, "alice", "alice-password", "demo", false)
	r.ids.CreateUser(ctx, "bob", "bob-password", "demo", false)
	issue := func(user, pw string) string {
		tok, _, err := r.ids.Issue(ctx, identity.Credentials{UserName: user, Password: pw})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	alice, bob := issue("alice", "alice-password"), issue("bob", "bob-password")
	admin := issue("admin", r.pw)
	for _, method := range []string{"GET", "HEAD", "DELETE"} {
		resp, _ := r.do(t, method, "/v3/auth/tokens", "", map[string]string{"X-Auth-Token": bob, "X-Subject-Token": alice})
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s of another user's token: HTTP %d, want 403", method, resp.StatusCode)
		}
	}
	if _, err := r.ids.Authenticate(ctx, alice); err != nil {
		t.Fatalf("alice's token no longer works after bob tried to revoke it: %v", err)
	}
	if resp, doc := r.do(t, "GET", "/v3/auth/tokens", "", map[string]string{"X-Auth-Token": alice, "X-Subject-Token": alice}); resp.StatusCode != 200 ||
		doc["token"].(map[string]any)["user"].(map[string]any)["name"] != "alice" {
		t.Errorf("the owner validating her own token: HTTP %d %v", resp.StatusCode, doc)
	}
	if resp, _ := r.do(t, "GET", "/v3/auth/tokens", "", map[string]string{"X-Auth-Token": admin, "X-Subject-Token": alice}); resp.StatusCode != 200 {
		t.Errorf("an admin validating a token: HTTP %d", resp.StatusCode)
	}
	if resp, _ := r.do(t, "DELETE", "/v3/auth/tokens", "", map[string]string{"X-Auth-Token": bob, "X-Subject-Token": bob}); resp.StatusCode != 204 {
		t.Errorf("the owner revoking her own token: HTTP %d", resp.StatusCode)
	}
	if resp, _ := r.do(t, "DELETE", "/v3/auth/tokens", "", map[string]string{"X-Auth-Token": admin, "X-Subject-Token": alice}); resp.StatusCode != 204 {
		t.Errorf("an admin revoking a token: HTTP %d", resp.StatusCode)
	}
	if _, err := r.ids.Authenticate(ctx, alice); !errors.Is(err, auth.ErrUnauthorized) {
		t.Errorf("alice's token after an admin revoked it: %v", err)
	}
}

// clientFrom is an HTTP client whose connections come from a given
// loopback address (a source other than 127.0.0.1).
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

func (r *rig) login(t *testing.T, from, user, pw string) *http.Response {
	t.Helper()
	resp, err := clientFrom(from).Post(r.srv.URL+"/v3/auth/tokens", "application/json", strings.NewReader(passwordBody(user, pw, "demo")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// Failed logins are logged and limited per user and per source address
// (429 with Retry-After) before any password is checked; successful ones
// cost nothing, and other users and addresses are not affected.
func TestFailedLoginsAreLoggedAndLimitedPerUserAndPerSource(t *testing.T) {
	var logs bytes.Buffer
	r := newRigWith(t, func(h *keystone.Handler) {
		h.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		// The defaults' burst, refilled slowly enough that this machine's
		// speed does not matter.
		h.PerSource = ratelimit.New(keystone.LoginBurst, time.Hour, 1000)
		h.PerUser = ratelimit.New(keystone.LoginBurst, time.Hour, 1000)
		h.Suspects = ratelimit.New(1000, time.Millisecond, 1) // tested below
	})
	ctx := context.Background()
	r.ids.CreateProject(ctx, "demo")
	for _, u := range []string{"alice", "bob", "carol"} {
		r.ids.CreateUser(ctx, u, u+"-password", "demo", false)
	}
	// Real users (an unknown name costs a bcrypt of the default cost, slow
	// under the race detector).
	for i := range 30 {
		r.ids.CreateUser(ctx, fmt.Sprintf("user-%d", i), "secret-password", "demo", false)
	}
	for i := range 25 {
		if resp := r.login(t, "127.0.0.1", "alice", "alice-password"); resp.StatusCode != 201 {
			t.Fatalf("valid login %d: HTTP %d", i+1, resp.StatusCode)
		}
	}
	// A guesser at bob's password, from one address.
	var limited *http.Response
	for i := range 30 {
		resp := r.login(t, "127.0.0.3", "bob", fmt.Sprintf("guess-%d", i))
		if resp.StatusCode == http.StatusTooManyRequests {
			limited = resp
			break
		}
		if resp.StatusCode != 401 {
			t.Fatalf("guess %d: HTTP %d", i+1, resp.StatusCode)
		}
	}
	if limited == nil {
		t.Fatal("30 wrong passwords in a row were all checked")
	}
	if ra, err := strconv.Atoi(limited.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q", limited.Header.Get("Retry-After"))
	}
	// bob is limited from everywhere, the guesser's address for everyone;
	// others log in as before.
	if resp := r.login(t, "127.0.0.4", "bob", "bob-password"); resp.StatusCode != 429 {
		t.Errorf("bob from another address: HTTP %d, want 429", resp.StatusCode)
	}
	if resp := r.login(t, "127.0.0.4", "carol", "carol-password"); resp.StatusCode != 201 {
		t.Errorf("carol from another address: HTTP %d, want 201", resp.StatusCode)
	}
	// The guesser moves on to other names: its address runs out too.
	refused := false
	for i := range 30 {
		if resp := r.login(t, "127.0.0.5", fmt.Sprintf("user-%d", i), "x"); resp.StatusCode == 429 {
			refused = true
			break
		}
	}
	if !refused {
		t.Error("30 failed logins for 30 names from one address were all checked")
	}
	if resp := r.login(t, "127.0.0.5", "carol", "carol-password"); resp.StatusCode != 429 {
		t.Errorf("a valid login from a limited address: HTTP %d, want 429", resp.StatusCode)
	}
	out := logs.String()
	if !strings.Contains(out, "login failed") || !strings.Contains(out, "user=bob") || !strings.Contains(out, "source=127.0.0.3") {
		t.Errorf("failed logins are not logged with user and source:\n%s", out)
	}
	if !strings.Contains(out, "logins limited") {
		t.Errorf("the limit is not logged:\n%s", out)
	}
	if n := strings.Count(out, "logins limited"); n > 4 {
		t.Errorf("every refused attempt is logged (%d lines): the log would grow with the flood", n)
	}
}

// Attempts from addresses or for users with recent failures, from however
// many addresses, get SuspectRate password checks a second between them;
// a user without failures, from an address without failures, is not held
// up by them.
func TestPasswordChecksAfterFailuresAreRateLimitedTogether(t *testing.T) {
	var logs bytes.Buffer
	r := newRigWith(t, func(h *keystone.Handler) {
		h.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		h.PerSource = ratelimit.New(1000, time.Hour, 1000)
		h.PerUser = ratelimit.New(1000, time.Hour, 1000)
		h.Suspects = ratelimit.New(3, time.Hour, 1)
	})
	ctx := context.Background()
	r.ids.CreateProject(ctx, "demo")
	r.ids.CreateUser(ctx, "carol", "carol-password", "demo", false)
	for i := range 3 {
		r.ids.CreateUser(ctx, fmt.Sprintf("guess-%d", i), "secret-password", "demo", false)
	}
	codes := map[int]int{}
	for i := range 10 {
		codes[r.login(t, fmt.Sprintf("127.0.1.%d", i%5+1), fmt.Sprintf("guess-%d", i%3), "wrong").StatusCode]++
	}
	// The first three attempts are clean (new address, new user); of the
	// other seven, three are checked and four refused.
	if codes[401] != 3+3 || codes[429] != 4 {
		t.Errorf("answers to 10 wrong passwords: %v, want 6×401 and 4×429", codes)
	}
	if resp := r.login(t, "127.0.0.9", "carol", "carol-password"); resp.StatusCode != 201 {
		t.Errorf("a clean login during the flood: HTTP %d", resp.StatusCode)
	}
	if !strings.Contains(logs.String(), "logins limited: password checks after recent failures") {
		t.Errorf("the limit is not logged:\n%s", logs.String())
	}
}

// Concurrent logins of one user from one address, all with the right
// password, are not suspects of each other: each attempt is out only
// while it is checked, which is no failure (Trove's test suite logs in
// as its admin from two workers at once).
func TestConcurrentGoodLoginsAreNotLimited(t *testing.T) {
	r := newRigWith(t, func(h *keystone.Handler) {
		h.PerSource = ratelimit.New(keystone.LoginBurst, time.Hour, 1000)
		h.PerUser = ratelimit.New(keystone.LoginBurst, time.Hour, 1000)
		h.Suspects = ratelimit.New(1, time.Hour, 1)
	})
	ctx := context.Background()
	r.ids.CreateProject(ctx, "demo")
	r.ids.CreateUser(ctx, "admin2", "admin2-password", "demo", false)
	codes := make(chan int, 24)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for range 8 {
				codes <- r.login(t, "127.0.0.1", "admin2", "admin2-password").StatusCode
			}
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 201 {
			t.Fatalf("a good login among concurrent ones: HTTP %d, want 201", c)
		}
	}
}

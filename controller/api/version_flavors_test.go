package api_test

import (
	"slices"
	"strings"
	"testing"
)

// A version's flavor list (the mgmt routes; trove-manage's
// datastore_version_flavor_add/delete): GET /datastores/{ds}/versions/{v}/
// flavors answers only the listed flavors while a list exists, every
// flavor otherwise; a create with a flavor that is not listed is a 400
// naming the flavor and the version; bad requests are 4xx with a message
// and change nothing; members of a project get 403.
func TestAVersionsFlavorListLimitsItsFlavors(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	versionFlavors := func() []string {
		return names(c.must(200, "GET", "/datastores/mariadb/versions/10.11/flavors", nil)["flavors"].([]any), "name")
	}
	all := names(c.must(200, "GET", "/flavors", nil)["flavors"].([]any), "name")
	if len(all) < 3 || !slices.Equal(versionFlavors(), all) {
		t.Fatalf("without a list: version flavors %v, all %v", versionFlavors(), all)
	}
	mp := "/mgmt/datastore-versions/" + r.version.ID + "/flavors"
	if got := c.must(200, "GET", mp, nil)["flavors"].([]any); len(got) != 0 {
		t.Fatalf("list before any add = %v", got)
	}
	got := c.must(200, "POST", mp, map[string]any{"flavors": []string{"strata.small", "strata.medium"}})["flavors"].([]any)
	if !slices.Equal(names(got, "name"), []string{"strata.small", "strata.medium"}) {
		t.Fatalf("after add = %v", names(got, "name"))
	}
	c.must(200, "POST", mp, map[string]any{"flavors": []string{"strata.small"}}) // again: no error, no duplicate
	if v := versionFlavors(); !slices.Equal(v, []string{"strata.small", "strata.medium"}) {
		t.Fatalf("version flavors with a list = %v", v)
	}
	if a := names(c.must(200, "GET", "/flavors", nil)["flavors"].([]any), "name"); !slices.Equal(a, all) {
		t.Fatalf("/flavors changed: %v", a)
	}

	body := createBody("big", nil)
	body["instance"].(map[string]any)["flavorRef"] = "strata.large"
	code, doc := c.do("POST", "/instances", body)
	if msg := errorMessage(doc); code != 400 || !strings.Contains(msg, "strata.large") || !strings.Contains(msg, "mariadb version 10.11") {
		t.Fatalf("create with an unlisted flavor: %d %v", code, doc)
	}
	c.must(200, "POST", "/instances", createBody("small", nil))

	// Bad requests: 4xx with a message, nothing changed.
	for _, bad := range []struct {
		method, path, body string
		code               int
		part               string
	}{
		{"POST", mp, `{"flavors": ["strata.large"`, 400, "JSON"},
		{"POST", mp, `{"flavors": "strata.large"}`, 400, "flavors"},
		{"POST", mp, `{"flavors": []}`, 400, "at least one flavor"},
		{"POST", mp, `{"flavor": ["strata.large"]}`, 400, "flavor"},
		{"POST", mp, `{"flavors": ["strata.large", "strata.huge"]}`, 404, "strata.huge"},
		{"POST", "/mgmt/datastore-versions/no-such-version/flavors", `{"flavors": ["strata.large"]}`, 404, "no-such-version"},
		{"DELETE", mp + "/strata.large", "", 404, "not in the flavor list"},
		{"DELETE", mp + "/strata.huge", "", 404, "strata.huge"},
	} {
		code, doc := c.do(bad.method, bad.path, bad.body)
		if code != bad.code || !strings.Contains(errorMessage(doc), bad.part) {
			t.Errorf("%s %s %s: HTTP %d %v, want %d mentioning %q", bad.method, bad.path, bad.body, code, doc, bad.code, bad.part)
		}
	}
	if v := versionFlavors(); !slices.Equal(v, []string{"strata.small", "strata.medium"}) {
		t.Fatalf("bad requests changed the list: %v", v)
	}
	u := r.otherProjectClient()
	for _, req := range [][2]string{{"GET", mp}, {"POST", mp}, {"DELETE", mp + "/strata.small"}} {
		if code, doc := u.do(req[0], req[1], `{"flavors": ["strata.large"]}`); code != 403 || !strings.Contains(errorMessage(doc), "admin role") {
			t.Errorf("%s %s as a member: HTTP %d %v", req[0], req[1], code, doc)
		}
	}
	// A member sees the version's list on the public route too.
	if v := names(u.must(200, "GET", "/datastores/mariadb/versions/10.11/flavors", nil)["flavors"].([]any), "name"); !slices.Equal(v, []string{"strata.small", "strata.medium"}) {
		t.Fatalf("a member's view of the version's flavors = %v", v)
	}

	// Removing every listed flavor allows every flavor again.
	c.must(202, "DELETE", mp+"/strata.small", nil)
	c.must(202, "DELETE", mp+"/strata.medium", nil)
	if v := versionFlavors(); !slices.Equal(v, all) {
		t.Fatalf("after removing the list: %v", v)
	}
	c.must(200, "POST", "/instances", body)
}

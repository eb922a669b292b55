package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"strata/controller/identity"
	"strata/controller/instances"
	"strata/controller/store/storetest"
)

type badCase struct {
	method, path, body string
	code               int
	msg                string // part of the error message
}

// TestEveryRouteRejectsBadInputWithA4xxAndAMessage sends malformed JSON,
// wrong types, unknown fields, unknown ids, injection attempts and
// out-of-range values to every route. Each must get the 4xx Trove gives,
// in Trove's error shape with a message saying what was wrong — never a
// 5xx — and nothing may change.
func TestEveryRouteRejectsBadInputWithA4xxAndAMessage(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	id := c.must(200, "POST", "/instances", createBody("target", map[string]any{
		"databases": []any{map[string]any{"name": "orders"}},
		"users":     []any{map[string]any{"name": "app", "password": "pw-app-1", "databases": []any{map[string]any{"name": "orders"}}}},
	}))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(id, "ACTIVE", 20*time.Second)
	broken := c.must(200, "POST", "/instances", createBody("broken", nil))["instance"].(map[string]any)["id"].(string)
	c.waitStatus(broken, "ACTIVE", 20*time.Second)
	if err := instances.SetFault(context.Background(), r.ctl.DB, broken, instances.Fault{Message: "test"}, true, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfgID := c.must(200, "POST", "/configurations", map[string]any{"configuration": map[string]any{
		"name": "base", "values": map[string]any{"max_connections": 100}, "datastore": map[string]any{"type": "mariadb", "version": "10.11"}}})["configuration"].(map[string]any)["id"].(string)
	ghost := "6f1c2d3e-0000-4000-8000-00000000dead"
	inst := "/instances/" + id
	huge := `{"instance":{"name":"` + strings.Repeat("x", 2<<20) + `"}}`
	cfgBody := func(values string) string {
		return `{"configuration":{"name":"c","values":` + values + `,"datastore":{"type":"mariadb","version":"10.11"}}}`
	}

	cases := []badCase{
		// Registry.
		{"GET", "/datastores/nope", "", 404, `datastore "nope"`},
		{"GET", "/datastores/mariadb/versions/9.9", "", 404, `version "9.9"`},
		{"GET", "/datastores/versions/" + ghost, "", 404, "datastore version"},
		{"GET", "/datastores/mariadb/versions/10.11/parameters/no_such", "", 404, "no_such"},
		{"GET", "/datastores/versions/" + ghost + "/parameters", "", 404, "datastore version"},
		{"GET", "/datastores/a/b/c/d/e/f", "", 404, "not a route"},
		{"GET", "/flavors/nope", "", 404, `flavor "nope"`},
		{"DELETE", "/flavors", "", 405, "not allowed"},
		{"GET", "/no/such/route", "", 404, "not a route"},
		// Instance list and lookups.
		{"GET", "/instances?limit=abc", "", 400, "limit"},
		{"GET", "/instances?limit=0", "", 400, "limit"},
		{"GET", "/instances/" + ghost, "", 404, "not found"},
		{"GET", "/instances/not-a-uuid", "", 404, "not found"},
		{"DELETE", "/instances/" + ghost, "", 404, "not found"},
		{"GET", "/instances/" + ghost + "/configuration", "", 404, "not found"},
		// Instance create.
		{"POST", "/instances", "", 400, "empty"},
		{"POST", "/instances", `{"instance":`, 400, "malformed JSON"},
		{"POST", "/instances", `[]`, 400, "JSON object"},
		{"POST", "/instances", `{"instance":{}} {}`, 400, "after the first value"},
		{"POST", "/instances", `{"instance":"x"}`, 400, `"instance": expected an object`},
		{"POST", "/instances", `{"instance":{"name":5}}`, 400, `"instance.name": expected a string`},
		{"POST", "/instances", `{"instance":{"flavorRef":"strata.small","volume":{"size":1}}}`, 400, "instance.name is required"},
		{"POST", "/instances", `{"instance":{"name":"a","volume":{"size":1}}}`, 400, "flavorRef is required"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"availability_zone":"nova"}}`, 400, "instance.availability_zone"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"locality":"affinity"}}`, 400, "instance.locality"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"region_name":"elsewhere"}}`, 400, "serves region \"RegionOne\" only"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"availability_zone":5}}`, 400, "availability_zone"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small"}}`, 400, "volume.size is required"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":"1"}}}`, 400, `"instance.volume.size": expected an integer`},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1.5}}}`, 400, "expected an integer"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":0}}}`, 400, "volume size 0"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":5000}}}`, 400, "volume size 5000"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"huge","volume":{"size":1}}}`, 404, `flavor "huge"`},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":{},"volume":{"size":1}}}`, 400, "flavorRef"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"datastore":{"type":"oracle"}}}`, 404, "oracle"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"datastore":{"type":"mariadb","version":"5.5"}}}`, 404, "5.5"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"configuration":"` + ghost + `"}}`, 404, "configuration"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"colour":"red"}}`, 400, `unknown field "colour"`},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"databases":[{"name":"x'; DROP DATABASE mysql; --"}]}}`, 400, "database name"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"databases":[{"name":"` + "`x`" + `"}]}}`, 400, "database name"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"databases":[{"name":"mysql"}]}}`, 400, "system database"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"databases":[{"name":"d","character_set":"utf8; DROP"}]}}`, 400, "character set"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"users":[{"name":"root","password":"x"}]}}`, 400, "reserved"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"users":[{"name":"u","password":"x","host":"x' OR '1'='1"}]}}`, 400, "host"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"users":[{"name":"u","password":""}]}}`, 400, "password is empty"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"users":[{"name":"u","password":"p","databases":[{"name":"other"}]}]}}`, 400, "not among the databases"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"restorePoint":{"backupRef":"b"}}}`, 404, "backup"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"restorePoint":"b"}}`, 400, "backupRef"},
		// Replicas, in Trove's order: the name and the source are a whole
		// request; flavor, volume, datastore come from the source.
		{"POST", "/instances", `{"instance":{"replica_of":"` + id + `"}}`, 400, "instance.name is required"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"replica_of":"` + id + `"}}`, 400, "Cannot specify flavor when creating replicas."},
		{"POST", "/instances", `{"instance":{"name":"a","volume":{"size":1},"replica_of":"` + id + `"}}`, 400, "Cannot specify volume when creating replicas."},
		{"POST", "/instances", `{"instance":{"name":"a","datastore":{"type":"mariadb"},"replica_of":"` + id + `"}}`, 400, "Cannot specify datastore when creating replicas."},
		{"POST", "/instances", `{"instance":{"name":"a","replica_of":"` + ghost + `"}}`, 404, "not found"},
		{"POST", "/instances", `{"instance":{"name":"a","replica_of":"` + id + `","databases":[{"name":"x"}]}}`, 400, "Cannot create a replica with users or databases."},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"replica_count":2}}`, 400, "Replica count only valid when creating replicas"},
		// Access and networks: accepted as Trove takes them, checked.
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"access":{"is_public":"yes"}}}`, 400, "expected true or false"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"access":{"allowed_cidrs":["10.0.0.0/33"]}}}`, 400, "allowed_cidrs"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"access":{"allowed_cidrs":["10.0.0.0/8","10.0.0.0/8"]}}}`, 400, "twice"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"nics":[{"net-id":"` + ghost + `"}]}}`, 400, "is not one of this controller's; the networks are: " + fakeNetwork.ID + " (private"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"nics":[{"net-id":"a"},{"net-id":"b"}]}}`, 400, "one network interface"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"nics":[{"netid":"a"}]}}`, 400, `unknown key "netid"`},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"nics":[{"net-id":"a","network_id":"b"}]}}`, 400, "two different networks"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"nics":[{"net-id":5}]}}`, 400, "object of strings"},
		{"POST", "/instances", `{"instance":{"name":"a","flavorRef":"strata.small","volume":{"size":1},"nics":[{"port-id":"p"}]}}`, 400, "no ports"},
		{"POST", "/instances", `{"instance":{"name":"a\nb","flavorRef":"strata.small","volume":{"size":1}}}`, 400, "instance name"},
		{"POST", "/instances", huge, 413, "larger than"},
		// Instance update and actions.
		{"PUT", inst, `{"instance":{"configuration":5}}`, 400, "configuration"},
		{"PUT", inst, `{"instance":{"colour":1}}`, 400, "colour"},
		{"PUT", inst, `{"instance":{}}`, 400, "nothing to update"},
		{"PUT", inst, `{}`, 400, `{"instance"`},
		{"PUT", inst, `{"instance":{"configuration":"` + ghost + `"}}`, 404, "configuration"},
		{"PUT", inst, `{"instance":{"name":""}}`, 400, "instance name"},
		{"PATCH", inst, `{"instance":{"datastore_version":"11"}}`, 400, "has no upgrade path declared"},
		{"PATCH", inst, `{"instance":{"datastore_version":"'; DROP TABLE instances; --"}}`, 400, "has no upgrade path declared"},
		{"PATCH", inst, `{"instance":{"datastore_version":["11"]}}`, 400, "expected the id or name"},
		{"PATCH", inst, `{"instance":{"datastore_version":"11","name":"x"}}`, 400, "requested alone"},
		{"PATCH", inst, `{"instance":{"auto_failover":{"grace_seconds":1e99}}}`, 400, "expected {\"grace_seconds\""},
		{"PATCH", inst, `{"instance":{"auto_failover":{"grace_seconds":99999}}}`, 400, "out of range"},
		{"PATCH", inst, `{"instance":{"auto_failover":null}}`, 400, "expected {\"grace_seconds\""},
		{"PUT", "/instances/" + ghost, `{"instance":{"name":"x"}}`, 404, "not found"},
		// Access updates.
		{"PUT", inst, `{"instance":{"access":{"is_public":"yes"}}}`, 400, "instance.access"},
		{"PUT", inst, `{"instance":{"access":{"allowed_cidrs":"10.0.0.0/8"}}}`, 400, "instance.access"},
		{"PUT", inst, `{"instance":{"access":{"allowed_cidrs":["10.0.0.300/8"]}}}`, 400, "not an IPv4 address or CIDR block"},
		{"PUT", inst, `{"instance":{"access":{"allowed_cidrs":["fd00::/8"]}}}`, 400, "not IPv4"},
		{"PUT", inst, `{"instance":{"access":{"allowed_cidrs":[` + strings.Repeat(`"10.0.0.0/8",`, 101) + `"10.0.0.1"]}}}`, 400, "at most 100"},
		{"PUT", inst, `{"instance":{"access":{"is_public":true,"colour":1}}}`, 400, "instance.access"},
		{"PUT", inst, `{"instance":{"access":[]}}`, 400, "instance.access"},
		{"PUT", inst, `{"instance":{"access":null}}`, 400, "instance.access"},
		{"PATCH", "/instances/" + ghost, `{"instance":{"access":{"is_public":false}}}`, 404, "not found"},
		{"PUT", "/instances/" + broken, `{"instance":{"access":{"is_public":false}}}`, 422, "not available"},
		{"POST", inst + "/action", `{}`, 400, "exactly one action"},
		{"POST", inst + "/action", `{"restart":{},"reset_status":{}}`, 400, "exactly one action"},
		{"POST", inst + "/action", `{"reboot":{}}`, 400, `"reboot" is not supported`},
		{"POST", inst + "/action", `{"restart":{"now":true}}`, 400, "takes no arguments"},
		{"POST", inst + "/action", `{"resize":{"volume":{"size":"big"}}}`, 400, "expected an integer"},
		{"POST", inst + "/action", `{"resize":{"volume":{}}}`, 400, "resize.volume.size is required"},
		{"POST", inst + "/action", `{"resize":{"flavorRef":{"id":"strata.large"}}}`, 400, "resize.flavorRef: expected a flavor id, name or link"},
		{"POST", inst + "/action", `{"resize":{"flavorRef":"no-such-flavor"}}`, 404, "flavor \"no-such-flavor\" not found"},
		{"POST", inst + "/action", `{"resize":{"flavorRef":"strata.large","volume":{"size":2}}}`, 400, "one resize at a time"},
		{"POST", inst + "/action", `{"resize":{"volume":{"size":5000}}}`, 400, "maximum"},
		{"POST", inst + "/action", `{"promote_to_replica_source":{"force":1}}`, 400, "takes no arguments"},
		{"POST", inst + "/action", `{"promote_to_replica_source":{}}`, 400, "is not a replica"},
		{"POST", inst + "/action", `{"eject_replica_source":[]}`, 400, "takes no arguments"},
		{"POST", inst + "/action", `{"eject_replica_source":{}}`, 400, "is not a replica source"},
		{"POST", "/instances/" + ghost + "/action", `{"promote_to_replica_source":{}}`, 404, "not found"},
		{"POST", "/instances/" + ghost + "/action", `{"restart":{}}`, 404, "not found"},
		{"POST", "/instances/" + broken + "/action", `{"restart":{}}`, 422, "status ERROR"},
		{"POST", "/instances/" + broken + "/action", `{"resize":{"volume":{"size":2}}}`, 422, "status ERROR"},
		// Databases.
		{"POST", inst + "/databases", `{"databases":"x"}`, 400, `"databases": expected a list`},
		{"POST", inst + "/databases", `{"databases":[]}`, 400, "at least one"},
		{"POST", inst + "/databases", `{"databases":[{"name":"a;b"}]}`, 400, "database name"},
		{"POST", inst + "/databases", `{"databases":[{"name":"information_schema"}]}`, 400, "system database"},
		{"POST", inst + "/databases", `{"database":[{"name":"x"}]}`, 400, "unknown field"},
		{"POST", "/instances/" + broken + "/databases", `{"databases":[{"name":"x"}]}`, 422, "status ERROR"},
		{"GET", "/instances/" + ghost + "/databases", "", 404, "not found"},
		{"GET", inst + "/databases?limit=-1", "", 400, "limit"},
		{"DELETE", inst + "/databases/a%3Bdrop", "", 400, "database name"},
		{"DELETE", inst + "/databases/nope", "", 404, "does not exist"},
		// Users, access, root.
		{"POST", inst + "/users", `{"users":[{"name":"x y","password":"p"}]}`, 400, "user name"},
		{"POST", inst + "/users", `{"users":[{"name":"u","password":"p\\\\x"}]}`, 400, "password"},
		{"POST", inst + "/users", `{"users":[{"name":"u","password":5}]}`, 400, `"users.password": expected a string`},
		{"POST", inst + "/users", `{"users":[]}`, 400, "at least one"},
		{"POST", inst + "/users", `{"users":[{"name":"app","password":"again"}]}`, 409, "exists"},
		{"GET", inst + "/users/bad%27name", "", 400, "user name"},
		{"GET", inst + "/users/nobody", "", 404, "not found"},
		{"DELETE", inst + "/users/nobody", "", 404, "does not exist"},
		{"PUT", inst + "/users/app/databases", `{"databases":[{"name":1}]}`, 400, "expected a string"},
		{"PUT", inst + "/users/app/databases", `{"databases":[]}`, 400, "at least one"},
		{"PUT", inst + "/users/app/databases", `{"databases":[{"name":"missing"}]}`, 404, "does not exist"},
		{"PUT", inst + "/users/ghost/databases", `{"databases":[{"name":"orders"}]}`, 404, "does not exist"},
		{"DELETE", inst + "/users/app/databases/x%60y", "", 400, "database name"},
		{"GET", inst + "/users/ghost/databases", "", 404, "does not exist"},
		// User update and change passwords.
		{"PUT", inst + "/users/app", `{"user":`, 400, "malformed JSON"},
		{"PUT", inst + "/users/app", `{"user":"x"}`, 400, `"user": expected an object`},
		{"PUT", inst + "/users/app", `{"user":{"name":5}}`, 400, `"user.name": expected a string`},
		{"PUT", inst + "/users/app", `{"user":{}}`, 400, "at least one"},
		{"PUT", inst + "/users/app", `{}`, 400, "at least one"},
		{"PUT", inst + "/users/app", `{"user":{"name":"x'; DROP USER root; --"}}`, 400, "user name"},
		{"PUT", inst + "/users/app", `{"user":{"host":"x' OR '1'='1"}}`, 400, "host"},
		{"PUT", inst + "/users/app", `{"user":{"host":""}}`, 400, "host is empty"},
		{"PUT", inst + "/users/app", `{"user":{"name":"root"}}`, 400, "reserved"},
		{"PUT", inst + "/users/app", `{"user":{"password":""}}`, 400, "password is empty"},
		{"PUT", inst + "/users/app", `{"user":{"password":"a\\b"}}`, 400, "password"},
		{"PUT", inst + "/users/app", `{"user":{"databases":[]}}`, 400, "databases"},
		{"PUT", inst + "/users/app", `{"user":{"password":"` + strings.Repeat("p", 2<<20) + `"}}`, 413, "larger than"},
		{"PUT", inst + "/users/nobody", `{"user":{"password":"x"}}`, 404, "does not exist"},
		{"PUT", inst + "/users/bad%27name", `{"user":{"password":"x"}}`, 400, "user name"},
		{"PUT", "/instances/" + ghost + "/users/app", `{"user":{"password":"x"}}`, 404, "not found"},
		{"PUT", "/instances/" + broken + "/users/app", `{"user":{"password":"x"}}`, 422, "status ERROR"},
		{"PUT", inst + "/users", `{"users":`, 400, "malformed JSON"},
		{"PUT", inst + "/users", `{"users":[]}`, 400, "at least one"},
		{"PUT", inst + "/users", `{"users":"x"}`, 400, "expected a list"},
		{"PUT", inst + "/users", `{"users":[{"name":"app"}]}`, 400, "password is empty"},
		{"PUT", inst + "/users", `{"users":[{"name":"app","password":5}]}`, 400, "expected a string"},
		{"PUT", inst + "/users", `{"users":[{"name":"app","password":"a"},{"name":"app","password":"b"}]}`, 400, "listed twice"},
		{"PUT", inst + "/users", `{"users":[{"name":"app","password":"a","databases":[]}]}`, 400, "databases"},
		{"PUT", inst + "/users", `{"users":[{"name":"a\"b","password":"a"}]}`, 400, "user name"},
		{"PUT", inst + "/users", `{"users":[{"name":"app","host":"%' OR 1=1 --","password":"a"}]}`, 400, "host"},
		{"PUT", inst + "/users", `{"users":[{"name":"app","password":"a"},{"name":"ghost","password":"b"}]}`, 404, "does not exist"},
		{"PUT", "/instances/" + ghost + "/users", `{"users":[{"name":"app","password":"a"}]}`, 404, "not found"},
		{"POST", inst + "/root", `{"password":5}`, 400, "expected a string"},
		{"POST", inst + "/root", `{"password":""}`, 400, "password is empty"},
		{"GET", "/instances/" + ghost + "/root", "", 404, "not found"},
		{"GET", "/instances/" + broken + "/root", "", 422, "status ERROR"},
		// Guest logs (logs_test.go has the rest).
		{"GET", "/instances/" + ghost + "/log", "", 404, "not found"},
		{"POST", "/instances/" + ghost + "/log", `{"name":"error"}`, 404, "not found"},
		{"GET", "/instances/" + broken + "/log", "", 422, "status ERROR"},
		{"POST", inst + "/log", `{"name":`, 400, "malformed JSON"},
		{"POST", inst + "/log", `{"name":5}`, 400, "expected a string"},
		{"POST", inst + "/log", `{"name":"error","publish":2}`, 400, "want 1 or 0"},
		{"POST", inst + "/log", `{"name":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "larger than"},
		{"DELETE", inst + "/log", "", 405, "not allowed"},
		// Configuration groups.
		{"POST", "/configurations", `{"configuration":`, 400, "malformed JSON"},
		{"POST", "/configurations", `{"configuration":{"name":"c","values":[1]}}`, 400, `"configuration.values": expected an object`},
		{"POST", "/configurations", `{"configuration":{"values":{}}}`, 400, "name is required"},
		{"POST", "/configurations", cfgBody(`{"max_connections":"many"}`), 422, `"max_connections": want an integer`},
		{"POST", "/configurations", cfgBody(`{"max_connections":0}`), 422, `"max_connections": 0 is below the minimum 1`},
		{"POST", "/configurations", cfgBody(`{"long_query_time":99999}`), 422, `"long_query_time"`},
		{"POST", "/configurations", cfgBody(`{"character_set_server":"klingon"}`), 422, `"character_set_server": value "klingon" is not one of`},
		{"POST", "/configurations", cfgBody(`{"autocommit":"sometimes"}`), 422, `"autocommit": want true or false`},
		{"POST", "/configurations", cfgBody(`{"no_such_parameter":1}`), 422, `"no_such_parameter": not a configurable parameter`},
		{"POST", "/configurations", `{"configuration":{"name":"c","values":{},"datastore":{"type":"oracle"}}}`, 404, "oracle"},
		{"GET", "/configurations/" + ghost, "", 404, "not found"},
		{"PUT", "/configurations/" + ghost, `{"configuration":{"values":{}}}`, 404, "not found"},
		{"PUT", "/configurations/" + cfgID, `{"configuration":{"values":{"max_connections":1e9}}}`, 422, `"max_connections"`},
		{"PATCH", "/configurations/" + cfgID, `{"configuration":{"values":{"performance_schema":"maybe"}}}`, 422, `"performance_schema"`},
		{"PATCH", "/configurations/" + cfgID, `{"configuration":{"values":{},"datastore":{"type":"mariadb"}}}`, 400, "cannot be changed"},
		{"PATCH", "/configurations/" + cfgID, `{"configuration":{}}`, 400, "values is required"},
		{"DELETE", "/configurations/" + ghost, "", 404, "not found"},
		{"GET", "/configurations/" + ghost + "/instances", "", 404, "not found"},
	}
	cases = append(cases, quotaAndMgmtBadCases(c.project, id, broken, ghost, huge)...)
	before := snapshot(t, r, id)
	for _, bc := range cases {
		code, doc := c.do(bc.method, bc.path, bc.body)
		msg := errorMessage(doc)
		if code != bc.code || !strings.Contains(msg, bc.msg) {
			name := bc.body
			if len(name) > 100 {
				name = name[:100] + "..."
			}
			t.Errorf("%s %s %s: HTTP %d %q, want %d with %q", bc.method, bc.path, name, code, msg, bc.code, bc.msg)
		}
		if code >= 500 {
			t.Errorf("%s %s: a 5xx for bad input", bc.method, bc.path)
		}
	}
	// More replicas than Trove allows in one request is bad input too,
	// and changes nothing.
	if code, doc := c.do("POST", "/instances", `{"instance":{"name":"a","replica_of":"`+id+`","replica_count":4}}`); code != 400 ||
		!strings.Contains(errorMessage(doc), "between 1 and 3") {
		t.Errorf("replica_count 4: HTTP %d %v, want 400", code, doc)
	}
	// A member of another project: the admin's instance does not exist
	// for it (only the admin role reaches across projects).
	ids := &identity.Store{DB: r.ctl.DB, BcryptCost: 4}
	if _, err := ids.CreateProject(context.Background(), "outsiders"); err != nil {
		t.Fatal(err)
	}
	if _, err := ids.CreateUser(context.Background(), "outsider", "outsider-pw", "outsiders", false); err != nil {
		t.Fatal(err)
	}
	outsider := r.login("outsider", "outsider-pw")
	for _, bc := range []badCase{
		{"GET", inst, "", 404, "not found"},
		{"DELETE", inst, "", 404, "not found"},
		{"PUT", inst, `{"instance":{"name":"mine"}}`, 404, "not found"},
		{"PUT", inst, `{"instance":{"access":{"is_public":true}}}`, 404, "not found"},
		{"POST", inst + "/action", `{"reset_status":{}}`, 404, "not found"},
		{"POST", inst + "/action", `{"promote_to_replica_source":{}}`, 404, "not found"},
		{"POST", inst + "/action", `{"eject_replica_source":{}}`, 404, "not found"},
		{"POST", inst + "/databases", `{"databases":[{"name":"x"}]}`, 404, "not found"},
		{"PUT", inst + "/users/app", `{"user":{"password":"mine"}}`, 404, "not found"},
		{"PUT", inst + "/users", `{"users":[{"name":"app","password":"mine"}]}`, 404, "not found"},
		{"GET", "/configurations/" + cfgID, "", 404, "not found"},
	} {
		if code, doc := outsider.do(bc.method, bc.path, bc.body); code != bc.code || !strings.Contains(errorMessage(doc), bc.msg) {
			t.Errorf("member of another project: %s %s: HTTP %d %v, want %d", bc.method, bc.path, code, doc, bc.code)
		}
	}
	// Wrong content type.
	req, _ := http.NewRequest("POST", r.ctl.APIURL+"/v1.0/"+c.project+"/instances", strings.NewReader(`{"instance":{}}`))
	req.Header.Set("X-Auth-Token", c.token)
	req.Header.Set("Content-Type", "text/plain")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 415 {
		t.Errorf("text/plain body: %v %v", resp.StatusCode, err)
	}
	if after := snapshot(t, r, id); after != before {
		t.Fatalf("bad requests changed state:\nbefore %s\nafter  %s", before, after)
	}
	if n := storetest.Count(t, r.ctl.DB, "quotas"); n != 0 {
		t.Fatalf("bad quota updates stored %d quotas", n)
	}
}

// snapshot summarises what bad requests must not change.
func snapshot(t *testing.T, r *rig, id string) string {
	g := r.compute.guest(id)
	g.mu.Lock()
	guest := fmt.Sprintf("dbs=%d users=%d root=%v passwords=%v", len(g.dbs), len(g.users), g.root, g.passwords)
	g.mu.Unlock()
	return fmt.Sprintf("instances=%d configurations=%d tasks=%d volume=%d %s",
		storetest.Count(t, r.ctl.DB, "instances"), storetest.Count(t, r.ctl.DB, "configurations"),
		storetest.Count(t, r.ctl.DB, "SELECT COUNT(*) FROM tasks WHERE kind <> 'configure'"),
		storetest.Count(t, r.ctl.DB, "SELECT volume_size_gb FROM instances WHERE id = ?", id), guest)
}

// TestAuthenticationIsRequired: no token, a bad token, or a token of
// another project in the URL.
func TestAuthenticationIsRequired(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	c := r.admin()
	for _, tc := range []struct {
		token, project string
		code           int
	}{
		{"", c.project, 401},
		{"not-a-token", c.project, 401},
		{c.token, "0123456789abcdef0123456789abcdef", 403},
	} {
		req, _ := http.NewRequest("GET", r.ctl.APIURL+"/v1.0/"+tc.project+"/instances", nil)
		if tc.token != "" {
			req.Header.Set("X-Auth-Token", tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("token %q project %s: HTTP %d, want %d", tc.token, tc.project, resp.StatusCode, tc.code)
		}
	}
}

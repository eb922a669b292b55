//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// datastoreCase is what one datastore's end-to-end run needs to know.
type datastoreCase struct {
	name, version string
	// port is the datastore's standard port, where clients connect.
	port int
	// create adds databases and users to the create request.
	create func(inst map[string]any)
	// prepareClient returns credentials once the instance is ACTIVE (Redis:
	// enables root through the API to get the default user's password).
	prepareClient func(t *testing.T, api *apiClient, id string) (user, password string)
	// write, read: the real client at the instance's address.
	write func(t *testing.T, ep endpoint, user, password string)
	read  func(t *testing.T, ep endpoint, user, password string) string
	want  string
	// live and restart are one parameter each of the configuration group:
	// applied at once, and only after a restart.
	live, restart       [2]any
	show                func(t *testing.T, ep endpoint, user, password, param string) string
	liveWant, startWant string
}

var datastoreCases = map[string]datastoreCase{
	"mariadb": {
		name: "mariadb", version: "10.11", port: 3306,
		create: func(inst map[string]any) {
			inst["databases"] = []any{map[string]any{"name": "shop"}}
			inst["users"] = []any{map[string]any{"name": "shopper", "password": "shopper-pw-1", "databases": []any{map[string]any{"name": "shop"}}}}
		},
		prepareClient: func(*testing.T, *apiClient, string) (string, string) { return "shopper", "shopper-pw-1" },
		write: func(t *testing.T, ep endpoint, u, p string) {
			mariadbClient{ep}.must(t, u, p, "shop", "CREATE TABLE t (v VARCHAR(20)); INSERT INTO t VALUES ('written')")
		},
		read: func(t *testing.T, ep endpoint, u, p string) string {
			return mariadbClient{ep}.must(t, u, p, "shop", "SELECT v FROM t")
		},
		want: "written",
		live: [2]any{"max_connections", 141}, restart: [2]any{"performance_schema", true},
		show: func(t *testing.T, ep endpoint, u, p, param string) string {
			return mariadbClient{ep}.must(t, u, p, "shop", "SELECT @@"+param)
		},
		liveWant: "141", startWant: "1",
	},
	"postgresql": {
		name: "postgresql", version: "15", port: 5432,
		create: func(inst map[string]any) {
			inst["databases"] = []any{map[string]any{"name": "shop"}}
			inst["users"] = []any{map[string]any{"name": "shopper", "password": "shopper-pw-1", "databases": []any{map[string]any{"name": "shop"}}}}
		},
		prepareClient: func(*testing.T, *apiClient, string) (string, string) { return "shopper", "shopper-pw-1" },
		write: func(t *testing.T, ep endpoint, u, p string) {
			psql(t, ep, u, p, "CREATE TABLE t (v text); INSERT INTO t VALUES ('written')")
		},
		read: func(t *testing.T, ep endpoint, u, p string) string { return psql(t, ep, u, p, "SELECT v FROM t") },
		want: "written",
		live: [2]any{"work_mem", 8192}, restart: [2]any{"max_connections", 120},
		show: func(t *testing.T, ep endpoint, u, p, param string) string {
			return psql(t, ep, u, p, "SELECT setting FROM pg_settings WHERE name = '"+param+"'")
		},
		liveWant: "8192", startWant: "120",
	},
	"redis": {
		name: "redis", version: "7", port: 6379,
		create: func(map[string]any) {},
		prepareClient: func(t *testing.T, api *apiClient, id string) (string, string) {
			// Redis's root is the default user; enabling it returns its password.
			root := api.must(t, 200, "POST", "/instances/"+id+"/root", nil)["user"].(map[string]any)
			return "default", root["password"].(string)
		},
		write: func(t *testing.T, ep endpoint, u, p string) { redisCLI(t, ep, u, p, "SET", "written", "yes") },
		read:  func(t *testing.T, ep endpoint, u, p string) string { return redisCLI(t, ep, u, p, "GET", "written") },
		want:  "yes",
		live:  [2]any{"maxmemory-policy", "allkeys-lru"}, restart: [2]any{"databases", 32},
		show: func(t *testing.T, ep endpoint, u, p, param string) string {
			out := strings.Fields(redisCLI(t, ep, u, p, "CONFIG", "GET", param))
			if len(out) != 2 {
				t.Fatalf("CONFIG GET %s = %v", param, out)
			}
			return out[1]
		},
		liveWant: "allkeys-lru", startWant: "32",
	},
}

// e2eDatastores are the datastores to run: STRATA_E2E_DATASTORES (comma
// list; make e2e DATASTORE=x sets it), by default all three.
func e2eDatastores() []string {
	v := os.Getenv("STRATA_E2E_DATASTORES")
	if v == "" || v == "all" {
		return []string{"mariadb", "postgresql", "redis"}
	}
	return strings.Split(v, ",")
}

// TestEachDatastoreImageRunsThroughTheAPIWithALiveAndARestartOnlyParameter
// is issue 5's end-to-end proof, per datastore: build the image from its
// recipe, register it (image, version, its validation rules), create an
// instance through the API, wait for ACTIVE, write and read with the real
// client (mariadb, psql, redis-cli) through the forwarded port, attach a
// configuration group with one live and one restart-only parameter, see
// the live one take effect at once and the instance turn
// RESTART_REQUIRED, restart it, see the other take effect and the data
// still there, and delete it.
func TestEachDatastoreImageRunsThroughTheAPIWithALiveAndARestartOnlyParameter(t *testing.T) {
	for _, ds := range e2eDatastores() {
		c, ok := datastoreCases[ds]
		if !ok {
			t.Fatalf("STRATA_E2E_DATASTORES names %q; known: mariadb, postgresql, redis", ds)
		}
		t.Run(ds, func(t *testing.T) { runDatastoreCase(t, c) })
	}
}

func runDatastoreCase(t *testing.T, c datastoreCase) {
	for _, tool := range []string{"mariadb", "psql", "redis-cli", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install the test dependencies with `ci/deps.sh build boot test`", tool)
		}
	}
	start := time.Now()
	out := t.TempDir()
	recipe := "images/" + c.name + "-" + c.version + ".yaml"
	img := filepath.Join(out, c.name)
	run(t, nil, "build", "-f", recipe, "-o", img, "--image-cache", cache)
	built := time.Since(start)
	fi, _ := os.Stat(img + ".qcow2")
	t.Logf("FIGURE %s image: built in %.0fs, qcow2 %.1f MiB", c.name, built.Seconds(), float64(fi.Size())/(1<<20))

	state := filepath.Join(out, "state")
	imageID := strings.TrimSpace(stdout(t, "image", "register", "--state-dir", state, img+".qcow2"))
	stdout(t, "datastore", "update", "--state-dir", state, c.name)
	stdout(t, "datastore", "version", "update", "--state-dir", state, c.name, c.version, "--image", imageID, "--from-recipe", recipe)
	stdout(t, "datastore", "version", "load-rules", "--state-dir", state, c.name, c.version, "validation-rules/"+c.name+"-"+c.version+".json")
	stdout(t, "datastore", "update", "--state-dir", state, c.name, c.version)

	ctl := startController(t, state)
	api := ctl.login(t)
	inst := map[string]any{
		"name": "e2e-" + c.name, "flavorRef": "strata.small", "volume": map[string]any{"size": 1},
		"datastore": map[string]any{"type": c.name, "version": c.version},
	}
	c.create(inst)
	created := time.Now()
	id := api.must(t, 200, "POST", "/instances", map[string]any{"instance": inst})["instance"].(map[string]any)["id"].(string)
	t.Cleanup(func() {
		if t.Failed() {
			console, _ := os.ReadFile(filepath.Join(state, "compute", "qemu", id, "console.log"))
			t.Logf("console of %s (tail):\n%s", id, tail(string(console), 60))
		}
	})
	in := api.waitStatus(t, id, "ACTIVE", 20*time.Minute)
	t.Logf("FIGURE %s create→ACTIVE: %.1fs (%s)", c.name, time.Since(created).Seconds(), accelOf(ctl.log()))
	ep := endpointOf(t, in, c.port)

	user, password := c.prepareClient(t, api, id)
	c.write(t, ep, user, password)
	if got := c.read(t, ep, user, password); got != c.want {
		t.Fatalf("read back %q, want %q", got, c.want)
	}

	cfg := api.must(t, 200, "POST", "/configurations", map[string]any{"configuration": map[string]any{
		"name": "e2e-" + c.name, "datastore": map[string]any{"type": c.name, "version": c.version},
		"values": map[string]any{c.live[0].(string): c.live[1], c.restart[0].(string): c.restart[1]},
	}})["configuration"].(map[string]any)["id"].(string)
	api.must(t, 202, "PUT", "/instances/"+id, map[string]any{"instance": map[string]any{"configuration": cfg}})
	api.waitStatus(t, id, "RESTART_REQUIRED", 5*time.Minute)
	if got := c.show(t, ep, user, password, c.live[0].(string)); got != c.liveWant {
		t.Fatalf("%s = %q right after attaching the group, want %q (applied live)", c.live[0], got, c.liveWant)
	}
	if got := c.show(t, ep, user, password, c.restart[0].(string)); got == c.startWant {
		t.Fatalf("%s is %q before the restart: it cannot have been applied live", c.restart[0], got)
	}
	api.must(t, 202, "POST", "/instances/"+id+"/action", map[string]any{"restart": map[string]any{}})
	api.waitStatus(t, id, "ACTIVE", 10*time.Minute)
	if got := c.show(t, ep, user, password, c.restart[0].(string)); got != c.startWant {
		t.Fatalf("%s = %q after the restart, want %q", c.restart[0], got, c.startWant)
	}
	if got := c.read(t, ep, user, password); got != c.want {
		t.Fatalf("after the restart read %q, want %q", got, c.want)
	}

	api.must(t, 202, "DELETE", "/instances/"+id, nil)
	api.waitGone(t, id, 5*time.Minute)
	if out, _ := exec.Command("pgrep", "-f", "strata-"+id).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("qemu still running after delete: pid %s", out)
	}
	t.Logf("FIGURE %s e2e wall time: %.0fs", c.name, time.Since(start).Seconds())
}

func psql(t *testing.T, ep endpoint, user, password, sql string) string {
	t.Helper()
	cmd := exec.Command("psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"host="+ep.host+" port="+strconv.Itoa(ep.port)+" user="+user+" dbname=shop sslmode=disable", "-c", sql)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql %q: %v\n%s", sql, err, out)
	}
	lines := slices.DeleteFunc(strings.Split(strings.TrimSpace(string(out)), "\n"), func(s string) bool {
		return strings.HasPrefix(s, "CREATE") || strings.HasPrefix(s, "INSERT")
	})
	return strings.Join(lines, "\n")
}

func redisCLI(t *testing.T, ep endpoint, user, password string, args ...string) string {
	t.Helper()
	cmd := exec.Command("redis-cli", append([]string{"-h", ep.host, "-p", strconv.Itoa(ep.port), "--user", user, "--no-auth-warning"}, args...)...)
	cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+password)
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil || strings.HasPrefix(s, "ERR") || strings.HasPrefix(s, "NOAUTH") || strings.HasPrefix(s, "WRONGPASS") {
		t.Fatalf("redis-cli %v: %v\n%s", args, err, s)
	}
	return s
}

//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"strata/agent/wire"
	"strata/builder/recipe"
)

// recipeDefault renders images/mariadb-10.11.yaml's config_template for
// a flavor with memoryMB of RAM and returns the value it gives name.
func recipeDefault(t *testing.T, memoryMB int, name string) string {
	t.Helper()
	rec, err := recipe.Load(filepath.Join(repo, "images", "mariadb-10.11.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(rec.Datastore.ConfigTemplate)
	if err != nil {
		t.Fatal(err)
	}
	values, err := wire.RenderConfigTemplate(text, wire.ConfigTemplateData{MemoryMB: memoryMB})
	if err != nil {
		t.Fatal(err)
	}
	v, ok := values[name]
	if !ok {
		t.Fatalf("the recipe's template sets no %s", name)
	}
	return string(v)
}

// recipeWithAgent writes images/<name>.yaml into dir with its relative
// paths made absolute and the agent binary replaced by agent.
func recipeWithAgent(t *testing.T, dir, name, agent string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repo, "images", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for old, abs := range map[string]string{
		"../bin/strata-agent":  agent,
		"../validation-rules/": filepath.Join(repo, "validation-rules") + "/",
		"config-templates/":    filepath.Join(repo, "images", "config-templates") + "/",
	} {
		if !strings.Contains(s, old) {
			t.Fatalf("images/%s.yaml no longer names %s: update this test", name, old)
		}
		s = strings.Replace(s, old, abs, 1)
	}
	p := filepath.Join(dir, name+"-"+filepath.Base(agent)+".yaml")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// recipeWithBrokenTemplate writes a copy of recipe whose default
// configuration template sets a collation of another character set than
// the template's: MariaDB refuses to start with it.
func recipeWithBrokenTemplate(t *testing.T, recipe string) string {
	t.Helper()
	data, err := os.ReadFile(recipe)
	if err != nil {
		t.Fatal(err)
	}
	tmplPath := filepath.Join(repo, "images", "config-templates", "mariadb-10.11.json.tmpl")
	tmpl, err := os.ReadFile(tmplPath)
	if err != nil {
		t.Fatal(err)
	}
	const good = `"collation_server": "utf8mb4_general_ci"`
	if !strings.Contains(string(tmpl), good) || !strings.Contains(string(data), tmplPath) {
		t.Fatalf("%s or %s changed: update this test", tmplPath, recipe)
	}
	broken := filepath.Join(filepath.Dir(recipe), "mariadb-10.11-broken.json.tmpl")
	if err := os.WriteFile(broken, []byte(strings.Replace(string(tmpl), good, `"collation_server": "latin1_swedish_ci"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := strings.TrimSuffix(recipe, ".yaml") + "-broken.yaml"
	if err := os.WriteFile(p, []byte(strings.Replace(string(data), tmplPath, broken, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRebuildMovesAMariaDBInstanceToANewAgentKeepingItsData is issue 18's
// rebuild end to end, one VM at a time: an instance on an image built
// from the MariaDB 10.11 recipe with an agent stamped e2e-rebuild-1 gets
// a table, a user and a configuration group. With make e2e-all
// (STRATA_E2E_DATASTORES=all) the operator then points the version at a
// second 10.11 image, its agent stamped e2e-rebuild-2, and rebuilds the
// instance onto it (the management API): the instance comes back ACTIVE
// with the new agent reporting, its old root disk gone, one enrolled key
// (a new one), and its rows, user and group's value intact; a rebuild
// onto a third image, whose MariaDB cannot start, rolls back to the root
// disk and key it ran with, the reason in its fault. Then, in
// every run, a flavor resize, and an upgrade to trixie's MariaDB 11.8
// through Trove's client (`openstack database instance upgrade`) onto
// 11.8's image, its agent stamped e2e-rebuild-2. The upgrade is a rebuild
// too: the instance comes back ACTIVE with that agent reporting, its old
// root disk and its data volume's copy gone, one enrolled key (a new
// one), its server saying 11.8, mariadb-upgrade run on the 10.11 data,
// and its rows and user intact. Elsewhere (make test, make e2e) the plain
// rebuild is left out: the upgrade proves what it proves but that a
// configuration group's value is carried onto the new root disk (an
// upgrade refuses a group, so it is detached first), which make e2e-all
// keeps proving. The downtime (no write accepted) of each move is
// measured.
func TestRebuildMovesAMariaDBInstanceToANewAgentKeepingItsData(t *testing.T) {
	for _, tool := range []string{"mariadb", "qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install the test dependencies with `ci/deps.sh build boot test` (or `make test`)", tool)
		}
	}
	plainRebuild := os.Getenv("STRATA_E2E_DATASTORES") == "all"
	start := time.Now()
	out := t.TempDir()
	type imageBuild struct {
		recipe, version string
		// broken: the recipe's default configuration names a collation of
		// another character set, so the image's MariaDB cannot start.
		broken bool
	}
	builds := []imageBuild{{recipe: "mariadb-10.11", version: "e2e-rebuild-1"}}
	if plainRebuild {
		builds = append(builds, imageBuild{recipe: "mariadb-10.11", version: "e2e-rebuild-2"},
			imageBuild{recipe: "mariadb-10.11", version: "e2e-rebuild-2", broken: true})
	}
	builds = append(builds, imageBuild{recipe: "mariadb-11.8", version: "e2e-rebuild-2"})
	images := make([]string, len(builds))
	for i, b := range builds {
		agent := filepath.Join(out, "strata-agent-"+b.version)
		if _, err := os.Stat(agent); err != nil {
			build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+b.version, "-o", agent, "./agent/cmd/strata-agent")
			build.Dir, build.Env = repo, append(os.Environ(), "CGO_ENABLED=0")
			if o, err := build.CombinedOutput(); err != nil {
				t.Fatalf("building strata-agent %s: %v\n%s", b.version, err, o)
			}
		}
		img := filepath.Join(out, b.recipe+"-"+b.version)
		rec := recipeWithAgent(t, out, b.recipe, agent)
		if b.broken {
			img += "-broken"
			rec = recipeWithBrokenTemplate(t, rec)
		}
		run(t, nil, "build", "-f", rec, "-o", img, "--image-cache", cache)
		images[i] = img + ".qcow2"
		t.Logf("FIGURE image %s %s built after %.0fs", b.recipe, b.version, time.Since(start).Seconds())
	}

	state := filepath.Join(out, "state")
	oldImage := strings.TrimSpace(stdout(t, "image", "register", "--state-dir", state, images[0]))
	stdout(t, "datastore", "update", "--state-dir", state, "mariadb")
	stdout(t, "datastore", "version", "update", "--state-dir", state, "mariadb", "10.11", "--image", oldImage,
		"--from-recipe", "images/mariadb-10.11.yaml")
	stdout(t, "datastore", "version", "load-rules", "--state-dir", state, "mariadb", "10.11", "validation-rules/mariadb-10.11.json")
	stdout(t, "datastore", "update", "--state-dir", state, "mariadb", "10.11")
	ctl := startController(t, state)
	api := ctl.login(t)

	cfg := api.must(t, 200, "POST", "/configurations", map[string]any{"configuration": map[string]any{
		"name": "rebuilt", "values": map[string]any{"max_connections": 123}, "datastore": map[string]any{"type": "mariadb", "version": "10.11"}}})
	id := api.must(t, 200, "POST", "/instances", map[string]any{"instance": map[string]any{
		"name": "e2e-rebuild", "flavorRef": "strata.small", "volume": map[string]any{"size": 1},
		"datastore":     map[string]any{"type": "mariadb", "version": "10.11"},
		"databases":     []any{map[string]any{"name": "shop"}},
		"users":         []any{map[string]any{"name": "shopper", "password": "shopper-pw-1", "databases": []any{map[string]any{"name": "shop"}}}},
		"configuration": cfg["configuration"].(map[string]any)["id"],
	}})["instance"].(map[string]any)["id"].(string)
	t.Cleanup(func() {
		if t.Failed() {
			console, _ := os.ReadFile(filepath.Join(state, "compute", "qemu", id, "console.log"))
			t.Logf("console of %s (tail):\n%s", id, tail(string(console), 80))
			t.Logf("controller log (tail):\n%s", tail(ctl.log(), 60))
		}
	})
	in := api.waitStatus(t, id, "ACTIVE", 20*time.Minute)
	if v, _ := in["agent_version"].(string); !strings.Contains(v, "e2e-rebuild-1") {
		t.Fatalf("agent version before the moves: %q", v)
	}
	ep := endpointOf(t, in, 3306)
	db := mariadbClient{ep}
	db.must(t, "shopper", "shopper-pw-1", "shop", "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(40)); INSERT INTO orders (item) VALUES ('tea'), ('cake')")
	key := agentKey(t, state, id, "before the moves")

	// movedOntoANewImage asserts what a move onto an image with the agent
	// e2e-rebuild-2 (the rebuild, the upgrade) leaves behind: that agent
	// reporting, no fault, the old root disk and config drive gone, one
	// enrolled key and not the one before (the old one revoked), and the
	// rows there for the user's password. It returns the new key.
	movedOntoANewImage := func(move, keyBefore string) string {
		t.Helper()
		if v, _ := in["agent_version"].(string); !strings.Contains(v, "e2e-rebuild-2") {
			t.Fatalf("agent version after the %s: %q, want e2e-rebuild-2", move, v)
		}
		if in["fault"] != nil {
			t.Fatalf("fault after a %s that worked: %v", move, in["fault"])
		}
		for _, f := range []string{"root.qcow2.old", "config-drive.img.old"} {
			if _, err := os.Stat(filepath.Join(state, "compute", "qemu", id, f)); !os.IsNotExist(err) {
				t.Fatalf("%s is still there after the %s: %v", f, move, err)
			}
		}
		keyAfter := agentKey(t, state, id, "after the "+move)
		if keyAfter == keyBefore {
			t.Fatalf("the enrolled agent key after the %s is the one before (%s): want a new one, the old one revoked", move, keyBefore)
		}
		if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT GROUP_CONCAT(item ORDER BY id) FROM orders WHERE item <> 'probe'"); got != "tea,cake" {
			t.Fatalf("rows after the %s: %q", move, got)
		}
		return keyAfter
	}

	if plainRebuild {
		// The operator's rollout: the new image becomes the version's,
		// then the instance is rebuilt onto it.
		newImage := strings.TrimSpace(stdout(t, "image", "register", "--state-dir", state, images[1]))
		stdout(t, "datastore", "version", "update", "--state-dir", state, "mariadb", "10.11", "--image", newImage,
			"--from-recipe", "images/mariadb-10.11.yaml")
		requested := time.Now()
		api.must(t, 202, "POST", "/mgmt/instances/"+id+"/action", map[string]any{"rebuild": map[string]any{"image_id": newImage}})
		// Downtime: from the first write refused to the first accepted again.
		down, up := writeOutage(t, "the rebuilt instance to take writes and report the new agent", db, func() bool {
			in = api.instance(t, id)
			v, _ := in["agent_version"].(string)
			return in["status"] == "ACTIVE" && strings.Contains(v, "e2e-rebuild-2")
		})
		t.Logf("FIGURE rebuild request→ACTIVE on the new agent: %.1fs; writes unavailable for %.1fs (%s)",
			time.Since(requested).Seconds(), up.Sub(down).Seconds(), accelOf(ctl.log()))
		key = movedOntoANewImage("rebuild", key)
		// The group's value is carried onto the new root disk.
		if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT @@max_connections"); got != "123" {
			t.Fatalf("max_connections after the rebuild = %q, want the group's 123", got)
		}

		// A rebuild onto an image whose server cannot start rolls back by
		// itself: the instance ends ACTIVE on the root disk it ran, with
		// its agent key, rows and group, the reason in its fault.
		// The operator's rollout, of a bad image this time.
		brokenImage := strings.TrimSpace(stdout(t, "image", "register", "--state-dir", state, images[2]))
		stdout(t, "datastore", "version", "update", "--state-dir", state, "mariadb", "10.11", "--image", brokenImage,
			"--from-recipe", "images/mariadb-10.11.yaml")
		requested = time.Now()
		api.must(t, 202, "POST", "/mgmt/instances/"+id+"/action", map[string]any{"rebuild": map[string]any{"image_id": brokenImage}})
		down, up = writeOutage(t, "the failed rebuild to roll back and take writes", db, func() bool {
			in = api.instance(t, id)
			return in["status"] == "ACTIVE" && in["fault"] != nil
		})
		t.Logf("FIGURE rebuild onto an image whose MariaDB cannot start, request→ACTIVE rolled back: %.1fs; writes unavailable for %.1fs (%s; steps, both rebuilds: %s)",
			time.Since(requested).Seconds(), up.Sub(down).Seconds(), accelOf(ctl.log()), taskSteps(ctl.log(), id, "rebuild"))
		msg, _ := in["fault"].(map[string]any)["message"].(string)
		if !strings.Contains(msg, "rebuild onto image "+brokenImage+" failed and was rolled back to the old root disk") {
			t.Fatalf("fault after the failed rebuild: %q", msg)
		}
		if v, _ := in["agent_version"].(string); !strings.Contains(v, "e2e-rebuild-2") {
			t.Fatalf("agent version after the rollback: %q, want the image it ran (e2e-rebuild-2)", v)
		}
		if k := agentKey(t, state, id, "after the rollback"); k != key {
			t.Fatalf("the enrolled agent key after the rollback is %s, want the one the instance ran with (%s)", k, key)
		}
		for _, f := range []string{"root.qcow2.old", "config-drive.img.old"} {
			if _, err := os.Stat(filepath.Join(state, "compute", "qemu", id, f)); !os.IsNotExist(err) {
				t.Fatalf("%s is still there after the rollback: %v", f, err)
			}
		}
		if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT GROUP_CONCAT(item ORDER BY id) FROM orders WHERE item <> 'probe'"); got != "tea,cake" {
			t.Fatalf("rows after the rollback: %q", got)
		}
		if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT @@max_connections, @@collation_server"); got != "123\tutf8mb4_general_ci" {
			t.Fatalf("max_connections and collation after the rollback = %q, want the group's 123 and the old image's default collation", got)
		}
		// The fault stays, as history, until Trove's reset_status clears it.
		api.must(t, 202, "POST", "/instances/"+id+"/action", map[string]any{"reset_status": map[string]any{}})
		waitTrue(t, "the instance ACTIVE without the fault after reset_status", time.Minute, func() bool {
			in = api.instance(t, id)
			return in["fault"] == nil && in["status"] == "ACTIVE"
		})
	}

	// Then a flavor resize, through Trove's client: the VM restarts with
	// the new memory and CPUs, the buffer pool is derived from the new
	// memory, the data and the group's value are intact.
	osc := ctl.openstack(t)
	requested := time.Now()
	osc.run(t, "database", "instance", "resize", "flavor", id, "strata.medium")
	down, up := writeOutage(t, "the resized instance to take writes and be ACTIVE", db, func() bool {
		in = api.instance(t, id)
		return in["status"] == "ACTIVE"
	})
	t.Logf("FIGURE flavor resize strata.small→strata.medium request→ACTIVE: %.1fs; writes unavailable for %.1fs (%s)",
		time.Since(requested).Seconds(), up.Sub(down).Seconds(), accelOf(ctl.log()))
	var shown map[string]any
	osc.json(t, &shown, "database", "instance", "show", id)
	if fl := fmt.Sprint(shown["flavor"]); fl != fmt.Sprint(in["flavor"].(map[string]any)["id"]) || in["fault"] != nil {
		t.Fatalf("after the resize: openstack shows flavor %v, the API %v, fault %v", shown["flavor"], in["flavor"], in["fault"])
	}
	// The image's default configuration template (the recipe's
	// config_template, baked in by the strata-agent element) rendered for
	// strata.medium's 2048 MiB, as the agent renders it.
	if got, want := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT @@innodb_buffer_pool_size"), recipeDefault(t, 2048, "innodb_buffer_pool_size"); got != want {
		t.Fatalf("innodb_buffer_pool_size after the resize = %s, want the recipe template's %s for strata.medium's 2048 MiB", got, want)
	}
	if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT @@max_connections"); got != "123" {
		t.Fatalf("max_connections after the resize = %q, want the group's 123", got)
	}
	if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT GROUP_CONCAT(item ORDER BY id) FROM orders WHERE item <> 'probe'"); got != "tea,cake" {
		t.Fatalf("rows after the resize: %q", got)
	}
	if args := vmArgs(t, state, id); argAfter(args, "-m") != "2048" || argAfter(args, "-smp") != "2" {
		t.Fatalf("the VM runs with -m %s -smp %s, want strata.medium's 2048 MB and 2 CPUs", argAfter(args, "-m"), argAfter(args, "-smp"))
	}

	// Then the upgrade to trixie's MariaDB, along the path the operator
	// declares, through Trove's client. The group of 10.11 is detached
	// first (an upgrade refuses it).
	upImage := strings.TrimSpace(stdout(t, "image", "register", "--state-dir", state, images[len(images)-1]))
	stdout(t, "datastore", "version", "update", "--state-dir", state, "mariadb", "11.8", "--image", upImage,
		"--from-recipe", "images/mariadb-11.8.yaml")
	stdout(t, "datastore", "version", "load-rules", "--state-dir", state, "mariadb", "11.8", "validation-rules/mariadb-11.8.json")
	stdout(t, "datastore", "version", "upgrade", "add", "--state-dir", state, "mariadb", "10.11", "11.8")
	api.must(t, 202, "PUT", "/instances/"+id, map[string]any{"instance": map[string]any{"configuration": nil}})
	waitTrue(t, "the group detached", 5*time.Minute, func() bool {
		in = api.instance(t, id)
		return in["configuration"] == nil && (in["status"] == "ACTIVE" || in["status"] == "RESTART_REQUIRED")
	})
	requested = time.Now()
	osc.run(t, "database", "instance", "upgrade", id, "11.8")
	down, up = writeOutage(t, "the upgraded instance to take writes and be ACTIVE on 11.8", db, func() bool {
		in = api.instance(t, id)
		return in["status"] == "ACTIVE" && in["datastore"].(map[string]any)["version"] == "11.8"
	})
	t.Logf("FIGURE upgrade MariaDB 10.11→11.8 request→ACTIVE: %.1fs; writes unavailable for %.1fs (%s)",
		time.Since(requested).Seconds(), up.Sub(down).Seconds(), accelOf(ctl.log()))
	if got := db.must(t, "shopper", "shopper-pw-1", "shop", "SELECT VERSION()"); !strings.HasPrefix(got, "11.8.") {
		t.Fatalf("SELECT VERSION() after the upgrade = %q, want trixie's 11.8", got)
	}
	movedOntoANewImage("upgrade", key)
	// The upgrade step converted the data: mariadb-upgrade ran and
	// recorded 11.8 (what the 10.11 data recorded before depends on
	// whether Debian's debian-start ran 10.11's mariadb-upgrade: it may
	// be nothing).
	if log := ctl.log(); !strings.Contains(log, `msg="instance upgraded"`) || !strings.Contains(log, `server_version="11.8.`) || !strings.Contains(log, "data_upgraded=true") {
		t.Fatalf("the controller did not log mariadb-upgrade bringing the data to 11.8:\n%s", tail(log, 40))
	}
	if _, err := os.Stat(filepath.Join(state, "compute", "qemu", id, "data.raw.old")); !os.IsNotExist(err) {
		t.Fatalf("the data volume's copy is still there after the upgrade: %v", err)
	}

	api.must(t, 202, "DELETE", "/instances/"+id, nil)
	api.waitGone(t, id, 5*time.Minute)
	ctl.stop(t)
	t.Logf("FIGURE rebuild e2e wall time: %.0fs", time.Since(start).Seconds())
}

// agentKey is the fingerprint of the instance's one enrolled agent key
// (when says when, for the failure): the test fails unless there is
// exactly one.
func agentKey(t *testing.T, state, id, when string) string {
	t.Helper()
	if n := countRows(t, state, "SELECT COUNT(*) FROM agent_keys WHERE instance_id = ?", id); n != 1 {
		t.Fatalf("enrolled agent keys %s: %d, want one", when, n)
	}
	var fingerprint string
	queryRow(t, state, &fingerprint, "SELECT fingerprint FROM agent_keys WHERE instance_id = ?", id)
	return fingerprint
}

// writeOutage inserts a probe row into shop.orders until writes, once
// refused, are accepted again and done holds: it returns when the first
// write was refused and when the first was accepted again.
func writeOutage(t *testing.T, what string, db mariadbClient, done func() bool) (down, up time.Time) {
	t.Helper()
	waitTrue(t, what, 20*time.Minute, func() bool {
		_, err := db.query("shopper", "shopper-pw-1", "shop", "INSERT INTO orders (item) VALUES ('probe')")
		switch {
		case err != nil && down.IsZero():
			down = time.Now()
		case err == nil && !down.IsZero() && up.IsZero():
			up = time.Now()
		}
		return done() && !up.IsZero()
	})
	return down, up
}

// vmPID is the pid of the instance's qemu, from the local driver's
// server.json.
func vmPID(t *testing.T, state, id string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(state, "compute", "qemu", id, "server.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(data, &st); err != nil || st.PID <= 0 {
		t.Fatalf("server.json of %s: pid %d, %v", id, st.PID, err)
	}
	return st.PID
}

// vmArgs is the command line of the instance's running qemu.
func vmArgs(t *testing.T, state, id string) []string {
	t.Helper()
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", vmPID(t, state, id)))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(cmdline), "\x00")
}

func argAfter(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

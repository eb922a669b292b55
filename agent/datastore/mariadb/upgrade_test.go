package mariadb_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"strata/agent/datastore/mariadb"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/wire"
)

// The upgrade step on data an older server left: the datadir's upgrade
// record says an older version (as after a rebuild onto a newer
// version's image), mariadb-upgrade runs and records the running
// server's version, and the user's data is there. Run again, it finds the
// data upgraded and changes nothing.
func TestUpgradeDatastoreBringsOlderDataToTheServersVersionOnce(t *testing.T) {
	inst, _ := mariadbtest.PreparedT(t, wire.PrepareArgs{Databases: []wire.Database{{Name: "shop"}}})
	ctx := ctxT(t)
	adm := admin(t, inst)
	if _, err := adm.Exec("CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(20))"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.Exec("INSERT INTO shop.orders VALUES (1, 'tea')"); err != nil {
		t.Fatal(err)
	}
	// What an older server's mariadb-upgrade would have left.
	for _, name := range []string{"mariadb_upgrade_info", "mysql_upgrade_info"} {
		os.Remove(filepath.Join(inst.Config.DataDir, name))
	}
	if err := os.WriteFile(filepath.Join(inst.Config.DataDir, "mysql_upgrade_info"), []byte("10.6.1-MariaDB"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := inst.Manager.UpgradeDatastore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Upgraded || res.DataVersion != "10.6.1-MariaDB" || !strings.Contains(res.ServerVersion, "MariaDB") {
		t.Fatalf("first upgrade step = %+v; want the old data version reported and the data upgraded", res)
	}
	var recorded string
	for _, name := range []string{"mariadb_upgrade_info", "mysql_upgrade_info"} {
		if b, err := os.ReadFile(filepath.Join(inst.Config.DataDir, name)); err == nil {
			recorded = strings.TrimRight(string(b), "\x00\n")
			break
		}
	}
	if !strings.HasPrefix(res.ServerVersion, strings.TrimSuffix(recorded, "-MariaDB")) || recorded == "10.6.1-MariaDB" {
		t.Fatalf("upgrade record after the step = %q, want the server's %q", recorded, res.ServerVersion)
	}
	again, err := inst.Manager.UpgradeDatastore(ctx)
	if err != nil || again.Upgraded || again.DataVersion != recorded {
		t.Fatalf("second upgrade step = %+v, %v; want nothing changed on data at %q", again, err, recorded)
	}
	var item string
	if err := adm.QueryRow("SELECT item FROM shop.orders WHERE id = 1").Scan(&item); err != nil || item != "tea" {
		t.Fatalf("the user's row after the upgrade step: %q, %v", item, err)
	}
}

// A failing upgrade tool is an error naming the versions and the tool's
// complaint, never a success.
func TestUpgradeDatastoreReportsAFailingTool(t *testing.T) {
	dir := t.TempDir()
	tool := filepath.Join(dir, "mariadb-upgrade")
	if err := os.WriteFile(tool, []byte("#!/bin/sh\necho 'Phase 1/8: no space left on device' >&2\nexit 2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := sharedServer(t).Config
	cfg.UpgradeTool = tool
	m, err := mariadb.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_, err = m.UpgradeDatastore(ctxT(t))
	wantCode(t, err, wire.CodeInternal)
	if !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("error %q does not carry the tool's complaint", err)
	}
}

package mariadb_test

import (
	"encoding/json"
	"testing"

	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/wire"
)

// A flavor resize: apply_flavor writes the base configuration for the new
// memory without touching the running server; after the restart the
// server has the new buffer pool and connection limit, and the
// configuration group's value still wins over the derived one.
func TestApplyFlavorRederivesMemorySizedSettingsAtTheNextStart(t *testing.T) {
	inst, _ := mariadbtest.PreparedT(t, wire.PrepareArgs{
		MemoryMB: 512,
		Configuration: &wire.ConfigurationArgs{
			Values: map[string]json.RawMessage{"max_connections": json.RawMessage(`123`)},
			Rules:  []wire.ParameterRule{{Name: "max_connections", Type: "integer", Min: num("1"), Max: num("100000")}},
		},
	})
	ctx := ctxT(t)
	m := inst.Manager
	adm := admin(t, inst)
	pool := func() int64 {
		var v int64
		if err := adm.QueryRow("SELECT @@GLOBAL.innodb_buffer_pool_size").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if p := pool(); p != 256<<20 {
		t.Fatalf("buffer pool before = %d", p)
	}
	res, err := m.ApplyFlavor(ctx, wire.FlavorArgs{MemoryMB: 2048})
	if err != nil || !res.Changed {
		t.Fatalf("ApplyFlavor(2048) = %+v, %v", res, err)
	}
	if p := pool(); p != 256<<20 {
		t.Fatalf("the running server changed at once: buffer pool %d", p)
	}
	if res, err := m.ApplyFlavor(ctx, wire.FlavorArgs{MemoryMB: 2048}); err != nil || res.Changed {
		t.Fatalf("ApplyFlavor(2048) again = %+v, %v; want no change", res, err)
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	adm = admin(t, inst)
	if p := pool(); p != 1024<<20 {
		t.Fatalf("buffer pool after the restart = %d, want half of 2048 MiB", p)
	}
	var maxConn int
	adm.QueryRow("SELECT @@GLOBAL.max_connections").Scan(&maxConn)
	if maxConn != 123 {
		t.Fatalf("max_connections = %d, want the group's 123 over the derived value", maxConn)
	}
	if st := m.Status(ctx); st.Status != wire.StatusRunning {
		t.Fatalf("status after the restart = %+v", st)
	}
}

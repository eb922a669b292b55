package postgresql_test

import (
	"testing"

	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/wire"
)

// apply_flavor writes postgresql.conf for the new memory; the running
// server keeps its shared_buffers until the restart, then has the new one.
func TestApplyFlavorRederivesSharedBuffersAtTheNextStart(t *testing.T) {
	inst, _ := postgresqltest.PreparedT(t, wire.PrepareArgs{MemoryMB: 512})
	ctx := ctxT(t)
	m := inst.Manager
	shared := func() string {
		var v string
		if err := admin(t, inst, "postgres").QueryRow("SELECT current_setting('shared_buffers')").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got := shared(); got != "128MB" {
		t.Fatalf("shared_buffers before = %s", got)
	}
	res, err := m.ApplyFlavor(ctx, wire.FlavorArgs{MemoryMB: 2048})
	if err != nil || !res.Changed {
		t.Fatalf("ApplyFlavor(2048) = %+v, %v", res, err)
	}
	if got := shared(); got != "128MB" {
		t.Fatalf("the running server changed at once: %s", got)
	}
	if res, err := m.ApplyFlavor(ctx, wire.FlavorArgs{MemoryMB: 2048}); err != nil || res.Changed {
		t.Fatalf("ApplyFlavor(2048) again = %+v, %v; want no change", res, err)
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := shared(); got != "512MB" {
		t.Fatalf("shared_buffers after the restart = %s, want a quarter of 2048 MiB", got)
	}
}

package redis_test

import (
	"testing"

	"strata/agent/datastore/redis/redistest"
	"strata/agent/wire"
)

// apply_flavor writes redis.conf for the new memory; maxmemory changes at
// the restart, and the group's maxmemory-policy still holds.
func TestApplyFlavorRederivesMaxmemoryAtTheNextStart(t *testing.T) {
	inst, _ := redistest.PreparedT(t, wire.PrepareArgs{
		MemoryMB: 256,
		Configuration: &wire.ConfigurationArgs{
			Values: values("maxmemory-policy", `"allkeys-lru"`),
			Rules:  []wire.ParameterRule{{Name: "maxmemory-policy", Type: "string"}},
		},
	})
	ctx := ctxT(t)
	m := inst.Manager
	res, err := m.ApplyFlavor(ctx, wire.FlavorArgs{MemoryMB: 1024})
	if err != nil || !res.Changed {
		t.Fatalf("ApplyFlavor(1024) = %+v, %v", res, err)
	}
	if got := configValue(t, inst, "maxmemory"); got != "134217728" {
		t.Fatalf("the running server changed at once: maxmemory %s", got)
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := configValue(t, inst, "maxmemory"); got != "536870912" {
		t.Fatalf("maxmemory after the restart = %s, want half of 1024 MiB", got)
	}
	if got := configValue(t, inst, "maxmemory-policy"); got != "allkeys-lru" {
		t.Fatalf("maxmemory-policy = %s, want the group's", got)
	}
}

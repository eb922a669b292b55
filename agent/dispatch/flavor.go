package dispatch

import (
	"context"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// applyFlavor runs apply_flavor on a datastore.FlavorApplier, once the
// datastore is prepared (before that, prepare renders the configuration
// from the flavor it is given).
func (d *Dispatcher) applyFlavor(ctx context.Context, op wire.Operation) (any, error) {
	f, ok := d.Manager.(datastore.FlavorApplier)
	if !ok {
		return nil, wire.Errorf(wire.CodeNotSupported, "%s cannot re-derive its settings for another flavor", d.datastoreName())
	}
	a, err := decode[wire.FlavorArgs](op)
	if err != nil {
		return nil, err
	}
	if err := datastore.CheckMemoryMB(a.MemoryMB); err != nil {
		return nil, err
	}
	if a.MemoryMB == 0 {
		return nil, wire.Errorf(wire.CodeInvalidArgument, "apply_flavor: memory_mb is required")
	}
	if !prepared(d.Manager.Status(ctx)) {
		return nil, wire.Errorf(wire.CodeFailedPrecondition, "the datastore is not prepared: prepare renders its configuration from the flavor it is given")
	}
	return f.ApplyFlavor(ctx, a)
}

package wire

// KindApplyFlavor re-derives the datastore's memory-sized settings (InnoDB's
// buffer pool, PostgreSQL's shared_buffers, Redis's maxmemory...) from a
// flavor's RAM and writes them to the server's base configuration; they
// take effect at the server's next start, which a flavor resize's restart
// of the machine gives them. A configuration group's values still win (its
// file is read after the base one). A datastore.FlavorApplier capability.
const KindApplyFlavor Kind = "apply_flavor" // FlavorArgs → FlavorResult

// FlavorArgs is the flavor the instance moves to (memory_mb as in prepare).
type FlavorArgs struct {
	MemoryMB int `json:"memory_mb"`
}

// FlavorResult says whether the base configuration changed.
type FlavorResult struct {
	Changed bool `json:"changed"`
}

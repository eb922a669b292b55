package instances_test

import (
	"context"
	"testing"
	"time"

	"strata/controller/instances"
	"strata/controller/store"
	"strata/controller/store/storetest"
)

// An ejection stored before ejections kept the group's older Redis
// stream reads back after the migration with none (a rejoin then judges
// by the fork alone, as before); one stored after keeps it.
func TestAnEjectionKeepsTheGroupsOlderStreamAndOldRowsReadWithout(t *testing.T) {
	storetest.EachAt(t, 15, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if _, err := db.Exec(ctx, `INSERT INTO ejections (instance_id, elected_id, fork_pos, fork_repl_id, ejected_at) VALUES ('e1', 'r1', '1000', 'aaaa', 5)`); err != nil {
			t.Fatal(err)
		}
		if err := db.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		old := instances.Ejection{InstanceID: "e1", ElectedID: "r1", ForkPos: "1000", ForkReplID: "aaaa", EjectedAt: store.FromMillis(5)}
		if e, ok, err := instances.EjectionOf(ctx, db, "e1"); err != nil || !ok || e != old {
			t.Fatalf("the ejection from before: %+v %v %v, want %+v", e, ok, err, old)
		}
		now := store.FromMillis(store.Millis(time.Now()))
		for _, e := range []instances.Ejection{
			{InstanceID: "e2", ElectedID: "r2", ForkPos: "8689", ForkReplID: "bbbb", ForkPrevReplID: "cccc", ForkPrevEnd: "7026", EjectedAt: now},
			{InstanceID: "e1", ElectedID: "r3", ForkPos: "20", ForkReplID: "dddd", ForkPrevReplID: "eeee", ForkPrevEnd: "10", EjectedAt: now}, // replaces
		} {
			if err := instances.InsertEjection(ctx, db, e); err != nil {
				t.Fatal(err)
			}
			if got, ok, err := instances.EjectionOf(ctx, db, e.InstanceID); err != nil || !ok || got != e {
				t.Fatalf("stored %+v, read %+v %v %v", e, got, ok, err)
			}
		}
	})
}

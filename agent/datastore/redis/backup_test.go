package redis_test

import (
	"crypto/sha256"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"strata/agent/datastore/redis"
	"strata/agent/datastore/redis/redistest"
	"strata/agent/datastore/servertest"
	"strata/agent/dispatch"
	"strata/agent/streams/streamstest"
	"strata/agent/wire"
)

// keyDigest is the number of keys and a digest of every key and value.
func keyDigest(t *testing.T, c *redis.Conn) string {
	t.Helper()
	keys := do(t, c, "KEYS", "*").Strings()
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\n", k, do(t, c, "GET", k).Str)
	}
	return fmt.Sprintf("%d keys %x", len(keys), h.Sum(nil))
}

func TestASnapshotBackupRestoresEveryKeyAndUser(t *testing.T) {
	// Several backups and restores, each a server start, maybe on a
	// loaded machine.
	ctx := servertest.Context(t, 10*time.Minute)
	src, _ := redistest.PreparedT(t, wire.PrepareArgs{Users: []wire.User{{Name: "app", Password: "app-secret-1"}}})
	c := admin(t, src)
	for i := range 2000 {
		do(t, c, "SET", fmt.Sprintf("key:%d", i), strings.Repeat(fmt.Sprint(i), 20))
	}
	want := keyDigest(t, c)
	mem := streamstest.NewMemory()
	d := &dispatch.Dispatcher{Manager: src.Manager, Streams: mem, Datastore: "redis"}
	full, err := streamstest.Backup(ctx, d, "b-full", nil)
	if err != nil {
		t.Fatal(err)
	}
	do(t, c, "SET", "after", "the backup")

	_, err = streamstest.Backup(ctx, d, "b-inc", &full.Position)
	wantCode(t, err, wire.CodeNotSupported, "redis does not support incremental")

	dst := redistest.NewT(t)
	dd := &dispatch.Dispatcher{Manager: dst.Manager, Streams: mem, Datastore: "redis"}
	if _, err := streamstest.Restore(ctx, dd, mem, "r-full", wire.RestoreArgs{}, mem.Stored("b-full", full)); err != nil {
		t.Fatal(err)
	}
	if got := keyDigest(t, admin(t, dst)); got != want {
		t.Fatalf("restored keys: %s, want %s", got, want)
	}
	// The source's user came along and logs in with its password.
	if _, err := dial(t, dst, "app", "app-secret-1"); err != nil {
		t.Fatalf("the backup's user cannot log in: %v", err)
	}

	// A damaged snapshot never reaches a running server.
	bad := mem.Stored("b-full", full)
	bad.Data = append([]byte(nil), bad.Data...)
	bad.Data[len(bad.Data)/2] ^= 0x01
	dst2 := redistest.NewT(t)
	dd2 := &dispatch.Dispatcher{Manager: dst2.Manager, Streams: mem, Datastore: "redis"}
	_, err = streamstest.Restore(ctx, dd2, mem, "r-bad", wire.RestoreArgs{}, bad)
	wantCode(t, err, wire.CodeInternal, "backup b-full")
	if dst2.Process.Running() {
		t.Fatal("the server runs on a damaged restore")
	}
}

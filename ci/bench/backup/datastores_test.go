package backup

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"strata/agent/datastore"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/datastore/postgresql"
	"strata/agent/datastore/postgresql/postgresqltest"
	"strata/agent/datastore/redis"
	"strata/agent/datastore/redis/redistest"
	"strata/agent/datastore/servertest"
	"strata/agent/wire"
	"strata/agent/wire/wiretest"
	"strata/controller/agentendpoint"
	"strata/controller/backups/format"
	objlocal "strata/controller/objectstore/local"
)

// server is one datastore's private server as the agent process sees it.
type server struct {
	datastore    string
	manager      datastore.Manager
	closeManager func()
	stopServer   func()
}

// openServer lays out (or finds) the server of datastore under dir.
func openServer(ds, dir string, log *slog.Logger) (*server, error) {
	bg := context.Background()
	switch ds {
	case "", "mariadb":
		inst, err := mariadbtest.New(dir, log)
		if err != nil {
			return nil, fmt.Errorf("mariadb: %w", err)
		}
		return &server{"mariadb", inst.Manager, func() { inst.Manager.Close() }, func() { inst.Process.Stop(bg) }}, nil
	case "postgresql":
		inst, err := postgresqltest.New(dir, log)
		if err != nil {
			return nil, fmt.Errorf("postgresql: %w", err)
		}
		return &server{"postgresql", inst.Manager, func() { inst.Manager.Close() }, func() { inst.Process.Stop(bg) }}, nil
	case "redis":
		inst, err := redistest.New(dir, log)
		if err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		return &server{"redis", inst.Manager, func() { inst.Manager.Close() }, func() { inst.Process.Stop(bg) }}, nil
	}
	return nil, fmt.Errorf("BENCH_AGENT_DATASTORE %q: known are mariadb, postgresql, redis", ds)
}

// dsBench is what strataOnly needs of one datastore: a server of its own
// in dir (the parent's view: to prepare, fill and read it), a dataset of
// about mb MiB (half random bytes, half repetitive text), and a digest of
// every table (key).
type dsBench struct {
	name    string
	prepare wire.PrepareArgs
	open    func(dir string) (mgr datastore.Manager, closeFn func(), err error)
	fill    func(b *testing.B, dir string, mb int)
	digest  func(b *testing.B, dir string) string
}

// benchMB is BENCH_BACKUP_MB, the dataset's size in MiB (default 1024).
func benchMB() int {
	if v, err := strconv.Atoi(os.Getenv("BENCH_BACKUP_MB")); err == nil && v > 0 {
		return v
	}
	return 1024
}

// strataOnly is the PostgreSQL and Redis half of make bench-backup:
// strata's backup and restore of a generated dataset through the same
// path as MariaDB's (agent process, SSH data channel, encrypted
// container in a local store), without a Trove column.
func strataOnly(b *testing.B, c dsBench) {
	mb := benchMB()
	ctx := context.Background()
	// The server's account must reach the directories (PostgreSQL runs
	// as its own user); b.TempDir's parents are private.
	work, err := os.MkdirTemp("", "strata-bench-"+c.name+"-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o755); err != nil {
		b.Fatal(err)
	}
	srcDir, dstDir := filepath.Join(work, "src"), filepath.Join(work, "dst")
	for _, d := range []string{srcDir, dstDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	mgr, closeSrc, err := c.open(srcDir)
	if err != nil {
		b.Fatal(err)
	}
	defer closeSrc()
	if _, err := servertest.Prepare(mgr, c.prepare, 2*time.Minute); err != nil {
		b.Fatal(err)
	}
	began := time.Now()
	c.fill(b, srcDir, mb)
	want := c.digest(b, srcDir)
	b.Logf("%s dataset: %d MiB asked, written in %.0fs", c.name, mb, time.Since(began).Seconds())

	st, err := objlocal.New(filepath.Join(work, "store"))
	if err != nil {
		b.Fatal(err)
	}
	kek, _, err := format.LoadOrCreateKEK(filepath.Join(work, "kek"))
	if err != nil {
		b.Fatal(err)
	}
	hostKey := wiretest.NewSigner(b)
	mem := agentendpoint.NewMemStore()
	srv, err := agentendpoint.NewServer(agentendpoint.ServerConfig{HostKey: hostKey, Store: mem, Logger: wiretest.QuietLogger(),
		PollInterval: 100 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	sctx, stopSrv := context.WithCancel(ctx)
	defer stopSrv()
	go srv.Serve(sctx, ln)
	hostLine := agentendpoint.AuthorizedKey(hostKey)

	for b.Loop() {
		var s figures
		agent := startAgent(b, srv, mem, ln.Addr().String(), hostLine, "src", c.name, srcDir, false)
		// The controller's figure is this process's peak during the
		// backup and restore only: filling and reading the dataset (the
		// digest of a million Redis keys) is the harness's memory, so
		// the peak is reset here (clear_refs 5) and read before the digest.
		debug.FreeOSMemory()
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			b.Fatalf("reset the peak RSS: %v", err)
		}
		ctlBase := selfHWM()
		began = time.Now()
		man, res := strataBackup(b, ctx, srv, st, kek, "bench-"+c.name)
		s.backupSecs = time.Since(began).Seconds()
		s.raw, s.stored = res.RawBytes, man.StoredBytes
		guestBackup := agent.stop()

		_, closeDst, err := c.open(dstDir)
		if err != nil {
			b.Fatal(err)
		}
		agent = startAgent(b, srv, mem, ln.Addr().String(), hostLine, "dst", c.name, dstDir, true)
		began = time.Now()
		strataRestore(b, ctx, srv, st, kek, "bench-"+c.name, man, res)
		s.restoreSecs = time.Since(began).Seconds()
		s.ctlHWM = max(selfHWM(), ctlBase)
		if got := c.digest(b, dstDir); got != want {
			b.Fatalf("strata's restore: %s, want %s", got, want)
		}
		s.guestHWM = max(guestBackup, agent.stop())
		closeDst()
		b.Logf("FIGURE %s strata (zstd + AES-256-GCM, authenticated): %s", c.name, s)
		b.ReportMetric(float64(s.raw)/1e6/s.backupSecs, "strata-backup-MB/s")
		b.ReportMetric(float64(s.raw)/1e6/s.restoreSecs, "strata-restore-MB/s")
	}
}

var postgresqlBench = dsBench{
	name:    "postgresql",
	prepare: wire.PrepareArgs{Databases: []wire.Database{{Name: "shop"}}},
	open: func(dir string) (datastore.Manager, func(), error) {
		inst, err := postgresqltest.New(dir, wiretest.QuietLogger())
		if err != nil {
			return nil, nil, err
		}
		return inst.Manager, inst.Close, nil
	},
	fill: func(b *testing.B, dir string, mb int) {
		db := pgAdmin(b, dir)
		defer db.Close()
		if _, err := db.Exec(`CREATE TABLE t (id serial PRIMARY KEY, r bytea, c text)`); err != nil {
			b.Fatal(err)
		}
		rows := mb * 512 // ~2 KiB a row: 1 KiB random, 1 KiB text
		for done := 0; done < rows; done += 10000 {
			n := min(10000, rows-done)
			if _, err := db.Exec(fmt.Sprintf(`INSERT INTO t (r, c) SELECT
				decode((SELECT string_agg(md5(random()::text || x || g), '') FROM generate_series(1, 64) x), 'hex'),
				repeat('order ' || g || ' shipped to warehouse ' || g %% 17 || '; ', 20) FROM generate_series(1, %d) g`, n)); err != nil {
				b.Fatal(err)
			}
		}
	},
	digest: func(b *testing.B, dir string) string {
		db := pgAdmin(b, dir)
		defer db.Close()
		var n int64
		var sum sql.NullString
		if err := db.QueryRow(`SELECT count(*), sum(hashtextextended(t::text, 0))::text FROM t`).Scan(&n, &sum); err != nil {
			b.Fatal(err)
		}
		return fmt.Sprintf("rows=%d sum=%s", n, sum.String)
	},
}

// pgAdmin connects to database shop of the server laid out in dir as the
// admin role (peer authentication on the socket).
func pgAdmin(b *testing.B, dir string) *sql.DB {
	inst, err := postgresqltest.New(dir, wiretest.QuietLogger())
	if err != nil {
		b.Fatal(err)
	}
	inst.Manager.Close()
	c, err := pgx.ParseConfig("")
	if err != nil {
		b.Fatal(err)
	}
	c.Host, c.Port, c.User, c.Database = inst.Config.SocketDir, uint16(inst.Config.Port), postgresql.AdminRole, "shop"
	c.TLSConfig, c.Fallbacks = nil, nil
	db := stdlib.OpenDB(*c)
	db.SetMaxOpenConns(1)
	if err := db.Ping(); err != nil {
		b.Fatalf("postgresql in %s: %v", dir, err)
	}
	return db
}

var redisBench = dsBench{
	name: "redis",
	open: func(dir string) (datastore.Manager, func(), error) {
		inst, err := redistest.New(dir, wiretest.QuietLogger())
		if err != nil {
			return nil, nil, err
		}
		return inst.Manager, inst.Close, nil
	},
	fill: func(b *testing.B, dir string, mb int) {
		c := redisAdmin(b, dir)
		defer c.Close()
		keys := mb * 512 // ~2 KiB a key: 1 KiB random, 1 KiB text
		random := make([]byte, 1024)
		for done := 0; done < keys; done += 200 {
			args := []string{"MSET"}
			for i := done; i < min(done+200, keys); i++ {
				rand.Read(random)
				args = append(args, fmt.Sprintf("r:%d", i), string(random),
					fmt.Sprintf("c:%d", i), strings.Repeat(fmt.Sprintf("order %d shipped to warehouse %d; ", i, i%17), 20))
			}
			if _, err := c.Do(context.Background(), args...); err != nil {
				b.Fatal(err)
			}
		}
	},
	digest: func(b *testing.B, dir string) string {
		c := redisAdmin(b, dir)
		defer c.Close()
		ctx := context.Background()
		r, err := c.Do(ctx, "KEYS", "*")
		if err != nil {
			b.Fatal(err)
		}
		keys := r.Strings()
		sort.Strings(keys)
		h := sha256.New()
		for i := 0; i < len(keys); i += 500 {
			batch := keys[i:min(i+500, len(keys))]
			r, err := c.Do(ctx, append([]string{"MGET"}, batch...)...)
			if err != nil {
				b.Fatal(err)
			}
			for j, v := range r.Strings() {
				fmt.Fprintf(h, "%s=%d:%s\n", batch[j], len(v), v)
			}
		}
		return fmt.Sprintf("keys=%d sha256=%x", len(keys), h.Sum(nil))
	},
}

// redisAdmin connects to the server laid out in dir as the agent's user.
func redisAdmin(b *testing.B, dir string) *redis.Conn {
	inst, err := redistest.New(dir, wiretest.QuietLogger())
	if err != nil {
		b.Fatal(err)
	}
	inst.Manager.Close()
	secret, err := os.ReadFile(inst.Config.SecretFile)
	if err != nil {
		b.Fatal(err)
	}
	c, err := redis.Dial(context.Background(), inst.Config.Socket)
	if err != nil {
		b.Fatalf("redis in %s: %v", dir, err)
	}
	c.Timeout = 5 * time.Minute // KEYS and MGET over a large dataset
	if _, err := c.Do(context.Background(), "AUTH", redis.AdminUser, strings.TrimSpace(string(secret))); err != nil {
		b.Fatal(err)
	}
	return c
}

func BenchmarkBackupPostgreSQLStrata(b *testing.B) { strataOnly(b, postgresqlBench) }

func BenchmarkBackupRedisStrata(b *testing.B) { strataOnly(b, redisBench) }

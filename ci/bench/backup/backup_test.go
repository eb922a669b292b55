// Package backup is `make bench-backup`: strata's backup and restore of a
// MariaDB dataset (1 GiB by default) side by side with Trove's pipeline
// run by hand on the same server, into the same store, on this host.
//
// strata's path is the real one minus the VM: mariadb-backup in an agent
// process (this test binary re-executed in the agent's role, so its
// memory is measured apart), zstd in the agent, the stream over a real SSH
// data channel to the controller's endpoint in this process, which
// encrypts (AES-256-GCM chunks under a fresh data key), segments, hashes
// and stores into a local object store; the restore reads, verifies and
// streams it back into a fresh server's empty data directory. Trove's is
// `mariadb-backup --stream=xbstream | gzip | openssl enc -aes-256-cbc`
// into a file of the same store directory, restored with the reverse
// pipe, mbstream and mariadb-backup --prepare.
//
//	make bench-backup                      # BENCH_BACKUP_MB=1024
//	go test -run '^$' -bench . -benchtime 1x ./ci/bench/backup/
//
// It reports MB/s of the native backup (the xbstream mariadb-backup
// writes), bytes stored, and peak RSS (VmHWM) of the guest side (agent or
// the pipeline's processes) and of the controller (this process).
//
// BenchmarkBackupPostgreSQLStrata and BenchmarkBackupRedisStrata
// (datastores_test.go) give the same figures for a PostgreSQL 15 and a
// Redis dataset of the same size through the same path, without a Trove
// column: pg_basebackup's tar with its WAL, BGSAVE's RDB (which Redis
// already LZF-compresses, so its native size is below the dataset's).
package backup

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/crypto/ssh"

	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/datastore/servertest"
	"strata/agent/dispatch"
	"strata/agent/transport"
	"strata/agent/wire"
	"strata/agent/wire/wiretest"
	"strata/controller/agentendpoint"
	"strata/controller/backups"
	"strata/controller/backups/format"
	objlocal "strata/controller/objectstore/local"
)

// The agent's role: BENCH_AGENT_* set means this process is the guest.
func TestMain(m *testing.M) {
	if os.Getenv("BENCH_AGENT_ADDR") != "" {
		os.Exit(runAgent())
	}
	os.Exit(m.Run())
}

// runAgent is the guest: a transport client whose handler dispatches to
// the BENCH_AGENT_DATASTORE manager of the server laid out in
// BENCH_AGENT_DIR (prepared or, for a restore, not).
func runAgent() int {
	defer profile("agent-" + os.Getenv("BENCH_AGENT_INSTANCE"))()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	key, err := ssh.ParsePrivateKey([]byte(os.Getenv("BENCH_AGENT_KEY")))
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent key:", err)
		return 1
	}
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(os.Getenv("BENCH_AGENT_HOSTKEY")))
	if err != nil {
		fmt.Fprintln(os.Stderr, "host key:", err)
		return 1
	}
	srv, err := openServer(os.Getenv("BENCH_AGENT_DATASTORE"), os.Getenv("BENCH_AGENT_DIR"), quiet)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// A restore starts the server itself; the parent stops it.
	defer srv.closeManager()
	var client *transport.Client
	streams := streamsFunc(func(ctx context.Context, opID string, i int) (dispatch.Stream, error) {
		return client.OpenStream(ctx, opID, i)
	})
	d := &dispatch.Dispatcher{Manager: srv.manager, Streams: streams, Datastore: srv.datastore}
	client, err = transport.NewClient(transport.ClientConfig{
		Controllers: []string{os.Getenv("BENCH_AGENT_ADDR")}, HostKey: hostKey, Key: key,
		EnrollmentToken: os.Getenv("BENCH_AGENT_TOKEN"), InstanceID: os.Getenv("BENCH_AGENT_INSTANCE"),
		Handler: wiretest.FuncHandler(func(ctx context.Context, op wire.Operation) wire.Result {
			return d.Run(context.Background(), op)
		}),
		Heartbeats: wiretest.StaticHeartbeat{Status: wire.StatusRunning}, Logger: quiet,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { bufio.NewReader(os.Stdin).ReadString('\n'); cancel() }() // the parent closes stdin to stop us
	client.Run(ctx)
	if os.Getenv("BENCH_AGENT_STOP_SERVER") != "" {
		srv.stopServer()
	}
	return 0
}

// profile writes a CPU profile NAME.cpu, an execution trace NAME.trace
// and an allocation profile NAME.alloc into BENCH_BACKUP_PROFILE (when set) until the returned
// function is called: `go tool pprof` reads them.
func profile(name string) func() {
	dir := os.Getenv("BENCH_BACKUP_PROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, name+".cpu"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		f.Close()
		return func() {}
	}
	// The trace (`go tool trace`) shows which stage waits on which.
	tf, err := os.Create(filepath.Join(dir, name+".trace"))
	if err == nil {
		if err := trace.Start(tf); err != nil {
			fmt.Fprintln(os.Stderr, "trace:", err)
		}
	}
	return func() {
		if tf != nil {
			trace.Stop()
			tf.Close()
		}
		pprof.StopCPUProfile()
		f.Close()
		if a, err := os.Create(filepath.Join(dir, name+".alloc")); err == nil {
			pprof.Lookup("allocs").WriteTo(a, 0)
			a.Close()
		}
	}
}

type streamsFunc func(ctx context.Context, opID string, i int) (dispatch.Stream, error)

func (f streamsFunc) OpenStream(ctx context.Context, opID string, i int) (dispatch.Stream, error) {
	return f(ctx, opID, i)
}

// agentProc is a running agent process.
type agentProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	hwm   *peak
	cpu   time.Duration // after stop: its CPU time and its tools'
}

func startAgent(b *testing.B, srv *agentendpoint.Server, store *agentendpoint.MemStore, addr, hostKey, instanceID, datastore, dir string, stopServer bool) *agentProc {
	token := wire.NewEnrollmentToken()
	store.AddInstance(instanceID, token)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BENCH_AGENT_ADDR="+addr, "BENCH_AGENT_HOSTKEY="+hostKey, "BENCH_AGENT_TOKEN="+token,
		"BENCH_AGENT_INSTANCE="+instanceID, "BENCH_AGENT_DATASTORE="+datastore, "BENCH_AGENT_DIR="+dir, "BENCH_AGENT_KEY="+string(pem.EncodeToMemory(block)))
	if stopServer {
		cmd.Env = append(cmd.Env, "BENCH_AGENT_STOP_SERVER=1")
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &agentProc{cmd: cmd, stdin: stdin, hwm: watch(cmd.Process.Pid)}
	deadline := time.Now().Add(30 * time.Second)
	for !srv.Connected(instanceID) {
		if time.Now().After(deadline) {
			b.Fatal("the agent process did not connect")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

func (p *agentProc) stop() int64 {
	p.stdin.Close()
	p.cmd.Wait()
	p.cpu = cpuOf(p.cmd)
	return p.hwm.stop()
}

// cpuOf is a finished command's user and system CPU time, with that of
// the children it waited for (wait4's rusage).
func cpuOf(cmd *exec.Cmd) time.Duration {
	if cmd.ProcessState == nil {
		return 0
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// selfCPU is this process's user and system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peak polls a process tree's summed VmHWM until stopped.
type peak struct {
	mu   sync.Mutex
	max  int64
	done chan struct{}
	wg   sync.WaitGroup
}

func watch(pids ...int) *peak {
	p := &peak{done: make(chan struct{})}
	p.wg.Go(func() {
		for {
			var sum int64
			for _, pid := range pids {
				sum += treeHWM(pid)
			}
			p.mu.Lock()
			p.max = max(p.max, sum)
			p.mu.Unlock()
			select {
			case <-p.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	return p
}

func (p *peak) stop() int64 {
	close(p.done)
	p.wg.Wait()
	return p.max
}

// treeHWM is the VmHWM of pid and its children, in bytes: the agent (or
// the pipeline) and the tools it runs, not the database server a restore
// starts (that is the datastore's memory, the same either way).
func treeHWM(pid int) int64 {
	switch comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) {
	case "mariadbd", "postgres", "redis-server":
		return 0
	}
	total := statusKB(pid, "VmHWM:") << 10
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(kids)) {
		if c, err := strconv.Atoi(f); err == nil {
			total += treeHWM(c)
		}
	}
	return total
}

func statusKB(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func selfHWM() int64 { return statusKB(os.Getpid(), "VmHWM:") << 10 }

// fillDataset writes about mb MiB into shop.t: every row 1 KiB of random
// bytes and 1 KiB of text that compresses well.
func fillDataset(b *testing.B, inst *mariadbtest.Instance, mb int) {
	c := mysql.NewConfig()
	c.Net, c.Addr, c.User = "unix", inst.Config.Socket, inst.Config.AdminUser
	db, err := sql.Open("mysql", c.FormatDSN())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{"CREATE DATABASE shop",
		"CREATE TABLE shop.t (id INT AUTO_INCREMENT PRIMARY KEY, r VARBINARY(1024), c VARCHAR(1024)) ENGINE=InnoDB"} {
		if _, err := db.Exec(q); err != nil {
			b.Fatal(err)
		}
	}
	rows := mb * 512 // ~2 KiB a row
	for done := 0; done < rows; done += 10000 {
		n := min(10000, rows-done)
		if _, err := db.Exec(fmt.Sprintf(`INSERT INTO shop.t (r, c) SELECT RANDOM_BYTES(1024),
			REPEAT(CONCAT('order ', seq, ' shipped to warehouse ', seq %% 17, '; '), 20) FROM shop.seq_1_to_%d`, n)); err != nil {
			b.Fatal(err)
		}
	}
}

func checksum(b *testing.B, socket, user string) string {
	c := mysql.NewConfig()
	c.Net, c.Addr, c.User = "unix", socket, user
	db, err := sql.Open("mysql", c.FormatDSN())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var n int64
	var name string
	var sum sql.NullInt64
	db.QueryRow("SELECT COUNT(*) FROM shop.t").Scan(&n)
	if err := db.QueryRow("CHECKSUM TABLE shop.t").Scan(&name, &sum); err != nil {
		b.Fatal(err)
	}
	return fmt.Sprintf("rows=%d checksum=%d", n, sum.Int64)
}

type figures struct {
	backupSecs, restoreSecs float64
	raw, stored             int64
	guestHWM, ctlHWM        int64
	guestCPU, ctlCPU        time.Duration // the backup's CPU time on each side
}

func (f figures) String() string {
	return fmt.Sprintf("backup %.1f MB/s (%.1fs; CPU %.1fs guest, %.1fs controller), restore %.1f MB/s (%.1fs), %.0f MB native, %.0f MB stored (%.0f%%), guest peak RSS %.0f MiB, controller peak RSS %.0f MiB",
		float64(f.raw)/1e6/f.backupSecs, f.backupSecs, f.guestCPU.Seconds(), f.ctlCPU.Seconds(), float64(f.raw)/1e6/f.restoreSecs, f.restoreSecs, float64(f.raw)/1e6,
		float64(f.stored)/1e6, 100*float64(f.stored)/float64(f.raw), float64(f.guestHWM)/(1<<20), float64(f.ctlHWM)/(1<<20))
}

func BenchmarkBackupMariaDBStrataVersusTrovePipeline(b *testing.B) {
	mb := benchMB()
	for _, tool := range []string{"mariadb-backup", "mbstream", "gzip", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Fatalf("%s not found: `ci/deps.sh test` installs it", tool)
		}
	}
	ctx := context.Background()
	work := b.TempDir()
	src, err := mariadbtest.New(filepath.Join(work, "src"), wiretest.QuietLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	if _, err := servertest.Prepare(src.Manager, wire.PrepareArgs{}, 2*time.Minute); err != nil {
		b.Fatal(err)
	}
	began := time.Now()
	fillDataset(b, src, mb)
	want := checksum(b, src.Config.Socket, src.Config.AdminUser)
	b.Logf("dataset: %d MiB asked, written in %.0fs (%s)", mb, time.Since(began).Seconds(), want)

	storeDir := filepath.Join(work, "store")
	st, err := objlocal.New(storeDir)
	if err != nil {
		b.Fatal(err)
	}
	kek, _, err := format.LoadOrCreateKEK(filepath.Join(work, "kek"))
	if err != nil {
		b.Fatal(err)
	}

	// The controller's endpoint, in this process.
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
		// strata: backup.
		var s figures
		agent := startAgent(b, srv, mem, ln.Addr().String(), hostLine, "src", "mariadb", src.Dir, false)
		ctlBase := selfHWM()
		stopProfile := profile("controller-backup")
		cpu0 := selfCPU()
		began = time.Now()
		man, res := strataBackup(b, ctx, srv, st, kek, "bench")
		s.backupSecs = time.Since(began).Seconds()
		s.ctlCPU = selfCPU() - cpu0
		stopProfile()
		s.raw, s.stored = res.RawBytes, man.StoredBytes
		guestBackup := agent.stop()
		s.guestCPU = agent.cpu

		// strata: restore into a fresh server.
		dstDir := filepath.Join(work, "dst")
		dst, err := mariadbtest.New(dstDir, wiretest.QuietLogger())
		if err != nil {
			b.Fatal(err)
		}
		agent = startAgent(b, srv, mem, ln.Addr().String(), hostLine, "dst", "mariadb", dstDir, true)
		stopProfile = profile("controller-restore")
		began = time.Now()
		strataRestore(b, ctx, srv, st, kek, "bench", man, res)
		s.restoreSecs = time.Since(began).Seconds()
		stopProfile()
		if got := checksum(b, dst.Config.Socket, dst.Config.AdminUser); got != want {
			b.Fatalf("strata's restore: %s, want %s", got, want)
		}
		s.guestHWM = max(guestBackup, agent.stop())
		s.ctlHWM = max(selfHWM(), ctlBase)
		b.Logf("FIGURE strata (zstd + AES-256-GCM, authenticated): %s", s)

		// Trove's pipeline, by hand, on the same server and store.
		t := trovePipeline(b, src, storeDir, work, want)
		b.Logf("FIGURE Trove's pipeline (gzip + AES-256-CBC, unauthenticated): %s", t)

		// The ceiling: mariadb-backup alone, its stream thrown away.
		alone, piped, toolCPU := ceiling(b, src, work)
		b.Logf("FIGURE ceiling: mariadb-backup alone to /dev/null %.1f MB/s (%.1fs, CPU %.1fs), through cat %.1f MB/s (%.1fs): %.1fx and %.1fx Trove's; strata is %.0f%% of the first",
			float64(s.raw)/1e6/alone, alone, toolCPU.Seconds(), float64(s.raw)/1e6/piped, piped, t.backupSecs/alone, t.backupSecs/piped, 100*alone/s.backupSecs)
		load, _ := os.ReadFile("/proc/loadavg")
		b.Logf("FIGURE strata / Trove: backup %.1fx, restore %.1fx, stored %.2fx (load average %s)",
			t.backupSecs/s.backupSecs, t.restoreSecs/s.restoreSecs, float64(s.stored)/float64(t.stored), strings.Join(strings.Fields(string(load))[:3], " "))
		b.ReportMetric(float64(s.raw)/1e6/s.backupSecs, "strata-backup-MB/s")
		b.ReportMetric(float64(t.raw)/1e6/t.backupSecs, "trove-backup-MB/s")
		b.ReportMetric(float64(s.raw)/1e6/s.restoreSecs, "strata-restore-MB/s")
		b.ReportMetric(float64(t.raw)/1e6/t.restoreSecs, "trove-restore-MB/s")
	}
}

// strataBackup is the controller's side of a backup: the stream into the
// encrypted container, kept only if the agent's digest matches.
func strataBackup(b *testing.B, ctx context.Context, srv *agentendpoint.Server, st *objlocal.Store, kek *format.KEK, id string) (format.Manifest, wire.BackupResult) {
	args, _ := json.Marshal(wire.BackupArgs{BackupID: id})
	op := wire.Operation{ID: "backup-" + id, Kind: wire.KindBackup, Args: args}
	w, err := srv.ExpectStream("src", op.ID, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	if err := srv.Submit(ctx, "src", op); err != nil {
		b.Fatal(err)
	}
	stream, err := w.Wait(ctx)
	if err != nil {
		b.Fatal(err)
	}
	fw, err := format.NewWriter(ctx, st, format.BackupPrefix("backups", id), kek, nil)
	if err != nil {
		b.Fatal(err)
	}
	got, err := backups.ReceiveStream(fw, stream)
	if err != nil {
		b.Fatal(err)
	}
	r, err := srv.Await(ctx, "src", op.ID)
	if err != nil {
		b.Fatal(err)
	}
	var res wire.BackupResult
	if err := r.Decode(&res); err != nil {
		b.Fatal(err)
	}
	if !got.Equal(res.Stream) {
		b.Fatalf("stream %+v, agent sent %+v", got, res.Stream)
	}
	if err := fw.Close(); err != nil {
		b.Fatal(err)
	}
	return fw.Manifest(), res
}

func strataRestore(b *testing.B, ctx context.Context, srv *agentendpoint.Server, st *objlocal.Store, kek *format.KEK, id string, man format.Manifest, res wire.BackupResult) {
	args, _ := json.Marshal(wire.RestoreArgs{Chain: []wire.RestoreBackup{{BackupID: id, Position: res.Position, Stream: res.Stream, Compression: res.Compression}}})
	op := wire.Operation{ID: "restore-" + id, Kind: wire.KindRestore, Args: args}
	w, err := srv.ExpectStream("dst", op.ID, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	if err := srv.Submit(ctx, "dst", op); err != nil {
		b.Fatal(err)
	}
	stream, err := w.Wait(ctx)
	if err != nil {
		b.Fatal(err)
	}
	r, err := format.NewReader(ctx, st, &man, kek)
	if err != nil {
		b.Fatal(err)
	}
	if err := backups.SendStream(stream, r); err != nil {
		b.Fatal(err)
	}
	r.Close()
	result, err := srv.Await(ctx, "dst", op.ID)
	if err != nil {
		b.Fatal(err)
	}
	if result.Error != nil {
		b.Fatalf("restore: %v", result.Error)
	}
	stream.Close()
}

// trovePipeline runs Trove's backup by hand and restores it.
func trovePipeline(b *testing.B, src *mariadbtest.Instance, storeDir, work, want string) figures {
	var f figures
	out := filepath.Join(storeDir, "trove-backup.xbstream.gz.enc")
	pass := "pass:not-a-real-secret-0123456789"
	backup := fmt.Sprintf(`set -o pipefail; mariadb-backup --defaults-file=%s --backup --stream=xbstream --datadir=%s --socket=%s --user=%s --target-dir=%s --tmpdir=%s | tee >(wc -c >%s) | gzip | openssl enc -aes-256-cbc -salt -pbkdf2 -pass %s -out %s`,
		src.Config.DefaultsFile, src.Config.DataDir, src.Config.Socket, src.Config.AdminUser, work, work, filepath.Join(work, "trove-raw"), pass, out)
	began := time.Now()
	f.guestHWM, f.guestCPU = runWatched(b, backup)
	f.backupSecs = time.Since(began).Seconds()
	time.Sleep(100 * time.Millisecond) // tee's wc finishes
	rawText, _ := os.ReadFile(filepath.Join(work, "trove-raw"))
	f.raw, _ = strconv.ParseInt(strings.TrimSpace(string(rawText)), 10, 64)
	fi, err := os.Stat(out)
	if err != nil {
		b.Fatal(err)
	}
	f.stored = fi.Size()

	dst, err := mariadbtest.New(filepath.Join(work, "trove-dst"), wiretest.QuietLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer dst.Close()
	os.MkdirAll(dst.Config.DataDir, 0o750)
	// The server's configuration is the source's, every file of its
	// conf.d (base, defaults layer, log switches, group), with the new
	// paths (the agent renders it at prepare; here nothing did).
	confs, err := filepath.Glob(filepath.Join(filepath.Dir(src.Config.ConfigFile), "*.cnf"))
	if err != nil || len(confs) == 0 {
		b.Fatalf("the source's configuration files: %v", err)
	}
	for _, conf := range confs {
		pair := [2]string{conf, filepath.Join(filepath.Dir(dst.Config.ConfigFile), filepath.Base(conf))}
		data, err := os.ReadFile(pair[0])
		if err != nil {
			b.Fatal(err)
		}
		text := strings.ReplaceAll(string(data), src.Config.Socket, dst.Config.Socket)
		text = strings.ReplaceAll(text, src.Dir, dst.Dir)
		os.MkdirAll(filepath.Dir(pair[1]), 0o755)
		if err := os.WriteFile(pair[1], []byte(text), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	// The server refuses to start without its secure_file_priv directory
	// ("files" beside the data directory) and its TLS certificate, which
	// a guest has (the source's certificate serves here).
	if err := os.MkdirAll(filepath.Join(dst.Dir, "files"), 0o700); err != nil {
		b.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(dst.Dir, "tls"), os.DirFS(filepath.Join(src.Dir, "tls"))); err != nil {
		b.Fatalf("the source's TLS certificate: %v", err)
	}
	restore := fmt.Sprintf(`set -o pipefail; openssl enc -d -aes-256-cbc -pbkdf2 -pass %s -in %s | gunzip | mbstream -x -C %s && mariadb-backup --defaults-file=%s --prepare --target-dir=%s`,
		pass, out, dst.Config.DataDir, dst.Config.DefaultsFile, dst.Config.DataDir)
	began = time.Now()
	hwm, _ := runWatched(b, restore)
	f.guestHWM = max(f.guestHWM, hwm)
	if err := dst.Process.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c := mysql.NewConfig()
		c.Net, c.Addr, c.User = "unix", dst.Config.Socket, dst.Config.AdminUser
		db, _ := sql.Open("mysql", c.FormatDSN())
		err := db.Ping()
		db.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(dst.Config.ErrorLog)
			out, _ := os.ReadFile(filepath.Join(dst.Dir, "log", "mariadbd.out"))
			b.Fatalf("Trove's restore: the server did not start: %v\n%s%s", err, log, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.restoreSecs = time.Since(began).Seconds()
	if got := checksum(b, dst.Config.Socket, dst.Config.AdminUser); got != want {
		b.Fatalf("Trove's restore: %s, want %s", got, want)
	}
	f.ctlHWM = 0
	return f
}

// ceiling times mariadb-backup's stream of the same server thrown away,
// alone and through one pipe (cat): no backup of it can be faster. The
// native size is strata's (the same server, nothing written between).
func ceiling(b *testing.B, src *mariadbtest.Instance, work string) (alone, piped float64, cpu time.Duration) {
	tool := fmt.Sprintf(`mariadb-backup --defaults-file=%s --backup --stream=xbstream --datadir=%s --socket=%s --user=%s --target-dir=%s --tmpdir=%s 2>/dev/null`,
		src.Config.DefaultsFile, src.Config.DataDir, src.Config.Socket, src.Config.AdminUser, work, work)
	for i, script := range []string{tool + " >/dev/null", "set -o pipefail; " + tool + " | cat >/dev/null"} {
		began := time.Now()
		_, c := runWatched(b, script)
		if i == 0 {
			alone, cpu = time.Since(began).Seconds(), c
		} else {
			piped = time.Since(began).Seconds()
		}
	}
	return alone, piped, cpu
}

// runWatched runs a bash pipeline and returns its processes' peak RSS
// and CPU time.
func runWatched(b *testing.B, script string) (int64, time.Duration) {
	cmd := exec.Command("bash", "-c", script)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := watch(cmd.Process.Pid)
	err := cmd.Wait()
	hwm := p.stop()
	if err != nil {
		b.Fatalf("%s: %v", script, err)
	}
	return hwm, cpuOf(cmd)
}

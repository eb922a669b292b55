// Command footprint measures the agent's footprint the way it runs in a
// guest: the stripped static binary's size, and its resident memory and
// CPU time while idle, connected to a controller endpoint (the controller's
// SSH endpoint over an in-memory store) and sending heartbeats.
// `make bench-agent` runs it.
//
// It is a measuring rig that plays the controller to a real agent binary,
// so it lives in ci/ (which may use every room), not under agent/ (which
// must not import the controller). It must not be imported.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
)

func main() {
	agent := flag.String("agent", "bin/strata-agent", "agent binary to measure (make build writes it)")
	duration := flag.Duration("duration", 60*time.Second, "how long to stay connected and idle before measuring")
	heartbeat := flag.Int("heartbeat", 10, "heartbeat interval in seconds")
	flag.Parse()
	if err := run(*agent, *duration, *heartbeat); err != nil {
		fmt.Fprintln(os.Stderr, "footprint:", err)
		os.Exit(1)
	}
}

func run(agent string, duration time.Duration, heartbeat int) error {
	st, err := os.Stat(agent)
	if err != nil {
		return fmt.Errorf("agent binary: %w (run make build)", err)
	}
	dir, err := os.MkdirTemp("", "strata-footprint-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// Controller endpoint.
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hostKey, _ := ssh.NewSignerFromKey(priv)
	srv, err := agentendpoint.NewMemEndpoint(hostKey,
		slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	token := wire.NewEnrollmentToken()
	srv.AddInstance("footprint", token)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, ln)

	boot := wire.Bootstrap{
		Format: 1, InstanceID: "footprint", Controllers: []string{ln.Addr().String()},
		ControllerHostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey.PublicKey()))),
		EnrollmentToken:   token, HeartbeatSeconds: heartbeat,
		Datastore:  wire.DatastoreRef{Manager: "mariadb", Version: "10.11"},
		MountPoint: dir,
	}
	bootPath := filepath.Join(dir, "bootstrap.json")
	data, _ := json.Marshal(boot)
	if err := os.WriteFile(bootPath, data, 0o600); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "agent.log")
	logFile, _ := os.Create(logPath)
	cmd := exec.Command(agent, "--bootstrap", bootPath, "--state-dir", filepath.Join(dir, "state"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid

	deadline := time.Now().Add(30 * time.Second)
	for !srv.Connected("footprint") {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("agent did not connect within 30s; its log:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cpu0, err := cpuSeconds(pid)
	if err != nil {
		return err
	}
	rss0, _ := status(pid, "VmRSS")
	fmt.Fprintf(os.Stderr, "footprint: agent pid %d connected; idling %s (heartbeat every %ds)\n", pid, duration, heartbeat)
	time.Sleep(duration)
	if !srv.Connected("footprint") {
		return fmt.Errorf("agent lost its connection during the run")
	}
	cpu1, err := cpuSeconds(pid)
	if err != nil {
		return err
	}
	rss, _ := status(pid, "VmRSS")
	hwm, _ := status(pid, "VmHWM")
	beats := len(srv.Heartbeats("footprint"))

	cmd.Process.Signal(syscall.SIGTERM)
	exitErr := cmd.Wait()

	idleCPU := cpu1 - cpu0
	fmt.Printf("strata-agent footprint (%s idle, connected, %d heartbeats received)\n", duration, beats)
	fmt.Printf("  binary size      %8.2f MiB  (%d bytes, %s)\n", mib(st.Size()), st.Size(), agent)
	fmt.Printf("  RSS after idle   %8.2f MiB  (at connect %.2f MiB, peak %.2f MiB)\n", mib(rss), mib(rss0), mib(hwm))
	fmt.Printf("  CPU while idle   %8.3f s    (%.4f%% of one core)\n", idleCPU, 100*idleCPU/duration.Seconds())
	fmt.Printf("  clean stop       %v\n", exitErr == nil)
	fmt.Printf("RESULT binary_bytes=%d rss_bytes=%d peak_rss_bytes=%d idle_cpu_seconds=%.3f duration_seconds=%.0f\n",
		st.Size(), rss, hwm, idleCPU, duration.Seconds())
	if st.Size() > 15<<20 || rss > 15<<20 {
		return fmt.Errorf("over the 15 MiB budget")
	}
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// cpuSeconds is utime+stime of pid.
func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields after the command: state is [0]; utime [11], stime [12].
	ut, _ := strconv.ParseFloat(fields[11], 64)
	stm, _ := strconv.ParseFloat(fields[12], 64)
	return (ut + stm) / 100, nil // USER_HZ is 100 on Linux
}

// status reads a "kB" field of /proc/pid/status, in bytes.
func status(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("%s not in /proc/%d/status", field, pid)
}

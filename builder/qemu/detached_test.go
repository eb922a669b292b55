package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The helper process: started by the tests below as `<test binary>` with
// STRATA_QEMU_HELPER set to a JSON Config, it starts a detached VM,
// prints its pid and exits without stopping it, as a controller that is
// killed does.
func TestMain(m *testing.M) {
	if cfg := os.Getenv("STRATA_QEMU_HELPER"); cfg != "" {
		var c Config
		if err := json.Unmarshal([]byte(cfg), &c); err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(2)
		}
		ctx, cancel := context.WithCancel(context.Background())
		vm, err := Start(ctx, c)
		if err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(1)
		}
		cancel() // a detached VM outlives Start's context
		os.Stdout.WriteString(strconv.Itoa(vm.PID()) + "\n")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func detachedConfig(t *testing.T) Config {
	cfg := testConfig(t, bootDisk(t))
	dir := t.TempDir()
	cfg.Detached, cfg.RunDir, cfg.OutputLog = true, filepath.Join(dir, "run"), filepath.Join(dir, "qemu.log")
	cfg.Firmware = UEFI // a UEFI variable store to find in the run directory
	cfg.MemoryMiB = 256
	return cfg
}

// startInHelper starts cfg's VM in a helper process that then exits, and
// returns the VM's pid.
func startInHelper(t *testing.T, cfg Config) int {
	t.Helper()
	data, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "STRATA_QEMU_HELPER="+string(data))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v: %s", err, err.(*exec.ExitError).Stderr)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("helper said %q", out)
	}
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	return pid
}

// TestADetachedVMOutlivesTheProcessThatStartedIt: the controller's VMs
// live on when the controller dies; their temporary files are in their
// run directory, their QMP socket answers through the pid, and their
// output went to the output log.
func TestADetachedVMOutlivesTheProcessThatStartedIt(t *testing.T) {
	requireQEMU(t)
	cfg := detachedConfig(t)
	pid := startInHelper(t, cfg)
	time.Sleep(300 * time.Millisecond)
	if !alive(pid) {
		t.Fatal("the VM died with the process that started it")
	}
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Errorf("qemu's session is %d, want its own (%d)", sid, pid)
	}
	runs, _ := filepath.Glob(filepath.Join(cfg.RunDir, "vm-*"))
	if len(runs) != 1 {
		t.Fatalf("run directories %v, want one", runs)
	}
	if _, err := os.Stat(filepath.Join(runs[0], varsName)); err != nil {
		t.Errorf("UEFI variable store not in the run directory: %v", err)
	}
	q, err := DialQMP(SocketPath(pid, QMPSocket))
	if err != nil {
		t.Fatalf("QMP through the pid: %v", err)
	}
	if _, err := q.Execute("query-status", nil); err != nil {
		t.Fatal(err)
	}
	q.Close()
	// Its serial console still works: the firmware writes to it.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, _ := os.ReadFile(cfg.SerialLog)
		if regexp.MustCompile(`BdsDxe`).Match(b) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the orphaned VM's console stayed silent: %q", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The same settings give the same command line, recorded by whoever
	// compares launch settings.
	_, want, err := CommandLine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if got := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")[1:]; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("command line\n%q\nCommandLine says\n%q", got, want)
	}
	syscall.Kill(-pid, syscall.SIGKILL)
}

// TestADetachedVMThatMustDieWithItsParentDoes: the tests' option.
func TestADetachedVMThatMustDieWithItsParentDoes(t *testing.T) {
	requireQEMU(t)
	cfg := detachedConfig(t)
	cfg.DieWithParent = true
	pid := startInHelper(t, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) && !isZombie(pid) {
		if time.Now().After(deadline) {
			t.Fatal("the VM outlived its parent despite DieWithParent")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && strings.HasPrefix(strings.TrimSpace(string(b[i+1:])), "Z")
}

// TestADetachedVMIsWatchedWhileItsStarterLives: in the process that
// started it, a detached VM is still stopped and waited for, and its run
// directory goes with it.
func TestADetachedVMIsWatchedWhileItsStarterLives(t *testing.T) {
	requireQEMU(t)
	cfg := detachedConfig(t)
	cfg.Firmware = BIOS
	ctx, cancel := context.WithCancel(context.Background())
	vm, err := Start(ctx, cfg)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if !alive(vm.PID()) {
		t.Fatal("the context given to Start killed a detached VM")
	}
	if err := vm.Stop(time.Second); !errors.Is(err, ErrKilled) {
		t.Errorf("Stop = %v", err)
	}
	if runs, _ := filepath.Glob(filepath.Join(cfg.RunDir, "vm-*")); len(runs) != 0 {
		t.Errorf("run directory left behind: %v", runs)
	}
	// A start that fails says what qemu said, from the output log.
	cfg.ExtraArgs = []string{"-device", "no-such-device"}
	if _, err := Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "no-such-device") {
		t.Errorf("failed detached start: %v", err)
	}
}

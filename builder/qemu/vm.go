package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrKilled is wrapped by Stop and Wait when qemu had to be killed rather
// than the guest powering off.
var ErrKilled = errors.New("qemu killed")

// startTimeout bounds how long qemu may take to bring up its monitor.
const startTimeout = 60 * time.Second

// VM is a running qemu process.
type VM struct {
	cfg    Config
	accel  Accel
	args   []string
	cmd    *exec.Cmd
	log    *slog.Logger
	output *tailBuffer
	qmp    *QMP

	done    chan struct{} // closed once qemu has exited and its temp dir is gone
	waitErr error         // qemu's exit, set before done is closed
	killed  atomic.Bool
}

// QMPSocket is the name of a detached VM's QMP socket in its run
// directory (SocketPath finds it from the pid).
const QMPSocket = "qmp.sock"

// SocketPath is the path through which a unix socket that qemu process pid
// made relative to its working directory (a detached VM's run directory)
// can be dialled: short whatever the directory's length, and found again
// by a process that adopts the VM knowing only its pid.
func SocketPath(pid int, name string) string {
	return "/proc/" + strconv.Itoa(pid) + "/cwd/" + name
}

// resolved is what Start derives from a Config before it runs qemu.
type resolved struct {
	accel  Accel
	ovmf   OVMF
	binary string
}

func resolve(cfg *Config) (resolved, error) {
	var r resolved
	if err := cfg.validate(); err != nil {
		return r, err
	}
	if cfg.Accel != nil {
		r.accel = *cfg.Accel
	} else {
		a, err := DetectAccel()
		if err != nil {
			return r, err
		}
		r.accel = a
	}
	binary, err := exec.LookPath(cfg.Binary)
	if err != nil {
		return r, fmt.Errorf("qemu: %s not found (install qemu-system-x86 with `ci/deps.sh build boot`)", cfg.Binary)
	}
	r.binary = binary
	if cfg.Firmware == UEFI {
		if cfg.OVMF != nil {
			r.ovmf = *cfg.OVMF
		} else if r.ovmf, err = FindOVMF(""); err != nil {
			return r, fmt.Errorf("qemu: %w", err)
		}
	}
	return r, nil
}

// varsName is the UEFI variable store's name in a detached VM's run
// directory.
const varsName = "OVMF_VARS.fd"

// CommandLine returns the program and arguments Start runs for a detached
// cfg. They name files in the VM's run directory relatively, so the same
// settings give the same command line: a caller compares it with what a
// running VM was started with to tell whether the VM runs with current
// settings.
func CommandLine(cfg Config) (string, []string, error) {
	if !cfg.Detached {
		return "", nil, errors.New("qemu: CommandLine is for detached VMs")
	}
	r, err := resolve(&cfg)
	if err != nil {
		return "", nil, err
	}
	return r.binary, cfg.args(r.accel, r.ovmf, varsName, QMPSocket), nil
}

// Start launches qemu and returns once its monitor answers, i.e. the
// machine is built and running. If qemu exits before that, the error
// carries its output. For a VM that is not Detached, ctx bounds the VM's
// whole life: when it ends, qemu is killed; pass a context that lives as
// long as the VM should. For a detached one it bounds the start-up only.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	r, err := resolve(&cfg)
	if err != nil {
		return nil, err
	}
	for _, d := range append([]Drive{cfg.Disk}, cfg.Drives...) {
		if _, err := os.Stat(d.Path); err != nil {
			return nil, fmt.Errorf("qemu: drive: %w", err)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("vm", cfg.Name)

	var dir string
	if cfg.Detached {
		if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
		dir, err = os.MkdirTemp(cfg.RunDir, "vm-")
	} else {
		dir, err = os.MkdirTemp("", "strata-qemu-")
	}
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	varsCopy, sock := filepath.Join(dir, varsName), filepath.Join(dir, QMPSocket)
	if cfg.Firmware == UEFI {
		if err := copyFile(r.ovmf.Vars, varsCopy); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("qemu: copy UEFI variable store: %w", err)
		}
	}

	v := &VM{cfg: cfg, accel: r.accel, log: log, output: newTailBuffer(64 << 10), done: make(chan struct{})}
	var out *os.File
	if cfg.Detached {
		// Relative to the run directory, qemu's working directory.
		v.args = cfg.args(r.accel, r.ovmf, varsName, QMPSocket)
		if out, err = os.OpenFile(cfg.OutputLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("qemu: output log: %w", err)
		}
		defer out.Close() // qemu holds its own copy
	} else {
		v.args = cfg.args(r.accel, r.ovmf, varsCopy, sock)
	}
	v.cmd = exec.Command(r.binary, v.args...)
	// Snapshot overlays go to TMPDIR: keep them in the VM's dir, which is
	// removed when qemu exits, however it exits.
	v.cmd.Env = append(os.Environ(), "TMPDIR="+dir)
	if cfg.Detached {
		v.cmd.Dir = dir
		v.cmd.Stdout, v.cmd.Stderr = out, out
		v.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // its own session, killable as a group
		if cfg.DieWithParent {
			v.cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
		}
	} else {
		v.cmd.Stdout, v.cmd.Stderr = v.output, v.output
		v.cmd.SysProcAttr = &syscall.SysProcAttr{
			Setpgid:   true,            // killable as a group
			Pdeathsig: syscall.SIGKILL, // and dies with us
		}
	}
	if err := v.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("qemu: %w", err)
	}
	log.Info("qemu started", "pid", v.cmd.Process.Pid, "accel", r.accel.Name, "accel_reason", r.accel.Reason,
		"firmware", cfg.Firmware, "disk", cfg.Disk.Path, "serial_log", cfg.SerialLog, "detached", cfg.Detached)
	go func() {
		err := v.cmd.Wait()
		os.RemoveAll(dir)
		v.waitErr = err
		close(v.done)
	}()
	if !cfg.Detached {
		go func() {
			select {
			case <-ctx.Done():
				log.Info("context ended, killing qemu", "cause", context.Cause(ctx))
				v.kill()
			case <-v.done:
			}
		}()
	} else {
		sock = SocketPath(v.cmd.Process.Pid, QMPSocket)
	}

	if v.qmp, err = v.connect(ctx, sock); err != nil {
		v.kill()
		<-v.done
		return nil, fmt.Errorf("qemu did not start: %w%s", err, v.outputNote())
	}
	return v, nil
}

// connect waits for the QMP socket and asks for the machine status: qemu
// answers only after it has opened every drive and built the machine.
func (v *VM) connect(ctx context.Context, sock string) (*QMP, error) {
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if q, err := DialQMP(sock); err == nil {
			if _, err := q.Execute("query-status", nil); err != nil {
				q.Close()
				return nil, err
			}
			return q, nil
		}
		select {
		case <-v.done:
			return nil, fmt.Errorf("qemu exited: %v", v.waitErr)
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-deadline.C:
			return nil, fmt.Errorf("no QMP answer within %s", startTimeout)
		case <-tick.C:
		}
	}
}

// kill SIGKILLs qemu's process group unless it has already exited.
func (v *VM) kill() {
	select {
	case <-v.done:
		return
	default:
	}
	v.killed.Store(true)
	if err := syscall.Kill(-v.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		v.log.Warn("kill qemu", "err", err)
	}
}

// PID returns qemu's process id (also its process group id).
func (v *VM) PID() int { return v.cmd.Process.Pid }

// Accel returns the accelerator the VM runs with, and why.
func (v *VM) Accel() Accel { return v.accel }

// Args returns qemu's command line (without the program name).
func (v *VM) Args() []string { return append([]string(nil), v.args...) }

// SerialLog returns the path of the serial console log.
func (v *VM) SerialLog() string { return v.cfg.SerialLog }

// Done is closed when qemu has exited and its temporary files are gone.
func (v *VM) Done() <-chan struct{} { return v.done }

// Wait waits for qemu to exit. It returns nil when qemu exited by itself
// with status 0 (the guest powered off), an error wrapping ErrKilled when
// it was killed (Stop's timeout, the context), else qemu's failure and
// output.
func (v *VM) Wait() error {
	<-v.done
	if v.qmp != nil {
		v.qmp.Close()
	}
	if v.waitErr == nil {
		return nil
	}
	if v.killed.Load() {
		return fmt.Errorf("%w: %v", ErrKilled, v.waitErr)
	}
	return fmt.Errorf("qemu: %w%s", v.waitErr, v.outputNote())
}

// Stop asks the guest to power off (ACPI power button, through QMP) and
// waits up to timeout for qemu to exit; then it kills qemu. It returns nil
// if the guest powered off in time, else an error wrapping ErrKilled. Temp
// files are gone when Stop returns.
func (v *VM) Stop(timeout time.Duration) error {
	select {
	case <-v.done:
		return nil
	default:
	}
	start := time.Now()
	_, perr := v.qmp.Execute("system_powerdown", nil)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-v.done:
		v.log.Info("guest powered off", "took", time.Since(start).Round(time.Millisecond))
		if v.qmp != nil {
			v.qmp.Close()
		}
		return nil
	case <-t.C:
	}
	v.kill()
	<-v.done
	if v.qmp != nil {
		v.qmp.Close()
	}
	if perr != nil {
		return fmt.Errorf("%w: power-down request failed (%v)", ErrKilled, perr)
	}
	return fmt.Errorf("%w: guest did not power off within %s", ErrKilled, timeout)
}

// Status returns the machine status QMP reports ("running", "paused",
// "shutdown", ...).
func (v *VM) Status() (string, error) {
	raw, err := v.qmp.Execute("query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return "", fmt.Errorf("qmp query-status: %w", err)
	}
	return st.Status, nil
}

// WaitForSerial waits until a line of the serial console matches re and
// returns that line. The whole log counts, including output written before
// the call; a line still being written is matched too. It fails when ctx
// ends or qemu exits first, with the last lines of the console.
func (v *VM) WaitForSerial(ctx context.Context, re *regexp.Regexp) (string, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var (
		off     int64
		partial []byte
	)
	scan := func() (string, bool) {
		f, err := os.Open(v.cfg.SerialLog)
		if err != nil {
			return "", false // qemu has not created it yet
		}
		defer f.Close()
		buf, _ := io.ReadAll(io.NewSectionReader(f, off, 1<<62))
		off += int64(len(buf))
		data := append(partial, buf...)
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break
			}
			line := strings.TrimRight(string(data[:i]), "\r")
			data = data[i+1:]
			if re.MatchString(line) {
				return line, true
			}
		}
		partial = append(partial[:0], data...)
		if line := strings.TrimRight(string(partial), "\r"); line != "" && re.MatchString(line) {
			return line, true
		}
		return "", false
	}
	for {
		if line, ok := scan(); ok {
			return line, nil
		}
		select {
		case <-v.done:
			if line, ok := scan(); ok {
				return line, nil
			}
			return "", fmt.Errorf("qemu exited (%v) before the serial console matched %q%s%s", v.waitErr, re, v.outputNote(), v.serialNote())
		case <-ctx.Done():
			return "", fmt.Errorf("serial console did not match %q: %w%s", re, context.Cause(ctx), v.serialNote())
		case <-tick.C:
		}
	}
}

// serialNote returns the last lines of the serial log for an error.
func (v *VM) serialNote() string {
	b, err := os.ReadFile(v.cfg.SerialLog)
	if err != nil || len(b) == 0 {
		return "; the serial console is empty"
	}
	return "; last serial output:\n" + lastLines(string(b), 20)
}

func (v *VM) outputNote() string {
	s := v.output.String()
	if v.cfg.Detached {
		s = fileTail(v.cfg.OutputLog, 64<<10)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return "; qemu said: " + lastLines(s, 10)
}

// fileTail returns the last max bytes of the file at path ("" if it
// cannot be read).
func fileTail(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	return string(b)
}

func lastLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, strings.TrimRight(sc.Text(), "\r"))
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

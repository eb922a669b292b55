package api_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// command runs `openstack args...` and returns what CombinedOutput would
// and an error if it exited non-zero ("exit status N", as exec's).
func (o *osc) command(args []string) ([]byte, error) {
	o.t.Helper()
	o.pace.wait()
	defer o.pace.done()
	if os.Getenv("STRATA_OSC_EXEC") == "1" {
		return o.exec(args)
	}
	if o.drv == nil {
		d, err := startOSCDriver(o.env)
		if err != nil {
			o.t.Fatal(err)
		}
		o.drv = d
		o.t.Cleanup(func() {
			if err := d.stop(); err != nil {
				o.t.Error(err)
			}
		})
	}
	out, code, err := o.drv.run(args)
	if err != nil {
		o.t.Fatalf("openstack %s: %v", strings.Join(args, " "), err)
	}
	if code != 0 {
		return out, fmt.Errorf("exit status %d", code)
	}
	return out, nil
}

// exec runs the command in a process of its own.
func (o *osc) exec(args []string) ([]byte, error) {
	cmd := exec.Command("openstack", args...)
	cmd.Env = o.env
	return cmd.CombinedOutput()
}

// oscDriver is one testdata/osc_driver.py process: the real client's
// Python, with the client imported once, running one command per request.
type oscDriver struct {
	cmd     *exec.Cmd
	req     *os.File      // the driver's fd 3
	rep     *bufio.Reader // its fd 4
	repFile *os.File
	stray   lockedBuffer // its own stdout and stderr: empty unless something escaped a command's capture
}

func startOSCDriver(env []string) (*oscDriver, error) {
	path, err := exec.LookPath("openstack")
	if err != nil {
		return nil, err
	}
	// The interpreter on the client's #! line, so the driver imports the
	// same client the `openstack` command would.
	head, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	line, _, _ := strings.Cut(string(head), "\n")
	interp, ok := strings.CutPrefix(line, "#!")
	if !ok || len(strings.Fields(interp)) == 0 {
		return nil, fmt.Errorf("%s: no #! line to find its Python", path)
	}
	script, err := filepath.Abs(filepath.Join("testdata", "osc_driver.py"))
	if err != nil {
		return nil, err
	}
	argv := append(strings.Fields(interp), script, path)
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		reqR.Close()
		reqW.Close()
		return nil, err
	}
	d := &oscDriver{req: reqW, rep: bufio.NewReader(repR), repFile: repR}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Env = env
	d.cmd.ExtraFiles = []*os.File{reqR, repW}
	d.cmd.Stdout = &d.stray
	d.cmd.Stderr = &d.stray
	err = d.cmd.Start()
	reqR.Close()
	repW.Close()
	if err != nil {
		reqW.Close()
		repR.Close()
		return nil, fmt.Errorf("osc driver: %w", err)
	}
	return d, nil
}

// run sends one command and returns its output as CombinedOutput would
// have it from a process of its own: Python's stderr is line-buffered and
// its stdout, a pipe, is written when the process exits, so the messages
// come first (outputs past stdout's 8 KiB buffer could interleave; these
// tests' don't).
func (d *oscDriver) run(args []string) ([]byte, int, error) {
	if args == nil {
		args = []string{}
	}
	req, err := json.Marshal(args)
	if err != nil {
		return nil, 0, err
	}
	if _, err := d.req.Write(append(req, '\n')); err != nil {
		return nil, 0, fmt.Errorf("osc driver: %w; it wrote:\n%s", err, d.stray.String())
	}
	line, err := d.rep.ReadBytes('\n')
	if err != nil {
		return nil, 0, fmt.Errorf("osc driver: reading its reply: %w; it wrote:\n%s", err, d.stray.String())
	}
	var rep struct {
		Code   int
		Stdout []byte
		Stderr []byte
	}
	if err := json.Unmarshal(line, &rep); err != nil {
		return nil, 0, fmt.Errorf("osc driver: reply %q: %w", line, err)
	}
	if s := d.stray.String(); s != "" {
		return nil, 0, fmt.Errorf("osc driver: output outside the command's capture:\n%s", s)
	}
	return append(rep.Stderr, rep.Stdout...), rep.Code, nil
}

// stop ends the driver (end of its requests) and reports anything it
// wrote outside a command or a non-zero exit.
func (d *oscDriver) stop() error {
	d.req.Close()
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		err = <-done
	}
	d.repFile.Close()
	if s := d.stray.String(); err != nil || s != "" {
		return fmt.Errorf("osc driver: exit %v; it wrote:\n%s", err, s)
	}
	return nil
}

// pacer spaces commands: each starts gap after the previous one ended
// (nil: no spacing).
type pacer struct {
	gap  time.Duration
	last time.Time
}

func (p *pacer) wait() {
	if p != nil {
		time.Sleep(time.Until(p.last.Add(p.gap)))
	}
}

func (p *pacer) done() {
	if p != nil {
		p.last = time.Now()
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The driver is a faithful stand-in for separate `openstack` processes:
// the same commands, through both, give the same exit statuses and the
// same output, failures in between included (a failed command leaves
// nothing behind for the next).
func TestOSCDriverRunsCommandsAsSeparateProcessesWould(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	o := newOSC(t, r)
	stranger := o.withUser("admin", "not-the-password", "admin")
	requestID := regexp.MustCompile(`req-[0-9a-f-]{36}`)
	for _, c := range []struct {
		o    *osc
		args []string
		code int
	}{
		{o, []string{"database", "flavor", "list", "-f", "json"}, 0},
		{o, []string{"database", "instance", "show", "no-such-instance"}, 1},
		{o, []string{"database", "flavor", "list", "-f", "json"}, 0},
		{o, []string{"database", "instance", "create"}, 2}, // argparse: missing arguments
		{o, []string{"database", "flavr", "list"}, 2},      // no such command
		{stranger, []string{"token", "issue"}, 1},          // 401
	} {
		name := "openstack " + strings.Join(c.args, " ")
		want, werr := c.o.exec(c.args)
		got, gerr := c.o.command(c.args)
		code := exitCode(t, werr)
		if code != c.code {
			t.Errorf("%s: the real client exited %d, want %d:\n%s", name, code, c.code, want)
		}
		if fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Errorf("%s: driver err=%v, real client's %v", name, gerr, werr)
		}
		w, g := requestID.ReplaceAll(want, []byte("req-ID")), requestID.ReplaceAll(got, []byte("req-ID"))
		if !bytes.Equal(w, g) {
			t.Errorf("%s: output through the driver:\n%s\nfrom the real client:\n%s", name, g, w)
			continue
		}
		t.Logf("%s: exit %d both ways, the same %d bytes of output", name, code, len(w))
	}
}

func exitCode(t *testing.T, err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatal(err)
	return -1
}

package datastore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"strata/agent/streams"
)

// tailBuffer keeps the last max bytes written to it (a tool's stderr).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return LastLines(string(t.b), 12)
}

// toolError says which tool failed and what it printed last.
func toolError(cmd *exec.Cmd, err error, stderr *tailBuffer) error {
	return fmt.Errorf("%s: %w: %s", filepath.Base(cmd.Path), err, strings.ReplaceAll(strings.TrimSpace(stderr.String()), "\n", " | "))
}

// prepareTool starts cmd in its own process group (so a kill reaches its
// children) and makes ctx's end kill it.
func prepareTool(cmd *exec.Cmd, stderr *tailBuffer) {
	cmd.Stderr = stderr
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

// StreamFrom runs a backup tool and copies its stdout to w. If a write
// to w fails (the controller closed the stream, the connection broke),
// the tool is killed and that write error is returned: the tool never
// keeps running for a backup nobody receives. cmd must come from
// exec.CommandContext.
func StreamFrom(cmd *exec.Cmd, w io.Writer) error {
	return StreamFromLogging(cmd, w, nil)
}

// StreamFromLogging is StreamFrom that also copies the tool's stderr to
// log (a tool that reports positions there).
func StreamFromLogging(cmd *exec.Cmd, w io.Writer, log io.Writer) error {
	stderr := &tailBuffer{max: 8 << 10}
	prepareTool(cmd, stderr)
	if log != nil {
		cmd.Stderr = io.MultiWriter(stderr, log)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", filepath.Base(cmd.Path), err)
	}
	ww := &writeError{w: w}
	// The tool's output is read ahead (4 MiB at most) in 1 MiB pieces:
	// the tool runs on while w compresses and sends, and w gets large
	// writes instead of the pipe's 64 KiB.
	ra := streams.NewReadAhead(out, 4, 1<<20)
	_, copyErr := io.Copy(ww, ra)
	if copyErr != nil {
		// Stop the tool before waiting for it: it may block on a pipe
		// nobody reads.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		// And end a read waiting on it (a process outside the tool's
		// group may still hold the pipe's other end).
		out.Close()
	}
	// No read of the pipe may run when Wait closes it.
	ra.Stop()
	waitErr := cmd.Wait()
	switch {
	case ww.err != nil:
		return ww.err
	case copyErr != nil:
		return fmt.Errorf("reading %s's output: %w", filepath.Base(cmd.Path), copyErr)
	case waitErr != nil:
		return toolError(cmd, waitErr, stderr)
	}
	return nil
}

// writeError remembers the first error of the writer it wraps.
type writeError struct {
	w   io.Writer
	err error
}

func (w *writeError) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// FeedTo runs a restore tool with r as its stdin. If reading r fails (the
// stream was cut or does not match its digest) the tool is killed and
// that error is returned, not the tool's complaint about its input.
func FeedTo(cmd *exec.Cmd, r io.Reader) error {
	stderr := &tailBuffer{max: 8 << 10}
	prepareTool(cmd, stderr)
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", filepath.Base(cmd.Path), err)
	}
	rr := &readErrorReader{r: r}
	_, copyErr := io.Copy(in, rr)
	in.Close()
	if rr.err != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		return rr.err
	}
	waitErr := cmd.Wait()
	if waitErr != nil {
		return toolError(cmd, waitErr, stderr)
	}
	if copyErr != nil {
		return fmt.Errorf("feeding %s: %w", filepath.Base(cmd.Path), copyErr)
	}
	return nil
}

type readErrorReader struct {
	r   io.Reader
	err error
}

func (r *readErrorReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// RunTool runs a tool to completion; a failure names it with the end of
// its stderr.
func RunTool(cmd *exec.Cmd) error {
	stderr := &tailBuffer{max: 8 << 10}
	prepareTool(cmd, stderr)
	if err := cmd.Run(); err != nil {
		return toolError(cmd, err, stderr)
	}
	return nil
}

// ChownTree gives everything under root to the account.
func (u OSUser) ChownTree(root string) error {
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return u.Chown(p)
	})
}

// EmptyDir reports whether dir is missing or holds nothing but names in
// ignore.
func EmptyDir(dir string, ignore ...string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		skip := false
		for _, n := range ignore {
			skip = skip || e.Name() == n
		}
		if !skip {
			return false, nil
		}
	}
	return true, nil
}

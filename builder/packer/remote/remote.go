// Package remote runs element hooks on a live machine through a Packer
// communicator (SSH, usually): an executor.Executor over
// packersdk.Communicator, and the upload of a merged hooks directory.
//
// Every command runs as root — directly when the communicator logs in as
// root, else through a configurable prefix such as "sudo -n" — with exactly
// the environment it is given (env -i, every variable shell-quoted in the
// command line, so no sudoers SETENV rule is needed), in a process group of
// its own: when the command ends, or the context is cancelled, whatever it
// left running in that group is killed, as strata's chroot namespaces do.
//
// It knows nothing of elements or phases; builder/build.Apply decides what
// to run.
package remote

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"strata/builder/executor"
)

// Executor runs commands on the machine behind a Packer communicator.
type Executor struct {
	Comm packersdk.Communicator
	// Sudo prefixes every command to run it as root, e.g. "sudo -n"; empty
	// when the communicator already logs in as root. It must run its
	// arguments as a command (sudo, doas, "su root -c" does not).
	Sudo string
	// Name describes the machine in messages ("ssh packer@127.0.0.1:2222").
	Name string
	// Dir is the working directory of commands that name none; default "/".
	Dir string
	// TempDir is where uploads and process-group files are put on the
	// machine; default /tmp.
	TempDir string
	// StopTimeout bounds how long a cancelled command may take to go away
	// and the clean-up commands may run; default 30s.
	StopTimeout time.Duration
}

var _ executor.Executor = (*Executor)(nil)

// Where names the machine.
func (e *Executor) Where() string {
	if e.Name == "" {
		return "remote machine"
	}
	return e.Name
}

func (e *Executor) stopTimeout() time.Duration {
	if e.StopTimeout > 0 {
		return e.StopTimeout
	}
	return 30 * time.Second
}

func (e *Executor) tempDir() string {
	if e.TempDir != "" {
		return e.TempDir
	}
	return "/tmp"
}

// Run runs cmd as root on the machine, its output streamed to cmd.Stdout
// and cmd.Stderr. A non-zero exit is an *executor.ExitError; a lost
// connection is an error saying so. Cancelling ctx kills the command's
// process group on the machine before Run returns.
func (e *Executor) Run(ctx context.Context, cmd executor.Command) error {
	if cmd.Path == "" {
		return errors.New("remote: no program to run")
	}
	for _, kv := range cmd.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("remote: bad environment entry %q", kv)
		}
	}
	dir := cmd.Dir
	if dir == "" {
		dir = e.Dir
	}
	if dir == "" {
		dir = "/"
	}
	pidFile := path.Join(e.tempDir(), "strata-exec-"+randomID()+".pgid")
	argv := append([]string{"env", "-i"}, cmd.Env...)
	argv = append(append(argv, cmd.Path), cmd.Args...)
	// The shell is the leader of a new process group (setsid); it records
	// the group so a cancel can kill it, runs the command, then kills what
	// the command left behind in the group (a background process would
	// otherwise hold the session's output open) while ignoring that signal
	// itself, and exits with the command's status.
	script := "echo $$ >" + Quote(pidFile) + " && cd " + Quote(dir) + " || exit 125\n" +
		QuoteArgs(argv) + "\n" +
		"rc=$?\nrm -f " + Quote(pidFile) + "\ntrap '' TERM\nkill -TERM -$$ 2>/dev/null\nexit $rc\n"
	rc := &packersdk.RemoteCmd{
		Command: e.rootPrefix() + "setsid -w /bin/sh -c " + Quote(script),
		Stdin:   cmd.Stdin,
		Stdout:  orDiscard(cmd.Stdout),
		Stderr:  orDiscard(cmd.Stderr),
	}
	if err := e.Comm.Start(ctx, rc); err != nil {
		return fmt.Errorf("starting %s on %s: %w", cmd.Path, e.Where(), err)
	}
	done := make(chan int, 1)
	go func() { done <- rc.Wait() }()
	select {
	case status := <-done:
		return e.exitError(status)
	case <-ctx.Done():
	}
	// The communicator does not stop a remote command when its context
	// ends: kill the process group, then wait for the session to close.
	stopCtx, cancel := context.WithTimeout(context.Background(), e.stopTimeout())
	defer cancel()
	kill := "p=$(cat " + Quote(pidFile) + " 2>/dev/null) || exit 0\n" +
		"kill -TERM -$p 2>/dev/null\nsleep 2\nkill -KILL -$p 2>/dev/null\nrm -f " + Quote(pidFile) + "\nexit 0\n"
	killErr := e.run(stopCtx, e.rootPrefix()+"/bin/sh -c "+Quote(kill), nil)
	select {
	case <-done:
	case <-stopCtx.Done():
		return fmt.Errorf("%w (the command on %s did not stop within %s: %v)", ctx.Err(), e.Where(), e.stopTimeout(), killErr)
	}
	return ctx.Err()
}

func (e *Executor) exitError(status int) error {
	switch status {
	case 0:
		return nil
	case packersdk.CmdDisconnect:
		return fmt.Errorf("lost the connection to %s", e.Where())
	default:
		return &executor.ExitError{Code: status}
	}
}

func (e *Executor) rootPrefix() string {
	if e.Sudo == "" {
		return ""
	}
	return strings.TrimSpace(e.Sudo) + " "
}

// run runs a shell command line (already quoted) and waits for it,
// returning its output in errors.
func (e *Executor) run(ctx context.Context, command string, stdin io.Reader) error {
	var out strings.Builder
	rc := &packersdk.RemoteCmd{Command: command, Stdin: stdin, Stdout: &out, Stderr: &out}
	if err := e.Comm.Start(ctx, rc); err != nil {
		return err
	}
	done := make(chan int, 1)
	go func() { done <- rc.Wait() }()
	select {
	case status := <-done:
		if err := e.exitError(status); err != nil {
			return fmt.Errorf("%w: %s", err, strings.TrimSpace(out.String()))
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// UploadDir copies the local directory to dir on the machine, replacing
// whatever is there: as one tar archive (modes and symlinks kept, every
// file owned by root) uploaded as the communicator's user, then unpacked
// as root. It has the signature build.ApplyConfig.Upload wants.
func (e *Executor) UploadDir(ctx context.Context, local, dir string) error {
	if err := checkRemoteDir(dir); err != nil {
		return err
	}
	f, err := os.CreateTemp("", "strata-upload-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := writeTar(f, local); err != nil {
		return fmt.Errorf("archiving %s: %w", local, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	archive := path.Join(e.tempDir(), "strata-upload-"+randomID()+".tar")
	if err := e.Comm.Upload(archive, f, &fi); err != nil {
		return fmt.Errorf("uploading to %s on %s: %w", archive, e.Where(), err)
	}
	script := "rc=0\nrm -rf " + Quote(dir) + " && mkdir -p -m 0755 " + Quote(dir) + " && tar -xf " + Quote(archive) + " -C " + Quote(dir) + " || rc=$?\n" +
		"rm -f " + Quote(archive) + "\nexit $rc\n"
	if err := e.run(ctx, e.rootPrefix()+"/bin/sh -c "+Quote(script), nil); err != nil {
		return fmt.Errorf("unpacking into %s on %s: %w", dir, e.Where(), err)
	}
	return nil
}

// RemoveDir removes dir on the machine (as root). It runs even when ctx
// is already cancelled, bounded by StopTimeout: it is a clean-up.
func (e *Executor) RemoveDir(ctx context.Context, dir string) error {
	if err := checkRemoteDir(dir); err != nil {
		return err
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.stopTimeout())
	defer cancel()
	if err := e.run(stopCtx, e.rootPrefix()+"rm -rf "+Quote(dir), nil); err != nil {
		return fmt.Errorf("removing %s on %s: %w", dir, e.Where(), err)
	}
	return nil
}

// checkRemoteDir refuses directories that rm -rf must never be given.
func checkRemoteDir(dir string) error {
	if !path.IsAbs(dir) || path.Clean(dir) == "/" || strings.ContainsRune(dir, 0) {
		return fmt.Errorf("remote directory %q must be an absolute path below /", dir)
	}
	return nil
}

// writeTar archives the tree below root: directories, regular files and
// symlinks, with their modes, owned by root.
func writeTar(w io.Writer, root string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		} else if !info.Mode().IsRegular() && !info.IsDir() {
			return fmt.Errorf("%s: only files, directories and symlinks can be uploaded", p)
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "root", "root"
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// Quote quotes s for a POSIX shell: one word, nothing expanded.
func Quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:,@+%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// QuoteArgs quotes every word and joins them with spaces.
func QuoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Package remote runs element hooks on a live machine through a Packer
// communicator (SSH, usually): an executor.Executor over
// packersdk.Communicator, a private hooks directory that removes itself,
// and the upload of a merged hooks directory into it.
//
// Every command runs as root — directly when the communicator logs in as
// root, else through a configurable prefix such as "sudo -n" — with exactly
// the environment it is given (env -i, every variable shell-quoted in the
// command line, so no sudoers SETENV rule is needed), in a session and
// process group of its own. The SDK's communicators do not stop a remote
// command when its context ends, and Packer kills a plugin right after
// cancelling a build, so the machine cleans up by itself: each command has
// a watchdog that reads the SSH session's stdin, which this side holds open,
// and kills the command's group when it ends (a cancel closes it; so does
// a dropped connection). What a command leaves running in its group when
// it ends is killed too, as strata's chroot namespaces do. PrivateDir's
// directory is removed the same way. The machine's /tmp is shared with its
// other users: nothing is written to, followed or removed at a name they
// could predict (see PrivateDir and UploadDir).
//
// It knows nothing of elements or phases; builder/build.Apply decides what
// to run.
package remote

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
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
	// StopTimeout bounds how long a cancelled command, or a guard that was
	// released, may take to go away; default 30s.
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

// Run runs cmd as root on the machine, its output streamed to cmd.Stdout
// and cmd.Stderr. A non-zero exit is an *executor.ExitError; a lost
// connection is an error saying so. Cancelling ctx kills the command's
// process group on the machine before Run returns.
func (e *Executor) Run(ctx context.Context, cmd executor.Command) error {
	if cmd.Path == "" {
		return errors.New("remote: no program to run")
	}
	if cmd.Stdin != nil {
		// The session's stdin is the cancellation channel (see below).
		return errors.New("remote: commands get no stdin")
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
	argv := append([]string{"env", "-i"}, cmd.Env...)
	argv = append(append(argv, cmd.Path), cmd.Args...)
	// The command runs in a session and process group of its own (setsid),
	// its stdin /dev/null. A watchdog reads the SSH session's stdin, which
	// this side holds open: when it ends — Run closing it on cancel, or the
	// connection dropping because Packer killed this plugin — it kills the
	// command's group (TERM, then KILL). When the command ends by itself,
	// what it left running in its group is killed too (a background process
	// would otherwise hold the session's output open).
	script := "exec 3<&0 </dev/null\n" +
		"cd " + Quote(dir) + " || exit 125\n" +
		"setsid " + QuoteArgs(argv) + " 3<&- &\n" +
		"cmd=$!\n" +
		"(trap '' TERM; cat <&3; kill -TERM -$cmd; sleep 5; kill -KILL -$cmd) >/dev/null 2>&1 &\n" +
		"watchdog=$!\n" +
		"exec 3<&-\n" +
		"wait $cmd\n" +
		"rc=$?\n" +
		"kill -TERM -$cmd 2>/dev/null\n" +
		"kill -KILL $watchdog 2>/dev/null\n" +
		"exit $rc\n"
	stdin, hold := io.Pipe()
	defer hold.Close()
	rc := &packersdk.RemoteCmd{
		Command: e.rootPrefix() + "/bin/sh -c " + Quote(script),
		Stdin:   stdin,
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
	// ends: ending the session's stdin makes the watchdog stop it.
	hold.Close()
	select {
	case <-done:
	case <-time.After(e.stopTimeout()):
		return fmt.Errorf("%w (the command on %s did not stop within %s)", ctx.Err(), e.Where(), e.stopTimeout())
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
func (e *Executor) run(ctx context.Context, command string) error {
	var out strings.Builder
	rc := &packersdk.RemoteCmd{Command: command, Stdout: &out, Stderr: &out}
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

// UploadDir copies the local directory into dir on the machine, a
// directory PrivateDir made (so empty, and root's alone): as one tar
// archive (modes and symlinks kept, every file owned by root) uploaded as
// the communicator's user into a private staging directory of that user's
// (mktemp -d), then unpacked as root. Nothing goes through a path another
// user of the machine could have prepared: no fixed name in /tmp is
// written, followed or removed. It has the signature
// build.ApplyConfig.Upload wants.
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
	// The staging directory is the communicator user's (the upload runs as
	// that user); a guard session removes it whatever happens here.
	stage, release, err := e.privateDir(ctx, false, "", "strata-upload")
	if err != nil {
		return err
	}
	archive := path.Join(stage, "hooks.tar")
	err = e.Comm.Upload(archive, f, &fi)
	if err != nil {
		err = fmt.Errorf("uploading to %s on %s: %w", archive, e.Where(), err)
	} else {
		script := "test -d " + Quote(dir) + " && ! test -L " + Quote(dir) + " && tar -xf " + Quote(archive) + " -C " + Quote(dir) + "\n"
		if err = e.run(ctx, e.rootPrefix()+"/bin/sh -c "+Quote(script)); err != nil {
			err = fmt.Errorf("unpacking into %s on %s: %w", dir, e.Where(), err)
		}
	}
	if rerr := release(); err == nil {
		err = rerr
	}
	return err
}

// PrivateDir makes a directory on the machine that only root may enter and
// keeps a session open that removes it again, as root: when release is
// called, or when the connection drops because Packer killed this plugin
// (it does right after cancelling a build), so the machine cleans up by
// itself. With dir empty the directory is a new one under /tmp with an
// unpredictable name (mktemp -d); otherwise it is exactly dir, which must
// not exist yet (mkdir, not mkdir -p: a directory someone else made, or
// left, is never used or removed). The directory is made and removed by
// the same remote command, so nothing is left between the two.
func (e *Executor) PrivateDir(ctx context.Context, dir string) (made string, release func() error, err error) {
	if dir != "" {
		if err := checkRemoteDir(dir); err != nil {
			return "", nil, err
		}
	}
	return e.privateDir(ctx, true, path.Clean(dir), "strata-hooks")
}

// privateDir runs the command PrivateDir describes, as root or as the
// communicator's user; prefix names the mktemp directory.
func (e *Executor) privateDir(ctx context.Context, asRoot bool, dir, prefix string) (string, func() error, error) {
	if dir == "." {
		dir = ""
	}
	script := "trap '' HUP\numask 077\n" +
		"if [ -z \"$1\" ]; then d=$(mktemp -d /tmp/" + prefix + ".XXXXXXXXXX) || exit 1\n" +
		"else mkdir -m 0700 -- \"$1\" || exit 1; d=$1; fi\n" +
		"printf '%s\\n' \"$d\"\n" +
		"cat >/dev/null 2>&1\n" +
		"rm -rf -- \"$d\"\n"
	command := "/bin/sh -c " + Quote(script) + " sh " + Quote(dir)
	if asRoot {
		command = e.rootPrefix() + command
	}
	stdin, hold := io.Pipe()
	var errOut strings.Builder
	made := &firstLine{ready: make(chan struct{})}
	rc := &packersdk.RemoteCmd{Command: command, Stdin: stdin, Stdout: made, Stderr: &errOut}
	what := "a private directory"
	if dir != "" {
		what = dir
	}
	if err := e.Comm.Start(ctx, rc); err != nil {
		return "", nil, fmt.Errorf("making %s on %s: %w", what, e.Where(), err)
	}
	done := make(chan int, 1)
	go func() { done <- rc.Wait() }()
	fail := func(err error) (string, func() error, error) {
		hold.Close()
		return "", nil, fmt.Errorf("making %s on %s: %w", what, e.Where(), err)
	}
	select {
	case <-made.ready:
	case status := <-done:
		if err := e.exitError(status); err != nil {
			return fail(fmt.Errorf("%w: %s", err, strings.TrimSpace(errOut.String())))
		}
		return fail(errors.New("the command ended without making it"))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	p := made.line()
	if !path.IsAbs(p) || path.Clean(p) == "/" {
		return fail(fmt.Errorf("the machine answered %q", p))
	}
	return p, func() error {
		hold.Close()
		select {
		case status := <-done:
			if err := e.exitError(status); err != nil {
				return fmt.Errorf("removing %s on %s: %w: %s", p, e.Where(), err, strings.TrimSpace(errOut.String()))
			}
			return nil
		case <-time.After(e.stopTimeout()):
			return fmt.Errorf("removing %s on %s: no answer within %s", p, e.Where(), e.stopTimeout())
		}
	}, nil
}

// firstLine keeps what a command writes until its first newline.
type firstLine struct {
	mu    sync.Mutex
	buf   []byte
	ready chan struct{}
	done  bool
}

func (f *firstLine) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return len(p), nil
	}
	f.buf = append(f.buf, p...)
	if i := bytes.IndexByte(f.buf, '\n'); i >= 0 {
		f.buf = f.buf[:i]
		f.done = true
		close(f.ready)
	} else if len(f.buf) > 4096 {
		f.buf = f.buf[:4096]
	}
	return len(p), nil
}

func (f *firstLine) line() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return string(f.buf)
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

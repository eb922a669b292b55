// Package localcomm is a Packer communicator to this host, for the plugin's
// package tests: a command runs as `/bin/sh -c COMMAND`, as sshd runs a
// session's command, and an upload writes the file. Like the SDK's SSH
// communicator it ignores Start's context, so cancellation is tested the
// way it happens over SSH. The Packer end-to-end tests (ci/e2e) use real
// SSH; nothing else may use this.
package localcomm

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// Comm is the communicator.
type Comm struct{}

var _ packersdk.Communicator = Comm{}

// Start runs the command in the background; rc.Wait gives its status.
// As over SSH, the command's exit does not wait for its stdin to end.
func (Comm) Start(ctx context.Context, rc *packersdk.RemoteCmd) error {
	cmd := exec.Command("/bin/sh", "-c", rc.Command)
	cmd.Stdout, cmd.Stderr = rc.Stdout, rc.Stderr
	var stdin io.WriteCloser
	if rc.Stdin != nil {
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			return err
		}
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	if stdin != nil {
		go func() {
			io.Copy(stdin, rc.Stdin)
			stdin.Close()
		}()
	}
	go func() {
		err := cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
			rc.SetExited(0)
		case errors.As(err, &ee):
			rc.SetExited(ee.ExitCode())
		default:
			rc.SetExited(packersdk.CmdDisconnect)
		}
	}()
	return nil
}

// Upload writes r to path.
func (Comm) Upload(path string, r io.Reader, _ *os.FileInfo) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// UploadDir, Download and DownloadDir are not used by strata: directories
// go up as one tar archive (modes and symlinks kept).
func (Comm) UploadDir(string, string, []string) error {
	return errors.New("localcomm: UploadDir is not supported")
}

func (Comm) Download(string, io.Writer) error {
	return errors.New("localcomm: Download is not supported")
}

func (Comm) DownloadDir(string, string, []string) error {
	return errors.New("localcomm: DownloadDir is not supported")
}

package executor

import (
	"context"
	"fmt"
	"io"
)

// Command is one program to run and the complete environment it gets.
type Command struct {
	// Path is the program, as seen from where it runs (inside the image
	// root for a chroot executor).
	Path string
	Args []string
	// Env is the whole environment; nothing is inherited.
	Env []string
	// Dir is the working directory; "" means / in a chroot and the
	// executor's default on the host.
	Dir    string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Executor runs commands somewhere: the build host, an image root, a
// remote machine.
type Executor interface {
	// Run runs the command to completion. A command that exits non-zero
	// returns an *ExitError. Cancelling ctx stops the command and every
	// process it started before Run returns.
	Run(ctx context.Context, cmd Command) error
	// Where describes the place commands run, for messages ("host",
	// "chroot /path", "ssh host").
	Where() string
}

// ExitError reports a command that ran and failed.
type ExitError struct {
	Code   int    // exit status, or 128+signal
	Signal string // set when the command was killed by a signal
}

func (e *ExitError) Error() string {
	if e.Signal != "" {
		return fmt.Sprintf("killed by signal %s", e.Signal)
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

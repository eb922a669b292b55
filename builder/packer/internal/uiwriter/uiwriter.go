// Package uiwriter turns a Packer UI into an io.Writer: the builder's,
// provisioner's and post-processor's progress and hook output reach
// Packer's console line by line, prefixed with the build's name as Packer
// prefixes every message.
package uiwriter

import (
	"bytes"
	"strings"
	"sync"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// Writer sends each complete line written to it to the UI as a message.
// Close flushes a last line without a newline. It is safe for concurrent
// use (hooks write stdout and stderr from two goroutines).
type Writer struct {
	mu  sync.Mutex
	ui  packersdk.Ui
	buf bytes.Buffer
}

// New returns a Writer to ui.
func New(ui packersdk.Ui) *Writer { return &Writer{ui: ui} }

func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			// Incomplete: keep it for the next write.
			w.buf.Reset()
			w.buf.WriteString(line)
			return len(p), nil
		}
		w.say(line)
	}
}

// Close sends what is left.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() > 0 {
		w.say(w.buf.String())
		w.buf.Reset()
	}
	return nil
}

func (w *Writer) say(line string) {
	line = strings.TrimRight(line, "\r\n")
	// A progress line redrawn with \r shows only its last state.
	if i := strings.LastIndexByte(line, '\r'); i >= 0 {
		line = line[i+1:]
	}
	// Message shows the line indented under the build's name, as Packer
	// shows command output. The SDK marks it deprecated for Say, which
	// would make every line of a hook a "==>" headline.
	w.ui.Message(line)
}

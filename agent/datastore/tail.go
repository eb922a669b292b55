package datastore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"strata/agent/wire"
)

// TailFile returns the last n lines of the file at path, reading at most
// maxBytes from its end. A missing file is not_found.
func TailFile(name, path string, n, maxBytes int) (wire.LogTail, error) {
	out := wire.LogTail{Name: name, Lines: []string{}}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return out, wire.Errorf(wire.CodeNotFound, "log %s has no file yet (%s)", name, path)
	}
	if err != nil {
		return out, fmt.Errorf("log %s: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return out, fmt.Errorf("log %s: %w", name, err)
	}
	size := st.Size()
	start := max(size-int64(maxBytes), 0)
	buf := make([]byte, size-start)
	if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
		return out, fmt.Errorf("log %s: %w", name, err)
	}
	if start > 0 {
		// Drop the partial first line.
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		} else {
			buf = nil
		}
		out.Truncated = true
	}
	text := strings.TrimSuffix(string(bytes.ToValidUTF8(buf, []byte("\uFFFD"))), "\n")
	if text == "" {
		return out, nil
	}
	lines := strings.Split(text, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
		out.Truncated = false
	}
	out.Lines = lines
	return out, nil
}

// CheckTailLines validates a requested line count.
func CheckTailLines(n int) error {
	if n < 1 || n > wire.MaxTailLines {
		return wire.Errorf(wire.CodeInvalidArgument, "lines: %d is outside 1..%d", n, wire.MaxTailLines)
	}
	return nil
}

// LastLines is the last n lines of a command's output, joined into one
// line for an error message.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

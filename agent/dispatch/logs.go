package dispatch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// setLog switches a log the manager lets the user switch.
func (d *Dispatcher) setLog(ctx context.Context, a wire.SetLogArgs) (any, error) {
	if a.Name == AgentLogName && d.AgentLog != nil {
		return nil, wire.Errorf(wire.CodeFailedPrecondition, "log %s is always on; it cannot be enabled or disabled", AgentLogName)
	}
	s, ok := d.Manager.(datastore.LogSwitcher)
	if !ok {
		logs, err := d.Manager.Logs(ctx)
		if err != nil {
			return nil, err
		}
		for _, l := range logs {
			if l.Name == a.Name {
				return nil, wire.Errorf(wire.CodeFailedPrecondition, "log %s is always on; %s has no log that can be enabled or disabled", a.Name, d.datastoreName())
			}
		}
		return nil, wire.Errorf(wire.CodeNotFound, "no log named %q", a.Name)
	}
	return s.SetLog(ctx, a.Name, a.Enable)
}

// publishLog streams the log's whole current content on stream 0 of the
// operation and reports the digest and line count of what it sent. The
// file is read up to the size it had when publishing started: what the
// server appends meanwhile goes with the next publish.
func (d *Dispatcher) publishLog(ctx context.Context, opID string, a wire.PublishLogArgs) (any, error) {
	if a.Name == AgentLogName && d.AgentLog != nil {
		return d.publishAgentLog(ctx, opID)
	}
	lp, ok := d.Manager.(datastore.LogPath)
	if !ok {
		return nil, wire.Errorf(wire.CodeNotSupported, "%s cannot publish its logs", d.datastoreName())
	}
	path, err := lp.LogPath(a.Name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, wire.Errorf(wire.CodeNotFound, "log %s has no file yet (%s)", a.Name, path)
	}
	if err != nil {
		return nil, fmt.Errorf("log %s: %w", a.Name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("log %s: %w", a.Name, err)
	}
	if d.Streams == nil {
		return nil, wire.Errorf(wire.CodeFailedPrecondition, "publish log: this agent has no data channel to the controller")
	}
	stream, err := d.Streams.OpenStream(ctx, opID, 0)
	if err != nil {
		return nil, wire.Errorf(wire.CodeUnavailable, "publish log %s: %v", a.Name, err)
	}
	defer stream.Close()
	return sendLog(a.Name, stream, io.LimitReader(f, st.Size()), st.Size())
}

// publishAgentLog publishes the agent's own log as its last
// wire.MaxTailLines lines: it lives in the journal, not in a file.
func (d *Dispatcher) publishAgentLog(ctx context.Context, opID string) (any, error) {
	tail, err := d.AgentLog.Tail(ctx, wire.MaxTailLines)
	if err != nil {
		return nil, fmt.Errorf("log %s: %w", AgentLogName, err)
	}
	text := ""
	if len(tail.Lines) > 0 {
		text = strings.Join(tail.Lines, "\n") + "\n"
	}
	if d.Streams == nil {
		return nil, wire.Errorf(wire.CodeFailedPrecondition, "publish log: this agent has no data channel to the controller")
	}
	stream, err := d.Streams.OpenStream(ctx, opID, 0)
	if err != nil {
		return nil, wire.Errorf(wire.CodeUnavailable, "publish log %s: %v", AgentLogName, err)
	}
	defer stream.Close()
	return sendLog(AgentLogName, stream, strings.NewReader(text), int64(len(text)))
}

// sendLog copies size bytes of r to the stream, ends it, and reports
// what was sent.
func sendLog(name string, stream Stream, r io.Reader, size int64) (any, error) {
	h := sha256.New()
	lines := &lineCounter{}
	n, err := io.Copy(io.MultiWriter(stream, h, lines), r)
	if err == nil && n != size {
		err = fmt.Errorf("the file shrank from %d to %d bytes while it was read (rotated?)", size, n)
	}
	if err == nil {
		err = stream.CloseWrite()
	}
	if err != nil {
		return nil, fmt.Errorf("publish log %s: %w", name, err)
	}
	return wire.PublishLogResult{Name: name, Stream: wire.StreamDigest{Bytes: n, SHA256: wire.SHA256Hex(h.Sum(nil))}, Lines: lines.count()}, nil
}

// lineCounter counts lines: newlines, plus an unterminated last line.
type lineCounter struct {
	n    int64
	last byte
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.n += int64(bytes.Count(p, []byte{'\n'}))
	if len(p) > 0 {
		c.last = p[len(p)-1]
	}
	return len(p), nil
}

func (c *lineCounter) count() int64 {
	if c.last != 0 && c.last != '\n' {
		return c.n + 1
	}
	return c.n
}

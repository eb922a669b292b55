// Package logging gives the agent its slog logger — structured journald
// entries when systemd connected stderr to the journal, text on stderr
// otherwise — and reads the agent's own log back (journalctl) for the
// tail_log operation.
//
// It must stay free of agent logic: formatting and transport of log
// records only.
package logging

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/journal"

	"strata/agent/wire"
)

// New returns the agent's logger at level.
func New(level slog.Level) *slog.Logger {
	if ok, _ := journal.StderrIsJournalStream(); ok && journal.Enabled() {
		return slog.New(NewJournalHandler(level, journal.Send))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// SendFunc delivers one journal entry (journal.Send).
type SendFunc func(message string, priority journal.Priority, vars map[string]string) error

// JournalHandler writes records as journal entries: the message as
// MESSAGE, each attribute as an upper-case field (group names joined with
// "_"), and SYSLOG_IDENTIFIER=strata-agent.
type JournalHandler struct {
	level  slog.Leveler
	send   SendFunc
	attrs  []slog.Attr
	prefix string
	mu     *sync.Mutex
}

// NewJournalHandler returns a handler that logs through send.
func NewJournalHandler(level slog.Leveler, send SendFunc) *JournalHandler {
	return &JournalHandler{level: level, send: send, mu: &sync.Mutex{}}
}

func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *JournalHandler) Handle(_ context.Context, r slog.Record) error {
	vars := map[string]string{"SYSLOG_IDENTIFIER": "strata-agent"}
	var text strings.Builder
	text.WriteString(r.Message)
	var add func(prefix string, a slog.Attr)
	add = func(prefix string, a slog.Attr) {
		a.Value = a.Value.Resolve()
		if a.Equal(slog.Attr{}) {
			return
		}
		if a.Value.Kind() == slog.KindGroup {
			for _, g := range a.Value.Group() {
				add(prefix+a.Key+"_", g)
			}
			return
		}
		key := FieldName(prefix + a.Key)
		vars[key] = a.Value.String()
		// Also in the text, so `journalctl -o cat` shows the context.
		fmt.Fprintf(&text, " %s=%s", prefix+a.Key, quoteIfNeeded(a.Value.String()))
	}
	for _, a := range h.attrs {
		add("", a)
	}
	r.Attrs(func(a slog.Attr) bool { add(h.prefix, a); return true })
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.send(text.String(), priority(r.Level), vars)
}

func (h *JournalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		a.Key = h.prefix + a.Key
		n.attrs = append(n.attrs, a)
	}
	return &n
}

func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.prefix = h.prefix + name + "_"
	return &n
}

// FieldName turns an attribute key into a journal field name: upper case,
// A-Z 0-9 _ only, not starting with "_" or a digit.
func FieldName(key string) string {
	var b strings.Builder
	for _, c := range strings.ToUpper(key) {
		if (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), "_")
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		s = "F_" + s
	}
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

func priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	}
	return journal.PriDebug
}

func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// JournalLog reads the agent's own log from the journal.
type JournalLog struct {
	Unit string
	// Journalctl is the journalctl binary (default "journalctl").
	Journalctl string
}

// Info describes the agent log for list_logs.
func (j JournalLog) Info(context.Context) wire.LogInfo {
	return wire.LogInfo{Name: "agent", Type: "agent", Path: "journal:" + j.Unit, Enabled: true}
}

// Tail returns the last lines of the unit's journal.
func (j JournalLog) Tail(ctx context.Context, lines int) (wire.LogTail, error) {
	bin := j.Journalctl
	if bin == "" {
		bin = "journalctl"
	}
	cmd := exec.CommandContext(ctx, bin, "--no-pager", "-q", "-o", "cat", "-u", j.Unit, "-n", fmt.Sprint(lines))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return wire.LogTail{}, err
	}
	if err := cmd.Start(); err != nil {
		return wire.LogTail{}, fmt.Errorf("journalctl: %w", err)
	}
	data, _ := io.ReadAll(io.LimitReader(out, 4*wire.MaxTailBytes))
	if err := cmd.Wait(); err != nil {
		return wire.LogTail{}, fmt.Errorf("journalctl: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	tail := wire.LogTail{Name: "agent", Lines: []string{}}
	text := strings.TrimSuffix(string(bytes.ToValidUTF8(data, []byte("\uFFFD"))), "\n")
	if text != "" {
		tail.Lines = strings.Split(text, "\n")
	}
	if len(tail.Lines) > lines {
		tail.Lines = tail.Lines[len(tail.Lines)-lines:]
	}
	for size := len(text); size > wire.MaxTailBytes && len(tail.Lines) > 0; {
		size -= len(tail.Lines[0]) + 1
		tail.Lines = tail.Lines[1:]
		tail.Truncated = true
	}
	return tail, nil
}

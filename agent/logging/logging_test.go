package logging

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
)

func TestJournalHandlerWritesStructuredFields(t *testing.T) {
	type entry struct {
		msg  string
		pri  journal.Priority
		vars map[string]string
	}
	var got []entry
	h := NewJournalHandler(slog.LevelInfo, func(m string, p journal.Priority, v map[string]string) error {
		got = append(got, entry{m, p, v})
		return nil
	})
	log := slog.New(h).With("component", "transport").WithGroup("op")
	log.Debug("hidden")
	log.Warn("operation failed", "id", "op-1", "took", "2s", "bad key!", "x y")
	if len(got) != 1 {
		t.Fatalf("%d entries", len(got))
	}
	e := got[0]
	if e.pri != journal.PriWarning || !strings.HasPrefix(e.msg, "operation failed") || !strings.Contains(e.msg, "op_id=op-1") {
		t.Fatalf("entry %+v", e)
	}
	for k, v := range map[string]string{"COMPONENT": "transport", "OP_ID": "op-1", "OP_TOOK": "2s", "OP_BAD_KEY_": "x y", "SYSLOG_IDENTIFIER": "strata-agent"} {
		if e.vars[k] != v {
			t.Errorf("field %s = %q, want %q (all: %v)", k, e.vars[k], v, e.vars)
		}
	}
}

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{"boot_id": "BOOT_ID", "_x": "X", "9lives": "F_9LIVES", "a.b-c": "A_B_C"} {
		if got := FieldName(in); got != want {
			t.Errorf("FieldName(%q) = %q, want %q", in, got, want)
		}
	}
}

// journalctl is replaced by a script that checks its arguments and prints
// numbered lines: the parsing and bounds are what is tested here; the
// real journal is exercised by the image boot test.
func TestJournalLogTail(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "journalctl")
	os.WriteFile(script, []byte(`#!/bin/sh
[ "$*" = "--no-pager -q -o cat -u strata-agent.service -n 3" ] || { echo "bad args: $*" >&2; exit 1; }
printf 'one\ntwo\nthree\n'
`), 0o755)
	j := JournalLog{Unit: "strata-agent.service", Journalctl: script}
	tail, err := j.Tail(context.Background(), 3)
	if err != nil || strings.Join(tail.Lines, ",") != "one,two,three" {
		t.Fatalf("%+v %v", tail, err)
	}
	if _, err := j.Tail(context.Background(), 4); err == nil || !strings.Contains(err.Error(), "bad args") {
		t.Fatalf("failing journalctl: %v", err)
	}
}

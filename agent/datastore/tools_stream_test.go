package datastore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestStreamFromPassesTheToolsWholeOutput(t *testing.T) {
	var want strings.Builder
	for i := 1; i <= 300000; i++ {
		fmt.Fprintln(&want, i)
	}
	var got bytes.Buffer
	if err := StreamFrom(exec.CommandContext(context.Background(), "seq", "1", "300000"), &got); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Fatalf("got %d bytes, want the tool's %d", got.Len(), want.Len())
	}
}

type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.n += len(p); f.n > 3<<20 {
		return 0, errors.New("channel closed")
	}
	return len(p), nil
}

func TestStreamFromStopsAToolThatNeverEndsWhenTheWriterFails(t *testing.T) {
	done := make(chan error, 1)
	go func() { done <- StreamFrom(exec.CommandContext(context.Background(), "yes"), &failingWriter{}) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "channel closed") {
			t.Fatalf("got %v, want the writer's error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("StreamFrom did not return after its writer failed")
	}
}

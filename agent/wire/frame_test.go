package wire

import (
	"bytes"
	"errors"
	"testing"
)

func TestFrameRoundTripAndLimits(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteFrame(&buf, Operation{ID: "a", Kind: "status"}, 1024); err != nil {
		t.Fatal(err)
	}
	body, err := ReadFrame(&buf, 1024)
	if err != nil || string(body) != `{"id":"a","kind":"status"}` {
		t.Fatalf("%s %v", body, err)
	}
	if err := WriteFrame(&buf, bytes.Repeat([]byte("x"), 2000), 1024); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("write oversized: %v", err)
	}
	if buf.Len() != 0 {
		t.Fatal("oversized frame partly written")
	}
	WriteFrame(&buf, "0123456789", 1024)
	if _, err := ReadFrame(&buf, 8); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("read oversized: %v", err)
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{0, 0, 0, 9, 'a'}), 1024); err == nil {
		t.Fatal("short body accepted")
	}
}

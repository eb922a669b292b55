package uiwriter

import (
	"slices"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

type ui struct {
	packersdk.MockUi
	lines []string
}

func (u *ui) Message(m string) { u.lines = append(u.lines, m) }

func TestWriterSendsWholeLines(t *testing.T) {
	u := &ui{}
	w := New(u)
	for _, s := range []string{"one\ntw", "o\r\n", "progress 10%\rprogress 100%\n", "\n", "last"} {
		w.Write([]byte(s))
	}
	if !slices.Equal(u.lines, []string{"one", "two", "progress 100%", ""}) {
		t.Fatalf("before Close: %q", u.lines)
	}
	w.Close()
	if u.lines[len(u.lines)-1] != "last" {
		t.Fatalf("Close did not flush: %q", u.lines)
	}
}

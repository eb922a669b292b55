package mariadb

import (
	"strings"
	"testing"
)

func TestQuoting(t *testing.T) {
	if got := quoteIdent("a`b"); got != "`a``b`" {
		t.Fatal(got)
	}
	if got := grantIdent("a_b%c"); got != "`a\\_b\\%c`" {
		t.Fatal(got)
	}
	if got := unescapeGrantDB(`a\_b\%c`); got != "a_b%c" {
		t.Fatal(got)
	}
	if got, err := quoteString("it's"); err != nil || got != "'it''s'" {
		t.Fatal(got, err)
	}
	for _, bad := range []string{`a\`, "a\x00"} {
		if _, err := quoteString(bad); err == nil {
			t.Fatalf("quoteString(%q) accepted", bad)
		}
	}
	// MariaDB's own PASSWORD('password').
	if got := nativePasswordHash("password"); got != "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19" {
		t.Fatal(got)
	}
	if strings.ContainsAny(nativePasswordHash("x'\\\x00"), `'\`) {
		t.Fatal("hash not hex")
	}
}
